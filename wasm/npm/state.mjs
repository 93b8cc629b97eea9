// Pipeline state from JavaScript over any conditional store: the oxiflow
// core (compiled to wasm) decides every document, every retry and what to
// claim next; a store (./s3.mjs, ./serve.mjs, or your own) only moves bytes
// with conditional PUTs (If-None-Match: * to create, If-Match: <etag> to
// update) and lists keys.
import core from "#core";

export { core };

/** A typed failure from the core: `error.kind` is the core's error name (lease_held, fenced, corrupt, …). */
export class StateError extends Error {
  constructor(detail) {
    super(`${detail.error}: ${JSON.stringify(detail)}`);
    this.name = "StateError";
    this.kind = detail.error;
    this.detail = detail;
  }
}

/** Turns what the core threw (JSON text) into a StateError; anything else is rethrown as it is. */
export function coreError(e) {
  if (typeof e !== "string") return e;
  try {
    return new StateError(JSON.parse(e));
  } catch {
    return new StateError({ error: "protocol", reason: e });
  }
}

/** Calls a core function, throwing its errors as StateError. */
export function call(f) {
  try {
    return f();
  } catch (e) {
    throw coreError(e);
  }
}

export const randomId = () => Math.floor(Math.random() * 2 ** 32);

/** Errors a claim of the scheduler's pick can meet when another worker was faster: try the next one. */
const LOST_RACE = new Set(["lease_held", "conflict", "invalid_transition", "not_found", "not_ready"]);

const sameVersion = (a, b) => !!a && !!b && (a.e_tag ?? null) === (b.e_tag ?? null) && (a.version ?? null) === (b.version ?? null);

export class State {
  /**
   * @param {{store: {perform: Function, list: Function, requests?: number}, config?: object}} options
   * `store` performs the core's requests (see S3Store, ServeStore); `config`
   * is the core's config (lease ttl, retries, retry policy) as a JSON-able
   * object.
   */
  constructor({ store, config }) {
    this.store = store;
    this.settings = config ?? {};
    this.config = config ? JSON.stringify(config) : undefined;
    /** key → {version, json}: documents as last read, so a warm process GETs only what changed. */
    this.cache = new Map();
  }

  /** Store requests made so far (GET, PUT, LIST). */
  get requests() {
    return this.store.requests;
  }

  /** The lease settings in force (the core's defaults, overridden by `config.lease`). */
  get lease() {
    return JSON.parse(core.leaseConfig(this.config));
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
      const [response, bytes] = await this.store.perform(action.send, driver.body());
      action = JSON.parse(call(() => driver.handle(JSON.stringify(response), bytes, now(), randomId())));
    }
    if (action.done.error) throw new StateError(action.done.error);
    return action.done.ok;
  }

  /** Runs one core operation; `cached` ({doc, version}) saves the first read; `config` (JSON) overrides the state's. */
  run(key, operation, cached, now = Date.now, config = this.config) {
    const op = call(() => new core.Operation(key, JSON.stringify(operation), config,
      cached ? JSON.stringify(cached.doc) : undefined, cached ? JSON.stringify(cached.version) : undefined));
    return this.drive(op, op.start(now()), now);
  }

  /**
   * Claims a step (`step` or `step@shard`) for this worker: GET + PUT (one
   * PUT from `cached`), then a GET of the pipeline document, which the core
   * checks (`checkClaim`): a reset in progress makes the claim let go
   * (`not_ready`), a committed one is adopted by claiming again.
   * Options: `cached` ({doc, version}) the document as just read; `adopt`
   * the pipeline's current `adoption`, when the caller read it already;
   * `deadline` (ms) caps the lease: it ends there at the latest, and no
   * write of this holding extends it further (a Lambda's deadline, as
   * judged by `core.judgeDeadline`); `config` (JSON) for the claim and
   * the holding, e.g. `core.deadlineConfig(…)`, whose lease lasts until
   * the deadline.
   */
  async claim(pipeline, step, workerId, now = Date.now, cached = null, adopt = null, deadline = null, config = this.config) {
    const key = call(() => core.partitionKey(pipeline, step));
    for (let attempt = 0; attempt < 4; attempt++) {
      const claim = { worker_id: workerId, write_id: randomId(), ...(adopt && { adopt }), ...(deadline != null && { deadline }) };
      let claimed;
      try {
        claimed = await this.run(key, { claim }, cached, now, config);
      } catch (e) {
        // Refused by a state a reset may have made stale (completed, held by a stale claimer): adopt and try once more.
        if (adopt || !(e instanceof StateError) || !["invalid_transition", "lease_held"].includes(e.kind)) throw e;
        const pipelineJson = await this.readPipeline(pipeline);
        adopt = JSON.parse(call(() => core.adoption(pipelineJson, step)));
        if (adopt.generation === 0) throw e;
        continue;
      }
      const held = new Holding(this, call(() => core.HolderSession.claimed(key, JSON.stringify(claimed), config, now(), deadline ?? undefined)));
      const pipelineJson = await this.readPipeline(pipeline);
      const check = JSON.parse(call(() => core.checkClaim(pipelineJson, JSON.stringify(claimed.doc), now(), this.config)));
      if (check === "current") return held;
      if (check.stale) {
        [adopt, cached] = [check.stale, { doc: claimed.doc, version: claimed.version }];
        continue;
      }
      // Nothing was done under this claim; if the release is lost, the lease expires.
      await held.release({}, now).catch(() => {});
      throw new StateError({ error: "not_ready", key, reason: `${check.locked.worker_id} is resetting the pipeline until ${check.locked.until}` });
    }
    throw new StateError({ error: "conflict", key, reason: "the pipeline was reset again during each of several claims" });
  }

  /** The pipeline document (JSON), read now. */
  async readPipeline(pipeline) {
    const key = call(() => core.pipelineKey(pipeline));
    const [response, bytes] = await this.store.perform({ get: { key } });
    if (response.unavailable) throw new StateError({ error: "unavailable", key, attempts: 1, reason: response.unavailable.reason });
    if (!response.object) throw new StateError({ error: "not_found", key });
    return call(() => core.decodePipeline(key, bytes));
  }

  /** One partition document, read now: {doc, version, json}, or null when there is none. */
  async readPartition(pipeline, partition) {
    const key = call(() => core.partitionKey(pipeline, partition));
    const [response, bytes] = await this.store.perform({ get: { key } });
    if (response.unavailable) throw new StateError({ error: "unavailable", key, attempts: 1, reason: response.unavailable.reason });
    if (!response.object) return null;
    const json = call(() => core.decodePartition(key, bytes));
    this.cache.set(key, { version: response.object.version, json });
    return { key, doc: JSON.parse(json), version: response.object.version, json };
  }

  /**
   * The pipeline's documents, decoded: one LIST (it carries each object's
   * version), then a GET of each document that is new or changed since this
   * process last read it. Returns {pipeline, partitions: [{key, version, json}]}.
   */
  async read(pipeline) {
    // The core checks the id before it becomes a listing prefix (`../x` is refused).
    const pipelineKey = call(() => core.pipelineKey(pipeline));
    const listed = await this.store.list(`pipelines/${pipeline}/`);
    const wanted = listed.filter(({ key }) => key === pipelineKey || (key.startsWith(`pipelines/${pipeline}/partitions/`) && key.endsWith(".json")));
    const decoded = await mapLimited(wanted, 16, async ({ key, version }) => {
      const cached = this.cache.get(key);
      if (cached && sameVersion(cached.version, version)) return { key, ...cached };
      const [response, bytes] = await this.store.perform({ get: { key } });
      if (response.unavailable) throw new StateError({ error: "unavailable", key, attempts: 1, reason: response.unavailable.reason });
      if (!response.object) return null; // deleted since it was listed
      const json = call(() => (key === pipelineKey ? core.decodePipeline(key, bytes) : core.decodePartition(key, bytes)));
      const entry = { version: response.object.version, json };
      this.cache.set(key, entry);
      return { key, ...entry };
    });
    const found = decoded.filter(Boolean);
    const pipelineDoc = found.find((d) => d.key === pipelineKey);
    if (!pipelineDoc) throw new StateError({ error: "not_found", key: pipelineKey });
    return { pipeline: pipelineDoc.json, partitions: found.filter((d) => d !== pipelineDoc) };
  }

  /** The scheduler's view of the pipeline now: `Schedule` (claimable best first, and why each partition waits). */
  async schedule(pipeline, workerId = null, now = Date.now) {
    const { pipeline: doc, partitions } = await this.read(pipeline);
    const schedule = JSON.parse(call(() => core.schedule(doc, `[${partitions.map((p) => p.json).join(",")}]`, now(), workerId, randomId(), this.config)));
    return { pipelineJson: doc, docs: partitions, schedule };
  }

  /**
   * Claims what the scheduler says is ready, best first (upstream steps
   * first, spread across workers). A partition another worker took first is
   * skipped for the next one. Returns {held: Holding} or {held: null,
   * finished, schedule} when nothing is ready.
   */
  async next(pipeline, workerId, now = Date.now, deadline = null, config = this.config) {
    const { pipelineJson, docs, schedule } = await this.schedule(pipeline, workerId, now);
    for (const partition of schedule.claimable) {
      const key = call(() => core.partitionKey(pipeline, partition));
      const doc = docs.find((d) => d.key === key);
      const cached = doc && { doc: JSON.parse(doc.json), version: doc.version };
      try {
        const adopt = JSON.parse(call(() => core.adoption(pipelineJson, partition)));
        return { held: await this.claim(pipeline, partition, workerId, now, cached, adopt, deadline, config) };
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

  /** `step` or `step@shard`. */
  get partition() {
    return this.doc.shard == null ? this.doc.step_id : `${this.doc.step_id}@${this.doc.shard}`;
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
    const first = call(() => this.session.write(JSON.stringify(progress ?? {}), finish ? JSON.stringify(finish) : null, randomId(), now()));
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
