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
  previous?: Holder;
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
  errors: { recent: ErrorRecord[]; total: number };
  extra?: Record<string, string>;
  lease?: Lease;
  version: number;
  updated_at: Millis;
}

export interface PipelineDoc {
  format_version: number;
  pipeline_id: string;
  run_id: string;
  steps: string[];
  current_step?: string;
  batch_number: number;
  lease?: Lease;
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

export interface PartitionState {
  partition: string;
  shard: number | null;
  status: StepStatus;
  current_run: boolean;
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
  total_errors: number;
  extra: Record<string, string>;
  version: number;
  updated_at: Millis;
}

export interface StepState {
  step_id: string;
  status: StatusKind;
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
  current_step: string | null;
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
  | { error: "not_found"; key: string }
  | { error: "corrupt"; key: string; reason: string }
  | { error: "unsupported_format"; key: string; found: number; supported: number }
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
  | { claim: { worker_id: string; write_id: number } }
  | { write: { holder: Holder; write_id: number; progress?: Progress; finish?: Finish } }
  | { request_stop: { worker_id: string; requested_by: string } };

/** A store version: S3/Azure compare ETags, GCS generations. */
export interface StoreVersion { e_tag?: string | null; version?: string | null }

/** What `start`, `handle` and `wake` return. */
export type OperationAction =
  | { send: { get: { key: string } } }
  | { send: { put_if_absent: { key: string } } }
  | { send: { put_if_match: { key: string; version: StoreVersion } } }
  | { sleep_ms: number }
  | { done: { ok: { doc: PartitionDoc; version: StoreVersion; wrote: boolean; requests: number } } }
  | { done: { error: CoreError } };

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
}
