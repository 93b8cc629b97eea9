// Pipeline state in S3 from Node.js: the oxiflow core (compiled to wasm)
// decides every document, every retry and what to claim next; this file
// only moves bytes with conditional PUTs (If-None-Match: * to create,
// If-Match: <etag> to update) and lists keys.
import { createRequire } from "node:module";
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";

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

/** Errors a claim of the scheduler's pick can meet when another worker was faster: try the next one. */
const LOST_RACE = new Set(["lease_held", "conflict", "invalid_transition", "not_found", "not_ready"]);

export class S3State {
  /**
   * @param {{bucket: string, prefix?: string, client?: S3Client, config?: object}} options
   * `prefix` matches the CLI's `s3://bucket/prefix`; `config` is the core's
   * config (lease ttl, retries, retry policy) as JSON-able object.
   */
  constructor({ bucket, prefix = "", client, config }) {
    this.bucket = bucket;
    this.prefix = prefix.replace(/\/+$/, "");
    // One retry layer only: the core's (jittered backoff, lost-response settling).
    this.s3 = client ?? new S3Client({ maxAttempts: 1 });
    this.config = config ? JSON.stringify(config) : undefined;
    this.requests = 0;
    /** key → {etag, json}: documents as last read, so a warm Lambda GETs only what changed. */
    this.cache = new Map();
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

  /** Drives a core `Operation` or `HolderSession` from its first action to its end, with real I/O and sleeps. */
  async drive(driver, first, now = Date.now) {
    let action = JSON.parse(first);
    while (!("done" in action)) {
      if ("sleep_ms" in action) {
        await new Promise((resolve) => setTimeout(resolve, action.sleep_ms));
        action = JSON.parse(driver.wake(now()));
        continue;
      }
      const [response, bytes] = await this.perform(action.send, driver.body());
      action = JSON.parse(driver.handle(JSON.stringify(response), bytes, now(), randomId()));
    }
    if (action.done.error) throw new StateError(action.done.error);
    return action.done.ok;
  }

  /** Runs one core operation; `cached` ({doc, version}) saves the first read. */
  run(key, operation, cached, now = Date.now) {
    const op = new core.Operation(key, JSON.stringify(operation), this.config,
      cached && JSON.stringify(cached.doc), cached && JSON.stringify(cached.version));
    return this.drive(op, op.start(now()), now);
  }

  /**
   * Claims a step (`step` or `step@shard`) for this worker: GET + PUT (one
   * PUT from `cached`), then a GET of the pipeline document, which the core
   * checks (`checkClaim`): a reset in progress makes the claim let go
   * (`not_ready`), a committed one is adopted by claiming again. `adopt`:
   * the pipeline's current `adoption`, when the caller read it already.
   */
  async claim(pipeline, step, workerId, now = Date.now, cached = null, adopt = null) {
    const key = core.partitionKey(pipeline, step);
    for (let attempt = 0; attempt < 4; attempt++) {
      const claim = { worker_id: workerId, write_id: randomId(), ...(adopt && { adopt }) };
      let claimed;
      try {
        claimed = await this.run(key, { claim }, cached, now);
      } catch (e) {
        // Refused by a state a reset may have made stale (completed, held by a stale claimer): adopt and try once more.
        if (adopt || !(e instanceof StateError) || !["invalid_transition", "lease_held"].includes(e.kind)) throw e;
        adopt = JSON.parse(core.adoption(await this.readPipeline(pipeline), step));
        if (adopt.generation === 0) throw e;
        continue;
      }
      const held = new Holding(this, core.HolderSession.claimed(key, JSON.stringify(claimed), this.config, now()));
      const check = JSON.parse(core.checkClaim(await this.readPipeline(pipeline), JSON.stringify(claimed.doc), now(), this.config));
      if (check === "current") return held;
      if (check.stale) {
        [adopt, cached] = [check.stale, { doc: claimed.doc, version: claimed.version }];
        continue;
      }
      // Nothing was done under this claim; if the release is lost, the lease expires.
      await held.release().catch(() => {});
      throw new StateError({ error: "not_ready", key, reason: `${check.locked.worker_id} is resetting the pipeline until ${check.locked.until}` });
    }
    throw new StateError({ error: "conflict", key, reason: "the pipeline was reset again during each of several claims" });
  }

  /** The pipeline document (JSON), read now. */
  async readPipeline(pipeline) {
    const key = core.pipelineKey(pipeline);
    const [response, bytes] = await this.perform({ get: { key } });
    if (response.unavailable) throw new StateError({ error: "unavailable", key, attempts: 1, reason: response.unavailable.reason });
    if (!response.object) throw new StateError({ error: "not_found", key });
    try {
      return core.decodePipeline(key, bytes);
    } catch (e) {
      throw new StateError(JSON.parse(e));
    }
  }

  /**
   * The pipeline's documents, decoded: one LIST (it carries each object's
   * ETag), then a GET of each document that is new or changed since this
   * process last read it. Returns {pipeline, partitions: [{key, doc, version}]}.
   */
  async read(pipeline) {
    const listed = [];
    let ContinuationToken;
    do {
      this.requests++;
      const page = await this.s3.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.objectKey(`pipelines/${pipeline}/`), ContinuationToken }));
      for (const o of page.Contents ?? []) listed.push({ key: this.prefix ? o.Key.slice(this.prefix.length + 1) : o.Key, etag: o.ETag });
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
    const pipelineKey = core.pipelineKey(pipeline);
    const wanted = listed.filter(({ key }) => key === pipelineKey || (key.startsWith(`pipelines/${pipeline}/partitions/`) && key.endsWith(".json")));
    const decoded = await mapLimited(wanted, 16, async ({ key, etag }) => {
      const cached = this.cache.get(key);
      if (cached && etag && cached.etag === etag) return { key, ...cached };
      const [response, bytes] = await this.perform({ get: { key } });
      if (response.unavailable) throw new StateError({ error: "unavailable", key, attempts: 1, reason: response.unavailable.reason });
      if (!response.object) return null; // deleted since it was listed
      let json;
      try {
        json = key === pipelineKey ? core.decodePipeline(key, bytes) : core.decodePartition(key, bytes);
      } catch (e) {
        throw new StateError(JSON.parse(e));
      }
      const entry = { etag: response.object.version.e_tag, json };
      this.cache.set(key, entry);
      return { key, ...entry };
    });
    const found = decoded.filter(Boolean);
    const pipelineDoc = found.find((d) => d.key === pipelineKey);
    if (!pipelineDoc) throw new StateError({ error: "not_found", key: pipelineKey });
    const partitions = found.filter((d) => d !== pipelineDoc);
    return { pipeline: pipelineDoc.json, partitions };
  }

  /** The scheduler's view of the pipeline now: `Schedule` (claimable best first, and why each partition waits). */
  async schedule(pipeline, workerId = null, now = Date.now) {
    const { pipeline: doc, partitions } = await this.read(pipeline);
    const schedule = JSON.parse(core.schedule(doc, `[${partitions.map((p) => p.json).join(",")}]`, now(), workerId, randomId(), this.config));
    return { pipelineJson: doc, docs: partitions, schedule };
  }

  /**
   * Claims what the scheduler says is ready, best first (upstream steps
   * first, spread across workers). A partition another worker took first is
   * skipped for the next one. Returns {held: Holding} or {held: null,
   * finished, schedule} when nothing is ready.
   */
  async next(pipeline, workerId, now = Date.now) {
    const { pipelineJson, docs, schedule } = await this.schedule(pipeline, workerId, now);
    for (const partition of schedule.claimable) {
      const key = core.partitionKey(pipeline, partition);
      const doc = docs.find((d) => d.key === key);
      const cached = doc && { doc: JSON.parse(doc.json), version: { e_tag: doc.etag } };
      try {
        const adopt = JSON.parse(core.adoption(pipelineJson, partition));
        return { held: await this.claim(pipeline, partition, workerId, now, cached, adopt) };
      } catch (e) {
        if (e instanceof StateError && LOST_RACE.has(e.kind)) continue;
        throw e;
      }
    }
    const stuck = schedule.steps.flatMap((s) => s.partitions).every((p) => ["completed", "failed", "blocked", "missing", "paused"].includes(p.readiness.state));
    return { held: null, finished: schedule.status === "completed" || (schedule.status === "failed" && stuck), schedule };
  }
}

async function mapLimited(items, limit, f) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await f(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * A held partition: the core's holder session. Each write is one
 * conditional PUT from the session's document; a write whose answer was
 * lost is settled (with its own write id) before the next; a stop request
 * releases the lease, and `stopped` says who asked.
 */
export class Holding {
  constructor(state, session) {
    this.state = state;
    this.session = session;
    this.key = session.key();
    /** Set when a write found a stop request: the write is stored, the lease released. */
    this.stopped = null;
    this.#refresh();
  }

  #refresh() {
    this.doc = JSON.parse(this.session.doc());
    this.version = JSON.parse(this.session.version());
  }

  get lease() {
    return this.doc.lease;
  }

  /** True once the lease is not ours any more (finished, released for a stop request, or taken). */
  get released() {
    return this.session.isReleased();
  }

  /** May this worker still act outside the store (emit output)? */
  trusts(now = Date.now) {
    return this.session.trusts(now());
  }

  async #write(progress, finish, now = Date.now) {
    const first = this.session.write(JSON.stringify(progress ?? {}), finish ? JSON.stringify(finish) : null, randomId(), now());
    let written;
    try {
      written = await this.state.drive(this.session, first, now);
    } finally {
      this.#refresh();
    }
    if (written.stop) this.stopped = written.stop;
    return this.doc;
  }

  /** Progress: {last_processed_id, add_records, add_failed, add_bytes, batch_number, extra}. Extends the lease. */
  checkpoint(progress, now) {
    return this.#write(progress, undefined, now);
  }

  /** Extends the lease without progress. */
  heartbeat(now) {
    return this.#write({}, undefined, now);
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
