// The JSON that crosses the boundary, typed. Functions take and return JSON
// text: `JSON.parse(decodePartition(key, bytes)) as PartitionDoc`.

/** Unix time in milliseconds. */
export type Millis = number;

export type StepStatus =
  | "pending"
  | "paused"
  | { running: { started_at: Millis } }
  | { completed: { completed_at: Millis } }
  | { failed: { error: string; failed_at: Millis; retryable: boolean } };

export type StatusKind = "pending" | "running" | "completed" | "failed" | "paused";

/** Who writes under a lease: returned by a claim, advanced by each write. */
export interface Holder { worker_id: string; epoch: number; last_write: number }

export interface Lease {
  worker_id: string;
  /** Fencing token: every claim or takeover adds one. */
  epoch: number;
  acquired_at: Millis;
  expires_at: Millis;
  released_at?: Millis;
  last_write: number;
  stop_requested?: { requested_by: string; requested_at: Millis };
  /** The ttl the claim asked for; each holder write extends the lease by it. */
  ttl_ms?: number;
  /** Earlier holders, newest first (at most 8). */
  previous?: Holder[];
}

export interface ErrorRecord { at: Millis; worker_id?: string; batch_number: number; message: string; retryable: boolean }

export interface PartitionDoc {
  format_version: number;
  pipeline_id: string;
  step_id: string;
  shard?: number;
  run_id: string;
  status: StepStatus;
  last_processed_id?: string;
  last_processed_at?: Millis;
  batch_number: number;
  records_processed: number;
  records_failed: number;
  bytes_processed: number;
  processing_time_ms: number;
  last_heartbeat?: Millis;
  worker_id?: string;
  attempts: number;
  /** Failed attempts in this run (absent: 0). */
  failures?: number;
  errors: { recent: ErrorRecord[]; total: number };
  extra?: Record<string, string>;
  lease?: Lease;
  /** The pipeline generation it was last written under (absent: 0); behind its step's, it reads as fresh. */
  generation?: number;
  version: number;
  updated_at: Millis;
}

/** How a step waits for one upstream step: `barrier` (every partition of
 * it completed; the default, omitted) or `aligned` (shard i waits for shard i). */
export type DependencyKind = "barrier" | "aligned";

export interface Dependency { step_id: string; kind?: DependencyKind }

/** One step of a pipeline's plan. */
export interface StepPlan {
  step_id: string;
  /** Shards `step@0` … `step@n-1`; absent: the step is one partition. */
  shards?: number;
  /** The steps it waits for; absent: none. */
  after?: Dependency[];
}

export interface PipelineDoc {
  format_version: number;
  pipeline_id: string;
  run_id: string;
  steps: StepPlan[];
  current_step?: string;
  batch_number: number;
  /** Held by an operator while a reset or new run is on its way. */
  lease?: Lease;
  /** Bumped by every reset and new run (absent: 0). */
  generation?: number;
  /** Per step, the generation its partitions must carry to count (absent: 0). */
  step_generations?: Record<string, number>;
  version: number;
  created_at: Millis;
  updated_at: Millis;
}

export type LeaseStatus =
  | { state: "free" }
  | { state: "released" }
  | { state: "held"; expires_at: Millis }
  | { state: "expired"; expired_at: Millis };

export interface LeaseView {
  worker_id: string;
  epoch: number;
  acquired_at: Millis;
  expires_at: Millis;
  status: LeaseStatus;
  /** Past `expires_at` without a release: the holder looks dead. */
  stale: boolean;
  stop_requested: boolean;
}

/** Whether a partition may be claimed now, and if not, why (the scheduler's answer). */
export type Readiness =
  | { state: "ready"; takeover: boolean }
  | { state: "completed" }
  /** Carries an older run's state: the new run has not reached it yet. */
  | { state: "other_run" }
  | { state: "paused" }
  /** Failed for good: an operator must reset it. */
  | { state: "failed"; error: string; failures: number }
  | { state: "held"; worker_id: string; until: Millis }
  /** An operator holds the pipeline for a reset or new run; claims wait until it commits or `until`. */
  | { state: "locked"; worker_id: string; until: Millis }
  /** Upstream failed for good: `by` names up to 8 partitions, `count` says how many. */
  | { state: "blocked"; by: string[]; count: number }
  /** Upstream not completed yet: `on` names up to 8 partitions, `count` says how many. */
  | { state: "waiting"; on: string[]; count: number }
  /** Failed, retryable; claimable again at `until`. */
  | { state: "backoff"; until: Millis; failures: number }
  /** The plan expects it; the store has no document for it. */
  | { state: "missing" };

export interface PartitionState {
  /** `step` or `step@shard`. */
  partition: string;
  shard: number | null;
  status: StepStatus;
  current_run: boolean;
  readiness: Readiness;
  lease: LeaseView | null;
  worker_id: string | null;
  last_processed_id: string | null;
  last_processed_at: Millis | null;
  last_heartbeat: Millis | null;
  batch_number: number;
  records_processed: number;
  records_failed: number;
  bytes_processed: number;
  attempts: number;
  failures: number;
  total_errors: number;
  extra: Record<string, string>;
  version: number;
  updated_at: Millis;
}

export interface StepState {
  step_id: string;
  status: StatusKind;
  /** What it waits for: `step`, or `step (aligned)`. */
  after: string[];
  /** Partitions the plan expects, and how many of them completed. */
  total: number;
  completed: number;
  records_processed: number;
  records_failed: number;
  bytes_processed: number;
  processing_time_ms: number;
  total_errors: number;
  partitions: PartitionState[];
}

/** What `aggregate` returns (and `oxiflow state show --json` prints). */
export interface PipelineState {
  pipeline_id: string;
  run_id: string;
  /** The first step still to finish, in dependency order. */
  current_step: string | null;
  /** Steps with partitions running, ready or retrying. */
  frontier: string[];
  batch_number: number;
  version: number;
  updated_at: Millis;
  lease: LeaseView | null;
  status: StatusKind;
  records_processed: number;
  records_failed: number;
  bytes_processed: number;
  total_errors: number;
  steps: StepState[];
  recent_errors: (ErrorRecord & { step_id: string; partition: string })[];
}

/** Thrown (as JSON text) by every function; `error` says what to do. */
export type CoreError =
  | { error: "conflict"; key: string; reason: string }
  | { error: "fenced"; key: string; worker_id: string; epoch: number; holder: string | null; landed: boolean }
  | { error: "lease_held"; key: string; holder: string; epoch: number; expires_at: Millis }
  | { error: "invalid_transition"; from: StatusKind; action: string; hint: string }
  | { error: "counter_regression"; field: string; current: number; proposed: number }
  | { error: "invalid_id"; kind: string; value: string; rule: string }
  | { error: "invalid_input"; reason: string }
  | { error: "not_ready"; key: string; reason: string }
  | { error: "not_found"; key: string }
  | { error: "corrupt"; key: string; reason: string }
  | { error: "unsupported_format"; key: string; found: number; supported: number }
  | { error: "too_large"; key: string; size: number; limit: number }
  | { error: "unavailable"; key: string; attempts: number; reason: string }
  | { error: "protocol"; reason: string }
  | { error: string; [field: string]: unknown };

export interface Progress {
  last_processed_id?: string;
  last_processed_at?: Millis;
  batch_number?: number;
  add_records?: number;
  add_failed?: number;
  add_bytes?: number;
  add_processing_ms?: number;
  /** Empty value removes the key. */
  extra?: Record<string, string>;
  errors?: string[];
}

export type Finish = "release" | "complete" | { fail: { error: string; retryable: boolean } };

/** The `operation_json` of `new Operation(…)`. */
export type OperationSpec =
  | { create: PartitionDoc }
  | { claim: { worker_id: string; write_id: number; adopt?: Adoption; /** A hard deadline: the lease ends there at the latest. */ deadline?: Millis } }
  | { write: { holder: Holder; write_id: number; progress?: Progress; finish?: Finish } }
  | { request_stop: { worker_id: string; requested_by: string } };

/** A store version: S3/Azure compare ETags, GCS generations. */
export interface StoreVersion { e_tag?: string | null; version?: string | null }

/** The store request to perform; the body of a put is `body()`, as bytes. */
export type StoreRequest =
  | { get: { key: string } }
  | { put_if_absent: { key: string } }
  | { put_if_match: { key: string; version: StoreVersion } };

/** What `start`, `write`, `handle` and `wake` return: perform `send` and call
 * `handle`, sleep `sleep_ms` and call `wake`, or stop at `done`. */
export type Action<T> =
  | { send: StoreRequest }
  | { sleep_ms: number }
  | { done: { ok: T } }
  | { done: { error: CoreError } };

/** How an `Operation` ended. The `ok` of a claim starts a `HolderSession`. */
export interface Committed { doc: PartitionDoc; version: StoreVersion; wrote: boolean; requests: number }

/** What an `Operation` returns. */
export type OperationAction = Action<Committed>;

export interface StopRequest { requested_by: string; requested_at: Millis }

/** How a `HolderSession` write ended when it did not fail. */
export interface Written {
  /** Stored. False only when nothing was left to write (already released by us). */
  landed: boolean;
  /** A stop was requested: the progress is stored and the lease released; stop working. */
  stop: StopRequest | null;
  requests: number;
}

/** What a `HolderSession` returns. */
export type SessionAction = Action<Written>;

/** The `response_json` of `handle`: the store's answer to the last `send`. */
export type StoreResponse =
  | { object: { version: StoreVersion } | null }
  | { written: StoreVersion }
  | "already_exists"
  | "precondition"
  | { unavailable: { reason: string } };

/** The optional `config_json`: any subset. */
export interface CoreConfig {
  lease?: Partial<{ ttl_ms: number; heartbeat_interval_ms: number; skew_allowance_ms: number; safety_margin_ms: number }>;
  limits?: Partial<{ max_document_bytes: number; errors_keep_last: number }>;
  retry?: Partial<{ max_transient_failures: number; max_conflicts: number; base_delay_ms: number; max_delay_ms: number }>;
  schedule?: Partial<{ retry_base_ms: number; retry_max_ms: number; max_attempts: number }>;
}

export interface PartitionReadiness { partition: string; readiness: Readiness }

export interface StepReadiness {
  step_id: string;
  total: number;
  completed: number;
  running: number;
  ready: number;
  partitions: PartitionReadiness[];
}

/** What `schedule` returns. */
export interface Schedule {
  status: StatusKind;
  current_step: string | null;
  /** Steps with partitions running, ready or retrying, in plan order. */
  frontier: string[];
  /** What the asking worker should try to claim, best first (`step` or `step@shard`). */
  claimable: string[];
  steps: StepReadiness[];
}

/** What a claim stores when the partition is behind a reset (`adoption(pipeline, partition)`). */
export interface Adoption {
  run_id: string;
  generation: number;
}

/** `checkClaim`'s answer after a claim landed. */
export type ClaimCheck =
  | "current"
  /** A reset committed: claim again with `adopt` set to this. */
  | { stale: Adoption }
  /** An operator is resetting the pipeline: release, try again after `until`. */
  | { locked: { worker_id: string; until: Millis } };

/** Why a reported deadline was not trusted (`judgeDeadline`). */
export type Distrust =
  | { reason: "missing" }
  /** It had passed already (or was now): a clock that lies, or a duration sent in place of a time. */
  | { reason: "past"; by_ms: number }
  /** Further ahead than any invocation runs (15 minutes). */
  | { reason: "too_far"; ahead_ms: number };

/** What `judgeDeadline` returns: when the holder must be done. */
export interface JudgedDeadline {
  /** The lease ends here; nothing may be written after `ends_at − safety_margin`. */
  ends_at: Millis;
  /** Set when the reported deadline was not trusted: `ends_at` is one configured lease from now. */
  distrust?: Distrust;
  /** `distrust` in words, for the log. */
  message?: string;
}

/** What `Pace.measured()` returns. */
export interface PaceMeasured { longest_ms: number | null; batches: number }
