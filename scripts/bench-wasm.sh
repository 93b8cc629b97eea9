#!/usr/bin/env bash
# The core's decode+validate+encode in wasm (Node.js) vs native, on the same
# 51-document fixture as the criterion bench: scripts/bench-wasm.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-2000}"
[ -f wasm/pkg/node/oxiflow_wasm.js ] || scripts/build-wasm.sh >/dev/null
native=$(cargo run --quiet --release --locked -p oxiflow-wasm --features testing --example codec_native -- "$n")
wasm=$(node wasm/benches/codec.mjs "$n")
awk -v n="$native" -v w="$wasm" -v node="$(node --version)" 'BEGIN { printf "decode+validate+encode, 51 documents: native %.1f us, wasm (Node %s) %.1f us, wasm/native %.2fx\n", n/1000, node, w/1000, w/n }'
