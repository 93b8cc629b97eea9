// The npm package's browser build in headless Chromium: a page imports
// @oxiflow/state (its `browser` entry: the web build of the core with the
// write side, instantiated by a top-level await) through an import map, and
// claims, checkpoints and completes a partition through a real `oxiflow
// serve` with the fetch driver; `oxiflow state show --json` agrees. The page
// and the package are served from one origin (Playwright routes), the API
// requests forwarded to the service. Run after scripts/build-wasm.sh and
// scripts/npm-pack.sh: `node --test wasm/tests/`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, normalize } from "node:path";
import { createRequire } from "node:module";

const root = new URL("../../", import.meta.url).pathname;
const pkgDir = join(root, "target/npm/package");
const bin = process.env.OXIFLOW_BIN ?? join(root, "target/release/oxiflow");
if (!existsSync("/usr/bin/chromium") || !existsSync(join(root, "tools/node_modules/playwright-core"))) {
  if (process.env.CI) throw new Error("Chromium and playwright-core must be installed in CI (scripts/test.sh installs them)");
  console.log("SKIPPED: /usr/bin/chromium or tools/node_modules/playwright-core is missing");
  process.exit(0);
}
const { chromium } = createRequire(import.meta.url)(join(root, "tools/node_modules/playwright-core"));
const token = "browser-package-token-0123456789";
const origin = "http://app.test";
let dir, server, base, browser;

function ox(...args) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("OXIFLOW_")));
  return execFileSync(bin, args, { cwd: dir, env, encoding: "utf8" });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "oxiflow-browser-package-"));
  ox("state", "create", "web", "--step", "pull", "--step", "push");
  const env = { ...process.env, OXIFLOW_SERVE_TOKEN: token };
  for (const k of Object.keys(env)) if (k.startsWith("OXIFLOW_") && k !== "OXIFLOW_SERVE_TOKEN") delete env[k];
  server = spawn(bin, ["serve", "--listen", "127.0.0.1:0"], { cwd: dir, env, stdio: ["ignore", "ignore", "pipe"] });
  base = await new Promise((resolve, reject) => {
    let err = "";
    server.stderr.on("data", (d) => {
      err += d;
      const m = err.match(/on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) resolve(m[1]);
    });
    server.on("exit", (code) => reject(new Error(`oxiflow serve exited ${code}: ${err}`)));
  });
  browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
});

after(async () => {
  await browser?.close();
  server?.kill();
  rmSync(dir, { recursive: true, force: true });
});

const page = `<!doctype html>
<script type="importmap">{"imports": {"@oxiflow/state": "/pkg/index.mjs", "#core": "/pkg/core/web.mjs"}}</script>
<script type="module">
  import { ServeState, core } from "@oxiflow/state";
  window.run = async (token) => {
    const state = new ServeState({ url: location.origin, token });
    const held = await state.claim("web", "pull", "browser-1");
    await held.checkpoint({ last_processed_id: "p-1", add_records: 3 });
    await held.complete({ last_processed_id: "p-2", add_records: 2 });
    const { schedule } = await state.schedule("web");
    const judged = JSON.parse(core.judgeDeadline(null, Date.now(), null));
    return { requests: state.requests, claimable: schedule.claimable, epoch: held.lease.epoch, distrust: judged.distrust.reason };
  };
  window.ready = true;
</script>`;

test("the package's browser entry runs the core in Chromium and drives `oxiflow serve` over fetch", async () => {
  const context = await browser.newContext();
  await context.route(`${origin}/**`, async (route) => {
    const url = new URL(route.request().url());
    if (url.pathname === "/") return route.fulfill({ contentType: "text/html", body: page });
    if (url.pathname.startsWith("/pkg/")) {
      const file = normalize(join(pkgDir, url.pathname.slice(5)));
      if (!file.startsWith(pkgDir) || !existsSync(file)) return route.fulfill({ status: 404 });
      const type = file.endsWith(".wasm") ? "application/wasm" : "text/javascript";
      return route.fulfill({ contentType: type, body: readFileSync(file) });
    }
    // The API: forwarded to the service, as a reverse proxy in front of both would.
    const response = await route.fetch({ url: `${base}${url.pathname}${url.search}` });
    return route.fulfill({ response });
  });
  const tab = await context.newPage();
  const errors = [];
  tab.on("pageerror", (e) => errors.push(String(e)));
  await tab.goto(`${origin}/`);
  await tab.waitForFunction(() => window.ready === true, null, { timeout: 20_000 });
  const out = await tab.evaluate((t) => window.run(t), token);
  assert.deepEqual(errors, []);
  assert.deepEqual(out, { requests: 3 + 1 + 1 + 1 + 3, claimable: ["push"], epoch: 1, distrust: "missing" },
    "claim: GET, PUT, GET of the pipeline; a PUT per write; the schedule: a LIST and GETs of the pipeline and both partitions (nothing cached yet)");
  const view = JSON.parse(ox("state", "show", "web", "--json"));
  const pull = view.steps[0].partitions[0];
  assert.deepEqual([Object.keys(pull.status)[0], pull.records_processed, pull.last_processed_id, pull.lease.worker_id], ["completed", 5, "p-2", "browser-1"]);
  await context.close();
});
