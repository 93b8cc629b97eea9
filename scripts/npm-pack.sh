#!/usr/bin/env bash
# Assembles the npm package @oxiflow/state from wasm/npm/ (the JavaScript
# drivers, their types, package.json) and the wasm builds of
# scripts/build-wasm.sh (wasm/pkg/node, wasm/pkg/web-holder) in
# target/npm/package, packs it (npm pack) into
# target/npm/oxiflow-state-<version>.tgz (version: wasm/Cargo.toml's), and
# installs that tarball into examples/node-lambda, whose package.json
# depends on the file. Usage: scripts/build-wasm.sh && scripts/npm-pack.sh
# [--no-install]
set -euo pipefail
cd "$(dirname "$0")/.."

for f in wasm/pkg/node/oxiflow_wasm.js wasm/pkg/web-holder/oxiflow_wasm.js; do
  [ -f "$f" ] || { echo "missing $f: run scripts/build-wasm.sh first"; exit 1; }
done
version=$(awk -F'"' '/^version = / { print $2; exit }' wasm/Cargo.toml)
out=target/npm/package
rm -rf "$out"
mkdir -p "$out/core/node" "$out/core/web"
cp wasm/npm/*.mjs wasm/npm/*.d.mts wasm/npm/README.md "$out/"
cp wasm/npm/core/*.mjs wasm/npm/core/*.d.mts "$out/core/"
cp wasm/pkg/node/oxiflow_wasm.js wasm/pkg/node/oxiflow_wasm.d.ts wasm/pkg/node/oxiflow_wasm_bg.wasm "$out/core/node/"
cp wasm/pkg/web-holder/oxiflow_wasm.js wasm/pkg/web-holder/oxiflow_wasm.d.ts wasm/pkg/web-holder/oxiflow_wasm_bg.wasm "$out/core/web/"
# wasm-bindgen's nodejs build is CommonJS, its web build an ES module; each
# directory says so, whatever the root package says.
echo '{ "type": "commonjs" }' >"$out/core/node/package.json"
echo '{ "type": "module" }' >"$out/core/web/package.json"
cp wasm/npm/package.json "$out/package.json"
node -e '
  const fs = require("fs");
  const [path, version] = process.argv.slice(1);
  const pkg = JSON.parse(fs.readFileSync(path, "utf8"));
  pkg.version = version;
  fs.writeFileSync(path, JSON.stringify(pkg, null, 2) + "\n");
' "$out/package.json" "$version"

tarball=$(cd target/npm && npm pack ./package --pack-destination . --silent | tail -1)
echo "npm package: target/npm/$tarball ($(stat -c %s "target/npm/$tarball") bytes)"

[ "${1:-}" = --no-install ] && exit 0
# The example depends on the tarball (file:../../target/npm/…). Named
# explicitly, npm installs the tarball as it is now and records its new
# integrity; a plain `npm install` would keep what the lock file (and npm's
# cache) remember of an earlier build of the same version.
(cd examples/node-lambda && npm install --no-audit --no-fund --loglevel=error "../../target/npm/$tarball" >/dev/null)
echo "installed into examples/node-lambda: $(node -p 'require("./examples/node-lambda/node_modules/@oxiflow/state/package.json").version')"
