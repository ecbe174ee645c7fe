#!/usr/bin/env bash
# Configures and builds Shoal into build/ (Release, Ninja). Extra args go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
ninja -C build -j "${SHOAL_BUILD_JOBS:-2}"
