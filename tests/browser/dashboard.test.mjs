// The dashboard in a real headless Chromium (playwright-core, Debian's
// /usr/bin/chromium) against a live `oxiflow serve` on a local store where
// pipelines are running. What the page renders must match
// `oxiflow state show --json`: the numbers, the leases, what each waiting
// partition waits on, and the picture of the steps and their dependencies.
// A 1,000-partition pipeline measures what a refresh costs (requests) and
// how soon the page shows it (printed: speed belongs in BENCHMARKS.md).
// Needs target/release/oxiflow built with the wasm package (scripts/test.sh
// does both). Run: `node --test tests/browser/`.
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
  // a failed step with an error, and a step not started. Transform and load
  // are claimed out of order on purpose (--force), as an operator would.
  ox("state", "create", "shop", "--step", "extract:2", "--step", "transform", "--step", "load", "--step", "report");
  ox("claim", "shop", "extract@0", "--worker", "w-alpha");
  ox("checkpoint", "shop", "extract@0", "--worker", "w-alpha", "--last-id", "order-00099", "--add-records", "100", "--add-bytes", "5400", "--batch", "1", "--complete");
  ox("claim", "shop", "extract@1", "--worker", "w-beta", "--ttl", "1h");
  ox("checkpoint", "shop", "extract@1", "--worker", "w-beta", "--last-id", "order-00140", "--add-records", "40", "--add-failed", "2", "--add-bytes", "2100", "--batch", "3");
  ox("claim", "shop", "transform", "--worker", "w-gamma", "--ttl", "20s", "--force");
  ox("checkpoint", "shop", "transform", "--worker", "w-gamma", "--last-id", "order-00007", "--add-records", "7");
  ox("claim", "shop", "load", "--worker", "w-delta", "--force");
  ox("checkpoint", "shop", "load", "--worker", "w-delta", "--fail", "warehouse refused the batch: connection reset", "--retryable");

  // A DAG: extract:4 → transform:4 (shard i after extract@i), extract → index
  // (fan-out), transform + index → load (fan-in). Two shards done, one held.
  ox("state", "create", "dag", "--step", "extract:4", "--step", "transform:4", "--step", "index", "--step", "load",
    "--after", "transform=extract:aligned", "--after", "index=extract", "--after", "load=transform,index");
  for (const shard of [0, 1]) {
    ox("claim", "dag", `extract@${shard}`, "--worker", "w-x");
    ox("checkpoint", "dag", `extract@${shard}`, "--worker", "w-x", "--add-records", "10", "--complete");
  }
  ox("claim", "dag", "extract@2", "--worker", "w-y", "--ttl", "1h");
  ox("claim", "dag", "transform@0", "--worker", "w-z", "--ttl", "1h");

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
    assert.equal(await fieldOf(row, "readiness"), p.readiness.state, `${p.partition} readiness`);
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
  assert.equal(await shop.locator('tr[data-partition="report"] [data-field="readiness"]').innerText(), "waits on load");
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

/**
 * A page signed in with the token; `counter.api` counts the API calls it
 * makes. `watch`: [selector, n] — the page itself notes (in
 * `window.__timings`) how many ms after the sign-in the n-th match was
 * painted, and when the first refresh ended: timed inside the page, not by
 * the test's polling, which lags while the page is busy.
 */
async function signedIn(watch = ["body", 0]) {
  const page = await context.newPage();
  const consoleErrors = [];
  // Refused requests are listed by path below; the browser's own log line for each says no more.
  page.on("console", (m) => m.type() === "error" && !/^Failed to load resource/.test(m.text()) && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.on("response", (r) => r.status() >= 400 && consoleErrors.push(`${new URL(r.url()).pathname}: ${r.status()}`));
  const counter = { api: 0 };
  page.on("request", (r) => new URL(r.url()).pathname.startsWith("/v1/") && counter.api++);
  await page.addInitScript(([selector, n]) => {
    const t = (window.__timings = {});
    document.addEventListener("submit", () => (t.signIn ??= performance.now()), true);
    new MutationObserver(() => {
      if (t.signIn === undefined) return;
      if (t.shown === undefined && document.querySelectorAll(selector).length >= n) {
        t.shown = null;
        requestAnimationFrame(() => (t.shown = performance.now() - t.signIn)); // the frame that paints it
      }
      if (t.loaded === undefined && document.getElementById("status")?.dataset.refreshes === "1") t.loaded = performance.now() - t.signIn;
    }).observe(document, { subtree: true, childList: true, attributes: true });
  }, watch);
  await page.goto(`${base}/`);
  await page.locator("#login").waitFor({ state: "visible" });
  await page.selectOption("#interval", "0"); // no timer: the test refreshes by hand
  await page.fill("#token", token);
  await page.click("#login button");
  return { page, consoleErrors, counter };
}

/** Clicks Refresh and waits for it to finish; returns the API requests it made. */
async function refreshOnce(page, counter) {
  const status = page.locator("#status");
  const before = Number(await status.getAttribute("data-refreshes"));
  const requests = counter.api;
  await page.click("#refresh");
  await page.locator(`#status[data-refreshes="${before + 1}"]`).waitFor();
  return { requests: counter.api - requests, status: await status.innerText() };
}

test("waiting partitions say what they wait on; the picture shows the steps in dependency order", async () => {
  const { page, consoleErrors } = await signedIn();
  await page.locator('#status[data-refreshes="1"]').waitFor();
  const dag = page.locator('[data-pipeline="dag"]');
  await dag.locator("[data-step-box]").first().waitFor();
  const view = JSON.parse(ox("state", "show", "dag", "--json"));

  // Every partition's readiness is the core's, and a waiting one names what it waits on.
  for (const p of view.steps.flatMap((s) => s.partitions)) {
    const cell = dag.locator(`tr[data-partition="${p.partition}"] [data-field="readiness"]`);
    assert.equal(await cell.getAttribute("data-value"), p.readiness.state, `${p.partition} readiness`);
    if (p.readiness.state === "waiting") {
      assert.equal(await cell.getAttribute("data-on"), p.readiness.on.join(","), `${p.partition} waits on`);
      assert.equal(await cell.getAttribute("data-count"), String(p.readiness.count));
    }
    assert.equal(await dag.locator(`[data-cell="${p.partition}"]`).getAttribute("data-state"), p.readiness.state, `${p.partition} cell`);
  }
  const text = (part) => dag.locator(`tr[data-partition="${part}"] [data-field="readiness"]`).innerText();
  assert.equal(await text("transform@2"), "waits on extract@2", "aligned: shard 2 waits only for extract@2");
  assert.equal(await text("transform@1"), "ready to claim");
  assert.equal(await text("index"), "waits on extract@2, extract@3");
  assert.equal(await text("load"), "waits on transform@0, transform@1, transform@2, transform@3, index");
  assert.match(await text("transform@0"), /^held by w-z, for (59|60)m$/);
  assert.match(await dag.locator('[data-cell="load"]').getAttribute("title"), /load: waits on transform@0/);

  // Columns left to right in dependency order; one line per dependency.
  const level = async (step) => Number(await dag.locator(`[data-step-box="${step}"]`).getAttribute("data-level"));
  assert.deepEqual(await Promise.all(["extract", "transform", "index", "load"].map(level)), [0, 1, 1, 2]);
  const box = async (step) => dag.locator(`[data-step-box="${step}"]`).boundingBox();
  const [extract, transform, index, load] = await Promise.all(["extract", "transform", "index", "load"].map(box));
  assert.ok(extract.x + extract.width < transform.x && transform.x + transform.width < load.x, "extract, then transform, then load");
  assert.equal(transform.x, index.x, "transform and index share a column");
  const edges = await dag.locator("svg.edges path.edge").evaluateAll((paths) => paths.map((p) => `${p.dataset.from}->${p.dataset.to}:${p.dataset.kind}`).sort());
  assert.deepEqual(edges, ["extract->index:barrier", "extract->transform:aligned", "index->load:barrier", "transform->load:barrier"]);
  assert.equal(await dag.locator("[data-step-box=extract] [data-cell]").count(), 4);

  mkdirSync(artifacts, { recursive: true });
  await dag.locator("figure.plan").screenshot({ path: join(artifacts, "dashboard-picture.png") });
  await page.screenshot({ path: join(artifacts, "dashboard-dag.png"), fullPage: true });
  assert.deepEqual(consoleErrors, []);
  await page.close();
});

test("1,000 partitions: a compact grid, rows on demand, an unchanged refresh is one request", async () => {
  ox("state", "create", "big", "--step", "a:1000", "--step", "b");
  for (const shard of [0, 1, 2]) {
    ox("claim", "big", `a@${shard}`, "--worker", "w-big");
    ox("checkpoint", "big", `a@${shard}`, "--worker", "w-big", "--add-records", "5", "--complete");
  }
  ox("claim", "big", "a@3", "--worker", "w-big", "--ttl", "1h");

  const { page, consoleErrors, counter } = await signedIn(['[data-pipeline="big"] [data-step-box="a"] [data-cell]', 1000]);
  const big = page.locator('[data-pipeline="big"]');
  const cells = big.locator('[data-step-box="a"] [data-cell]');
  await page.locator('#status[data-refreshes="1"]').waitFor(); // every document decoded here
  const timings = await page.evaluate(() => window.__timings);
  const firstRequests = counter.api;
  assert.equal(await cells.count(), 1000);
  assert.equal(await big.locator('[data-step-box="a"] [data-state="completed"]').count(), 3);
  assert.equal(await big.locator('[data-step-box="a"] [data-state="held"]').count(), 1);
  assert.equal(await big.locator('[data-step-box="a"] [data-state="ready"]').count(), 996);
  assert.equal(await big.locator('[data-cell="b"]').getAttribute("data-state"), "waiting");
  assert.equal(await big.locator('tr[data-partition="b"] [data-field="readiness"]').innerText(),
    "waits on a@3, a@4, a@5, a@6, a@7, a@8, a@9, a@10 and 989 more");
  assert.equal(await big.locator('[data-field="partitions_completed"]').getAttribute("data-value"), "3");

  // The grid fits on one screen; the step's 1,000 rows are listed only on demand.
  const grid = await big.locator('[data-step-box="a"]').boundingBox();
  assert.ok(grid.width < 400 && grid.height < 450, `the grid is ${grid.width} × ${grid.height} px`);
  assert.equal(await big.locator('[data-partition^="a@"]').count(), 0);
  await big.locator('[data-step-box="a"]').click();
  await big.locator('[data-partition="a@999"]').waitFor({ state: "attached" });
  assert.equal(await big.locator('[data-partition^="a@"]').count(), 1000);
  // The lease of 1h was claimed seconds ago: minutes left, rounded down on a slow machine.
  assert.match(await big.locator('[data-partition="a@3"] [data-field="readiness"]').innerText(), /^held by w-big, for (59|60)m$/);
  await page.screenshot({ path: join(artifacts, "dashboard-1000.png") });
  await big.locator("tr.step[data-step=a] button.rows").click();
  await big.locator('[data-partition="a@0"]').waitFor({ state: "detached" });

  // Unchanged: one listing (it carries every object's version), nothing fetched.
  const unchanged = [];
  for (let i = 0; i < 3; i++) unchanged.push((await refreshOnce(page, counter)).requests);
  assert.ok(unchanged.every((n) => n <= 2), `requests per unchanged refresh: ${unchanged}`);
  assert.match(await page.locator("#status").innerText(), /0 documents read/);

  // One checkpoint: the listing, and a GET of that one document.
  ox("checkpoint", "big", "a@3", "--worker", "w-big", "--add-records", "1", "--complete");
  const changed = await refreshOnce(page, counter);
  assert.equal(changed.requests, 2, changed.status);
  assert.equal(await big.locator('[data-step-box="a"] [data-state="completed"]').count(), 4);

  const ms = (t) => Math.round(t);
  console.log(`dashboard, a 1,000-partition pipeline (and 2 small ones) on the local store: the grid painted ${ms(timings.shown)} ms `
    + `after sign-in (the service's view), every document fetched and decoded in the page ${ms(timings.loaded)} ms after (${firstRequests} requests); `
    + `unchanged refresh: ${unchanged.join(", ")} request(s); one changed document: ${changed.requests} requests`);
  assert.ok(timings.shown < 5000, `the grid took ${timings.shown} ms`);
  assert.ok(timings.loaded < 15000, `the documents took ${timings.loaded} ms`);
  // shop holds a damaged document (the first test's): the service's view shows the rest and names it
  // in `damaged` (200, not a refusal of the whole view), so nothing fails in the page.
  assert.deepEqual(consoleErrors, []);
  await page.close();
});
