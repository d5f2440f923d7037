#!/usr/bin/env bash
# experiments/run.sh writes results/ only from committed sources built into the binary that runs them: in a scratch
# git repository holding run.sh and common.sh, and a stand-in binary that reports a chosen build commit, it must
# refuse a dirty tree (naming the file), a binary from another commit and a binary built dirty, and with
# FRUGAL_ALLOW_DIRTY=1 run anyway and mark the result dirty.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
repo=$(mktemp -d)
trap 'rm -rf "$repo"' EXIT
cd "$repo"
git init -q .
mkdir experiments build
cp "$src/experiments/run.sh" "$src/experiments/common.sh" experiments/
echo '{"epochs": 1}' > experiments/tiny.json
# the stand-in binary: `--version` prints what the real one prints; `train ... --out DIR` writes DIR/results.json
cat > build/frugal <<'SH'
#!/usr/bin/env bash
if [ "$1" = --version ]; then echo "frugal 0.1.0 commit $(cat "$(dirname "$0")/commit") dirty $(cat "$(dirname "$0")/dirty")"; exit 0; fi
while [ $# -gt 0 ]; do [ "$1" = --out ] && { mkdir -p "$2"; echo '{"kind": "train"}' > "$2/results.json"; }; shift; done
SH
chmod +x build/frugal
git add experiments
git -c user.name=t -c user.email=t@example.com commit -qm init
built_from() { git rev-parse HEAD > build/commit; echo "$1" > build/dirty; }
fail() { echo "FAIL: $*" >&2; exit 1; }
export FRUGAL_DATA=/nonexistent

built_from false
bash experiments/run.sh g tiny 2> err || fail "clean tree and binary refused: $(cat err)"
python3 -c 'import json,sys; r=json.load(open("results/g/tiny.json")); sys.exit("provenance" in r)' ||
  fail "a clean run was marked"

echo '{"epochs": 2}' > experiments/tiny.json  # a tracked file changes
if bash experiments/run.sh g tiny 2> err; then fail "dirty tree accepted"; fi
grep -q "experiments/tiny.json" err || fail "the error does not name the dirty file: $(cat err)"
grep -q FRUGAL_ALLOW_DIRTY err || fail "the error does not name the override"
FRUGAL_ALLOW_DIRTY=1 bash experiments/run.sh g tiny 2> err || fail "FRUGAL_ALLOW_DIRTY=1 refused: $(cat err)"
python3 - <<'PY' || fail "FRUGAL_ALLOW_DIRTY=1 did not mark the result dirty"
import json, sys
p = json.load(open("results/g/tiny.json"))["provenance"]
sys.exit(not (p["dirty"] is True and any("experiments/tiny.json" in x for x in p["problems"])))
PY
git checkout -q experiments/tiny.json

echo 0000000000000000000000000000000000000000 > build/commit  # a binary built from another commit
if bash experiments/run.sh g tiny 2> err; then fail "binary from another commit accepted"; fi
grep -q "built from commit 0000000000000000000000000000000000000000 but HEAD is" err || fail "unclear error: $(cat err)"

built_from true  # a binary built from a tree with uncommitted changes, the tree clean again
if bash experiments/run.sh g tiny 2> err; then fail "binary built dirty accepted"; fi
grep -q "uncommitted changes" err || fail "unclear error: $(cat err)"
echo "experiments provenance: ok"
