// A Lambda per pipeline partition over S3, on @oxiflow/state: the event
// names a partition; the invocation claims it with the lease ending at its
// deadline, resumes after its bookmark, runs batches while the core's pace
// says the longest one still fits, checkpoints each (one conditional PUT),
// and before the deadline either completes it — handing off what became
// ready downstream — or releases it with its progress and hands off a
// continuation of itself. A duplicate delivery answers `already_running`
// (with when the lease may be taken over) and writes nothing.
//
// Environment: OXIFLOW_BUCKET, OXIFLOW_PREFIX (as in s3://bucket/prefix),
// OXIFLOW_CONFIG (the core's config as JSON, optional),
// OXIFLOW_HANDOFF_FUNCTION (hand off by invoking this function
// asynchronously; unset: the result's `events` say what to deliver). The
// AWS SDK reads credentials, region and endpoint as usual.
import { runStep } from "@oxiflow/state";
import { S3State } from "@oxiflow/state/s3";
import { readBatch } from "./source.mjs";

const state = new S3State({ bucket: process.env.OXIFLOW_BUCKET, prefix: process.env.OXIFLOW_PREFIX ?? "",
  config: process.env.OXIFLOW_CONFIG ? JSON.parse(process.env.OXIFLOW_CONFIG) : undefined });
const handoff = process.env.OXIFLOW_HANDOFF_FUNCTION ? await invokeAsync(process.env.OXIFLOW_HANDOFF_FUNCTION) : undefined;

/** event: {pipeline, partition?, hop?}; without a partition it starts the pipeline. */
export async function handler(event, context) {
  return runStep(state, event, {
    worker: context.awsRequestId,
    deadline: Date.now() + context.getRemainingTimeInMillis(),
    batch: ({ partition, after, budgetMs }) => readBatch(partition, after, budgetMs),
    handoff,
    onClaim: (c) => console.log(JSON.stringify({ claimed: c.partition, epoch: c.epoch, at: c.at, after: c.after, ends_at: c.ends_at })),
  });
}

/** The hand-off as an asynchronous Lambda invocation (InvocationType "Event"), with the SDK's client. */
async function invokeAsync(functionName) {
  const { LambdaClient, InvokeCommand } = await import("@aws-sdk/client-lambda");
  const lambda = new LambdaClient({});
  return (next) => lambda.send(new InvokeCommand({ FunctionName: functionName, InvocationType: "Event", Payload: JSON.stringify(next) }));
}
