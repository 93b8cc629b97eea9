// The dashboard in a real headless Chromium (playwright-core, Debian's
// /usr/bin/chromium) against a live `oxiflow serve` on a local store where a
// pipeline is running. What the page renders must match
// `oxiflow state show --json`. Needs target/release/oxiflow built with the
// wasm package (scripts/test.sh does both). Run: `node --test tests/browser/`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { chromium } = require("../../tools/node_modules/playwright-core");

const root = new URL("../../", import.meta.url).pathname;
const bin = process.env.OXIFLOW_BIN ?? join(root, "target/release/oxiflow");
const artifacts = join(root, "target/test-artifacts");
const token = "dashboard-test-token-0123456789";
const dir = mkdtempSync(join(tmpdir(), "oxiflow-dashboard-"));

/** Runs the CLI in the test's directory (its embedded local store). */
function ox(...args) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("OXIFLOW_")));
  return execFileSync(bin, args, { cwd: dir, env, encoding: "utf8" });
}

let server, base, context;

before(async () => {
  // A pipeline mid-run: one shard done, one held, one held on a short lease,
  // a failed step with an error, and a step not started.
  ox("state", "create", "shop", "--step", "extract:2", "--step", "transform", "--step", "load", "--step", "report");
  ox("claim", "shop", "extract@0", "--worker", "w-alpha");
  ox("checkpoint", "shop", "extract@0", "--worker", "w-alpha", "--last-id", "order-00099", "--add-records", "100", "--add-bytes", "5400", "--batch", "1", "--complete");
  ox("claim", "shop", "extract@1", "--worker", "w-beta", "--ttl", "1h");
  ox("checkpoint", "shop", "extract@1", "--worker", "w-beta", "--last-id", "order-00140", "--add-records", "40", "--add-failed", "2", "--add-bytes", "2100", "--batch", "3");
  ox("claim", "shop", "transform", "--worker", "w-gamma", "--ttl", "20s");
  ox("checkpoint", "shop", "transform", "--worker", "w-gamma", "--last-id", "order-00007", "--add-records", "7");
  ox("claim", "shop", "load", "--worker", "w-delta");
  ox("checkpoint", "shop", "load", "--worker", "w-delta", "--fail", "warehouse refused the batch: connection reset", "--retryable");

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

  context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "oxiflow-chromium-")), {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1400, height: 1000 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"],
  });
});

after(async () => {
  await context?.close();
  server?.kill();
  rmSync(dir, { recursive: true, force: true });
});

test("the API refuses a request without the token, or with a wrong one", async () => {
  assert.equal((await fetch(`${base}/v1/pipelines`)).status, 401);
  assert.equal((await fetch(`${base}/v1/pipelines`, { headers: { Authorization: "Bearer not-the-token-at-all" } })).status, 401);
  assert.equal((await fetch(`${base}/v1/pipelines`, { headers: { Authorization: `Bearer ${token}` } })).status, 200);
  // The static page holds no state and loads without it.
  assert.equal((await fetch(`${base}/dashboard/`)).status, 200);
  const wasm = await fetch(`${base}/dashboard/pkg/oxiflow_wasm_bg.wasm`);
  assert.equal(wasm.headers.get("content-type"), "application/wasm", "the binary embeds the wasm package");
});

test("the dashboard shows what `state show --json` shows, and highlights stale holders", async () => {
  const page = await context.newPage();
  const consoleErrors = [];
  // The browser logs each refused (401) request; those are the point here.
  page.on("console", (m) => m.type() === "error" && !/status of 401/.test(m.text()) && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.clock.install();

  await page.goto(`${base}/`);
  // Without a token the page asks for one and shows nothing.
  await page.locator("#login").waitFor({ state: "visible" });
  assert.equal(await page.locator("[data-pipeline]").count(), 0);
  await page.fill("#token", "wrong-token-but-long-enough");
  await page.click("#login button");
  await page.locator("#login-reason", { hasText: "refused" }).waitFor();

  await page.fill("#token", token);
  await page.click("#login button");
  const shop = page.locator('[data-pipeline="shop"]');
  await shop.waitFor();
  assert.equal(await page.locator("#login").isVisible(), false, "the token form goes away once the token works");
  assert.doesNotMatch(await shop.innerText(), /\b(null|undefined|NaN)\b/);
  const view = JSON.parse(ox("state", "show", "shop", "--json"));

  const fieldOf = (scope, name) => scope.locator(`[data-field="${name}"]`).first().getAttribute("data-value");
  for (const name of ["records_processed", "records_failed", "bytes_processed", "total_errors", "status"]) {
    assert.equal(await fieldOf(shop, name), String(view[name]), `pipeline ${name}`);
  }
  const partitions = view.steps.flatMap((s) => s.partitions);
  assert.equal(await shop.locator("tr[data-partition]").count(), partitions.length);
  for (const p of partitions) {
    const row = shop.locator(`tr[data-partition="${p.partition}"]`);
    const kind = typeof p.status === "string" ? p.status : Object.keys(p.status)[0];
    assert.equal(await fieldOf(row, "status"), kind, `${p.partition} status`);
    for (const name of ["records_processed", "records_failed", "bytes_processed", "batch_number", "attempts"]) {
      assert.equal(await fieldOf(row, name), String(p[name]), `${p.partition} ${name}`);
    }
    assert.equal(await fieldOf(row, "last_processed_id"), p.last_processed_id ?? "", `${p.partition} bookmark`);
    const lease = row.locator('[data-field="lease"]');
    assert.equal(await lease.getAttribute("data-worker"), p.lease?.worker_id ?? "", `${p.partition} lease holder`);
    assert.equal(await lease.getAttribute("data-epoch"), String(p.lease?.epoch ?? ""), `${p.partition} lease epoch`);
    assert.equal(await lease.getAttribute("data-expires-at"), String(p.lease?.expires_at ?? ""), `${p.partition} lease expiry`);
    assert.equal(await lease.getAttribute("data-state"), p.lease?.status.state ?? "free", `${p.partition} lease state`);
  }
  assert.match(await shop.locator('tr[data-partition="extract@1"] [data-field="lease"]').innerText(), /w-beta · epoch 1 · expires in (59|60)m/);
  assert.match(await shop.locator(".errors").innerText(), /load.*w-delta.*warehouse refused the batch: connection reset/s);
  assert.equal(await shop.locator(".stale-note").count(), 0, "nobody is stale yet");

  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: join(artifacts, "dashboard.png"), fullPage: true });

  // 25 s later (browser clock) w-gamma's 20 s lease has run out unreleased:
  // the row and a note flag it; w-beta's hour-long lease counts down.
  await page.clock.fastForward(25_000);
  const transform = shop.locator('tr[data-partition="transform"]');
  await transform.locator('[data-field="lease"][data-state="expired"]').waitFor();
  assert.match(await transform.getAttribute("class"), /stale/);
  assert.match(await shop.locator(".stale-note").innerText(), /w-gamma on transform/);
  assert.match(await shop.locator('tr[data-partition="extract@1"] [data-field="lease"]').innerText(), /expires in (59|60)m/);
  await page.screenshot({ path: join(artifacts, "dashboard-stale.png"), fullPage: true });

  // A damaged document is named, left alone, and the rest still renders.
  writeFileSync(join(dir, ".oxiflow/state/pipelines/shop/partitions/report@7.json"), '{"format_version":1,"garbage":');
  await page.click("#refresh");
  await shop.locator('[data-problem="pipelines/shop/partitions/report@7.json"]').waitFor();
  assert.match(await shop.locator(".problems").innerText(), /corrupt/);
  assert.equal(await shop.locator("tr[data-partition]").count(), partitions.length);

  assert.deepEqual(consoleErrors, []);
  await page.close();
});
