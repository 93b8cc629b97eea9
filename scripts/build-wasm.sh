#!/usr/bin/env bash
# Builds the wasm package for browsers (wasm/pkg/web: the dashboard's,
# read-only), Node.js (wasm/pkg/node) and browsers with the write side
# (wasm/pkg/web-holder: the npm package's browser build): cargo →
# wasm-bindgen → wasm-opt. Installs wasm-bindgen-cli (the exact version in
# Cargo.lock) and binaryen (npm) when missing. Prints the gzipped size of the
# dashboard's bundle and fails above 150 KB (150,000 bytes) gzipped.
# scripts/npm-pack.sh then assembles the npm package from these builds.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-unknown-unknown >/dev/null
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$want" ]; then
  echo "installing wasm-bindgen-cli $want (a few minutes, once)"
  cargo install wasm-bindgen-cli --version "$want" >/dev/null
fi
if [ ! -x tools/node_modules/.bin/wasm-opt ]; then
  npm install --prefix tools --no-audit --no-fund --loglevel=error >/dev/null
fi

# The browser bundle: smallest (opt-level z, wasm-opt -Oz), without the
# test-vector runner, the bench loop and the write side (it only reads). The Node build: fastest (opt-level 3,
# wasm-opt -O3), with them. The npm package's browser build: the browser
# bundle's settings with the write side (a browser holder, e.g. over
# `oxiflow serve`), without the test-vector runner.
for build in web nodejs web-holder; do
  case "$build" in
    web) target=web profile=wasm-release features="--no-default-features" opt=-Oz out=wasm/pkg/web ;;
    nodejs) target=nodejs profile=wasm-node features="--features testing" opt=-O3 out=wasm/pkg/node ;;
    web-holder) target=web profile=wasm-release features="" opt=-Oz out=wasm/pkg/web-holder ;;
  esac
  # shellcheck disable=SC2086
  cargo build -p oxiflow-wasm --target wasm32-unknown-unknown --profile "$profile" --locked $features
  rm -rf "$out"
  wasm-bindgen --target "$target" --out-dir "$out" "target/wasm32-unknown-unknown/$profile/oxiflow_wasm.wasm"
  tools/node_modules/.bin/wasm-opt "$opt" "$out/oxiflow_wasm_bg.wasm" -o "$out/oxiflow_wasm_bg.wasm"
done
raw=$(stat -c %s wasm/pkg/web/oxiflow_wasm_bg.wasm)
gz=$(gzip -9 -c wasm/pkg/web/oxiflow_wasm_bg.wasm | wc -c)
echo "browser bundle: $raw bytes, $gz bytes gzipped (wasm/pkg/web; the Node build is in wasm/pkg/node, the package's browser build with the write side in wasm/pkg/web-holder: $(gzip -9 -c wasm/pkg/web-holder/oxiflow_wasm_bg.wasm | wc -c) bytes gzipped)"
limit=150000
if [ "$gz" -gt "$limit" ]; then
  echo "the browser bundle is over its limit: $gz > $limit bytes gzipped (BENCHMARKS.md says what was tried to keep it small)"
  exit 1
fi
