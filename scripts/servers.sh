# Sourced by scripts/test.sh and scripts/bench.sh: installs and starts the real servers the
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
  command -v moto_server >/dev/null || { echo "moto_server is not on PATH: source scripts/venv.sh first"; return 1; }
  local port; port=$(free_port)
  # moto's own launcher lets two conditional PUTs on one key both pass their
  # check (see tools/moto_server.py); this one applies requests one at a time.
  python tools/moto_server.py 127.0.0.1 "$port" >"$SERVERS_DIR/moto.log" 2>&1 &
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

# Debian's redis-server (installed with apt when missing), on a free port
# with its own directory: every acknowledged write is fsynced to the
# append-only file before the reply (appendfsync always), no RDB snapshots.
# Exports OXIFLOW_TEST_REDIS_URL and OXIFLOW_TEST_REDIS_SERVER (the binary:
# the fault tests start, kill -9 and restart their own servers with it).
start_redis() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "missing redis-server: install it (apt-get install redis-server) and run again"; return 1; }
    echo "apt-get install redis-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  local port; port=$(free_port)
  mkdir -p "$SERVERS_DIR/redis"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$SERVERS_DIR/redis" --appendonly yes --appendfsync always \
    --save "" --daemonize no --logfile "$SERVERS_DIR/redis.log" &
  SERVER_PIDS+=($!)
  local pid=$!
  for _ in $(seq 1 100); do
    if [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ]; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "redis-server exited during start:"; cat "$SERVERS_DIR/redis.log"; return 1; fi
    sleep 0.2
  done
  [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] || { echo "redis-server did not answer on port $port within 20 s:"; cat "$SERVERS_DIR/redis.log"; return 1; }
  export OXIFLOW_TEST_REDIS_URL="redis://127.0.0.1:$port/0" OXIFLOW_TEST_REDIS_SERVER
  OXIFLOW_TEST_REDIS_SERVER=$(command -v redis-server)
  echo "redis-server $(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/') at $OXIFLOW_TEST_REDIS_URL (appendonly, appendfsync always)"
}
