// The Node.js package of the core: the shared vectors, and a claim and a
// checkpoint driven from JavaScript with its own I/O. Run after
// scripts/build-wasm.sh: `node --test wasm/tests/`.
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

/** A conditional store in a Map: what S3 does, in a few lines. */
class MemoryStore {
  objects = new Map();
  next = 0;
  requests = 0;
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
    return [{ written: { e_tag: etag } }, null];
  }
}

function drive(op, store, now) {
  let action = JSON.parse(op.start(now));
  while (!("done" in action)) {
    if ("sleep_ms" in action) {
      action = JSON.parse(op.wake(now));
      continue;
    }
    const [response, body] = store.perform(action.send, op.body());
    action = JSON.parse(op.handle(JSON.stringify(response), body, now, Math.floor(Math.random() * 2 ** 32)));
  }
  return action.done;
}

test("JavaScript drives create, claim and a one-request checkpoint", () => {
  const store = new MemoryStore();
  const now = 1_764_000_000_000;
  const key = wasm.partitionKey("orders", "load@1");
  assert.equal(key, "pipelines/orders/partitions/load@1.json");

  const created = drive(new wasm.Operation(key, JSON.stringify({ create: JSON.parse(wasm.newPartition("orders", "load@1", "run-1", now)) })), store, now);
  assert.ok(created.ok, JSON.stringify(created));

  const claimed = drive(new wasm.Operation(key, JSON.stringify({ claim: { worker_id: "lambda-1", write_id: 7 } })), store, now).ok;
  assert.equal(claimed.requests, 2);
  assert.equal(claimed.doc.lease.worker_id, "lambda-1");

  const holder = { worker_id: "lambda-1", epoch: claimed.doc.lease.epoch, last_write: claimed.doc.lease.last_write };
  const write = { write: { holder, write_id: 8, progress: { last_processed_id: "order-100", add_records: 100 } } };
  const before = store.requests;
  const saved = drive(new wasm.Operation(key, JSON.stringify(write), null, JSON.stringify(claimed.doc), JSON.stringify(claimed.version)), store, now + 1000).ok;
  assert.equal(store.requests - before, 1, "a checkpoint from the cached document is one PUT");
  assert.equal(saved.doc.records_processed, 100);

  // What was stored decodes (checksum and all) to the same document.
  const stored = JSON.parse(wasm.decodePartition(key, store.objects.get(key).body));
  assert.equal(stored.last_processed_id, "order-100");

  // Someone else cannot claim it; the error is typed.
  const refused = drive(new wasm.Operation(key, JSON.stringify({ claim: { worker_id: "lambda-2", write_id: 9 } })), store, now + 2000);
  assert.equal(refused.error.error, "lease_held");
  assert.equal(refused.error.holder, "lambda-1");
});

test("damaged bytes are refused with a typed error", () => {
  assert.throws(() => wasm.decodePartition("k", new TextEncoder().encode('{"format_version":1,"x":')), (e) => JSON.parse(e).error === "corrupt");
  assert.throws(() => wasm.decodePartition("k", new TextEncoder().encode('{"format_version":9,"a":1,"checksum":"00000000"}')), (e) => JSON.parse(e).error === "unsupported_format");
});
