#!/usr/bin/env bash
# Builds Shoal's libFuzzer targets (fuzz/, clang + ASan + UBSan) and runs each for a while.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [--build-dir DIR] [--target NAME]... [--write-seeds]
#
#   SECONDS_PER_TARGET  how long each target runs (default 300); targets run one after another,
#                       each in a single process (the machine is shared)
#   --build-dir DIR     where to build and keep the working corpora (default build-fuzz/)
#   --target NAME       run only this target (repeatable): frame_fuzz, secure_session_fuzz,
#                       weights_fuzz, stream_fuzz, predict_request_fuzz
#   --write-seeds       regenerate the committed seed corpora fuzz/corpus/<target>/ and exit
#
# Each target first re-runs the reproducers in fuzz/crashes/<target>/ (a fixed bug must stay
# fixed), then fuzzes starting from DIR/corpus/<target>/ (kept between runs, new inputs land
# there) and the seeds in fuzz/corpus/<target>/. Crash, leak, timeout and out-of-memory inputs
# are saved in DIR/artifacts/<target>/, the full log in DIR/logs/<target>.log.
#
# Exit status: 0 all clean; 1 a target crashed, leaked, hit UB, timed out or ran out of memory
# (or a reproducer still fails); 2 usage or build error; 77 clang or libFuzzer is not installed
# (ctest reports the fuzz_smoke test as skipped). Environment: SHOAL_FUZZ_CXX (compiler),
# SHOAL_BUILD_JOBS (default 2), SHOAL_FUZZ_RSS_MB (default 2048).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

SECONDS_PER_TARGET=300
BUILD_DIR="$ROOT/build-fuzz"
WRITE_SEEDS=0
ONLY=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD_DIR="${2:?--build-dir needs a directory}"; shift 2 ;;
    --build-dir=*) BUILD_DIR="${1#*=}"; shift ;;
    --target) ONLY+=("${2:?--target needs a name}"); shift 2 ;;
    --target=*) ONLY+=("${1#*=}"); shift ;;
    --write-seeds) WRITE_SEEDS=1; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *)
      if [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; then
        SECONDS_PER_TARGET="$1"; shift
      else
        echo "fuzz.sh: unknown argument '$1' (see --help)" >&2; exit 2
      fi ;;
  esac
done
mkdir -p "$BUILD_DIR" || exit 2
BUILD_DIR="$(cd "$BUILD_DIR" && pwd)"

ALL_TARGETS=(frame_fuzz secure_session_fuzz weights_fuzz stream_fuzz predict_request_fuzz http_guard_fuzz)
declare -A MAX_LEN=([frame_fuzz]=1048576 [secure_session_fuzz]=131072 [weights_fuzz]=262144 [stream_fuzz]=16384 [predict_request_fuzz]=65536 [http_guard_fuzz]=16384)
if [ ${#ONLY[@]} -gt 0 ]; then
  for t in "${ONLY[@]}"; do
    [ -n "${MAX_LEN[$t]:-}" ] || { echo "fuzz.sh: unknown target '$t'" >&2; exit 2; }
  done
  TARGETS=("${ONLY[@]}")
else
  TARGETS=("${ALL_TARGETS[@]}")
fi

# --- Toolchain: clang++ with the libFuzzer runtime, or skip (77). ------------------------------
CXX="${SHOAL_FUZZ_CXX:-}"
if [ -z "$CXX" ]; then
  for c in clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14; do
    if command -v "$c" >/dev/null 2>&1; then CXX="$(command -v "$c")"; break; fi
  done
fi
if [ -z "$CXX" ]; then
  echo "SKIP: clang++ not found; the fuzz targets need clang with libFuzzer" \
       "(Debian 12: apt-get install clang-14 libclang-rt-14-dev llvm-14)" >&2
  exit 77
fi
probe_dir="$(mktemp -d)"
trap 'rm -rf "$probe_dir"' EXIT
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' \
  > "$probe_dir/probe.cc"
if ! "$CXX" -fsanitize=fuzzer,address,undefined "$probe_dir/probe.cc" -o "$probe_dir/probe" \
     > "$probe_dir/log" 2>&1; then
  echo "SKIP: $CXX cannot link a libFuzzer target with ASan/UBSan" \
       "(Debian 12: apt-get install libclang-rt-14-dev):" >&2
  sed 's/^/  /' "$probe_dir/log" | head -5 >&2
  exit 77
fi
SYMBOLIZER=""
for s in llvm-symbolizer "$(dirname "$(readlink -f "$CXX")")/llvm-symbolizer" llvm-symbolizer-14; do
  if command -v "$s" >/dev/null 2>&1; then SYMBOLIZER="$(command -v "$s")"; break; fi
done

# --- Build. ------------------------------------------------------------------------------------
echo "== building the fuzz targets in $BUILD_DIR with $CXX"
if ! cmake -S "$ROOT/fuzz" -B "$BUILD_DIR" -G Ninja -DCMAKE_CXX_COMPILER="$CXX" \
     > "$BUILD_DIR/cmake.log" 2>&1; then
  cat "$BUILD_DIR/cmake.log" >&2; exit 2
fi
if ! ninja -C "$BUILD_DIR" -j "${SHOAL_BUILD_JOBS:-2}" > "$BUILD_DIR/build.log" 2>&1; then
  tail -50 "$BUILD_DIR/build.log" >&2; exit 2
fi

if [ "$WRITE_SEEDS" = 1 ]; then
  for t in "${ALL_TARGETS[@]}"; do rm -rf "${ROOT:?}/fuzz/corpus/$t"; done
  "$BUILD_DIR/fuzz_seed_gen" "$ROOT/fuzz/corpus" || exit 2
  du -sh "$ROOT/fuzz/corpus"
  exit 0
fi

# --- Run. --------------------------------------------------------------------------------------
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
[ -n "$SYMBOLIZER" ] && export ASAN_SYMBOLIZER_PATH="$SYMBOLIZER"
mkdir -p "$BUILD_DIR/logs"

failed=0
rows=()
for t in "${TARGETS[@]}"; do
  bin="$BUILD_DIR/$t"
  corpus="$BUILD_DIR/corpus/$t"
  artifacts="$BUILD_DIR/artifacts/$t"
  log="$BUILD_DIR/logs/$t.log"
  repro_log="$BUILD_DIR/logs/$t.reproducers.log"
  mkdir -p "$corpus" "$artifacts"
  dict=()
  [ -f "$ROOT/fuzz/dicts/$t.dict" ] && dict=(-dict="$ROOT/fuzz/dicts/$t.dict")
  : > "$log"

  # Reproducers of bugs found earlier: each must now run clean.
  regress="clean"
  shopt -s nullglob
  repros=("$ROOT/fuzz/crashes/$t"/*)
  shopt -u nullglob
  if [ ${#repros[@]} -gt 0 ]; then
    echo "== $t: re-running ${#repros[@]} reproducer(s) from fuzz/crashes/$t/"
    if ! "$bin" -rss_limit_mb="${SHOAL_FUZZ_RSS_MB:-2048}" -timeout=60 "${repros[@]}" \
         > "$repro_log" 2>&1; then
      regress="FAILS"
      failed=1
      echo "   a reproducer in fuzz/crashes/$t/ still fails (log: $repro_log):"
      grep -m3 -E "ERROR|runtime error|FUZZ CHECK|ALLOCATION CAP|Running:" "$repro_log" \
        | sed 's/^/   /'
    fi
  fi

  echo "== $t: fuzzing for ${SECONDS_PER_TARGET}s (log: $log)"
  before="$(ls "$artifacts" | wc -l)"
  "$bin" -max_total_time="$SECONDS_PER_TARGET" -max_len="${MAX_LEN[$t]}" \
    -rss_limit_mb="${SHOAL_FUZZ_RSS_MB:-2048}" -timeout=60 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "${dict[@]}" "$corpus" "$ROOT/fuzz/corpus/$t" >> "$log" 2>&1
  rc=$?
  after="$(ls "$artifacts" | wc -l)"
  crashes=$((after - before))
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi

  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  if [ -z "$execs" ]; then  # no final stats (crash): take the last status line
    execs="$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')"
    rate="$(grep -oE 'exec/s: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')"
  fi
  cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')"
  ft="$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')"
  corpus_files="$(ls "$corpus" | wc -l)"
  corpus_kb="$(find "$corpus" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d", (s + 1023) / 1024}')"
  result="ok"
  if [ "$crashes" -gt 0 ]; then
    result="CRASH"
    failed=1
    echo "   $t failed (exit $rc); new artifacts in $artifacts/:"
    ls -t "$artifacts" | head -"$crashes" | sed 's/^/     /'
    grep -m4 -E "^==[0-9]+==ERROR|runtime error|FUZZ CHECK FAILED|ALLOCATION CAP|SUMMARY" "$log" \
      | sed 's/^/   /'
  fi
  [ "$regress" = "FAILS" ] && result="$result, reproducer fails"
  rows+=("$(printf '%-20s %7s %12s %8s %7s %8s %16s %8s  %s' "$t" "${SECONDS_PER_TARGET}s" \
    "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corpus_files} (${corpus_kb} KiB)" \
    "$crashes" "$result")")
done

echo
printf '%-20s %7s %12s %8s %7s %8s %16s %8s  %s\n' target time executions exec/s cov ft corpus \
  crashes result
for r in "${rows[@]}"; do echo "$r"; done
echo "(cov/ft: libFuzzer coverage edges/features; corpus: $BUILD_DIR/corpus/<target>)"
exit "$failed"
