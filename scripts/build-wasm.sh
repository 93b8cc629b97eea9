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

# The browser bundle: smallest (opt-level z, wasm-opt -Oz), without the
# test-vector runner, the bench loop and the write side (it only reads). The Node build: fastest (opt-level 3,
# wasm-opt -O3), with them.
for target in web nodejs; do
  if [ "$target" = web ]; then profile=wasm-release features="--no-default-features" opt=-Oz out=wasm/pkg/web
  else profile=wasm-node features="--features testing" opt=-O3 out=wasm/pkg/node; fi
  cargo build -p oxiflow-wasm --target wasm32-unknown-unknown --profile "$profile" --locked $features
  rm -rf "$out"
  wasm-bindgen --target "$target" --out-dir "$out" "target/wasm32-unknown-unknown/$profile/oxiflow_wasm.wasm"
  tools/node_modules/.bin/wasm-opt "$opt" "$out/oxiflow_wasm_bg.wasm" -o "$out/oxiflow_wasm_bg.wasm"
done
raw=$(stat -c %s wasm/pkg/web/oxiflow_wasm_bg.wasm)
gz=$(gzip -9 -c wasm/pkg/web/oxiflow_wasm_bg.wasm | wc -c)
echo "browser bundle: $raw bytes, $gz bytes gzipped (wasm/pkg/web; the Node build is in wasm/pkg/node)"
