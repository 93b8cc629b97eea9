// The Node Lambda example and the S3 driver of @oxiflow/state (installed
// from the packed tarball) against the S3 server process (moto, started by
// scripts/test.sh), interoperating with the native CLI on the same bucket.
// Run: `node --test examples/node-lambda/` with OXIFLOW_TEST_S3_ENDPOINT set.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { S3Client } from "@aws-sdk/client-s3";

const endpoint = process.env.OXIFLOW_TEST_S3_ENDPOINT;
const bucket = process.env.OXIFLOW_TEST_S3_BUCKET ?? "oxiflow-test";
if (!endpoint) {
  if (process.env.CI) throw new Error("moto must run in CI (scripts/test.sh starts it)");
  console.log("SKIPPED: OXIFLOW_TEST_S3_ENDPOINT is not set");
  process.exit(0);
}
const prefix = `lambda-${process.pid}`;
const credentials = { accessKeyId: "test", secretAccessKey: "test" };
process.env.AWS_REGION = "us-east-1";
process.env.OXIFLOW_BUCKET = bucket;
process.env.OXIFLOW_PREFIX = prefix;

const client = () => new S3Client({ endpoint, forcePathStyle: true, region: "us-east-1", credentials, maxAttempts: 1 });
const { S3State, StateError } = await import("@oxiflow/state/s3");
const root = new URL("../../", import.meta.url).pathname;
const cwd = mkdtempSync(join(tmpdir(), "oxiflow-lambda-"));

/** The native CLI on the same bucket and prefix. */
function ox(...args) {
  const env = { ...process.env, OXIFLOW_BACKEND: `s3://${bucket}/${prefix}`, OXIFLOW_ENDPOINT: endpoint, OXIFLOW_ALLOW_HTTP: "true",
    AWS_ACCESS_KEY_ID: "test", AWS_SECRET_ACCESS_KEY: "test" };
  return execFileSync(process.env.OXIFLOW_BIN ?? join(root, "target/release/oxiflow"), args, { cwd, env, encoding: "utf8" });
}

before(() => {
  ox("state", "create", "orders", "--step", "extract", "--step", "load:2");
  ox("state", "create", "flow", "--step", "fetch", "--step", "merge");
});

const context = (ms = 10_000, id = `req-${Math.random().toString(36).slice(2)}`) => {
  const deadline = Date.now() + ms;
  return { awsRequestId: id, getRemainingTimeInMillis: () => deadline - Date.now() };
};

test("a Lambda runs a partition to completion within its deadline and hands off what became ready; the CLI sees it", async () => {
  // The handler's own client takes its settings from the environment, as in a Lambda.
  Object.assign(process.env, { AWS_ENDPOINT_URL_S3: endpoint, AWS_ACCESS_KEY_ID: "test", AWS_SECRET_ACCESS_KEY: "test",
    EXAMPLE_RECORDS: "30", EXAMPLE_BATCH_MS: "20" });
  const { handler } = await import("./handler.mjs");
  const started = await handler({ pipeline: "orders" }, context());
  assert.deepEqual([started.outcome, started.ready], ["started", ["extract"]]);
  const out = await handler(started.events[0], context(10_000, "lambda-a"));
  assert.equal(out.outcome, "completed", JSON.stringify(out));
  assert.deepEqual([out.batches, out.records_processed, [...out.ready].sort()], [3, 30, ["load@0", "load@1"]]);
  assert.deepEqual(out.requests.claim, 3, "GET, PUT If-Match, GET of the pipeline (the reset check)");
  assert.deepEqual(out.requests.batches, [1, 1], "one PUT per checkpoint; the last batch is the completion");
  assert.equal(out.requests.finish, 1 + 1 + 1, "the completing PUT, then the hand-off's LIST and a GET of the one document changed since this warm process read the pipeline");
  const view = JSON.parse(ox("state", "show", "orders", "--json"));
  const extract = view.steps.find((s) => s.step_id === "extract").partitions[0];
  assert.deepEqual(Object.keys(extract.status), ["completed"]);
  assert.equal(extract.records_processed, 30);
  assert.equal(extract.bytes_processed, 3000);
  assert.equal(extract.last_processed_id, "r-0030");
  assert.equal(extract.lease.worker_id, "lambda-a");
  assert.ok(extract.lease.expires_at <= Date.now() + 10_000, "the lease ended by the deadline");
  // Delivered again (a retry, a duplicate): no write, the hand-off again.
  const again = await handler(started.events[0], context());
  assert.deepEqual([again.outcome, [...again.ready].sort()], ["already_done", ["load@0", "load@1"]]);
});

test("without a step the S3 state takes what the scheduler says is ready; a Lambda for a held partition answers already_running, writing nothing", async () => {
  const { handler } = await import("./handler.mjs");
  const state = new S3State({ bucket, prefix, client: client() });
  // Another worker holds the first step: nothing is ready, and the answer says why.
  const { held } = await state.next("flow", "lambda-first");
  assert.equal(held.doc.step_id, "fetch");
  const cold = state.requests;
  assert.equal(cold, 1 + 3 + 1 + 1, "LIST, GET of the pipeline and both partitions, one PUT to claim from what was read, a GET of the pipeline to check no reset raced it");
  const none = await state.next("flow", "lambda-second");
  assert.equal(none.held, null);
  assert.equal(none.finished, false);
  const readiness = Object.fromEntries(none.schedule.steps.flatMap((s) => s.partitions).map((p) => [p.partition, p.readiness]));
  assert.deepEqual(readiness.merge, { state: "waiting", on: ["fetch"], count: 1 });
  assert.deepEqual([readiness.fetch.state, readiness.fetch.worker_id], ["held", "lambda-first"]);
  const versionBefore = JSON.parse(ox("state", "show", "flow", "--json")).steps[0].partitions[0].version;
  const busy = await handler({ pipeline: "flow", partition: "fetch" }, context());
  assert.equal(busy.outcome, "already_running", JSON.stringify(busy));
  assert.equal(busy.holder, "lambda-first");
  assert.equal(busy.retry_at, held.lease.expires_at + 2000 + 1, "when the lease may be taken over: past expires_at plus the skew allowance");
  assert.deepEqual(busy.retry, { pipeline: "flow", partition: "fetch" }, "the same event, to deliver again then");
  assert.equal(JSON.parse(ox("state", "show", "flow", "--json")).steps[0].partitions[0].version, versionBefore, "nothing written");

  await held.complete({ last_processed_id: "f-10", add_records: 10 });
  // The retry finds the partition completed since: nothing to run; the hand-off names what it made ready.
  const retried = await handler(busy.retry, context());
  assert.deepEqual([retried.outcome, retried.ready], ["already_done", ["merge"]]);
  // Warm: the LIST shows what changed; only that is read again.
  const before = state.requests;
  const next = await state.next("flow", "lambda-first");
  assert.equal(next.held?.doc.step_id, "merge");
  assert.equal(state.requests - before, 1 + 1 + 1 + 1, "LIST, GET of the one changed document, PUT, GET of the pipeline (the reset check)");
  await next.held.release();

  const out = await handler({ pipeline: "flow", partition: "merge" }, context());
  assert.equal(out.outcome, "completed");
  assert.deepEqual(out.ready, []);
  const view = JSON.parse(ox("state", "show", "flow", "--json"));
  assert.equal(view.status, "completed");
});

test("a stop request ends the Lambda's work after the batch it was saving", async () => {
  const state = new S3State({ bucket, prefix, client: client() });
  ox("state", "create", "stoppable", "--step", "only");
  const { held } = await state.next("stoppable", "lambda-s");
  await held.checkpoint({ last_processed_id: "s-1", add_records: 1 });
  ox("worker", "stop", "--worker-id", "lambda-s");
  await held.checkpoint({ last_processed_id: "s-2", add_records: 1 });
  assert.ok(held.stopped?.requested_by, "the write reports the stop");
  assert.ok(held.released, "and the lease is released");
  const part = JSON.parse(ox("state", "show", "stoppable", "--json")).steps[0].partitions[0];
  assert.equal(part.records_processed, 2, "the batch before the stop is saved");
  assert.equal(part.lease.status.state, "released");
  await assert.rejects(held.checkpoint({ add_records: 1 }), (e) => e.kind === "fenced", "no write after the stop");
});

test("after a reset by the CLI, a Lambda's claim stores the partition fresh, bookmark kept, whether it names the step or not", async () => {
  const state = new S3State({ bucket, prefix, client: client() });
  ox("state", "create", "resettable", "--step", "only");
  const { held } = await state.next("resettable", "lambda-r");
  await held.complete({ last_processed_id: "r-5", add_records: 5 });
  const reset = JSON.parse(ox("state", "reset", "resettable", "--json"));
  assert.deepEqual([reset.partitions, reset.discarded_records, reset.generation], [1, 5, 1]);
  // Named, without the pipeline read first: the stored state (completed) refuses, the pipeline says why, the claim adopts.
  const before = state.requests;
  const again = await state.claim("resettable", "only", "lambda-r2");
  assert.equal(state.requests - before, 5, "GET (refused) + GET of the pipeline + GET and PUT adopting + GET of the pipeline (the check)");
  assert.deepEqual([again.doc.records_processed, again.doc.generation, again.doc.last_processed_id], [0, 1, "r-5"]);
  await again.release();
  ox("state", "reset", "resettable");
  const next = await state.next("resettable", "lambda-r3");
  assert.deepEqual([next.held.doc.records_processed, next.held.doc.generation], [0, 2], "next() adopts in its one claim");
  await next.held.release();
});

test("a claim is 3 requests and a checkpoint 1, on real S3", async () => {
  const state = new S3State({ bucket, prefix, client: client() });
  const held = await state.claim("orders", "load@0", "lambda-b");
  assert.equal(state.requests, 3, "GET + PUT If-Match + GET of the pipeline document (the reset check)");
  await held.checkpoint({ last_processed_id: "k-1", add_records: 1 });
  assert.equal(state.requests, 4, "one PUT from the cached document and ETag");
  await held.release();
});

test("two Lambdas racing for one step: exactly one holds it, the other is told who", async () => {
  const [a, b] = [new S3State({ bucket, prefix, client: client() }), new S3State({ bucket, prefix, client: client() })];
  const results = await Promise.allSettled([a.claim("orders", "load@1", "lambda-c"), b.claim("orders", "load@1", "lambda-d")]);
  const won = results.filter((r) => r.status === "fulfilled");
  const lost = results.filter((r) => r.status === "rejected");
  assert.equal(won.length, 1, JSON.stringify(results.map((r) => r.reason?.message ?? "ok")));
  assert.ok(lost[0].reason instanceof StateError && lost[0].reason.kind === "lease_held", String(lost[0].reason));
  assert.equal(lost[0].reason.detail.holder, won[0].value.lease.worker_id);
  await won[0].value.release();
});

test("a Lambda whose lease was taken over is fenced, and its write does not land", async () => {
  const state = new S3State({ bucket, prefix, client: client() });
  const now = Date.now();
  const slow = await state.claim("orders", "load@1", "lambda-slow", () => now);
  // 40 s later by the new worker's clock the 30 s lease is past its skew allowance.
  const fresh = await state.claim("orders", "load@1", "lambda-new", () => now + 40_000);
  assert.equal(fresh.lease.epoch, slow.lease.epoch + 1);
  // Its clock runs behind, so it still trusts its lease and sends: the
  // store's compare-and-swap refuses it. (By a correct clock it would be
  // past its trusted time and send nothing: core/tests/generation.rs.)
  await assert.rejects(slow.checkpoint({ add_records: 999 }, () => now + 10_000), (e) => e.kind === "fenced");
  const view = JSON.parse(ox("state", "show", "orders", "--json"));
  const part = view.steps.find((s) => s.step_id === "load").partitions.find((p) => p.partition === "load@1");
  assert.equal(part.lease.worker_id, "lambda-new");
  assert.equal(part.records_processed, 0, "the fenced write did not land");
});

test("a damaged object is refused as corrupt, untouched", async () => {
  const { PutObjectCommand, GetObjectCommand } = await import("@aws-sdk/client-s3");
  const s3 = client();
  const key = `${prefix}/pipelines/orders/partitions/load@0.json`;
  const good = await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body.transformToByteArray();
  const bad = Uint8Array.from(good);
  bad[60] ^= 1;
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: bad }));
  const state = new S3State({ bucket, prefix, client: s3 });
  await assert.rejects(state.claim("orders", "load@0", "lambda-e"), (e) => e.kind === "corrupt" && /checksum/.test(e.detail.reason));
  const after = await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body.transformToByteArray();
  assert.deepEqual(after, bad, "nothing was overwritten");
});
