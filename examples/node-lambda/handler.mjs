// A Lambda per pipeline: take what the scheduler says is ready (or the step
// the event names), process batches after its bookmark, checkpoint each
// through the core's holder session, and complete on the last batch. Another
// invocation meanwhile takes another ready partition, or learns what the
// pipeline waits on.
//
// Environment: OXIFLOW_BUCKET, OXIFLOW_PREFIX (as in s3://bucket/prefix);
// the AWS SDK reads credentials and region as usual.
import { S3State } from "./state.mjs";

const state = new S3State({ bucket: process.env.OXIFLOW_BUCKET, prefix: process.env.OXIFLOW_PREFIX ?? "" });

/**
 * event: {pipeline, step?: "next" | "step" | "step@shard", worker_id?, batches: [{last_id, records, bytes}], final?: boolean}
 * Without a step (or with "next") the scheduler picks: upstream steps first, never a partition whose upstream is unfinished.
 */
export async function handler(event, context = {}) {
  const worker = event.worker_id ?? context.awsRequestId ?? `lambda-${process.pid}`;
  let held;
  if (!event.step || event.step === "next") {
    const next = await state.next(event.pipeline, worker);
    if (!next.held) {
      // Nothing ready: say why, partition by partition (waiting on what, held by whom).
      const waiting = Object.fromEntries(next.schedule.steps.flatMap((s) => s.partitions)
        .filter((p) => p.readiness.state !== "completed").map((p) => [p.partition, p.readiness]));
      return { worker, claimed: null, finished: next.finished, status: next.schedule.status, waiting };
    }
    held = next.held;
  } else {
    held = await state.claim(event.pipeline, event.step, worker);
  }
  const partition = held.doc.shard == null ? held.doc.step_id : `${held.doc.step_id}@${held.doc.shard}`;
  const resumeAfter = held.doc.last_processed_id; // the bookmark: skip what is done
  for (const batch of event.batches ?? []) {
    // … process the records after `resumeAfter` here …
    await held.checkpoint({ last_processed_id: batch.last_id, add_records: batch.records, add_bytes: batch.bytes ?? 0 });
    if (held.stopped) break; // an operator asked us to stop: the batch is saved, the lease released
  }
  const doc = held.released ? held.doc : event.final ? await held.complete() : await held.release();
  return { worker, claimed: partition, resumed_after: resumeAfter ?? null, epoch: held.lease.epoch, records_processed: doc.records_processed,
    status: doc.status, stopped_by: held.stopped?.requested_by ?? null };
}
