// The npm package @oxiflow/state as packed (target/npm/package, assembled by
// scripts/npm-pack.sh after scripts/build-wasm.sh): runStep's deadline,
// pace, hand-off and duplicate answers on a store in a Map with a clock the
// test moves; and the `oxiflow serve` driver (fetch) against a real
// `oxiflow serve` on a local directory, checked by `oxiflow state show`.
// Run: `node --test wasm/tests/`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = new URL("../../", import.meta.url).pathname;
const pkgDir = join(root, "target/npm/package");
if (!existsSync(join(pkgDir, "package.json"))) throw new Error("target/npm/package is missing: run scripts/build-wasm.sh && scripts/npm-pack.sh");
const pkg = await import(join(pkgDir, "index.mjs"));
const { core, State, StateError, runStep, ServeState } = pkg;

/** A conditional store in a Map, with a listing: what S3 does, in a few lines. */
class MemoryStore {
  objects = new Map();
  next = 0;
  requests = 0;
  log = [];
  async perform(send, body) {
    this.requests++;
    if (send.get) {
      this.log.push("GET");
      const o = this.objects.get(send.get.key);
      return o ? [{ object: { version: { e_tag: o.etag } } }, o.body] : [{ object: null }, null];
    }
    this.log.push("PUT");
    const { key } = send.put_if_absent ?? send.put_if_match;
    const current = this.objects.get(key);
    if (send.put_if_absent && current) return ["already_exists", null];
    if (send.put_if_match && current?.etag !== send.put_if_match.version.e_tag) return ["precondition", null];
    const etag = `"${++this.next}"`;
    this.objects.set(key, { body: Uint8Array.from(body), etag });
    return [{ written: { e_tag: etag } }, null];
  }
  async list(prefix) {
    this.requests++;
    this.log.push("LIST");
    return [...this.objects].filter(([k]) => k.startsWith(prefix)).map(([key, o]) => ({ key, version: { e_tag: o.etag } }));
  }
  doc(pipeline, partition) {
    const key = core.partitionKey(pipeline, partition);
    return JSON.parse(core.decodePartition(key, this.objects.get(key).body));
  }
  /** The requests since `mark`, as one string: "GET PUT GET". */
  since(mark) {
    return this.log.slice(mark).join(" ");
  }
}

const T0 = 1_800_000_000_000;
// Short leases, as a Lambda with a 3 s timeout needs them.
const config = { lease: { ttl_ms: 3000, heartbeat_interval_ms: 1000, skew_allowance_ms: 300, safety_margin_ms: 300 } };

/** A pipeline extract:2 → transform:2 (aligned) → load, created by the CLI in a local directory and loaded into the Map. */
async function pipeline(store, name) {
  ox("state", "create", name, "--step", "extract:2", "--step", "transform:2", "--step", "load", "--after", "transform=extract:aligned");
  const stateDir = join(dir, ".oxiflow/state");
  for (const rel of readdirSync(join(stateDir, "pipelines", name), { recursive: true })) {
    const path = join(stateDir, "pipelines", name, rel);
    if (statSync(path).isFile()) {
      await store.perform({ put_if_absent: { key: `pipelines/${name}/${rel}` } }, readFileSync(path));
    }
  }
  store.log = [];
  return new State({ store, config });
}

/** A source of `total` records per partition, `size` per batch; each batch moves the clock by `cost` ms. */
function source(clock, { total = 50, size = 10, cost = 400 } = {}) {
  return async ({ after }) => {
    const from = after ? Number(after.split("-")[1]) : 0;
    const to = Math.min(from + size, total);
    clock.t += cost;
    return { progress: { last_processed_id: `r-${String(to).padStart(4, "0")}`, add_records: to - from }, done: to === total };
  };
}

test("runStep: claim capped at the deadline, batches while the pace allows, one PUT each, release before the deadline, continue", async () => {
  const store = new MemoryStore();
  const state = await pipeline(store, "shop");
  const clock = { t: T0 };
  const now = () => clock.t;
  const started = await runStep(state, { pipeline: "shop" }, { worker: "start", now, batch: () => assert.fail("no batch") });
  assert.deepEqual([started.outcome, [...started.ready].sort()], ["started", ["extract@0", "extract@1"]]);
  assert.deepEqual(started.events.map((e) => e.partition).sort(), ["extract@0", "extract@1"]);

  const deadline = T0 + 3000;
  const mark = store.log.length;
  const batch = source(clock, { total: 100 });
  const out = await runStep(state, { pipeline: "shop", partition: "extract@0", hop: 0 }, { worker: "inv-1", deadline, now, batch, marginMs: 200 });
  // The last write may begin at 3000 − 300 (safety margin) − 200 (margin) = 2500 ms: batches of 400 ms begin at 0, 400, …, 2000; one at 2400 would not end in time.
  assert.equal(out.outcome, "continue", JSON.stringify(out));
  assert.equal(out.batches, 6);
  assert.equal(store.since(mark), "GET PUT GET PUT PUT PUT PUT PUT PUT PUT", "claim: GET + PUT + GET of the pipeline; one PUT per batch; one PUT to release");
  assert.deepEqual(out.events, [{ pipeline: "shop", partition: "extract@0", hop: 1 }]);
  const doc = store.doc("shop", "extract@0");
  assert.equal(doc.records_processed, 60);
  assert.equal(doc.lease.expires_at, deadline, "the lease ended at the deadline, whatever was written");
  assert.ok(doc.lease.released_at <= deadline - 300, "released inside the trusted time");

  // The continuation resumes from the bookmark and completes; the hand-off names the aligned shard only.
  clock.t = deadline + 50;
  const done = await runStep(state, out.events[0], { worker: "inv-2", deadline: clock.t + 3000, now, batch, marginMs: 200 });
  assert.equal(done.outcome, "completed", JSON.stringify(done));
  assert.equal(done.resumed_after, "r-0060");
  assert.equal(done.batches, 4);
  assert.deepEqual(done.ready, ["transform@0"]);
  assert.deepEqual(done.events, [{ pipeline: "shop", partition: "transform@0", hop: 0 }]);
  assert.equal(store.doc("shop", "extract@0").records_processed, 100);

  // A redelivered event of a completed partition: no write, the hand-off again.
  const before = store.log.length;
  const again = await runStep(state, { pipeline: "shop", partition: "extract@0", hop: 1 }, { worker: "inv-3", deadline: clock.t + 3000, now, batch: () => assert.fail("no batch") });
  assert.deepEqual([again.outcome, again.ready], ["already_done", ["transform@0"]]);
  assert.ok(!store.since(before).includes("PUT"), store.since(before));
});

test("runStep: a duplicate finds the lease held and answers when to retry, writing nothing; retried then, it takes over a dead holder's partition", async () => {
  const store = new MemoryStore();
  const state = await pipeline(store, "dup");
  const clock = { t: T0 };
  const now = () => clock.t;
  const deadline = T0 + 3000;
  // The first invocation claims and dies after one batch (its batch throws nothing; the process is gone: simulated by not finishing).
  let resolveHang;
  const hang = new Promise((r) => (resolveHang = r));
  const first = runStep(state, { pipeline: "dup", partition: "extract@1" }, { worker: "inv-a", deadline, now, marginMs: 200,
    batch: async () => { await hang; return { progress: { add_records: 1, last_processed_id: "r-0001" } }; } });
  await new Promise((r) => setImmediate(r));
  while (store.doc("dup", "extract@1").lease?.worker_id !== "inv-a") await new Promise((r) => setImmediate(r));
  const mark = store.log.length;
  const dup = await runStep(new State({ store, config }), { pipeline: "dup", partition: "extract@1" }, { worker: "inv-b", deadline, now, batch: () => assert.fail("no batch") });
  assert.equal(dup.outcome, "already_running", JSON.stringify(dup));
  assert.equal(dup.holder, "inv-a");
  assert.equal(dup.retry_at, deadline + 300 + 1, "the first millisecond past the deadline plus the skew allowance");
  assert.deepEqual(dup.retry, { pipeline: "dup", partition: "extract@1" }, "the same event, again");
  assert.equal(store.since(mark), "GET", "one read, no write");

  // Retried before the holder let go: still running.
  const early = await runStep(new State({ store, config }), dup.retry, { worker: "inv-c", deadline: deadline + 3000, now, batch: () => assert.fail("no batch") });
  assert.equal(early.outcome, "already_running");

  // The holder died (never resumes); at retry_at the retry takes over, one epoch up, from the stored bookmark.
  clock.t = dup.retry_at;
  const takeover = await runStep(new State({ store, config }), dup.retry, { worker: "inv-d", deadline: clock.t + 3000, now, marginMs: 200, batch: source(clock, { total: 20 }) });
  assert.equal(takeover.outcome, "completed", JSON.stringify(takeover));
  assert.equal(takeover.epoch, 2);
  // The dead holder's process wakes up (a paused VM), past its trusted time: nothing is sent.
  const beforeWake = store.log.length;
  resolveHang();
  const woke = await first;
  assert.equal(woke.outcome, "continue");
  assert.match(woke.expired, /^expired: .*"trusted_until":1800000002700/);
  assert.equal(store.since(beforeWake), "", "no request");
  assert.equal(store.doc("dup", "extract@1").records_processed, 20);

  // The retry of a holder that let go normally runs too: every event of a partition is interchangeable.
  const first0 = await runStep(new State({ store, config }), { pipeline: "dup", partition: "extract@0" }, { worker: "inv-e", deadline: clock.t + 3000, now, marginMs: 200,
    batch: async () => { clock.t += 1000; return { progress: { add_records: 1, last_processed_id: "x-1" } }; } });
  assert.deepEqual([first0.outcome, first0.batches], ["continue", 2]);
  const retried = await runStep(new State({ store, config }), { pipeline: "dup", partition: "extract@0" }, { worker: "inv-f", deadline: clock.t + 3000, now, marginMs: 200, batch: source(clock, { total: 10 }) });
  assert.deepEqual([retried.outcome, retried.resumed_after, retried.epoch], ["completed", "x-1", 2]);
});

test("runStep: an untrusted deadline falls back to one configured lease and is logged once", async () => {
  const store = new MemoryStore();
  const state = await pipeline(store, "late");
  const clock = { t: T0 };
  const now = () => clock.t;
  const logs = [];
  const log = (m) => logs.push(m);
  // `cargo lambda watch` and some emulators report a duration where a time belongs: 600000 ms is in 1970.
  const out = await runStep(state, { pipeline: "late", partition: "extract@0" }, { worker: "inv-1", deadline: 600_000, now, log, marginMs: 200, batch: source(clock) });
  assert.equal(out.ends_at, T0 + 3000, "one configured lease (ttl 3000 ms) from now");
  const t = clock.t;
  const out2 = await runStep(state, { pipeline: "late", partition: "extract@1" }, { worker: "inv-2", deadline: 600_000, now, log, marginMs: 200, batch: source(clock) });
  assert.equal(out2.ends_at, t + 3000);
  assert.equal(logs.length, 1, JSON.stringify(logs));
  assert.match(logs[0], /passed .* ms ago.*configured lease/);
  await runStep(state, { pipeline: "late", partition: "transform@0" }, { worker: "inv-3", deadline: null, now, log, marginMs: 200, batch: source(clock) });
  assert.equal(logs.length, 2, "another reason is logged once too");
  assert.match(logs[1], /no deadline was reported/);
});

test("runStep: an invocation with no time for a batch releases and hands off; a few such in a row stop the chain", async () => {
  const store = new MemoryStore();
  const state = await pipeline(store, "short");
  const clock = { t: T0 };
  const now = () => clock.t;
  const logs = [];
  // The last write may begin at deadline − 300 (safety margin) − 200 (margin): no time at all for a batch.
  const opts = (worker) => ({ worker, deadline: clock.t + 500, now, marginMs: 200, log: (m) => logs.push(m), batch: () => assert.fail("no batch fits") });
  let event = { pipeline: "short", partition: "extract@0" };
  for (const idle of [1, 2, 3]) {
    const out = await runStep(state, event, opts(`inv-${idle}`));
    assert.deepEqual([out.outcome, out.batches, out.events[0].idle], ["continue", 0, idle]);
    assert.ok(store.doc("short", "extract@0").lease.released_at, "released, so the next one may claim at once");
    event = out.events[0];
  }
  const last = await runStep(state, event, opts("inv-4"));
  assert.deepEqual([last.outcome, last.events], ["no_time", []]);
  assert.match(logs.at(-1), /no batch fitted before the deadline in 4 invocations in a row/);
});

// ---------- the `oxiflow serve` driver, over fetch ----------

const bin = process.env.OXIFLOW_BIN ?? join(root, "target/release/oxiflow");
const token = "package-test-token-0123456789";
let server, base, dir;

function ox(...args) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("OXIFLOW_")));
  return execFileSync(bin, args, { cwd: dir, env, encoding: "utf8" });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "oxiflow-package-"));
  ox("state", "create", "remote", "--step", "fetch:2", "--step", "merge");
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
});

after(() => {
  server?.kill();
  rmSync(dir, { recursive: true, force: true });
});

test("the serve driver: claim, checkpoints and completion through `oxiflow serve`, one conditional request each; the CLI agrees", async () => {
  const state = new ServeState({ url: base, token });
  const { held } = await state.next("remote", "js-1");
  assert.ok(held.partition.startsWith("fetch@"), held.partition);
  assert.equal(state.requests, 1 + 4 + 1 + 1, "LIST, GET of the pipeline and its 3 partitions, PUT If-Match, GET of the pipeline (the reset check)");
  const before = state.requests;
  await held.checkpoint({ last_processed_id: "a-10", add_records: 10, add_bytes: 100 });
  await held.complete({ last_processed_id: "a-15", add_records: 5 });
  assert.equal(state.requests - before, 2, "a checkpoint and the completion: one PUT each");
  const view = JSON.parse(ox("state", "show", "remote", "--json"));
  const part = view.steps[0].partitions.find((p) => p.partition === held.partition);
  assert.deepEqual([Object.keys(part.status)[0], part.records_processed, part.bytes_processed, part.last_processed_id, part.lease.worker_id],
    ["completed", 15, 100, "a-15", "js-1"]);

  // The same conditional primitive: a second claimer is refused with who holds it, a stale write is fenced.
  const other = held.partition === "fetch@0" ? "fetch@1" : "fetch@0";
  const a = await new ServeState({ url: base, token }).claim("remote", other, "js-2");
  await assert.rejects(new ServeState({ url: base, token }).claim("remote", other, "js-3"), (e) => e instanceof StateError && e.kind === "lease_held" && e.detail.holder === "js-2");
  // Its lease (30 s) is past the skew allowance by a later clock: taken over; the old holder's next write is fenced by the store.
  const taker = await new ServeState({ url: base, token }).claim("remote", other, "js-4", () => Date.now() + 40_000);
  assert.equal(taker.lease.epoch, a.lease.epoch + 1);
  await assert.rejects(a.checkpoint({ add_records: 1 }), (e) => e instanceof StateError && e.kind === "fenced");
  assert.equal(JSON.parse(ox("state", "show", "remote", "--json")).steps[0].partitions.find((p) => p.partition === other).records_processed, 0);
});

test("the serve driver: a wrong token is refused at once (not retried as unavailable)", async () => {
  const state = new ServeState({ url: base, token: "wrong-token-wrong-token" });
  await assert.rejects(state.read("remote"), (e) => e.status === 401);
  await assert.rejects(state.claim("remote", "merge", "js-x"), (e) => e.status === 401);
  assert.equal(state.requests, 2, "one request each: no retry loop");
});

test("the package is what npm packed: exports for Node and browsers, types, the peer dependency", () => {
  const manifest = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
  assert.equal(manifest.name, "@oxiflow/state");
  assert.ok(manifest.peerDependencies["@aws-sdk/client-s3"]);
  assert.deepEqual(Object.keys(manifest.exports["."]), ["types", "browser", "node", "default"]);
  for (const target of [manifest.exports["."].types, manifest.exports["./s3"].types, manifest.exports["./serve"].types, manifest.imports["#core"].browser, manifest.imports["#core"].node]) {
    assert.ok(existsSync(join(pkgDir, target)), target);
  }
  assert.ok(existsSync(join(pkgDir, "core/web/oxiflow_wasm_bg.wasm")) && existsSync(join(pkgDir, "core/node/oxiflow_wasm_bg.wasm")));
});

test("a pipeline id that would leave the store is refused by the core before any request", async () => {
  const store = new MemoryStore();
  const state = new State({ store, config });
  for (const id of ["../outside", "a/b", ".hidden", ""]) {
    await assert.rejects(state.read(id), (e) => e instanceof StateError && e.kind === "invalid_id", id);
  }
  assert.equal(store.requests, 0, "nothing was listed or read");
});
