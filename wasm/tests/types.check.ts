// Compiled by `tsc --noEmit --strict` in scripts/test.sh: the generated
// declarations, with the JSON types, are valid and usable.
import { decodePartition, aggregate, Operation } from "../pkg/node/oxiflow_wasm.js";
import type { OperationAction, OperationSpec, PartitionDoc, PipelineState, StoreResponse } from "../pkg/node/oxiflow_wasm.js";

export function holderOf(key: string, bytes: Uint8Array): { worker_id: string; epoch: number; last_write: number } | null {
  const doc = JSON.parse(decodePartition(key, bytes)) as PartitionDoc;
  return doc.lease ? { worker_id: doc.lease.worker_id, epoch: doc.lease.epoch, last_write: doc.lease.last_write } : null;
}

export function staleWorkers(pipelineJson: string, partitionsJson: string, now: number): string[] {
  const view = JSON.parse(aggregate(pipelineJson, partitionsJson, now)) as PipelineState;
  return view.steps.flatMap((s) => s.partitions).flatMap((p) => (p.lease?.stale ? [p.lease.worker_id] : []));
}

export function step(op: Operation, response: StoreResponse, body: Uint8Array | null, now: number): OperationAction {
  return JSON.parse(op.handle(JSON.stringify(response), body, now, Math.random() * 2 ** 32)) as OperationAction;
}

export function describe(action: OperationAction): string {
  if ("send" in action) return Object.keys(action.send)[0];
  if ("sleep_ms" in action) return `sleep ${action.sleep_ms} ms`;
  if ("error" in action.done) return action.done.error.error;
  return `done in ${action.done.ok.requests} requests, version ${action.done.ok.doc.version}`;
}

export const claim: OperationSpec = { claim: { worker_id: "lambda-1", write_id: 7 } };
