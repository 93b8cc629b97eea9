// The Node Lambda example under a simulated Lambda platform, against moto:
// every invocation is a fresh Node process (invoke.mjs → handler.mjs →
// @oxiflow/state from the packed tarball), initialised ahead of its event
// as Lambda does, with a short deadline counted from the event. The test
// plays the platform: it sends the first event, delivers every hand-off
// and continuation the invocations return, delivers ~20 % of events twice,
// SIGKILLs a process that passes its deadline and ~10 % of them at random
// points (and always one holder per step, mid-work), redelivers
// a killed invocation's event (as Lambda's async retry does), and retries
// an `already_running` answer when it says the lease may be taken over.
// Then: exact final counts, no downstream batch before its upstream
// completed, every killed holder's partition claimed again within
// deadline + skew + 1 s of its death, each lease epoch claimed once, the
// request counts per phase, and `oxiflow state show --json` agrees.
// Run: `node --test examples/node-lambda/` with OXIFLOW_TEST_S3_ENDPOINT set.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const endpoint = process.env.OXIFLOW_TEST_S3_ENDPOINT;
// A bucket of its own: moto lists by walking the whole bucket, and the shared one holds every earlier test's objects.
const bucket = `oxiflow-platform-${process.pid}`;
if (!endpoint) {
  if (process.env.CI) throw new Error("moto must run in CI (scripts/test.sh starts it)");
  console.log("SKIPPED: OXIFLOW_TEST_S3_ENDPOINT is not set");
  process.exit(0);
}

const DEADLINE_MS = 3000;
const SKEW_MS = 300;
const BOUND_MS = DEADLINE_MS + SKEW_MS + 1000;
const RECORDS = 300;
const SHARDS = 4;
const DUPLICATE = 0.2;
const KILL = 0.1;
const MAX_INVOCATIONS = 400;
// Reserved concurrency, as a Lambda function has it: events beyond it wait
// (throttled) until an invocation ends. It keeps a 2-core test machine from
// being swamped — a swamped machine overruns deadlines, whose redeliveries
// swamp it more.
const CONCURRENCY = 8;
const IDLE_SANDBOXES = 6;
const config = { lease: { ttl_ms: DEADLINE_MS, heartbeat_interval_ms: 1000, skew_allowance_ms: SKEW_MS, safety_margin_ms: 300 } };
const pipeline = "platform";
const prefix = `platform-${process.pid}`;
const here = new URL(".", import.meta.url).pathname;
const root = new URL("../../", import.meta.url).pathname;
const cwd = mkdtempSync(join(tmpdir(), "oxiflow-platform-"));

/** A seeded generator (mulberry32), so a failing run can be replayed with PLATFORM_SEED. */
const seed = Number(process.env.PLATFORM_SEED ?? Date.now() % 2 ** 31);
let s = seed;
const random = () => {
  s = (s + 0x6d2b79f5) | 0;
  let t = Math.imul(s ^ (s >>> 15), 1 | s);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

function ox(...args) {
  const env = { ...process.env, OXIFLOW_BACKEND: `s3://${bucket}/${prefix}`, OXIFLOW_ENDPOINT: endpoint, OXIFLOW_ALLOW_HTTP: "true",
    AWS_ACCESS_KEY_ID: "test", AWS_SECRET_ACCESS_KEY: "test" };
  return execFileSync(process.env.OXIFLOW_BIN ?? join(root, "target/release/oxiflow"), args, { cwd, env, encoding: "utf8" });
}

const env = { ...process.env, OXIFLOW_BUCKET: bucket, OXIFLOW_PREFIX: prefix, OXIFLOW_CONFIG: JSON.stringify(config),
  AWS_ENDPOINT_URL_S3: endpoint, AWS_ACCESS_KEY_ID: "test", AWS_SECRET_ACCESS_KEY: "test", AWS_REGION: "us-east-1",
  EXAMPLE_RECORDS: String(RECORDS), EXAMPLE_BATCH: "10", EXAMPLE_BATCH_MS: "150", INVOKE_TRACE: "1" };
delete env.OXIFLOW_HANDOFF_FUNCTION;

/**
 * The platform: invocations as processes, deliveries, kills, retries. Like
 * Lambda, it initialises sandboxes ahead of events (a few idle ones, each
 * a fresh process that has loaded the handler and waits for its one event),
 * and an invocation's deadline counts from the event, not from the init.
 */
class Platform {
  invocations = [];
  deaths = [];
  claims = [];
  batches = [];
  errors = [];
  outcomes = {};
  duplicates = 0;
  throttled = 0;
  /** Partitions whose first holder seen past its first batch is killed, whatever the dice say: one per step. */
  forced = new Set(["extract@0", "transform@1", "load"]);
  #busy = new Set();
  #idle = [];
  #all = new Set();
  #starting = 0;
  #queue = [];
  #timers = new Set();
  #closed = false;
  #done;
  finished = new Promise((resolve) => (this.#done = resolve));

  constructor() {
    this.#refill();
  }

  /** Delivers an event: one invocation, or two (a duplicate delivery). `urgent` (a retry at its time) goes first. */
  deliver(event, urgent = false) {
    if (this.#busy.size >= CONCURRENCY) this.throttled++;
    if (urgent) this.#queue.unshift(event);
    else this.#queue.push(event);
    if (random() < DUPLICATE) {
      this.duplicates++;
      this.later(Date.now() + Math.floor(random() * 300), () => this.#queue.push(event));
    }
    this.#pump();
  }

  later(at, f) {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      f();
      this.#pump();
    }, Math.max(0, at - Date.now()));
    this.#timers.add(timer);
  }

  /** Hands queued events to idle sandboxes, within the reserved concurrency; ends when nothing is left. */
  #pump() {
    while (this.#queue.length > 0 && this.#idle.length > 0 && this.#busy.size < CONCURRENCY) this.#run(this.#idle.shift(), this.#queue.shift());
    this.#refill();
    if (this.#busy.size === 0 && this.#timers.size === 0 && this.#queue.length === 0 && !this.#closed) {
      this.#closed = true;
      for (const sandbox of this.#all) sandbox.child.kill("SIGKILL"); // the idle ones, and any still starting
      this.#done();
    }
  }

  /** Keeps a few fresh sandboxes initialised ahead of events. */
  #refill() {
    const wanted = IDLE_SANDBOXES + Math.min(this.#queue.length, Math.max(0, CONCURRENCY - this.#busy.size));
    while (!this.#closed && this.#idle.length + this.#starting < wanted) this.#sandbox();
  }

  #sandbox() {
    this.#starting++;
    const child = spawn(process.execPath, [join(here, "invoke.mjs")], { env, stdio: ["pipe", "pipe", "pipe"] });
    const sandbox = { child, spawned: Date.now(), inv: null, lines: [], stderr: "" };
    this.#all.add(sandbox);
    let buffer = "";
    child.stdout.on("data", (chunk) => {
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        this.#line(sandbox, line);
      }
    });
    child.stderr.on("data", (d) => (sandbox.stderr += d));
    child.on("exit", () => {
      this.#all.delete(sandbox);
      this.#exit(sandbox);
    });
  }

  #line(sandbox, line) {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    const inv = sandbox.inv;
    if (inv) inv.lines.push(line);
    if (msg.ready) {
      sandbox.ready = msg.ready;
      this.#starting--;
      this.#idle.push(sandbox);
      this.#pump();
    } else if (!inv) {
      return;
    } else if (msg.claimed) {
      inv.claimed = msg;
      this.claims.push({ partition: msg.claimed, epoch: msg.epoch, at: msg.at, ends_at: msg.ends_at });
    } else if (msg.batch) {
      this.batches.push({ partition: msg.batch, from: msg.from, to: msg.to, at: msg.at });
      if (msg.from > 0 && this.forced.delete(msg.batch)) this.#kill(sandbox, "forced");
    } else if (msg.result) inv.result = msg.result;
    else if (msg.error) inv.error = msg.error;
  }

  #run(sandbox, event) {
    if (this.invocations.length >= MAX_INVOCATIONS) {
      this.errors.push(`more than ${MAX_INVOCATIONS} invocations: ${JSON.stringify(event)}`);
      sandbox.child.kill("SIGKILL");
      return;
    }
    const started = Date.now();
    const inv = { event, started, deadline: started + DEADLINE_MS, init_ms: sandbox.ready - sandbox.spawned, claimed: null, result: null, killed: null, lines: [] };
    sandbox.inv = inv;
    this.invocations.push(inv);
    this.#busy.add(sandbox);
    sandbox.timers = [setTimeout(() => this.#kill(sandbox, "deadline"), DEADLINE_MS)];
    if (random() < KILL) sandbox.timers.push(setTimeout(() => this.#kill(sandbox, "random"), Math.floor(random() * DEADLINE_MS)));
    sandbox.child.stdin.end(`${JSON.stringify({ event, timeout_ms: DEADLINE_MS })}\n`);
  }

  #kill(sandbox, why) {
    const { child, inv } = sandbox;
    if (child.exitCode !== null || child.signalCode !== null || inv.killed || inv.result) return;
    inv.killed = { why, at: Date.now() };
    child.kill("SIGKILL");
  }

  #exit(sandbox) {
    const inv = sandbox.inv;
    if (!inv) {
      if (!sandbox.ready) this.#starting--;
      this.#idle = this.#idle.filter((s) => s !== sandbox);
      if (!this.#closed) this.errors.push(`a sandbox died before its event: ${sandbox.stderr.slice(-1000)}`);
      this.#pump();
      return;
    }
    sandbox.timers.forEach(clearTimeout);
    this.#busy.delete(sandbox);
    inv.stderr = sandbox.stderr;
    // The handler's answer counts once it is out, even if the process was killed while exiting.
    if (inv.killed && !inv.result) {
      this.deaths.push({ partition: inv.event.partition ?? null, at: inv.killed.at, why: inv.killed.why, held: inv.claimed });
      this.deliver(inv.event); // Lambda retries a failed asynchronous invocation
    } else if (inv.result) {
      const r = inv.result;
      this.outcomes[r.outcome] = (this.outcomes[r.outcome] ?? 0) + 1;
      if (r.outcome === "already_running") this.later(r.retry_at, () => this.deliver(r.retry, true));
      for (const next of r.events) this.deliver(next);
    } else {
      this.errors.push(`${JSON.stringify(inv.event)}: ${inv.error ?? "no result"}\n${sandbox.stderr.slice(-2000)}`);
    }
    this.#pump();
  }
}

const quantile = (xs, q) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
};

test("a pipeline of Lambda invocations under duplicates, kills and a 3 s deadline completes exactly, in order, taking over killed holders within deadline + skew + 1 s", { timeout: 240_000 }, async (t) => {
  const { S3Client, CreateBucketCommand } = await import("@aws-sdk/client-s3");
  await new S3Client({ endpoint, forcePathStyle: true, region: "us-east-1", credentials: { accessKeyId: "test", secretAccessKey: "test" } })
    .send(new CreateBucketCommand({ Bucket: bucket }));
  ox("state", "create", pipeline, "--step", `extract:${SHARDS}`, "--step", `transform:${SHARDS}`, "--step", "load", "--after", "transform=extract:aligned");
  const platform = new Platform();
  const began = Date.now();
  platform.deliver({ pipeline });
  await platform.finished;
  const took = Date.now() - began;
  t.diagnostic(`seed ${seed} (PLATFORM_SEED replays the dice); ${platform.invocations.length} invocations in ${(took / 1000).toFixed(1)} s, ` +
    `${platform.duplicates} duplicate deliveries, ${platform.throttled} throttled, ${platform.deaths.length} kills (${platform.deaths.filter((d) => d.why === "deadline").length} at the deadline), ` +
    `outcomes ${JSON.stringify(platform.outcomes)}`);
  const overrun = platform.invocations.filter((i) => i.killed?.why === "deadline");
  const show = (i) => `${JSON.stringify(i.event)} started ${i.started - began} ms, killed ${i.killed?.at - i.started} ms later:\n  ${i.lines.slice(-12).join("\n  ")}\n  ${i.stderr.split("\n").filter((l) => !/NodeVersionSupport|versions published|require node|To continue|security updates|More information|trace-warnings/.test(l)).join("\n  ").slice(-1500)}`;
  assert.deepEqual(platform.errors, [], `no invocation failed; ${overrun.length} overran the deadline, the first: ${overrun.slice(0, 3).map(show).join("\n")}`);

  // The CLI's view of the same bucket: completed, exact counts, bookmarks at the end.
  const view = JSON.parse(ox("state", "show", pipeline, "--json"));
  const parts = view.steps.flatMap((s) => s.partitions);
  const history = (partition) => platform.invocations.filter((i) => i.event.partition === partition).map((i) =>
    `  +${i.started - began} ${JSON.stringify(i.event)} → ${i.result ? `${i.result.outcome}${i.result.epoch != null ? ` epoch ${i.result.epoch}` : ""}${i.result.retry_at ? ` retry at +${i.result.retry_at - began}` : ""}` : i.killed ? `killed (${i.killed.why}) at +${i.killed.at - began}` : "no answer"}` +
    `${i.claimed ? `, claimed epoch ${i.claimed.epoch}` : ""}${i.killed && i.result ? ` (killed while exiting, ${i.killed.why})` : ""}`).join("\n");
  const unfinished = parts.filter((p) => typeof p.status !== "object" || !("completed" in p.status));
  assert.equal(view.status, "completed", `${JSON.stringify(view.steps.map((s) => [s.step_id, s.status]))}; unfinished:\n` +
    unfinished.map((p) => `${p.partition}: ${JSON.stringify(p.status)} lease ${JSON.stringify(p.lease)}\n${history(p.partition)}`).join("\n"));
  assert.equal(parts.length, 2 * SHARDS + 1);
  for (const p of parts) {
    assert.deepEqual([p.partition, Object.keys(p.status)[0], p.records_processed, p.bytes_processed, p.last_processed_id],
      [p.partition, "completed", RECORDS, RECORDS * 100, `r-${String(RECORDS).padStart(4, "0")}`]);
  }
  assert.equal(view.records_processed, (2 * SHARDS + 1) * RECORDS);
  const completedAt = Object.fromEntries(parts.map((p) => [p.partition, p.status.completed.completed_at]));

  // The CLI agrees with what the invocations logged: the last claim of each partition is the lease it shows.
  for (const p of parts) {
    const last = platform.claims.filter((c) => c.partition === p.partition).sort((a, b) => b.epoch - a.epoch)[0];
    assert.equal(p.lease.epoch, last.epoch, `${p.partition}: the stored lease is the last claim logged`);
  }
  // Each lease epoch of a partition was claimed by one invocation only.
  const epochs = platform.claims.map((c) => `${c.partition}#${c.epoch}`);
  assert.equal(new Set(epochs).size, epochs.length, "no epoch claimed twice");

  // No downstream batch began before its upstream completed.
  const upstream = (p) => (p.startsWith("transform@") ? [`extract@${p.split("@")[1]}`] : p === "load" ? Array.from({ length: SHARDS }, (_, i) => `transform@${i}`) : []);
  for (const b of platform.batches) {
    for (const u of upstream(b.partition)) assert.ok(b.at >= completedAt[u], `${b.partition} batch ${b.from}-${b.to} at ${b.at} before ${u} completed at ${completedAt[u]}`);
  }
  assert.deepEqual([...new Set(platform.batches.map((b) => b.partition))].sort(), Object.keys(completedAt).sort(), "every partition ran batches");

  // Every killed holder's partition was claimed again within deadline + skew + 1 s of its death
  // (unless its completion had landed before it died).
  const latencies = [];
  const late = [];
  for (const d of platform.deaths.filter((d) => d.held && d.partition && completedAt[d.partition] > d.at)) {
    const next = platform.claims.filter((c) => c.partition === d.partition && c.at > d.at).sort((a, b) => a.at - b.at)[0];
    assert.ok(next, `${d.partition} killed at ${d.at} (${d.why}) was never claimed again`);
    latencies.push(next.at - d.at);
    const by = platform.invocations.find((i) => i.claimed?.claimed === d.partition && i.claimed.epoch === next.epoch);
    if (next.at - d.at > BOUND_MS) {
      late.push(`${d.partition}: claimed again ${next.at - d.at} ms after its holder died (${d.why}; its lease ended at ` +
        `${d.held.ends_at - d.at} ms after the death); the claimer got its event ${by.started - d.at} ms after the death ` +
        `and claimed ${next.at - by.started} ms after that; event ${JSON.stringify(by.event)}`);
    }
  }
  const inits = platform.invocations.map((i) => i.init_ms);
  t.diagnostic(`sandbox init (process start to handler loaded, ahead of the event): median ${quantile(inits, 0.5)} ms, max ${Math.max(...inits)} ms`);
  t.diagnostic(`takeover after a holder's death (${latencies.length}): median ${quantile(latencies, 0.5)} ms, max ${Math.max(...latencies)} ms, ` +
    `all ${JSON.stringify([...latencies].sort((a, b) => a - b))}; bound ${BOUND_MS} ms (deadline ${DEADLINE_MS} + skew ${SKEW_MS} + 1000)`);
  assert.deepEqual(late, [], `every killed holder's partition is claimed again within ${BOUND_MS} ms of its death`);
  assert.ok(latencies.length >= 3, "at least one holder per step was killed mid-work (the forced kills)");

  // Store requests per phase, counted by each invocation's S3 store against moto.
  const ran = platform.invocations.map((i) => i.result).filter((r) => r?.requests);
  const claims = ran.map((r) => r.requests.claim);
  const perBatch = ran.flatMap((r) => r.requests.batches);
  const releases = ran.filter((r) => r.outcome === "continue" && !r.expired).map((r) => r.requests.finish);
  const completions = ran.filter((r) => r.outcome === "completed").map((r) => r.requests.finish);
  assert.ok(claims.every((n) => n === 3), `a claim is GET + PUT + GET of the pipeline: ${JSON.stringify(claims)}`);
  assert.ok(perBatch.every((n) => n === 1), `a checkpoint is one PUT: ${JSON.stringify(perBatch)}`);
  assert.ok(releases.every((n) => n === 1), `a release is one PUT: ${JSON.stringify(releases)}`);
  const documents = parts.length + 1;
  assert.ok(completions.every((n) => n === 1 + 1 + documents), `a completion is one PUT, then the hand-off's LIST and GETs of the ${documents} documents (a fresh process): ${JSON.stringify(completions)}`);
  const writes = platform.invocations.filter((i) => i.result && ["already_running", "already_done", "superseded"].includes(i.result.outcome));
  t.diagnostic(`requests per invocation: claim ${claims[0]} (×${claims.length}), batch ${perBatch[0]} (×${perBatch.length}), ` +
    `release ${releases[0] ?? "-"} (×${releases.length}), completion ${completions[0]} incl. the hand-off's reads (×${completions.length}); ` +
    `${writes.length} duplicate/retry answers wrote nothing`);
  assert.ok(platform.duplicates > 0 && (platform.outcomes.already_running ?? 0) + (platform.outcomes.already_done ?? 0) + (platform.outcomes.superseded ?? 0) > 0,
    "duplicates were delivered and answered without work");
  assert.ok((platform.outcomes.continue ?? 0) > 0, "some partition took more than one invocation");
});
