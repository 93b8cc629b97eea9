#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs all of them.
# Usage: scripts/test.sh            (CI runs exactly this; see .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain: wasm32 target, clippy, rustfmt; curl, python3, node; Chromium and ChromeDriver for the browser tests; redis-server"
missing=()
command -v curl >/dev/null || missing+=(curl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "missing ${missing[*]}: install them (apt-get install ${missing[*]}) and run again"; exit 1; }
  echo "apt-get install ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in curl python3 node npm; do command -v "$tool" >/dev/null || { echo "missing $tool: install it and run again"; exit 1; }; done
rustup target add wasm32-unknown-unknown >/dev/null
rustup component add clippy rustfmt >/dev/null
for pkg in azurite binaryen playwright-core typescript @azure/storage-blob @types/node; do
  if [ ! -d "tools/node_modules/$pkg" ]; then npm install --prefix tools --no-audit --no-fund --loglevel=error >/dev/null; break; fi
done

step "python: one virtual environment (target/venv) with moto, cargo-lambda, maturin, pytest, mypy, Airflow and Dagster"
source scripts/venv.sh
echo "python venv: $OXIFLOW_VENV ($(python --version))"

step "format"
cargo fmt --all --check

step "clippy (core bans clocks and RNGs: core/clippy.toml)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "core builds for wasm32-unknown-unknown"
cargo build -p oxiflow-core --target wasm32-unknown-unknown --locked

step "core has no I/O dependencies"
forbidden=$(cargo tree -p oxiflow-core -e normal --prefix none --locked | grep -E '^(tokio|object_store|reqwest|hyper|mio|getrandom) ' || true)
if [ -n "$forbidden" ]; then
  echo "oxiflow-core depends on I/O crates:"; echo "$forbidden"; exit 1
fi
echo "ok: $(cargo tree -p oxiflow-core -e normal --prefix none --locked | sort -u | wc -l) crates, none of tokio/object_store/reqwest/hyper/mio/getrandom"

step "servers: moto (S3), azurite (Azure) and redis-server (apt, when missing) on free loopback ports"
source scripts/servers.sh
start_moto
start_azurite
start_redis
if docker info >/dev/null 2>&1; then echo "docker engine: reachable (MinIO via testcontainers runs)"; else echo "docker engine: not reachable here; MinIO via testcontainers is skipped, moto and azurite cover S3 and Azure"; fi

step "wasm package for browsers and Node.js, and the npm package @oxiflow/state packed and installed into the Node example (before the tests: oxiflow serve embeds the wasm for the dashboard)"
scripts/build-wasm.sh
scripts/npm-pack.sh

step "tests (release: the simulation runs 2,500 proptest cases; the Lambda example under cargo lambda watch)"
cargo test --workspace --release --locked

step "Python: the oxiflow wheel (PyO3, release), pytest (the package, Airflow 3.3, Dagster 1.13; S3 on moto), mypy --strict"
scripts/test-python.sh

step "the core in headless Chromium: shared vectors through wasm-bindgen-test"
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=60 \
  cargo test -p oxiflow-wasm --target wasm32-unknown-unknown --locked

step "TypeScript: the wasm package's declarations, JSON types and the npm package as the Node example uses it compile (tsc --strict)"
tools/node_modules/.bin/tsc --noEmit --strict --target es2022 --lib esnext --module nodenext --moduleResolution nodenext wasm/tests/types.check.ts
tools/node_modules/.bin/tsc --noEmit --strict --target es2022 --lib esnext,dom --module nodenext --moduleResolution nodenext \
  --typeRoots tools/node_modules/@types --types node examples/node-lambda/types.check.ts
echo ok

step "Node.js and the browser: the Node package, the Lambda example on S3, the dashboard in Chromium (screenshots in target/test-artifacts/)"
node --test wasm/tests/ examples/node-lambda/ tests/browser/
