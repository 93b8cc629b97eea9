// The Node.js package of the core: the shared vectors; a claim, the holder
// session's checkpoints and the scheduler, driven from JavaScript with its
// own I/O against a store in a Map. Run after scripts/build-wasm.sh:
// `node --test wasm/tests/`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const wasm = require("../pkg/node/oxiflow_wasm.js");

test("the shared core vectors pass in Node", () => {
  const dir = new URL("../../core/vectors/", import.meta.url);
  let passed = 0;
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".json"))) {
    passed += wasm.runVectors(readFileSync(new URL(file, dir), "utf8"));
  }
  assert.ok(passed >= 25, `only ${passed} vectors ran`);
});

/** A conditional store in a Map: what S3 does, in a few lines. `lose`: the
 * next PUT lands but its response is lost (the caller sees a timeout). */
class MemoryStore {
  objects = new Map();
  next = 0;
  requests = 0;
  lose = 0;
  perform(send, body) {
    this.requests++;
    if (send.get) {
      const o = this.objects.get(send.get.key);
      return o ? [{ object: { version: { e_tag: o.etag } } }, o.body] : [{ object: null }, null];
    }
    const { key } = send.put_if_absent ?? send.put_if_match;
    const current = this.objects.get(key);
    if (send.put_if_absent && current) return ["already_exists", null];
    if (send.put_if_match && current?.etag !== send.put_if_match.version.e_tag) return ["precondition", null];
    const etag = `"${++this.next}"`;
    this.objects.set(key, { body, etag });
    if (this.lose > 0) {
      this.lose--;
      return [{ unavailable: { reason: "timeout: the response was lost" } }, null];
    }
    return [{ written: { e_tag: etag } }, null];
  }
  /** The documents as decoded by the core, for `schedule` and `aggregate`. */
  decoded(pipeline) {
    const prefix = `pipelines/${pipeline}/partitions/`;
    return [...this.objects].filter(([k]) => k.startsWith(prefix)).map(([k, o]) => JSON.parse(wasm.decodePartition(k, o.body)));
  }
}

const random = () => Math.floor(Math.random() * 2 ** 32);

/** Drives an `Operation` or a `HolderSession` (after its first action) to its end. */
function drive(driver, action, store, now) {
  action = JSON.parse(action);
  while (!("done" in action)) {
    if ("sleep_ms" in action) {
      action = JSON.parse(driver.wake(now));
      continue;
    }
    const [response, body] = store.perform(action.send, driver.body());
    action = JSON.parse(driver.handle(JSON.stringify(response), body, now, random()));
  }
  return action.done;
}

const run = (op, store, now) => drive(op, op.start(now), store, now);
const write = (held, store, now, progress, finish = null) =>
  drive(held, held.write(JSON.stringify(progress), finish && JSON.stringify(finish), random(), now), store, now);

test("JavaScript drives create, claim and a one-request checkpoint", () => {
  const store = new MemoryStore();
  const now = 1_764_000_000_000;
  const key = wasm.partitionKey("orders", "load@1");
  assert.equal(key, "pipelines/orders/partitions/load@1.json");

  const created = run(new wasm.Operation(key, JSON.stringify({ create: JSON.parse(wasm.newPartition("orders", "load@1", "run-1", now)) })), store, now);
  assert.ok(created.ok, JSON.stringify(created));

  const claimed = run(new wasm.Operation(key, JSON.stringify({ claim: { worker_id: "lambda-1", write_id: 7 } })), store, now).ok;
  assert.equal(claimed.requests, 2);
  assert.equal(claimed.doc.lease.worker_id, "lambda-1");

  const holder = { worker_id: "lambda-1", epoch: claimed.doc.lease.epoch, last_write: claimed.doc.lease.last_write };
  const spec = { write: { holder, write_id: 8, progress: { last_processed_id: "order-100", add_records: 100 } } };
  const before = store.requests;
  const saved = run(new wasm.Operation(key, JSON.stringify(spec), null, JSON.stringify(claimed.doc), JSON.stringify(claimed.version)), store, now + 1000).ok;
  assert.equal(store.requests - before, 1, "a checkpoint from the cached document is one PUT");
  assert.equal(saved.doc.records_processed, 100);

  // What was stored decodes (checksum and all) to the same document.
  const stored = JSON.parse(wasm.decodePartition(key, store.objects.get(key).body));
  assert.equal(stored.last_processed_id, "order-100");

  // Someone else cannot claim it; the error is typed.
  const refused = run(new wasm.Operation(key, JSON.stringify({ claim: { worker_id: "lambda-2", write_id: 9 } })), store, now + 2000);
  assert.equal(refused.error.error, "lease_held");
  assert.equal(refused.error.holder, "lambda-1");
});

test("the scheduler orders a pipeline with dependencies; the holder session checkpoints, survives a lost response and honours a stop", () => {
  const store = new MemoryStore();
  let now = 1_764_000_000_000;
  // extract:2 → transform:2 (shard i after extract@i) → load (after all of transform).
  const plan = [
    { step_id: "extract", shards: 2 },
    { step_id: "transform", shards: 2, after: [{ step_id: "extract", kind: "aligned" }] },
    { step_id: "load", after: [{ step_id: "transform" }] },
  ];
  const pipeline = wasm.newPipeline("shop", "run-1", JSON.stringify(plan), now);
  assert.deepEqual(JSON.parse(pipeline).steps, [plan[0], plan[1], { step_id: "load", after: [{ step_id: "transform" }] }]);
  assert.throws(() => wasm.newPipeline("shop", "run-1", JSON.stringify([{ step_id: "a", after: [{ step_id: "a" }] }]), now),
    (e) => JSON.parse(e).error === "invalid_input" && /depends on itself/.test(JSON.parse(e).reason));
  for (const part of ["extract@0", "extract@1", "transform@0", "transform@1", "load"]) {
    const doc = JSON.parse(wasm.newPartition("shop", part, "run-1", now));
    assert.ok(run(new wasm.Operation(wasm.partitionKey("shop", part), JSON.stringify({ create: doc })), store, now).ok);
  }
  const scheduleNow = (worker = "w1") => JSON.parse(wasm.schedule(pipeline, JSON.stringify(store.decoded("shop")), now, worker, random()));

  let plan0 = scheduleNow();
  assert.deepEqual([...plan0.claimable].sort(), ["extract@0", "extract@1"], "only the first step is ready");
  assert.equal(plan0.status, "pending");
  const readiness = (s, part) => s.steps.flatMap((st) => st.partitions).find((p) => p.partition === part).readiness;
  assert.deepEqual(readiness(plan0, "transform@1"), { state: "waiting", on: ["extract@1"], count: 1 }, "aligned: shard 1 waits for shard 1");
  assert.deepEqual(readiness(plan0, "load"), { state: "waiting", on: ["transform@0", "transform@1"], count: 2 });

  // Claim the best partition: GET + PUT. The session then holds it.
  const part = plan0.claimable[0];
  const key = wasm.partitionKey("shop", part);
  const claim = run(new wasm.Operation(key, JSON.stringify({ claim: { worker_id: "w1", write_id: random() } })), store, now);
  assert.equal(claim.ok.requests, 2);
  const held = wasm.HolderSession.claimed(key, JSON.stringify(claim.ok), null, now);
  assert.ok(held.trusts(now) && !held.isReleased());
  assert.equal(held.heartbeatDue(), now + 10_000);
  assert.deepEqual(readiness(scheduleNow(), part), { state: "held", worker_id: "w1", until: claim.ok.doc.lease.expires_at });
  assert.deepEqual(scheduleNow("w1").claimable.at(-1), part, "its own live lease comes last for its holder");

  // A checkpoint is one PUT from the session's document.
  now += 1000;
  let before = store.requests;
  const saved = write(held, store, now, { last_processed_id: "order-100", add_records: 100 });
  assert.deepEqual(saved.ok, { landed: true, stop: null, requests: 1 });
  assert.equal(store.requests - before, 1);
  assert.equal(JSON.parse(held.doc()).records_processed, 100);
  assert.deepEqual(JSON.parse(held.version()), { e_tag: store.objects.get(key).etag });

  // The next PUT lands but its answer is lost: the core retries, finds its
  // own write already stored, and counts the records once.
  now += 1000;
  store.lose = 1;
  const lost = write(held, store, now, { last_processed_id: "order-150", add_records: 50 });
  assert.ok(lost.ok?.landed, JSON.stringify(lost));
  const stored = JSON.parse(wasm.decodePartition(key, store.objects.get(key).body));
  assert.equal(stored.records_processed, 150, "counted once");
  assert.equal(JSON.parse(held.doc()).last_processed_id, "order-150");

  // A short-lived process resumes the session from a fresh read; a worker that never held it is refused.
  const [object, bytes] = store.perform({ get: { key } });
  const docJson = wasm.decodePartition(key, bytes);
  const resumed = wasm.HolderSession.resume(key, docJson, JSON.stringify(object.object.version), "w1", null, now);
  assert.equal(JSON.parse(resumed.doc()).records_processed, 150);
  assert.throws(() => wasm.HolderSession.resume(key, docJson, JSON.stringify(object.object.version), "w2", null, now),
    (e) => JSON.parse(e).error === "not_holder" && JSON.parse(e).holder === "w1");

  // Complete: the aligned shard downstream becomes ready, the rest still waits.
  now += 1000;
  const done = write(held, store, now, { add_records: 10 }, "complete");
  assert.deepEqual(done.ok, { landed: true, stop: null, requests: 1 });
  assert.ok(held.isReleased() && !held.trusts(now));
  assert.equal(write(held, store, now, { add_records: 1 }).error.error, "fenced", "a released session writes no more");
  const shard = part.split("@")[1];
  const plan1 = scheduleNow("w2");
  assert.ok(plan1.claimable.includes(`transform@${shard}`), JSON.stringify(plan1.claimable));
  assert.deepEqual(plan1.frontier, ["extract", "transform"]);
  assert.equal(plan1.status, "running");
  assert.equal(readiness(plan1, "load").count, 2);

  // A stop request: the holder's next write is stored, then the lease is released.
  const other = `extract@${1 - shard}`;
  const otherKey = wasm.partitionKey("shop", other);
  const claim2 = run(new wasm.Operation(otherKey, JSON.stringify({ claim: { worker_id: "w2", write_id: random() } })), store, now);
  const held2 = wasm.HolderSession.claimed(otherKey, JSON.stringify(claim2.ok), null, now);
  const stop = run(new wasm.Operation(otherKey, JSON.stringify({ request_stop: { worker_id: "w2", requested_by: "operator" } })), store, now);
  assert.ok(stop.ok.wrote);
  now += 1000;
  const stopped = write(held2, store, now, { add_records: 5 });
  assert.equal(stopped.ok.stop.requested_by, "operator");
  assert.ok(held2.isReleased());
  const after = JSON.parse(wasm.decodePartition(otherKey, store.objects.get(otherKey).body));
  assert.equal(after.records_processed, 5, "the write before the release is kept");
  assert.ok(after.lease.released_at);

  // The view agrees with the scheduler.
  const view = JSON.parse(wasm.aggregate(pipeline, JSON.stringify(store.decoded("shop")), now));
  assert.deepEqual(view.steps.map((s) => [s.step_id, s.after, s.total, s.completed]),
    [["extract", [], 2, 1], ["transform", ["extract (aligned)"], 2, 0], ["load", ["transform"], 1, 0]]);
  assert.deepEqual(view.steps[2].partitions[0].readiness, { state: "waiting", on: ["transform@0", "transform@1"], count: 2 });
});

test("damaged bytes are refused with a typed error", () => {
  assert.throws(() => wasm.decodePartition("k", new TextEncoder().encode('{"format_version":1,"x":')), (e) => JSON.parse(e).error === "corrupt");
  assert.throws(() => wasm.decodePartition("k", new TextEncoder().encode('{"format_version":9,"a":1,"checksum":"00000000"}')), (e) => JSON.parse(e).error === "unsupported_format");
});

test("holders with a deadline: the core's judgement of a reported deadline, the lease capped there, the pace, the hand-off", () => {
  const now = 1_764_000_000_000;
  const judge = (reported) => JSON.parse(wasm.judgeDeadline(reported, now, JSON.stringify({ lease: { ttl_ms: 30_000 } })));
  assert.deepEqual(judge(now + 60_000), { ends_at: now + 60_000 });
  assert.deepEqual(judge(null), { ends_at: now + 30_000, distrust: { reason: "missing" }, message: "no deadline was reported" });
  assert.equal(judge(600_000).distrust.reason, "past", "a duration sent where a time belongs");
  assert.deepEqual(judge(now + 16 * 60_000).distrust, { reason: "too_far", ahead_ms: 16 * 60_000 });

  // A claim with a deadline 5 s ahead: the lease ends there, though the configured ttl is 30 s…
  const store = new MemoryStore();
  const key = wasm.partitionKey("orders", "extract");
  run(new wasm.Operation(key, JSON.stringify({ create: JSON.parse(wasm.newPartition("orders", "extract", "run-1", now)) })), store, now);
  const deadline = now + 5_000;
  const config = wasm.deadlineConfig(null, deadline, now);
  assert.equal(JSON.parse(config).lease.ttl_ms, 30_000, "the configured ttl is already longer than the time to the deadline");
  assert.equal(JSON.parse(wasm.deadlineConfig(null, now + 120_000, now)).lease.ttl_ms, 120_000, "a later deadline: the lease lasts until it, no heartbeats");
  const claimed = run(new wasm.Operation(key, JSON.stringify({ claim: { worker_id: "lambda-1", write_id: 1, deadline } }), config), store, now).ok;
  assert.equal(claimed.doc.lease.expires_at, deadline);
  // …and no write of the session extends it: the checkpoint's document keeps it.
  const held = wasm.HolderSession.claimed(key, JSON.stringify(claimed), config, now, deadline);
  assert.equal(held.deadline(), deadline);
  assert.ok(write(held, store, now + 1_000, { add_records: 5 }).ok.landed);
  assert.equal(JSON.parse(wasm.decodePartition(key, store.objects.get(key).body)).lease.expires_at, deadline);
  // Without the cap the same write pushes it a whole ttl on.
  const uncapped = wasm.HolderSession.claimed(key, JSON.stringify({ ...claimed, doc: JSON.parse(held.doc()), version: JSON.parse(held.version()) }), config, now);
  assert.equal(uncapped.deadline(), undefined);
  // Others may take over the first millisecond past expires_at + skew (2 s by default).
  const lease = JSON.parse(held.doc()).lease;
  assert.equal(wasm.takeoverAt(JSON.stringify(lease)), deadline + 2_000 + 1);
  assert.equal(wasm.takeoverAt(JSON.stringify({ ...lease, released_at: now })), undefined, "released: claimable now");
  const early = run(new wasm.Operation(key, JSON.stringify({ claim: { worker_id: "lambda-2", write_id: 2 } })), store, deadline + 2_000);
  assert.equal(early.error.error, "lease_held");
  const late = run(new wasm.Operation(key, JSON.stringify({ claim: { worker_id: "lambda-2", write_id: 2 } })), store, deadline + 2_001);
  assert.equal(late.ok.doc.lease.epoch, lease.epoch + 1);
  // The killed holder's write, by its own clock past trust, is refused before it is sent.
  const before = store.requests;
  assert.equal(write(held, store, deadline - 1_000, { add_records: 1 }).error.error, "expired");
  assert.equal(store.requests, before, "nothing sent");

  // The pace: the last write may begin at 5000 − 2000 (safety margin) − 300 (margin) = 2700 ms.
  const pace = new wasm.Pace(deadline, 300, null);
  assert.equal(pace.lastWriteAt(), now + 2_700);
  assert.ok(pace.anotherBatch(now), "the first batch, while time is left");
  assert.equal(pace.budget(now), 2_700);
  pace.record(1_000);
  assert.ok(pace.anotherBatch(now + 1_700) && !pace.anotherBatch(now + 1_701), "only while the longest batch still fits");
  assert.deepEqual(JSON.parse(pace.measured()), { longest_ms: 1_000, batches: 1 });

  // The hand-off: an aligned shard follows its own upstream shard; a barrier waits for all.
  const plan = [{ step_id: "extract", shards: 2 }, { step_id: "transform", shards: 2, after: [{ step_id: "extract", kind: "aligned" }] },
    { step_id: "load", after: [{ step_id: "transform" }] }];
  const pipeline = wasm.newPipeline("shop", "run-1", JSON.stringify(plan), now);
  const docs = ["extract@0", "extract@1", "transform@0", "transform@1", "load"].map((p) => JSON.parse(wasm.newPartition("shop", p, "run-1", now)));
  const complete = (i) => (docs[i].status = { completed: { completed_at: now } });
  const handoff = (done) => JSON.parse(wasm.handoff(pipeline, JSON.stringify(docs), now, done));
  complete(1);
  assert.deepEqual(handoff("extract@1"), ["transform@1"]);
  complete(3);
  assert.deepEqual(handoff("transform@1"), [], "load waits on transform@0");
  complete(0);
  complete(2);
  assert.deepEqual(handoff("transform@0"), ["load"]);
  assert.deepEqual(handoff("load"), []);
});
