// One invocation of a pipeline step with a hard deadline (an AWS Lambda, or
// any runtime that kills its handler at a known time): claim the partition
// the event names with the lease ending at the deadline, resume from its
// bookmark, run batches while the core's Pace says the longest one still
// fits, checkpoint each (one conditional PUT), and before the deadline
// either complete it and hand off what became ready downstream, or release
// it with its progress and hand off a continuation of itself. Every rule —
// whether the reported deadline is trusted, the lease cap, the pace, what
// a completion made ready, when a held lease may be taken over — is the
// core's (through wasm); this file only sequences them.
import { call, core, StateError } from "./state.mjs";

/** The `extra` key each write of a hop records it under: events of earlier hops are stale. */
const HOP = "hop";

const withHop = (progress, hop) => ({ ...progress, extra: { ...progress?.extra, [HOP]: String(hop) } });

/** Invocations in a row that may run no batch before the chain stops. */
const MAX_IDLE_HOPS = 3;

/** Deadline distrust already logged by this process: each reason once. */
const logged = new Set();

/**
 * Runs one event. `event`: `{pipeline, partition?, hop?}` —
 * without a partition it starts the pipeline (hands off every partition
 * ready now). Options:
 * - `worker`: this invocation's worker id (e.g. `context.awsRequestId`);
 * - `deadline`: the platform's deadline as a Unix time in ms (in a Lambda:
 *   `Date.now() + context.getRemainingTimeInMillis()`), or null;
 * - `batch(input)`: does one batch after `input.after` (the bookmark) in
 *   about `input.budgetMs`, returns `{progress, done}` (`progress` a core
 *   `Progress`: `last_processed_id`, `add_records`, …; `done`: that was the
 *   last one);
 * - `handoff(event)`: delivers a follow-up event (a new invocation: Lambda
 *   Invoke with InvocationType Event, an SQS message, …); may be omitted:
 *   the outcome's `events` lists them for the caller to deliver;
 * - `onClaim({partition, epoch, at, after, ends_at})`: called once the
 *   claim landed (a log line, a metric);
 * - `marginMs`: time one write takes, kept free for the release (300);
 * - `log(message, fields)`: where the untrusted-deadline notice goes
 *   (console.warn);
 * - `now`: the clock (Date.now).
 */
export async function runStep(state, event, options) {
  const { worker, batch, handoff, onClaim, marginMs = 300, log = (m, f) => console.warn(m, JSON.stringify(f)), now = Date.now } = options;
  const requestsAtStart = state.requests;
  const pipeline = event.pipeline;
  const events = [];
  const hand = async (next) => {
    events.push(next);
    if (handoff) await handoff(next);
  };
  const done = async (outcome) => ({ ...outcome, pipeline, events });

  if (!event.partition) {
    const { schedule } = await state.schedule(pipeline, null, now);
    for (const partition of schedule.claimable) await hand({ pipeline, partition, hop: 0 });
    return done({ outcome: "started", ready: schedule.claimable, status: schedule.status });
  }
  const partition = event.partition;
  const hop = event.hop ?? 0;

  const deadline = JSON.parse(call(() => core.judgeDeadline(options.deadline ?? null, now(), state.config)));
  if (deadline.distrust && !logged.has(deadline.distrust.reason)) {
    logged.add(deadline.distrust.reason);
    log(`oxiflow: ${deadline.message}; the lease ends one configured lease from now instead`, { partition, ends_at: deadline.ends_at });
  }
  const config = call(() => core.deadlineConfig(state.config, deadline.ends_at, now()));

  // Read first: a finished partition or a live lease is answered without a write.
  const read = await state.readPartition(pipeline, partition);
  if (!read) throw new StateError({ error: "not_found", key: call(() => core.partitionKey(pipeline, partition)) });
  let adopt = null;
  if ("completed" in (typeof read.doc.status === "object" ? read.doc.status : {})) {
    const pipelineJson = await state.readPipeline(pipeline);
    adopt = JSON.parse(call(() => core.adoption(pipelineJson, partition)));
    if (adopt.run_id === read.doc.run_id && adopt.generation <= (read.doc.generation ?? 0)) {
      // Completed in this run. Its invocation may have died between the
      // completion and the hand-off: hand off again what it made ready and
      // nobody has claimed yet (a partition claimed once has its own chain
      // of events; re-sending those would only add duplicates).
      const ready = await readyAfter(state, pipeline, partition, now, true);
      for (const p of ready) await hand({ pipeline, partition: p, hop: 0 });
      return done({ outcome: "already_done", partition, ready });
    }
  }
  // A later hop of this partition has written since this event was sent:
  // its chain went on without it (and should that invocation die, the
  // platform redelivers *its* event), so this one is a stale duplicate.
  const stored = Number(read.doc.extra?.[HOP] ?? 0);
  if (hop < stored) return done({ outcome: "superseded", partition, hop, current_hop: stored });
  // Held by a live lease: say when it may be taken over, and deliver this same event again then.
  // Events of one hop are interchangeable — a duplicate, a retry — and the lease lets one of them
  // work at a time; a retry cannot tell its own killed attempt's lease from a live holder's.
  const lease = read.doc.lease;
  const retryAt = lease && call(() => core.takeoverAt(JSON.stringify(lease), state.config));
  if (lease && lease.worker_id !== worker && retryAt != null && now() < retryAt) {
    return done({ outcome: "already_running", partition, holder: lease.worker_id, epoch: lease.epoch, retry_at: retryAt, retry: event });
  }

  let held;
  try {
    held = await state.claim(pipeline, partition, worker, now, { doc: read.doc, version: read.version }, adopt, deadline.ends_at, config);
  } catch (e) {
    if (e instanceof StateError && e.kind === "lease_held") {
      // Another invocation claimed it between our read and our write.
      const at = call(() => core.takeoverAt(JSON.stringify({ worker_id: e.detail.holder, epoch: e.detail.epoch, acquired_at: 0,
        expires_at: e.detail.expires_at, last_write: 0 }), state.config));
      return done({ outcome: "already_running", partition, holder: e.detail.holder, epoch: e.detail.epoch, retry_at: at, retry: event });
    }
    // Paused, failed for good, or waiting on an unfinished upstream: nothing to run now.
    if (e instanceof StateError && ["invalid_transition", "not_ready"].includes(e.kind)) return done({ outcome: "refused", partition, reason: e.message });
    throw e;
  }

  const claimedAt = now();
  // Store requests by phase: the claim (with its reads), each batch's checkpoint, the release or completion (with the hand-off's reads).
  const requests = { claim: state.requests - requestsAtStart, batches: [], finish: 0 };
  let mark = state.requests;
  const summary = { partition, epoch: held.lease.epoch, resumed_after: held.doc.last_processed_id ?? null, batches: 0, ends_at: deadline.ends_at, requests };
  if (onClaim) await onClaim({ partition, epoch: held.lease.epoch, at: claimedAt, after: held.doc.last_processed_id ?? null, ends_at: deadline.ends_at });
  const pace = call(() => new core.Pace(deadline.ends_at, marginMs, config));
  try {
    while (pace.anotherBatch(now())) {
      const started = now();
      let result;
      try {
        result = await batch({ pipeline, partition, after: held.doc.last_processed_id ?? null, budgetMs: pace.budget(started), hop,
          batchNumber: held.doc.batch_number, doc: held.doc });
      } catch (e) {
        // The batch's own failure: recorded (retryable: the scheduler backs off), the lease released, the error rethrown.
        await held.fail(String(e?.message ?? e), true, {}, now).catch(() => {});
        throw e;
      }
      summary.batches++;
      if (result.done) {
        await held.complete(withHop(result.progress, hop), now);
        const ready = await readyAfter(state, pipeline, partition, now);
        requests.finish = state.requests - mark;
        for (const p of ready) await hand({ pipeline, partition: p, hop: 0 });
        return done({ outcome: "completed", ...summary, ready, records_processed: held.doc.records_processed });
      }
      await held.checkpoint(withHop(result.progress, hop), now);
      requests.batches.push(state.requests - mark);
      mark = state.requests;
      pace.record(now() - started);
      if (held.stopped) return done({ outcome: "stopped", ...summary, by: held.stopped.requested_by });
    }
    await held.release(withHop({}, hop), now);
    requests.finish = state.requests - mark;
  } catch (e) {
    if (!(e instanceof StateError)) throw e;
    // The lease passed on (fenced: someone else took over and continues),
    // or this holder no longer trusts it (expired: nothing was written): in
    // that case a follow-up takes over once the lease has run out.
    if (e.kind === "fenced" || e.kind === "not_holder") return done({ outcome: "fenced", ...summary, reason: e.message });
    if (e.kind !== "expired") throw e;
    summary.expired = e.message;
  }
  if (held.stopped) return done({ outcome: "stopped", ...summary, by: held.stopped.requested_by });
  // No batch fitted: the deadline leaves too little time (a short timeout,
  // a late start). A few such hops in a row stop the chain instead of
  // invoking forever; the partition stays claimable for the next start.
  const idle = summary.batches === 0 ? (event.idle ?? 0) + 1 : 0;
  if (idle > MAX_IDLE_HOPS) {
    log(`oxiflow: ${partition}: no batch fitted before the deadline in ${idle} invocations in a row; not handing off again`, { partition, ends_at: deadline.ends_at });
    return done({ outcome: "no_time", ...summary });
  }
  const next = { pipeline, partition, hop: hop + 1, ...(idle > 0 && { idle }) };
  await hand(next);
  return done({ outcome: "continue", ...summary, hop: hop + 1, held_ms: now() - claimedAt, records_processed: held.doc.records_processed });
}

/** What the core's hand-off names once `partition` is completed: read the pipeline, ask `handoff`; `unclaimed`: only those never claimed. */
async function readyAfter(state, pipeline, partition, now, unclaimed = false) {
  const { pipeline: pipelineJson, partitions } = await state.read(pipeline);
  const ready = JSON.parse(call(() => core.handoff(pipelineJson, `[${partitions.map((p) => p.json).join(",")}]`, now(), partition, state.config)));
  if (!unclaimed) return ready;
  const claimed = new Set(partitions.map((p) => JSON.parse(p.json)).filter((d) => d.lease).map((d) => (d.shard == null ? d.step_id : `${d.step_id}@${d.shard}`)));
  return ready.filter((p) => !claimed.has(p));
}
