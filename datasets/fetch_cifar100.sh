#!/usr/bin/env bash
# Fetch CIFAR-100 (binary version: train.bin, test.bin, *_label_names.txt) into DEST
# (default: <repo>/datasets/data/cifar-100-binary) from the official site. Needs internet.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:-$here/data/cifar-100-binary}"
url=https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz

if [[ -f "$dest/train.bin" && $(stat -Lc %s "$dest/train.bin") == 153700000 &&
      -f "$dest/test.bin" && $(stat -Lc %s "$dest/test.bin") == 30740000 ]]; then
  echo "cifar100: already present in $dest"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "cifar100: downloading $url"
if ! curl -fsSL --connect-timeout 5 --max-time 900 -o "$tmp/c100.tar.gz" "$url"; then
  echo "cifar100: FAILED: this needs internet access to $url (no local copy is known)." >&2
  echo "  Download cifar-100-binary.tar.gz elsewhere, untar it so that $dest/train.bin exists," >&2
  echo "  or set FRUGAL_DATA to a directory containing cifar-100-binary/." >&2
  exit 1
fi
# The official page gives only an MD5 for this tarball.
got="$(md5sum "$tmp/c100.tar.gz" | cut -d' ' -f1)"
if [[ "$got" != 03b5dce01913d631647c71ecec9e9cb8 ]]; then
  echo "cifar100: FAILED: tarball md5 $got, expected 03b5dce01913d631647c71ecec9e9cb8" >&2
  exit 1
fi
tar xzf "$tmp/c100.tar.gz" -C "$tmp"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$tmp/cifar-100-binary" "$dest"
echo "cifar100: verified and written to $dest"
