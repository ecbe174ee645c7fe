#!/bin/bash
# Entrypoint of the Shoal image: one role per container, settings from SHOAL_* variables
# (docker-compose.yml lists them all with their defaults; docs/docker.md explains them).
#   setup        CA and worker credentials, a join token for worker-4, Fashion-MNIST silos
#                (idempotent: what exists is kept)
#   coordinator  shoal-coordinator (ZeroMQ on :5555, dashboard and API on :8080)
#   worker       shoal-worker on the silo mounted at /srv/shoal/data
#   healthcheck  the image's HEALTHCHECK: the coordinator's /api/status answers 200
#   dashboard-url  (in the coordinator) the dashboard's address with its token, to open once
#   anything else is run as a command (shoalctl ..., bash)
# A variable that is unset or empty leaves the binary's own default.
set -euo pipefail

ROLE=${1:-help}
[ $# -gt 0 ] && shift
ROOT=/srv/shoal
CA_DIR=$ROOT/ca
# The coordinator serves the dashboard and API on the container's port 8080, beyond loopback, so
# every request needs the bearer token that setup generates here (the dashboard page takes it
# from its URL fragment: role dashboard-url). Compose publishes the port on the host's 127.0.0.1.
HTTP_PORT=8080
HTTP_TOKEN_FILE=$ROOT/http/token
# The root CA (its key signs the coordinator's certificate, the enrollment CA and offline
# bundles): on its own volume, mounted by the setup service only, never by the coordinator.
ROOT_CA_DIR=$ROOT/ca-root

log() { echo "shoal-entrypoint[$ROLE]: $*" >&2; }
die() { log "error: $*"; exit 2; }
is_true() { case "${1:-}" in true | True | TRUE | 1 | yes | on) return 0 ;; *) return 1 ;; esac; }

# TLS 1.3 with the federation's CA, unless SHOAL_INSECURE is true (debugging only).
use_tls() { ! is_true "${SHOAL_INSECURE:-false}"; }

# add FLAG VAR: appends "FLAG value" to args when $VAR is set and not empty.
args=()
add() { local v=${!2:-}; if [ -n "$v" ]; then args+=("$1" "$v"); fi; }
# set_key KEY VAR: appends "--set KEY=value" when $VAR is set and not empty.
set_key() { local v=${!2:-}; if [ -n "$v" ]; then args+=(--set "$1=$v"); fi; }

role_setup() {
  local silos=${SHOAL_SILOS:-4}
  if use_tls; then
    # Workers find the coordinator by its compose service name, which its certificate carries
    # (and localhost/127.0.0.1, for a worker outside compose using the published port).
    if [ ! -s "$CA_DIR/ca.crt" ]; then
      log "creating the federation CA (root key on the ca-root volume only)"
      shoalctl ca init "$CA_DIR" --root "$ROOT_CA_DIR" --coordinator-address tcp://coordinator:5555 \
        --san DNS:coordinator --san DNS:localhost --san IP:127.0.0.1
    elif [ -e "$CA_DIR/ca.key" ] || [ ! -s "$CA_DIR/enrollment.crt" ]; then
      # A CA volume from before the enrollment CA: move its root key out and make one.
      log "moving the root CA key to the ca-root volume and creating the enrollment CA"
      shoalctl ca renew-enrollment "$CA_DIR" --root "$ROOT_CA_DIR"
    fi
    local n
    for n in 1 2 3; do
      if [ ! -s "$ROOT/bundles/worker-$n/worker.crt" ]; then
        shoalctl enroll "worker-$n" --ca "$CA_DIR" --root "$ROOT_CA_DIR" \
          --out "$ROOT/bundles/worker-$n"
      fi
    done
    # worker-4 enrolls itself with a one-time token; until it has, every setup run writes a
    # fresh one (the previous ones expire unused).
    if [ ! -s "$ROOT/bundles/worker-4/worker.crt" ]; then
      local tok=$ROOT/joins/worker-4/token extra=${SHOAL_EXTRA_NAME:-worker-4}
      (umask 077 && shoalctl token create --ca "$CA_DIR" --name "$extra" \
        --ttl "${SHOAL_JOIN_TTL:-24h}" > "$tok.tmp") && mv "$tok.tmp" "$tok"
      log "join token for $extra written (valid ${SHOAL_JOIN_TTL:-24h})"
    fi
  fi
  # The HTTP API's bearer token: 32 random bytes as hex, readable by the shoal user only, never
  # printed (docker compose logs would keep it).
  if [ ! -s "$HTTP_TOKEN_FILE" ]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$HTTP_TOKEN_FILE.tmp") &&
      mv "$HTTP_TOKEN_FILE.tmp" "$HTTP_TOKEN_FILE"
    log "HTTP token written to $HTTP_TOKEN_FILE (dashboard: docker compose exec coordinator shoal-entrypoint dashboard-url)"
  fi
  if [ -e "$ROOT/silos/silo-1/.partition" ]; then
    log "silos exist: $(cat "$ROOT/silos/silo-1/.partition")"
  else
    args=(--source "${SHOAL_SOURCE:-/usr/share/datasets/fashion-mnist}" --out "$ROOT/silos"
      --workers "$silos")
    add --scheme SHOAL_PARTITION
    add --alpha SHOAL_ALPHA
    add --seed SHOAL_PARTITION_SEED
    add --limit SHOAL_SOURCE_LIMIT
    shoalctl partition "${args[@]}"
    local i
    for i in $(seq 1 "$silos"); do
      [ -d "$ROOT/silos/silo-$i" ] && echo "${args[*]}" > "$ROOT/silos/silo-$i/.partition"
    done
  fi
  log "done"
}

role_coordinator() {
  echo coordinator > /tmp/shoal-role
  [ -s "$HTTP_TOKEN_FILE" ] || die "no HTTP token in $HTTP_TOKEN_FILE: run the setup service first"
  args=(--run-dir "$ROOT/run" --bind "tcp://0.0.0.0:5555"
    --set http.address=0.0.0.0 --set "http.port=$HTTP_PORT" --set "http.token_file=$HTTP_TOKEN_FILE")
  add --rounds SHOAL_ROUNDS
  add --model SHOAL_MODEL
  add --seed SHOAL_SEED
  add --min-workers SHOAL_MIN_WORKERS
  add --min-fit SHOAL_MIN_FIT
  add --fraction SHOAL_FRACTION
  add --round-timeout SHOAL_ROUND_TIMEOUT_S
  add --epochs SHOAL_EPOCHS
  add --batch-size SHOAL_BATCH_SIZE
  add --lr SHOAL_LR
  add --compression SHOAL_COMPRESSION
  add --eval-limit SHOAL_EVAL_LIMIT
  add --log-level SHOAL_LOG_LEVEL
  set_key run.deterministic SHOAL_DETERMINISTIC
  set_key selection.wait_timeout_s SHOAL_WAIT_TIMEOUT_S
  set_key selection.max_round_retries SHOAL_MAX_ROUND_RETRIES
  set_key selection.adaptive_deadline SHOAL_ADAPTIVE_DEADLINE
  set_key selection.deadline_slack SHOAL_DEADLINE_SLACK
  set_key network.heartbeat_ms SHOAL_HEARTBEAT_MS
  set_key network.peer_timeout_ms SHOAL_PEER_TIMEOUT_MS
  set_key eval.timeout_s SHOAL_EVAL_TIMEOUT_S
  set_key eval.federated SHOAL_FEDERATED_EVAL
  set_key http.linger_s SHOAL_HTTP_LINGER_S
  set_key runtime.threads SHOAL_THREADS
  if use_tls; then
    [ -s "$CA_DIR/coordinator.crt" ] || die "no CA in $CA_DIR: run the setup service first"
    args+=(--ca-dir "$CA_DIR")
  else
    args+=(--insecure)
  fi
  # SHOAL_COORDINATOR_ARGS: extra flags, split on spaces (e.g. --set model.path=/x/model.pt).
  # shellcheck disable=SC2086
  exec shoal-coordinator "${args[@]}" ${SHOAL_COORDINATOR_ARGS:-} "$@"
}

role_worker() {
  [ -n "${SHOAL_WORKER_NAME:-}" ] || die "SHOAL_WORKER_NAME is not set"
  local data=$ROOT/data
  if [ "${SHOAL_DATA_FORMAT:-idx}" = csv ]; then data=$ROOT/data/${SHOAL_DATA_FILE:-data.csv}; fi
  [ -e "$data" ] || die "no silo at $data (mount the silo's folder at $ROOT/data)"
  args=(--name "$SHOAL_WORKER_NAME" --data "$data")
  add --format SHOAL_DATA_FORMAT
  add --limit SHOAL_DATA_LIMIT
  add --threads SHOAL_THREADS
  add --log-level SHOAL_LOG_LEVEL
  set_key data.val_fraction SHOAL_VAL_FRACTION
  set_key data.label_column SHOAL_LABEL_COLUMN
  add --coordinator SHOAL_COORDINATOR
  # A TorchScript model from the coordinator runs only when its SHA-256 is pinned here
  # (SHOAL_TRUSTED_SCRIPT_SHA256: hex digests separated by spaces or commas).
  if [ -n "${SHOAL_TRUSTED_SCRIPT_SHA256:-}" ]; then
    local sha list=""
    for sha in ${SHOAL_TRUSTED_SCRIPT_SHA256//,/ }; do
      [[ $sha =~ ^[0-9a-f]{64}$ ]] || die "SHOAL_TRUSTED_SCRIPT_SHA256: '$sha' is not a SHA-256 (64 lowercase hex digits)"
      list+="${list:+,}\"$sha\""
    done
    args+=(--set "model.trusted_script_sha256=[$list]")
  fi
  if use_tls; then
    args+=(--bundle "$ROOT/creds")
    # A worker without a certificate yet enrolls with a one-time token: SHOAL_JOIN_TOKEN (the
    # token, or @FILE; shoal-worker reads the variable itself, so the token never appears on
    # its command line, which ps shows), else the file $ROOT/join/token.
    if [ ! -s "$ROOT/creds/worker.crt" ]; then
      if [ -n "${SHOAL_JOIN_TOKEN:-}" ]; then
        export SHOAL_JOIN_TOKEN
      elif [ -s "$ROOT/join/token" ]; then
        args+=(--join "@$ROOT/join/token")
      else
        die "no certificate in $ROOT/creds and no join token (SHOAL_JOIN_TOKEN or $ROOT/join/token)"
      fi
      log "enrolling with a join token"
    fi
  else
    [ -n "${SHOAL_COORDINATOR:-}" ] || args+=(--coordinator tcp://coordinator:5555)
    args+=(--insecure)
  fi
  # shellcheck disable=SC2086
  exec shoal-worker "${args[@]}" ${SHOAL_WORKER_ARGS:-} "$@"
}

role_healthcheck() {
  [ "$(cat /tmp/shoal-role 2>/dev/null)" = coordinator ] || exit 0
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout 4 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf "GET /api/status HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n\r\n" \
      "$(cat "$2")" >&3
    IFS= read -r status <&3
    case "$status" in "HTTP/1."?" 200"*) exit 0 ;; *) echo "status: $status"; exit 1 ;; esac' \
    _ "$HTTP_PORT" "$HTTP_TOKEN_FILE"
}

# The URL to open once in a browser: the token travels in the fragment (#...), which the browser
# never sends to the server; the page keeps it for the tab's session.
role_dashboard_url() {
  [ -s "$HTTP_TOKEN_FILE" ] || die "no HTTP token in $HTTP_TOKEN_FILE (run in the coordinator)"
  echo "${SHOAL_DASHBOARD_URL:-http://127.0.0.1:8080/}#token=$(cat "$HTTP_TOKEN_FILE")"
}

case "$ROLE" in
  setup) role_setup "$@" ;;
  coordinator) role_coordinator "$@" ;;
  worker) role_worker "$@" ;;
  healthcheck) role_healthcheck ;;
  dashboard-url) role_dashboard_url ;;
  help | --help | -h) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) exec "$ROLE" "$@" ;;
esac
