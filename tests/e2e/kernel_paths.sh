#!/usr/bin/env bash
# The hand-written SIMD kernels (approximate multipliers, gradient compressors, wire format) on every dispatch path:
# the kernel and compressor tests run once per path with FRUGAL_ISA forcing it (util/cpu_features.h). A path this
# CPU lacks is skipped with a message naming it, never silently.
#   bash tests/e2e/kernel_paths.sh build/frugal build/frugal_tests
set -uo pipefail
frugal=$1
tests=$2
fail=0
for isa in scalar avx2 avx512; do
  if ! msg=$(FRUGAL_ISA=$isa "$frugal" --version 2>&1); then
    echo "SKIP $isa: this CPU lacks it ($(echo "$msg" | tail -1))"
    continue
  fi
  echo "$msg" | grep -q "kernels $isa" || { echo "FAIL $isa: --version does not report it: $msg"; fail=1; continue; }
  if FRUGAL_ISA=$isa "$tests" --source-file='*tests/approx/*,*tests/gradcomp/*' > /tmp/kernel_paths_$isa.log 2>&1; then
    echo "PASS $isa: $(grep -E '^\[doctest\] test cases' /tmp/kernel_paths_$isa.log)"
  else
    echo "FAIL $isa:"; tail -30 /tmp/kernel_paths_$isa.log; fail=1
  fi
done
exit $fail
