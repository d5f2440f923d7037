#!/usr/bin/env bash
# Set-up (idempotent) + the whole test suite (doctest cases and MPI checks, registered with ctest).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
# The portable binary (CI builds it: FRUGAL_NATIVE unset) and the kernel path it picks on this CPU. ctest's
# kernels.every_dispatch_path then runs the kernel and compressor tests once per path (FRUGAL_ISA=scalar, avx2,
# avx512), skipping a path this CPU lacks with a message.
build/frugal --version
if [ "${FRUGAL_NATIVE:-OFF}" = OFF ] && ! build/frugal --version | grep -q "^build portable"; then
  echo "[test] build/frugal is not the portable build" >&2
  exit 1
fi
cd build
ctest -j "$(nproc)" --output-on-failure --timeout 600
