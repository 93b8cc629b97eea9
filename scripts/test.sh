#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs all of them.
# Usage: scripts/test.sh            (CI runs exactly this; see .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain: wasm32 target, clippy, rustfmt; curl, python3, node for the servers"
if ! command -v curl >/dev/null && [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq curl >/dev/null; fi
for tool in curl python3 node npm; do command -v "$tool" >/dev/null || { echo "missing $tool: install it and run again"; exit 1; }; done
rustup target add wasm32-unknown-unknown >/dev/null
rustup component add clippy rustfmt >/dev/null

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

step "servers: moto (S3) and azurite (Azure) on free loopback ports"
source scripts/servers.sh
start_moto
start_azurite
if docker info >/dev/null 2>&1; then echo "docker engine: reachable (MinIO via testcontainers runs)"; else echo "docker engine: not reachable here; MinIO via testcontainers is skipped, moto and azurite cover S3 and Azure"; fi

step "tests (release: the simulation runs 2,500 proptest cases)"
cargo test --workspace --release --locked

step "wasm package for browsers and Node.js"
scripts/build-wasm.sh

step "the Node.js package: shared vectors and a JavaScript-driven claim and checkpoint"
node --test wasm/tests/
