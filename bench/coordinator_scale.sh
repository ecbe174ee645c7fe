#!/bin/bash
# Coordinator scaling benchmark: shoal-coordinator driven by shoal-loadgen with 10, 100 and 1000
# synthetic workers (small model) and 10 workers on a 100M-parameter model; prints a table and
# writes JSON to --out DIR (default bench/results/). Everything is done by
# bench/coordinator_scale.py; this wrapper first builds the two binaries it needs when they are
# missing (only those targets: a full build compiles every LibTorch unit).
#
#   bench/coordinator_scale.sh [--quick] [--out DIR] [--bin-dir DIR] [--work-dir DIR] [--keep]
#                              [--workers 10,100,1000] [--rounds N] [--big-workers 10]
#                              [--big-rounds N] [--no-federated-eval] [--liveness] ...
#
#   --quick      10 and 100 workers, small model, 2 rounds (under a minute)
#   --bin-dir    where shoal-coordinator and shoal-loadgen are; default $SHOAL_BUILD_DIR/bin or
#                build/bin, built there with CMake + Ninja when missing
#   --liveness   also check that silent workers are dropped (200 workers, 50 vanish; ~2 min)
#   --help       every option (bench/coordinator_scale.py --help)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

bin_dir=""
prev=""
for a in "$@"; do
  case "$a" in
    --bin-dir=*) bin_dir="${a#--bin-dir=}" ;;
    --help|-h) exec /usr/bin/python3 "$REPO/bench/coordinator_scale.py" --help ;;
  esac
  [ "$prev" = "--bin-dir" ] && bin_dir="$a"
  prev="$a"
done

if [ -z "$bin_dir" ]; then
  build="${SHOAL_BUILD_DIR:-$REPO/build}"
  if [ ! -x "$build/bin/shoal-coordinator" ] || [ ! -x "$build/bin/shoal-loadgen" ] ||
     [ ! -x "$build/bin/shoalctl" ]; then
    echo "building shoal-coordinator and shoal-loadgen in $build" >&2
    if [ ! -f "$build/build.ninja" ]; then
      cmake -S "$REPO" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >&2
    fi
    ninja -C "$build" -j "$(nproc)" shoal-coordinator shoal-loadgen shoalctl >&2
  fi
  set -- --bin-dir "$build/bin" "$@"
fi
exec /usr/bin/python3 "$REPO/bench/coordinator_scale.py" "$@"
