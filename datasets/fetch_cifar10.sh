#!/usr/bin/env bash
# Fetch CIFAR-10 (binary version) into DEST (default: <repo>/datasets/data/cifar-10-batches-bin).
# Order: already present -> nothing; a copy in $FRUGAL_DATA/cifar-10-batches-bin or in
# <repo>/../shared/datasets/cifar-10-batches-bin -> symlink DEST to it; else download the official
# tarball (SHA-256 checked). The ../shared copy was rebuilt from JPEG images, so its file hashes
# differ from the official ones: they are printed (and written to DEST/../cifar10.sha256), not checked.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || dirname "$here")"
dest="${1:-$here/data/cifar-10-batches-bin}"
tar_sha=c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd
url=https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
files=(data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin)

complete() {
  local f
  for f in "${files[@]}"; do [[ -f "$1/$f" && $(stat -Lc %s "$1/$f") == 30730000 ]] || return 1; done
}

if complete "$dest"; then
  echo "cifar10: already present in $dest"
  exit 0
fi

candidates=()
IFS=':' read -r -a roots <<< "${FRUGAL_DATA:-}"
for r in "${roots[@]}"; do [[ -n "$r" ]] && candidates+=("$r/cifar-10-batches-bin"); done
candidates+=("$repo/../shared/datasets/cifar-10-batches-bin")
for c in "${candidates[@]}"; do
  if complete "$c"; then
    c="$(cd "$c" && pwd)"
    [[ "$c" == "$(cd "$(dirname "$dest")" 2>/dev/null && pwd)/$(basename "$dest")" ]] && { echo "cifar10: present in $c"; exit 0; }
    mkdir -p "$(dirname "$dest")"
    rm -rf "$dest"
    ln -s "$c" "$dest"
    echo "cifar10: linked $dest -> $c"
    echo "cifar10: file hashes (not the official ones if this copy was rebuilt from JPEG):"
    (cd "$c" && sha256sum "${files[@]}") | tee "$(dirname "$dest")/cifar10.sha256"
    exit 0
  fi
done

echo "cifar10: no local copy; downloading $url"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! curl -fsSL --connect-timeout 5 --max-time 600 -o "$tmp/c10.tar.gz" "$url"; then
  echo "cifar10: FAILED: download needs internet. Looked for a local copy in:" >&2
  printf '  %s\n' "${candidates[@]}" >&2
  echo "  Put the official cifar-10-batches-bin/ there or in $dest, or set FRUGAL_DATA." >&2
  exit 1
fi
got="$(sha256sum "$tmp/c10.tar.gz" | cut -d' ' -f1)"
if [[ "$got" != "$tar_sha" ]]; then
  echo "cifar10: FAILED: tarball sha256 $got, expected $tar_sha (partial or altered download)" >&2
  exit 1
fi
tar xzf "$tmp/c10.tar.gz" -C "$tmp"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$tmp/cifar-10-batches-bin" "$dest"
echo "cifar10: verified and written to $dest"
