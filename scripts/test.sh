#!/usr/bin/env bash
# Set-up (idempotent) + the whole test suite (doctest cases and MPI checks, registered with ctest).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
cd build
ctest -j "$(nproc)" --output-on-failure --timeout 600
