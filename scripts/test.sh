#!/usr/bin/env bash
# Installs what is missing, builds Shoal with its tests, and runs the whole suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh -DSHOAL_BUILD_TESTS=ON
cd build
ctest --output-on-failure --timeout 900 -j "${SHOAL_TEST_JOBS:-2}" "$@"
