// A Lambda per pipeline step: claim the step, process a batch after its
// bookmark, checkpoint, and complete on the last batch. Another invocation
// of the same step meanwhile gets `lease_held` and backs off.
//
// Environment: OXIFLOW_BUCKET, OXIFLOW_PREFIX (as in s3://bucket/prefix);
// the AWS SDK reads credentials and region as usual.
import { S3State } from "./state.mjs";

const state = new S3State({ bucket: process.env.OXIFLOW_BUCKET, prefix: process.env.OXIFLOW_PREFIX ?? "" });

/** event: {pipeline, step, worker_id?, batches: [{last_id, records, bytes}], final?: boolean} */
export async function handler(event, context = {}) {
  const worker = event.worker_id ?? context.awsRequestId ?? `lambda-${process.pid}`;
  const held = await state.claim(event.pipeline, event.step, worker);
  const resumeAfter = held.doc.last_processed_id; // the bookmark: skip what is done
  for (const batch of event.batches) {
    // … process the records after `resumeAfter` here …
    await held.checkpoint({ last_processed_id: batch.last_id, add_records: batch.records, add_bytes: batch.bytes ?? 0 });
  }
  const doc = event.final ? await held.complete() : await held.release();
  return { worker, resumed_after: resumeAfter ?? null, epoch: held.lease.epoch, records_processed: doc.records_processed, status: doc.status };
}
