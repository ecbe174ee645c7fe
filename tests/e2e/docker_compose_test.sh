#!/usr/bin/env bash
# End-to-end test of the container deployment (ctest label e2e).
#   1. starts dockerd when none is running (and stops it at the end);
#   2. builds the image (scripts/docker-build.sh: local base image, BuildKit, nothing pulled);
#   3. `up` the docker-compose.yml federation with a short configuration (the CNN on 12,000
#      of the 60,000 images, 3,000 per silo, 10 rounds; the compose defaults are the full run);
#   4. once ROUNDS_BEFORE_JOIN rounds are committed, checks through the HTTP API (/api/rounds,
#      /api/workers) that accuracy rose and that worker-1..3 took part in every round;
#   5. starts worker-4 (profile extra, join token) and checks that it joined and contributed
#      to a later round; waits for the end of the run and checks that accuracy rose above
#      MIN_ACCURACY, that worker-1..3 took part in every round, that the coordinator is
#      healthy and still serves the dashboard, and that every worker exited cleanly;
#   6. `down -v`, removing containers, network and volumes.
# Every wait is bounded; on failure the containers' logs are printed. Exits 77 (ctest's
# SKIP_RETURN_CODE) when docker cannot run here: not root, no dockerd, no compose.
# Knobs: SHOAL_E2E_ROUNDS, SHOAL_E2E_MODEL, SHOAL_E2E_SAMPLES (partitioned into 4 silos),
# SHOAL_E2E_MIN_ACCURACY, SHOAL_E2E_KEEP=1 (leave the federation up), DOCKER, COMPOSE.
set -euo pipefail

SRC=${SHOAL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
WORK=${SHOAL_E2E_WORK_DIR:-/tmp/shoal-e2e}
PROJECT=${SHOAL_E2E_PROJECT:-shoal-e2e}
ROUNDS=${SHOAL_E2E_ROUNDS:-10}
ROUNDS_BEFORE_JOIN=${SHOAL_E2E_ROUNDS_BEFORE_JOIN:-2}
MODEL=${SHOAL_E2E_MODEL:-cnn}
SAMPLES=${SHOAL_E2E_SAMPLES:-12000}
MIN_ACCURACY=${SHOAL_E2E_MIN_ACCURACY:-0.75}
BUILD_TIMEOUT_S=${SHOAL_E2E_BUILD_TIMEOUT_S:-1800}
BINARIES=${SHOAL_E2E_BINARIES:-prebuilt}
T0=$(date +%s)
step() { echo "[e2e +$(( $(date +%s) - T0 ))s] $*"; }
skip() { echo "SKIP: $*"; exit 77; }

mkdir -p "$WORK"
# shellcheck source=../../docker/lib.sh
. "$SRC/docker/lib.sh"
command -v python3 >/dev/null || skip "python3 is needed to check the HTTP API"
shoal_pick_docker || skip "no docker CLI (apt-get install docker.io docker-compose debootstrap)"
shoal_pick_compose || skip "neither 'docker compose' nor 'docker-compose' (apt-get install docker-compose)"
export DOCKER

DOCKERD_PID=""
COMPOSE_UP=0
if ! $DOCKER info >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || skip "not root and no docker daemon reachable: cannot start dockerd"
  command -v dockerd >/dev/null || skip "no dockerd binary (apt-get install docker.io)"
  step "starting dockerd (log: $WORK/dockerd.log)"
  dockerd > "$WORK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 1 60); do
    $DOCKER info >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 1
  done
  if ! $DOCKER info >/dev/null 2>&1; then
    echo "FAIL: dockerd did not come up:"; tail -30 "$WORK/dockerd.log"
    kill "$DOCKERD_PID" 2>/dev/null || true
    exit 1
  fi
fi
if ! $DOCKER image inspect "${SHOAL_BASE_IMAGE:-debian:bookworm-slim}" >/dev/null 2>&1; then
  { [ "$(id -u)" -eq 0 ] && command -v debootstrap >/dev/null; } ||
    skip "no base image debian:bookworm-slim and cannot make it (needs root and debootstrap)"
fi

if [ "$BINARIES" = prebuilt ]; then
  for b in shoal-coordinator shoal-evaluator shoal-worker shoalctl shoal-export shoal-serve; do
    [ -x "${SHOAL_BIN_DIR:-}/$b" ] || { echo "FAIL: no $b in SHOAL_BIN_DIR='${SHOAL_BIN_DIR:-}' (or set SHOAL_E2E_BINARIES=source)"; exit 1; }
  done
fi
export SHOAL_IMAGE=${SHOAL_E2E_IMAGE:-shoal:e2e}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# The short run. Everything else keeps the compose file's defaults.
export SHOAL_ROUNDS=$ROUNDS SHOAL_MODEL=$MODEL SHOAL_SOURCE_LIMIT=$SAMPLES SHOAL_EVAL_LIMIT=2000
export SHOAL_SILOS=4 SHOAL_MIN_WORKERS=3 SHOAL_MIN_FIT=3 SHOAL_ROUND_TIMEOUT_S=120
export SHOAL_HTTP_PORT=${SHOAL_E2E_HTTP_PORT:-$(free_port)} SHOAL_ZMQ_PORT=${SHOAL_E2E_ZMQ_PORT:-$(free_port)}
URL=http://127.0.0.1:$SHOAL_HTTP_PORT
# shellcheck disable=SC2206
compose=($COMPOSE -p "$PROJECT" -f "$SRC/docker-compose.yml" --profile extra)
CHECK=(python3 "$SRC/tests/e2e/federation_check.py" "$URL")

cleanup() {
  local rc=$?
  set +e
  if [ "$COMPOSE_UP" = 1 ]; then
    if [ "$rc" -ne 0 ]; then
      echo "---- containers"; "${compose[@]}" ps -a
      echo "---- logs"; "${compose[@]}" logs --no-color --tail=150
    fi
    if [ "${SHOAL_E2E_KEEP:-0}" = 1 ]; then
      step "SHOAL_E2E_KEEP=1: federation left up ($URL); stop it with: ${compose[*]} down -v"
    else
      step "down -v"
      "${compose[@]}" down -v --remove-orphans --timeout 20 > "$WORK/down.log" 2>&1 ||
        cat "$WORK/down.log"
    fi
  fi
  if [ -n "$DOCKERD_PID" ] && [ "${SHOAL_E2E_KEEP:-0}" != 1 ]; then
    step "stopping the dockerd this test started (pid $DOCKERD_PID)"
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 1 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    kill -9 "$DOCKERD_PID" 2>/dev/null
  fi
  step "exit $rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "clients: DOCKER=$DOCKER COMPOSE='$COMPOSE' ($($COMPOSE version 2>/dev/null | head -1))"
# A federation left over by an interrupted run of this test would hold the volumes.
"${compose[@]}" down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true

# The image: by default its binaries are the ones this build tree compiled (SHOAL_BIN_DIR, set
# by ctest), copied into a small build context with the Dockerfile and docker/, built with
# BINARIES=prebuilt: the same runtime stage, and CI does not compile the project a second time.
# SHOAL_E2E_BINARIES=source builds them in the Dockerfile's builder stage instead.
build_args=()
if [ "$BINARIES" = prebuilt ]; then
  ctx=$WORK/context
  rm -rf "$ctx" && mkdir -p "$ctx/prebuilt"
  cp "$SRC/Dockerfile" "$ctx/" && cp -r "$SRC/docker" "$ctx/docker"
  for b in shoal-coordinator shoal-evaluator shoal-worker shoalctl shoal-export shoal-serve; do
    cp "$SHOAL_BIN_DIR/$b" "$ctx/prebuilt/$b"
    strip "$ctx/prebuilt/$b" 2>/dev/null || true
  done
  export SHOAL_BUILD_CONTEXT=$ctx
  build_args=(--build-arg BINARIES=prebuilt)
fi
step "building $SHOAL_IMAGE, binaries: $BINARIES (log: $WORK/build.log)"
b0=$(date +%s)
if ! timeout "$BUILD_TIMEOUT_S" "$SRC/scripts/docker-build.sh" "${build_args[@]}" > "$WORK/build.log" 2>&1; then
  echo "FAIL: image build failed or exceeded ${BUILD_TIMEOUT_S}s:"; tail -60 "$WORK/build.log"; exit 1
fi
step "image built in $(( $(date +%s) - b0 )) s: $(tail -1 "$WORK/build.log")"

step "up: $ROUNDS rounds of $MODEL on $SAMPLES samples in 4 silos, dashboard $URL"
COMPOSE_UP=1
u0=$(date +%s)
"${compose[@]}" up -d --no-build setup coordinator worker-1 worker-2 worker-3

# The API needs the token setup generated (the coordinator serves beyond loopback in its
# container); without it, 401.
step "reading the HTTP token from the coordinator container"
SHOAL_HTTP_TOKEN=
for _ in $(seq 1 300); do
  SHOAL_HTTP_TOKEN=$("${compose[@]}" exec -T coordinator cat /srv/shoal/http/token 2>/dev/null) && break
  sleep 1
done
[ -n "$SHOAL_HTTP_TOKEN" ] || { echo "FAIL: no HTTP token in the coordinator container"; exit 1; }
export SHOAL_HTTP_TOKEN
anonymous=$(python3 -c '
import sys, time, urllib.error, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(sys.argv[1] + "/api/status", timeout=10)
        print("200"); break
    except urllib.error.HTTPError as e:
        print(e.code); break
    except OSError:
        time.sleep(1)' "$URL")
[ "$anonymous" = 401 ] || { echo "FAIL: /api/status without the token answered '$anonymous', not 401"; exit 1; }
dashboard_url=$("${compose[@]}" exec -T coordinator shoal-entrypoint dashboard-url)
case "$dashboard_url" in
  "http://127.0.0.1:$SHOAL_HTTP_PORT/#token=$SHOAL_HTTP_TOKEN") ;;
  *) echo "FAIL: dashboard-url printed an unexpected URL"; exit 1 ;;
esac

step "waiting for $ROUNDS_BEFORE_JOIN committed rounds"
"${CHECK[@]}" wait-rounds "$ROUNDS_BEFORE_JOIN" 300
"${CHECK[@]}" expect 0.5 worker-1,worker-2,worker-3

joined_after=$(python3 -c 'import json,sys,os,urllib.request; r=urllib.request.Request(sys.argv[1]+"/api/rounds", headers={"Authorization": "Bearer "+os.environ["SHOAL_HTTP_TOKEN"]}); print(len(json.load(urllib.request.urlopen(r))))' "$URL")
step "starting worker-4 (profile extra, join token) after round $joined_after"
"${compose[@]}" up -d --no-build worker-4
"${CHECK[@]}" wait-contribution worker-4 "$joined_after" 300

step "waiting for the end of the run"
"${CHECK[@]}" wait-finished 600
"${CHECK[@]}" expect "$MIN_ACCURACY" worker-1,worker-2,worker-3 --rose
run_s=$(( $(date +%s) - u0 ))

# The containers: coordinator healthy (HEALTHCHECK on /api/status) and still serving; the
# workers finished cleanly when the run ended.
cid=$("${compose[@]}" ps -q coordinator)
health=$($DOCKER inspect -f '{{.State.Health.Status}}' "$cid")
[ "$health" = healthy ] || { echo "FAIL: coordinator health is '$health'"; exit 1; }
for w in worker-1 worker-2 worker-3 worker-4; do
  wid=$("${compose[@]}" ps -q "$w")
  for _ in $(seq 1 30); do
    [ "$($DOCKER inspect -f '{{.State.Running}}' "$wid")" = false ] && break
    sleep 1
  done
  code=$($DOCKER inspect -f '{{.State.Running}} {{.State.ExitCode}}' "$wid")
  [ "$code" = "false 0" ] || { echo "FAIL: $w did not finish cleanly (running, exit code: $code)"; exit 1; }
done
rounds_json=$(python3 -c 'import json,sys,os,urllib.request; r=urllib.request.Request(sys.argv[1]+"/api/rounds", headers={"Authorization": "Bearer "+os.environ["SHOAL_HTTP_TOKEN"]}); print(urllib.request.urlopen(r).read().decode())' "$URL")
per_round=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); s=sorted(sum(x["phases_s"].values()) for x in r); print("%.1f" % s[len(s)//2])' "$rounds_json")
step "federation ran $run_s s from up to the end of round $ROUNDS (median round $per_round s); coordinator $health"
step "passed"
