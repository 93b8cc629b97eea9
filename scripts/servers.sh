# Sourced by scripts/test.sh: installs and starts the real servers the
# integration tests use, on free loopback ports, and exports where they are.
# Everything started here is stopped on exit.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # URL NAME PID LOG
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "$1"; then return 0; fi
    if ! kill -0 "$3" 2>/dev/null; then echo "$2 exited during start:"; cat "$4"; return 1; fi
    sleep 0.2
  done
  echo "$2 did not answer at $1 within 20 s:"; cat "$4"; return 1
}

SERVERS_DIR=$(mktemp -d)
SERVER_PIDS=()
stop_servers() {
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$SERVERS_DIR" || true
}
trap stop_servers EXIT

start_moto() {
  if ! command -v moto_server >/dev/null; then
    python3 -m pip install --quiet 'moto[server]>=5.1,<6'
  fi
  local port; port=$(free_port)
  # moto's own launcher lets two conditional PUTs on one key both pass their
  # check (see tools/moto_server.py); this one applies requests one at a time.
  python3 tools/moto_server.py 127.0.0.1 "$port" >"$SERVERS_DIR/moto.log" 2>&1 &
  SERVER_PIDS+=($!)
  wait_http "http://127.0.0.1:$port/" moto $! "$SERVERS_DIR/moto.log"
  curl -sf -X PUT "http://127.0.0.1:$port/oxiflow-test" >/dev/null
  export OXIFLOW_TEST_S3_ENDPOINT="http://127.0.0.1:$port" OXIFLOW_TEST_S3_BUCKET=oxiflow-test
  echo "moto S3 server at $OXIFLOW_TEST_S3_ENDPOINT, bucket oxiflow-test"
}

start_azurite() {
  local tools; tools="$(pwd)/tools"
  local port; port=$(free_port)
  "$tools/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" --location "$SERVERS_DIR/azurite" \
    --skipApiVersionCheck --loose --disableTelemetry >"$SERVERS_DIR/azurite.log" 2>&1 &
  SERVER_PIDS+=($!)
  wait_http "http://127.0.0.1:$port/" azurite $! "$SERVERS_DIR/azurite.log"
  node "$tools/create-container.mjs" "$port" oxiflow-test
  export OXIFLOW_TEST_AZURE_ENDPOINT="http://127.0.0.1:$port/devstoreaccount1" OXIFLOW_TEST_AZURE_CONTAINER=oxiflow-test
  echo "azurite blob server at $OXIFLOW_TEST_AZURE_ENDPOINT, container oxiflow-test"
}
