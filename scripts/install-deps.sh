#!/usr/bin/env bash
# Installs Shoal's build and run dependencies from Debian 12 packages (sudo when not root).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PKGS=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas0-pthread
  libzmq3-dev cppzmq-dev libcereal-dev libssl-dev zlib1g-dev libseccomp-dev
  libspdlog-dev nlohmann-json3-dev libcli11-dev libtomlplusplus-dev
  libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist
)
# Test-only tools: promtool lints /metrics, headless Chromium renders the dashboard, Debian's
# python3-torch loads exported models, clang's libFuzzer + sanitizers run the fuzz targets
# (llvm-14 for llvm-symbolizer), clang-format checks the formatting, matplotlib draws the benchmark plots, Docker runs the
# docker compose end-to-end test (tests/e2e; the test starts dockerd itself). Skipped with
# SHOAL_RUNTIME_ONLY=1.
if [ "${SHOAL_RUNTIME_ONLY:-0}" != "1" ]; then
  PKGS+=(prometheus chromium python3-torch python3-numpy python3-matplotlib
         clang-14 clang-format-14 libclang-rt-14-dev llvm-14
         docker.io docker-compose debootstrap)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
