// Compiled by `tsc --noEmit --strict` (scripts/test.sh): @oxiflow/state as
// installed from the packed tarball — its exports map resolves the types of
// ".", "./s3", "./serve" and "./core" — is usable from TypeScript.
import { runStep, State, StateError, ServeState, type StepOutcome, type StepEvent, type Store, type PartitionDoc, type JudgedDeadline } from "@oxiflow/state";
import { S3State } from "@oxiflow/state/s3";
import core from "@oxiflow/state/core";
import { S3Client } from "@aws-sdk/client-s3";

const s3 = new S3State({ bucket: "b", prefix: "p", client: new S3Client({ maxAttempts: 1 }), config: { lease: { ttl_ms: 3000 } } });
const serve = new ServeState({ url: "http://127.0.0.1:8080", token: "t".repeat(16) });

export async function handler(event: StepEvent, context: { awsRequestId: string; getRemainingTimeInMillis(): number }): Promise<StepOutcome> {
  return runStep(s3, event, {
    worker: context.awsRequestId,
    deadline: Date.now() + context.getRemainingTimeInMillis(),
    batch: async ({ after, budgetMs }) => ({ progress: { last_processed_id: `${after ?? ""}x`, add_records: budgetMs > 0 ? 1 : 0 }, done: true }),
    handoff: async (next) => void (await serve.read(next.pipeline)),
  });
}

export function describe(outcome: StepOutcome): string {
  switch (outcome.outcome) {
    case "already_running":
      return `held by ${outcome.holder}; retry ${JSON.stringify(outcome.retry)} at ${outcome.retry_at}`;
    case "continue":
      return `continue ${outcome.partition} hop ${outcome.hop} after ${outcome.requests.batches.length} batches`;
    case "completed":
      return `completed; ready ${outcome.ready.join(", ")}`;
    default:
      return outcome.outcome;
  }
}

export async function firstLease(state: State, pipeline: string): Promise<number | null> {
  try {
    const { held } = await state.next(pipeline, "w");
    const doc: PartitionDoc | undefined = held?.doc;
    return doc?.lease?.epoch ?? null;
  } catch (e) {
    if (e instanceof StateError && e.kind === "lease_held") return null;
    throw e;
  }
}

export const memory: Store = {
  requests: 0,
  perform: async () => [{ object: null }, null],
  list: async () => [],
};

export function deadline(reported: number | null): JudgedDeadline {
  const judged = JSON.parse(core.judgeDeadline(reported, Date.now(), undefined)) as JudgedDeadline;
  const pace = new core.Pace(judged.ends_at, 300, undefined);
  pace.record(120);
  return pace.anotherBatch(Date.now()) ? judged : { ...judged, message: judged.message ?? "no time" };
}
