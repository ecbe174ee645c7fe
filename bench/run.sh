#!/usr/bin/env bash
# Shoal benchmark suite (issue #7): one command, prints the tables and writes results.json,
# summary.md (markdown tables for the README) and PNG plots into a results folder.
#
#   bench/run.sh [--quick] [--out DIR] [--build-dir DIR] [--no-build] [--secure|--insecure]
#                [--sections micro,round_overhead,coordinator_scale,time_to_accuracy,bytes_on_wire,
#                            strategies]
#                [--tta-rounds N] [--no-early-stop] [--keep-work] [--check] [--publish]
#
#   --quick       small settings (3 workers, 1,000-2,000 samples per silo, MLP/CNN, 2-3 rounds,
#                 no 100 MB cases): 1.5-3.5 minutes on 2 cores; CI runs it (ctest -L bench).
#                 Section 6 (strategies): every strategy preset on Dirichlet(0.1) and (0.5)
#                 silos; full: CNN, 10 workers, 30 rounds each (12 runs, hours on 2 cores);
#                 quick: Dirichlet(0.1) only, logreg, 3 workers, 2 rounds (~2 minutes).
#   --out DIR     results folder (default bench/results/<timestamp>; bench/results/latest
#                 then points at it). An existing DIR is reused only if an earlier run made it.
#   --build-dir   build tree with bin/ (default build/). Built with ninja unless --no-build:
#                 an existing tree builds only the binaries the suite runs; build/ without a tree goes
#                 through scripts/build.sh.
#   --secure / --insecure
#                 default: TLS with a throwaway CA and per-worker enrollment bundles whenever
#                 the binaries have the channel wired in, plain ZeroMQ otherwise.
#   --tta-rounds  cap of the time-to-accuracy runs (default 15); they stop once 88% is reached
#                 (--stop-at ACC, e.g. 0.90) unless --no-early-stop.
#   --overhead-rounds N, --no-10w
#                 section 2 alone: rounds of the 3-worker CNN run (default 5), and without the
#                 10-worker run (which is section 4's IID run), e.g.
#                 bench/run.sh --sections round_overhead --no-10w --overhead-rounds 2
#   --keep-work   keep silos and model versions under DIR/work (large).
#   --check       validate the results folder at the end (bench/check_results.py).
#   --publish     a full run only: copy its summary and raw numbers to docs/bench/ as a dated
#                 pair (docs/bench/YYYY-MM-DD-HHMM.md and .json) and its plots over
#                 docs/bench/*.png, for a commit of its own. The README's short table is
#                 updated by hand only when a headline figure moves.
# Needs /usr/bin/python3 and, for the plots, python3-matplotlib (Debian).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0
OUT=""
BUILD_DIR="$REPO/build"
BUILD=1
SECURITY=auto
CHECK=0
PUBLISH=0
PASS=()
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT=$2; shift ;;
    --out=*) OUT=${1#*=} ;;
    --build-dir) BUILD_DIR=$2; shift ;;
    --build-dir=*) BUILD_DIR=${1#*=} ;;
    --no-build) BUILD=0 ;;
    --secure) SECURITY=tls ;;
    --insecure) SECURITY=plain ;;
    --sections|--tta-rounds|--overhead-rounds|--stop-at) PASS+=("$1" "$2"); shift ;;
    --sections=*|--tta-rounds=*|--overhead-rounds=*|--stop-at=*|--no-early-stop|--no-10w|--keep-work) PASS+=("$1") ;;
    --check) CHECK=1 ;;
    --publish) PUBLISH=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench/run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
BUILD_DIR=$(mkdir -p "$BUILD_DIR" && cd "$BUILD_DIR" && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || { echo "bench/run.sh: $PY missing (apt-get install python3)" >&2; exit 2; }
"$PY" -c 'import matplotlib' 2>/dev/null ||
  echo "bench/run.sh: python3-matplotlib missing: tables only, no plots (apt-get install python3-matplotlib)" >&2
[ -d /usr/share/datasets/fashion-mnist ] ||
  { echo "bench/run.sh: Fashion-MNIST missing (apt-get install dataset-fashion-mnist)" >&2; exit 2; }

TARGETS=(shoal-coordinator shoal-worker shoalctl core_bench secure_channel_bench)
# shoal-loadgen (section 3, bench/coordinator_scale.*) when the tree defines it.
optional_targets() {
  if ninja -C "$BUILD_DIR" -t targets all 2>/dev/null | grep '^shoal-loadgen:' >/dev/null; then
    echo shoal-loadgen
  fi
}
if [ "$BUILD" = 1 ]; then
  if [ -f "$BUILD_DIR/build.ninja" ]; then
    ninja -C "$BUILD_DIR" -j "${SHOAL_BUILD_JOBS:-2}" "${TARGETS[@]}" $(optional_targets)
  elif [ "$BUILD_DIR" = "$REPO/build" ]; then
    "$REPO/scripts/build.sh" -DSHOAL_BUILD_BENCH=ON
  else
    cmake -S "$REPO" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHOAL_BUILD_BENCH=ON >/dev/null
    ninja -C "$BUILD_DIR" -j "${SHOAL_BUILD_JOBS:-2}" "${TARGETS[@]}" $(optional_targets)
  fi
fi
for t in "${TARGETS[@]}"; do
  [ -x "$BUILD_DIR/bin/$t" ] || { echo "bench/run.sh: $BUILD_DIR/bin/$t missing (build with -DSHOAL_BUILD_BENCH=ON)" >&2; exit 2; }
done

LINK=0
if [ -z "$OUT" ]; then
  OUT="$REPO/bench/results/$(date +%Y%m%d-%H%M%S)$([ "$QUICK" = 1 ] && echo -quick)"
  LINK=1
fi
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  if [ ! -f "$OUT/.shoal-bench" ]; then
    echo "bench/run.sh: $OUT exists and was not made by bench/run.sh; refusing to overwrite" >&2
    exit 2
  fi
  rm -rf "$OUT"
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
touch "$OUT/.shoal-bench"
if [ "$LINK" = 1 ]; then ln -sfn "$(basename "$OUT")" "$REPO/bench/results/latest"; fi

ARGS=(--build-dir "$BUILD_DIR" --out "$OUT" --repo "$REPO" --security "$SECURITY")
[ "$QUICK" = 1 ] && ARGS+=(--quick)
# In the background so that a TERM/INT to this script reaches the suite, which then stops the
# federation it is running (coordinator and workers) before exiting.
"$PY" "$REPO/bench/suite.py" "${ARGS[@]}" "${PASS[@]}" &
SUITE=$!
INTERRUPTED=0
trap 'INTERRUPTED=1; kill -TERM "$SUITE" 2>/dev/null || true' TERM INT
status=0
wait "$SUITE" || status=$?
if [ "$INTERRUPTED" = 1 ]; then
  wait "$SUITE" 2>/dev/null || true
  echo "bench/run.sh: interrupted" >&2
  exit 130
fi
trap - TERM INT
if [ -f "$OUT/results.json" ]; then
  echo
  "$PY" "$REPO/bench/report.py" "$OUT" || status=1
  echo
  echo "results: $OUT/results.json, $OUT/summary.md, plots $OUT/*.png"
fi
if [ "$CHECK" = 1 ]; then
  "$PY" "$REPO/bench/check_results.py" "$OUT" || status=1
fi
if [ "$PUBLISH" = 1 ]; then
  if [ "$QUICK" = 1 ] || [ "$status" != 0 ] || [ ! -f "$OUT/summary.md" ]; then
    echo "bench/run.sh: --publish takes a complete full run; nothing copied to docs/bench" >&2
    status=1
  else
    STAMP=$(date -u +%Y-%m-%d-%H%M)
    cp "$OUT/summary.md" "$REPO/docs/bench/$STAMP.md"
    cp "$OUT/results.json" "$REPO/docs/bench/$STAMP.json"
    cp "$OUT"/*.png "$REPO/docs/bench/" 2>/dev/null || true
    echo "published: docs/bench/$STAMP.md (add a line for it to docs/bench/README.md)"
  fi
fi
exit $status
