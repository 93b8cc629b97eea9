// Pipeline state in S3 from Node.js: the oxiflow core (compiled to wasm)
// decides every document and every retry; this file only moves bytes with
// conditional PUTs (If-None-Match: * to create, If-Match: <etag> to update).
import { createRequire } from "node:module";
import { GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";

const require = createRequire(import.meta.url);
/** The nodejs build of the core (scripts/build-wasm.sh); bundle it with the function. */
export const core = require(process.env.OXIFLOW_WASM_NODE ?? "../../wasm/pkg/node/oxiflow_wasm.js");

/** A typed failure from the core: `error.kind` is the core's error name (lease_held, fenced, corrupt, …). */
export class StateError extends Error {
  constructor(detail) {
    super(`${detail.error}: ${JSON.stringify(detail)}`);
    this.kind = detail.error;
    this.detail = detail;
  }
}

const randomId = () => Math.floor(Math.random() * 2 ** 32);

export class S3State {
  /**
   * @param {{bucket: string, prefix?: string, client?: S3Client, config?: object}} options
   * `prefix` matches the CLI's `s3://bucket/prefix`; `config` is the core's
   * config (lease ttl, retries) as JSON-able object.
   */
  constructor({ bucket, prefix = "", client, config }) {
    this.bucket = bucket;
    this.prefix = prefix.replace(/\/+$/, "");
    // One retry layer only: the core's (jittered backoff, lost-response settling).
    this.s3 = client ?? new S3Client({ maxAttempts: 1 });
    this.config = config ? JSON.stringify(config) : undefined;
    this.requests = 0;
  }

  objectKey(key) {
    return this.prefix ? `${this.prefix}/${key}` : key;
  }

  /** One store request for the core; returns [response, bytes]. */
  async perform(send, body) {
    this.requests++;
    try {
      if (send.get) {
        const o = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(send.get.key) }));
        return [{ object: { version: { e_tag: o.ETag } } }, await o.Body.transformToByteArray()];
      }
      const put = send.put_if_absent ?? send.put_if_match;
      const condition = send.put_if_absent ? { IfNoneMatch: "*" } : { IfMatch: put.version.e_tag };
      const r = await this.s3.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.objectKey(put.key), Body: body, ...condition }));
      return [{ written: { e_tag: r.ETag } }, null];
    } catch (e) {
      const status = e.$metadata?.httpStatusCode;
      if (send.get && (e.name === "NoSuchKey" || status === 404)) return [{ object: null }, null];
      if (send.put_if_absent && status === 412) return ["already_exists", null];
      // 412: the ETag moved on; 409: a concurrent conditional write won; 404: If-Match on a missing key.
      if (status === 412 || status === 409 || (send.put_if_match && status === 404)) return ["precondition", null];
      if (status === 403 || e.name === "AccessDenied" || e.name === "NoSuchBucket") throw e; // not transient: say so
      return [{ unavailable: { reason: `${e.name}: ${e.message}` } }, null];
    }
  }

  /** Runs one core operation to its end with real I/O and real sleeps. */
  async run(key, operation, cached, now = Date.now) {
    const op = new core.Operation(key, JSON.stringify(operation), this.config,
      cached && JSON.stringify(cached.doc), cached && JSON.stringify(cached.version));
    let action = JSON.parse(op.start(now()));
    while (!("done" in action)) {
      if ("sleep_ms" in action) {
        await new Promise((resolve) => setTimeout(resolve, action.sleep_ms));
        action = JSON.parse(op.wake(now()));
        continue;
      }
      const [response, bytes] = await this.perform(action.send, op.body());
      action = JSON.parse(op.handle(JSON.stringify(response), bytes, now(), randomId()));
    }
    if (action.done.error) throw new StateError(action.done.error);
    return action.done.ok;
  }

  /** Claims a step (`step` or `step@shard`) for this worker; returns a Holding. */
  async claim(pipeline, step, workerId, now) {
    const key = core.partitionKey(pipeline, step);
    const done = await this.run(key, { claim: { worker_id: workerId, write_id: randomId() } }, null, now);
    return new Holding(this, key, done);
  }
}

/** A held step: each write is one conditional PUT from the cached document. */
export class Holding {
  constructor(state, key, done) {
    this.state = state;
    this.key = key;
    this.doc = done.doc;
    this.version = done.version;
  }

  get lease() {
    return this.doc.lease;
  }

  async #write(progress, finish, now) {
    const holder = { worker_id: this.lease.worker_id, epoch: this.lease.epoch, last_write: this.lease.last_write };
    const write = { write: { holder, write_id: randomId(), progress, ...(finish && { finish }) } };
    const done = await this.state.run(this.key, write, { doc: this.doc, version: this.version }, now);
    this.doc = done.doc;
    this.version = done.version;
    return this.doc;
  }

  /** Progress: {last_processed_id, add_records, add_failed, add_bytes, batch_number, extra}. Extends the lease. */
  checkpoint(progress, now) {
    return this.#write(progress, undefined, now);
  }

  complete(progress = {}, now) {
    return this.#write(progress, "complete", now);
  }

  release(progress = {}, now) {
    return this.#write(progress, "release", now);
  }

  fail(message, retryable, progress = {}, now) {
    return this.#write(progress, { fail: { error: message, retryable } }, now);
  }
}
