#!/usr/bin/env bash
# The main job: a real federated training of Fashion-MNIST on this machine.
# Installs what is missing, builds, splits the training set into IID silos, starts one
# coordinator and N workers (separate processes over ZeroMQ on 127.0.0.1) and prints the
# global test accuracy round by round. Secure like a real deployment: it creates the
# federation's CA, enrolls workers 1..N-1 with offline bundles and lets the last one enroll
# itself with a one-time join token; every message travels over mutually authenticated TLS 1.3. Knobs (environment): WORKERS=3 ROUNDS=5 MODEL=cnn
# SCHEME=iid ALPHA=0.5 RUN_DIR=runs/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${WORKERS:-3}
ROUNDS=${ROUNDS:-5}
MODEL=${MODEL:-cnn}
SCHEME=${SCHEME:-iid}
ALPHA=${ALPHA:-0.5}
RUN_DIR=${RUN_DIR:-runs/demo}
DATA=/usr/share/datasets/fashion-mnist

SHOAL_RUNTIME_ONLY=1 scripts/install-deps.sh
scripts/build.sh
BIN=build/bin

rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR/logs"
echo "== partitioning Fashion-MNIST ($SCHEME) into $WORKERS silos"
"$BIN/shoalctl" partition --source "$DATA" --workers "$WORKERS" --scheme "$SCHEME" \
  --alpha "$ALPHA" --seed 7 --out "$RUN_DIR/silos"

echo "== federation CA and credentials in $RUN_DIR/ca, root CA in $RUN_DIR/ca-root (TLS 1.3, mutual authentication)"
"$BIN/shoalctl" ca init "$RUN_DIR/ca" > /dev/null
creds=()
for i in $(seq 1 "$WORKERS"); do
  if [ "$i" -lt "$WORKERS" ] || [ "$WORKERS" -eq 1 ]; then
    "$BIN/shoalctl" enroll "silo-$i" --ca "$RUN_DIR/ca" --out "$RUN_DIR/credentials/silo-$i" > /dev/null
    creds+=("--bundle $RUN_DIR/credentials/silo-$i")
  else
    # The token goes to a file only we can read (--join @FILE): on the command line, ps would
    # show it to every local user.
    (umask 077 && "$BIN/shoalctl" token create --name "silo-$i" --ca "$RUN_DIR/ca" --ttl 1h \
      | grep -o 'shoal1\.[^ ]*' | head -1 > "$RUN_DIR/silo-$i.token")
    creds+=("--bundle $RUN_DIR/credentials/silo-$i --join @$RUN_DIR/silo-$i.token")
  fi
done

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

echo "== coordinator: model=$MODEL rounds=$ROUNDS workers=$WORKERS (logs in $RUN_DIR/logs)"
"$BIN/shoal-coordinator" --config configs/coordinator.toml --run-dir "$RUN_DIR/run" \
  --rounds "$ROUNDS" --model "$MODEL" --min-workers "$WORKERS" --min-fit 1 \
  --bind 'tcp://127.0.0.1:*' --endpoint-file "$RUN_DIR/endpoint" --ca-dir "$RUN_DIR/ca" \
  --set http.port="${HTTP_PORT:-0}" --set http.port_file="$RUN_DIR/http_port" \
  2> "$RUN_DIR/logs/coordinator.log" &
coord=$!
for _ in $(seq 1 600); do [ -s "$RUN_DIR/endpoint" ] && break; kill -0 $coord 2>/dev/null || break; sleep 0.1; done
if [ ! -s "$RUN_DIR/endpoint" ]; then
  echo "coordinator did not start:"; tail -20 "$RUN_DIR/logs/coordinator.log"; exit 1
fi
endpoint=$(cat "$RUN_DIR/endpoint")
for i in $(seq 1 "$WORKERS"); do
  # shellcheck disable=SC2086  # the credential flags are word-split on purpose
  "$BIN/shoal-worker" --config configs/worker.toml --name "silo-$i" --coordinator "$endpoint" \
    --data "$RUN_DIR/silos/silo-$i" ${creds[$((i - 1))]} 2> "$RUN_DIR/logs/worker-$i.log" &
  pids+=($!)
done
grep -h "runtime blas" "$RUN_DIR/logs/coordinator.log" 2>/dev/null | head -1 | sed 's/^.*runtime /== runtime: /' || true
[ -s "$RUN_DIR/http_port" ] && echo "== dashboard: http://127.0.0.1:$(cat "$RUN_DIR/http_port")/  (shoalctl rounds $RUN_DIR/run)"
status=0
wait $coord || status=$?
if [ $status -ne 0 ]; then
  echo "coordinator failed (exit $status):"; tail -20 "$RUN_DIR/logs/coordinator.log"; exit $status
fi
echo "== versions"
"$BIN/shoalctl" models "$RUN_DIR/run" --verify
