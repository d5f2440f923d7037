#!/usr/bin/env bash
# Fetch Fashion-MNIST into DEST (default: <repo>/datasets/data/fashion-mnist) as symlinks to the
# gzip IDX files of the Debian package dataset-fashion-mnist (installed with apt-get when missing
# and running as root). The SHA-256 of every .gz file is checked.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:-$here/data/fashion-mnist}"
src=/usr/share/datasets/fashion-mnist

declare -A sha=(
  [train-images-idx3-ubyte.gz]=b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7
  [train-labels-idx1-ubyte.gz]=0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056
  [t10k-images-idx3-ubyte.gz]=cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa
  [t10k-labels-idx1-ubyte.gz]=8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05
)
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

if [[ ! -f "$src/train-images-idx3-ubyte.gz" ]]; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "fashion-mnist: installing Debian package dataset-fashion-mnist"
    apt-get install -y dataset-fashion-mnist || { apt-get update && apt-get install -y dataset-fashion-mnist; }
  else
    echo "fashion-mnist: $src is missing; run: sudo apt-get install dataset-fashion-mnist" >&2
    exit 1
  fi
fi

mkdir -p "$dest"
for f in "${files[@]}"; do
  got="$(sha256sum "$src/$f" | cut -d' ' -f1)"
  if [[ "$got" != "${sha[$f]}" ]]; then
    echo "fashion-mnist: sha256 mismatch for $src/$f: expected ${sha[$f]}, got $got" >&2
    echo "  reinstall it: apt-get install --reinstall dataset-fashion-mnist" >&2
    exit 1
  fi
  if [[ ! -e "$dest/$f" ]] || [[ "$(readlink -f "$dest/$f")" != "$src/$f" ]]; then
    ln -sfn "$src/$f" "$dest/$f" 2>/dev/null || cp -f "$src/$f" "$dest/$f"
  fi
done
echo "fashion-mnist: verified, linked into $dest"
