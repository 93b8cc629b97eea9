// Compiled by `tsc --noEmit --strict` in scripts/test.sh: the generated
// declarations, with the JSON types, are valid and usable.
import { decodePartition, aggregate, schedule, Operation, HolderSession } from "../pkg/node/oxiflow_wasm.js";
import type {
  Committed, OperationAction, OperationSpec, PartitionDoc, PipelineState, Readiness, Schedule, SessionAction, StepPlan, StoreResponse,
} from "../pkg/node/oxiflow_wasm.js";

export function holderOf(key: string, bytes: Uint8Array): { worker_id: string; epoch: number; last_write: number } | null {
  const doc = JSON.parse(decodePartition(key, bytes)) as PartitionDoc;
  return doc.lease ? { worker_id: doc.lease.worker_id, epoch: doc.lease.epoch, last_write: doc.lease.last_write } : null;
}

export function staleWorkers(pipelineJson: string, partitionsJson: string, now: number): string[] {
  const view = JSON.parse(aggregate(pipelineJson, partitionsJson, now)) as PipelineState;
  return view.steps.flatMap((s) => s.partitions).flatMap((p) => (p.lease?.stale ? [p.lease.worker_id] : []));
}

/** Why a partition is not claimable, in words. */
export function reason(r: Readiness): string {
  switch (r.state) {
    case "waiting":
      return `waits on ${r.on.join(", ")}${r.count > r.on.length ? ` and ${r.count - r.on.length} more` : ""}`;
    case "blocked":
      return `blocked by ${r.by.join(", ")}`;
    case "held":
      return `held by ${r.worker_id} until ${new Date(r.until).toISOString()}`;
    case "backoff":
      return `retry after ${r.failures} failure(s) at ${r.until}`;
    case "failed":
      return r.error;
    case "ready":
      return r.takeover ? "ready (takeover)" : "ready";
    default:
      return r.state;
  }
}

export function next(pipelineJson: string, partitionsJson: string, worker: string | null): string | undefined {
  const s = JSON.parse(schedule(pipelineJson, partitionsJson, Date.now(), worker, Math.random() * 2 ** 32)) as Schedule;
  const waiting = s.steps.flatMap((st) => st.partitions).filter((p) => p.readiness.state === "waiting").map((p) => reason(p.readiness));
  return s.claimable[0] ?? waiting[0];
}

export const plan: StepPlan[] = [{ step_id: "extract", shards: 4 }, { step_id: "load", after: [{ step_id: "extract", kind: "aligned" }] }];

export function step(op: Operation, response: StoreResponse, body: Uint8Array | null, now: number): OperationAction {
  return JSON.parse(op.handle(JSON.stringify(response), body, now, Math.random() * 2 ** 32)) as OperationAction;
}

export function checkpoint(key: string, claimed: Committed, now: number): { session: HolderSession; action: SessionAction; stoppedBy: string | null } {
  const session = HolderSession.claimed(key, JSON.stringify(claimed), null, now);
  const action = JSON.parse(session.write(JSON.stringify({ add_records: 10 }), JSON.stringify("complete"), 7, now)) as SessionAction;
  const stoppedBy = "done" in action && "ok" in action.done ? action.done.ok.stop?.requested_by ?? null : null;
  return { session, action, stoppedBy: session.isReleased() ? stoppedBy : null };
}

export function describe(action: OperationAction): string {
  if ("send" in action) return Object.keys(action.send)[0];
  if ("sleep_ms" in action) return `sleep ${action.sleep_ms} ms`;
  if ("error" in action.done) return action.done.error.error;
  return `done in ${action.done.ok.requests} requests, version ${action.done.ok.doc.version}`;
}

export const claim: OperationSpec = { claim: { worker_id: "lambda-1", write_id: 7 } };
