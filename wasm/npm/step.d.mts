// Types of ./step.mjs: one invocation of a step with a hard deadline.
import type { State, Clock } from "./state.mjs";
import type { PartitionDoc, Progress } from "./core/index.mjs";

/** What an invocation is asked to do. Without `partition`: start the pipeline (hand off what is ready). */
export interface StepEvent {
  pipeline: string;
  partition?: string;
  /** Continuations of this partition so far. */
  hop?: number;
  /** Invocations in a row that ran no batch. */
  idle?: number;
}

export interface BatchInput {
  pipeline: string;
  partition: string;
  /** The bookmark: resume after this id (null: from the start). */
  after: string | null;
  /** The time this batch may take, ms. */
  budgetMs: number;
  hop: number;
  batchNumber: number;
  doc: PartitionDoc;
}

export interface BatchResult {
  /** What the batch did: `last_processed_id`, `add_records`, `add_bytes`, … */
  progress?: Progress;
  /** That was the last batch: the partition is completed with it. */
  done?: boolean;
}

export interface StepOptions {
  /** This invocation's worker id, e.g. `context.awsRequestId`. */
  worker: string;
  /** The platform's deadline, Unix ms (`Date.now() + context.getRemainingTimeInMillis()`), or null. */
  deadline?: number | null;
  batch(input: BatchInput): Promise<BatchResult>;
  /** Delivers a follow-up event (Lambda Invoke, SQS, …); without it, `events` lists them. */
  handoff?(event: StepEvent): Promise<void> | void;
  /** Called once the claim landed. */
  onClaim?(claimed: { partition: string; epoch: number; at: number; after: string | null; ends_at: number }): Promise<void> | void;
  /** The time one write takes, kept free for the release; default 300. */
  marginMs?: number;
  log?(message: string, fields: Record<string, unknown>): void;
  now?: Clock;
}

interface Common { pipeline: string; partition: string; events: StepEvent[] }
/** Store requests by phase: the claim with its reads, each batch's checkpoint, the release or the completion with the hand-off's reads. */
export interface StepRequests { claim: number; batches: number[]; finish: number }
interface Ran extends Common { epoch: number; resumed_after: string | null; batches: number; ends_at: number; requests: StepRequests }

export type StepOutcome =
  | { outcome: "started"; pipeline: string; events: StepEvent[]; ready: string[]; status: string }
  | (Ran & { outcome: "continue"; hop: number; held_ms: number; records_processed: number; expired?: string })
  | (Ran & { outcome: "completed"; ready: string[]; records_processed: number })
  | (Ran & { outcome: "stopped"; by: string })
  | (Ran & { outcome: "fenced"; reason: string })
  | (Ran & { outcome: "no_time" })
  | (Common & { outcome: "already_done"; ready: string[] })
  | (Common & { outcome: "already_running"; holder: string; epoch: number; retry_at: number; retry: StepEvent })
  /** A later hop of the partition has written since this event was sent: its chain went on without it. */
  | (Common & { outcome: "superseded"; hop: number; current_hop: number })
  | (Common & { outcome: "refused"; reason: string });

export function runStep(state: State, event: StepEvent, options: StepOptions): Promise<StepOutcome>;
