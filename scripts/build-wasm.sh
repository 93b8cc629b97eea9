#!/usr/bin/env bash
# Builds the wasm package for browsers (wasm/pkg/web) and Node.js
# (wasm/pkg/node): cargo → wasm-bindgen → wasm-opt -Oz. Installs
# wasm-bindgen-cli (the exact version in Cargo.lock) and binaryen (npm) when
# missing. Prints the gzipped size.
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

wasm=target/wasm32-unknown-unknown/wasm-release/oxiflow_wasm.wasm
# The browser bundle without the test-vector runner; the Node build with it.
for target in web nodejs; do
  features=""
  [ "$target" = nodejs ] && features="--features vectors"
  cargo build -p oxiflow-wasm --target wasm32-unknown-unknown --profile wasm-release --locked $features
  out=wasm/pkg/${target/nodejs/node}
  rm -rf "$out"
  wasm-bindgen --target "$target" --out-dir "$out" "$wasm"
  tools/node_modules/.bin/wasm-opt -Oz "$out/oxiflow_wasm_bg.wasm" -o "$out/oxiflow_wasm_bg.wasm"
done
raw=$(stat -c %s wasm/pkg/web/oxiflow_wasm_bg.wasm)
gz=$(gzip -9 -c wasm/pkg/web/oxiflow_wasm_bg.wasm | wc -c)
echo "wasm package: $raw bytes, $gz bytes gzipped (wasm/pkg/web, wasm/pkg/node)"
