//! The stored documents: one pipeline document and one partition document per
//! step or step shard. Field order is the canonical order on the wire.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::id::{PartitionId, PipelineId, RunId, StepId, WorkerId};
use crate::lease::Lease;
use crate::plan::{self, StepPlan};
use crate::time::Timestamp;

/// The format this build writes. Older formats are migrated on read
/// ([`crate::codec::migrate`]); newer ones are refused.
pub const FORMAT_VERSION: u64 = 3;

/// Bounds on what one document may hold, so every object stays small and a
/// hostile or buggy writer cannot grow it without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest encoded document accepted on read or write.
    pub max_document_bytes: usize,
    /// Error records kept per partition (the total is always counted).
    pub errors_keep_last: usize,
    /// Longer error messages are cut to this many bytes.
    pub max_error_message_bytes: usize,
    /// Longest accepted `last_processed_id`.
    pub max_bookmark_bytes: usize,
    /// Most entries in a partition's `extra` map.
    pub max_extra_entries: usize,
    /// Longest key in `extra`.
    pub max_extra_key_bytes: usize,
    /// Longest value in `extra`.
    pub max_extra_value_bytes: usize,
}

/// Hard cap on the error ring, whatever `errors_keep_last` says.
pub const MAX_ERRORS_KEPT: usize = 1000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_document_bytes: 1 << 20,
            errors_keep_last: 20,
            max_error_message_bytes: 2048,
            max_bookmark_bytes: 1024,
            max_extra_entries: 32,
            max_extra_key_bytes: 64,
            max_extra_value_bytes: 1024,
        }
    }
}

/// Status of one partition. `Failed` keeps its message; the error ring keeps
/// the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Waiting to be claimed.
    Pending,
    /// Claimed and being worked on.
    Running {
        /// When the current claim started it.
        started_at: Timestamp,
    },
    /// Done in this run.
    Completed {
        /// When its holder completed it.
        completed_at: Timestamp,
    },
    /// Its holder gave up on it.
    Failed {
        /// The holder's message, cut to the configured length.
        error: String,
        /// When it failed.
        failed_at: Timestamp,
        /// Whether a later claim may try again.
        retryable: bool,
    },
    /// Held back by an operator: not claimable until resumed.
    Paused,
}

/// [`StepStatus`] without its data, for messages and aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    /// [`StepStatus::Pending`].
    Pending,
    /// [`StepStatus::Running`].
    Running,
    /// [`StepStatus::Completed`].
    Completed,
    /// [`StepStatus::Failed`].
    Failed,
    /// [`StepStatus::Paused`].
    Paused,
}

impl StepStatus {
    /// This status without its data.
    pub fn kind(&self) -> StatusKind {
        match self {
            StepStatus::Pending => StatusKind::Pending,
            StepStatus::Running { .. } => StatusKind::Running,
            StepStatus::Completed { .. } => StatusKind::Completed,
            StepStatus::Failed { .. } => StatusKind::Failed,
            StepStatus::Paused => StatusKind::Paused,
        }
    }
}

impl fmt::Display for StatusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StatusKind::Pending => "pending",
            StatusKind::Running => "running",
            StatusKind::Completed => "completed",
            StatusKind::Failed => "failed",
            StatusKind::Paused => "paused",
        })
    }
}

/// One recorded error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRecord {
    /// When it was recorded, by the writer's clock.
    pub at: Timestamp,
    /// Who reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<WorkerId>,
    /// The partition's batch number at the time.
    pub batch_number: u64,
    /// What went wrong, cut to the configured length.
    pub message: String,
    /// Whether the failure allowed another attempt.
    pub retryable: bool,
}

/// The last N error records and the count of all of them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorLog {
    /// Every error ever recorded, including those dropped from `recent`.
    pub total: u64,
    /// The newest records, oldest first.
    pub recent: Vec<ErrorRecord>,
}

impl ErrorLog {
    /// Appends `record`, dropping the oldest beyond `keep_last`.
    pub fn push(&mut self, record: ErrorRecord, keep_last: usize) {
        self.total = self.total.saturating_add(1);
        self.recent.push(record);
        let keep = keep_last.min(MAX_ERRORS_KEPT);
        if self.recent.len() > keep {
            let drop = self.recent.len() - keep;
            self.recent.drain(..drop);
        }
    }
}

/// The pipeline document: `pipelines/<id>/pipeline.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineDoc {
    /// The format the document was written in ([`FORMAT_VERSION`]).
    pub format_version: u64,
    /// Which pipeline this is.
    pub pipeline_id: PipelineId,
    /// The current run: partitions of another run read as behind.
    pub run_id: RunId,
    /// The plan: steps in the order they were given, their shards and what
    /// each waits for ([`crate::plan`]).
    pub steps: Vec<StepPlan>,
    /// The step the pipeline is on, as its runner reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<StepId>,
    /// The runner's batch counter; never goes backwards.
    pub batch_number: u64,
    /// Operators hold this lease while a reset or new run is on its way
    /// ([`crate::generation`]); claims wait while it is live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Bumped by every reset and new run: the pipeline-wide action is this
    /// one compare-and-swap ([`crate::generation`]).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub generation: u64,
    /// Per step, the generation a partition must carry to count: an older
    /// one reads as a fresh partition of the current run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub step_generations: BTreeMap<StepId, u64>,
    /// Bumped by every write, so no two writes have identical bytes (S3
    /// ETags are content hashes: identical bytes would allow ABA).
    pub version: u64,
    /// When the pipeline was created.
    pub created_at: Timestamp,
    /// When it was last written, by the writer's clock.
    pub updated_at: Timestamp,
}

/// One partition document: `pipelines/<id>/partitions/<step>[@shard].json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionDoc {
    /// The format the document was written in ([`FORMAT_VERSION`]).
    pub format_version: u64,
    /// The pipeline it belongs to.
    pub pipeline_id: PipelineId,
    /// The step it is part of.
    pub step_id: StepId,
    /// Which shard of the step; `None` for an unsharded step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    /// The run its status and counters belong to.
    pub run_id: RunId,
    /// Where it is in the step state machine.
    pub status: StepStatus,
    /// The bookmark: where an incremental pipeline resumes. Kept across runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_processed_id: Option<String>,
    /// When the bookmark last moved (or as the holder reported it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_processed_at: Option<Timestamp>,
    /// The holder's batch counter; never goes backwards, kept across runs.
    pub batch_number: u64,
    /// Records processed in this run.
    pub records_processed: u64,
    /// Records that failed in this run.
    pub records_failed: u64,
    /// Bytes processed in this run.
    pub bytes_processed: u64,
    /// Processing time reported in this run.
    pub processing_time_ms: u64,
    /// The holder's last write, which shows it alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Timestamp>,
    /// The worker that last made progress here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<WorkerId>,
    /// Claims in this run.
    pub attempts: u32,
    /// Failed attempts in this run: retry backoff and `max_attempts` count
    /// these, not takeovers or releases.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// Errors recorded by holders, the newest kept.
    pub errors: ErrorLog,
    /// Small user fields, bounded by [`Limits`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
    /// Who may work on the partition ([`crate::lease`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// The pipeline generation this partition was last written under; see
    /// [`PipelineDoc::step_generations`].
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub generation: u64,
    /// Bumped by every write, like [`PipelineDoc::version`].
    pub version: u64,
    /// When it was last written, by the writer's clock.
    pub updated_at: Timestamp,
}

impl PipelineDoc {
    /// A new pipeline with its plan, refused when the plan is not a valid
    /// DAG ([`plan::validate`]). `version` 0: the first write makes it 1.
    pub fn new(pipeline_id: PipelineId, run_id: RunId, steps: Vec<StepPlan>, now: Timestamp) -> Result<Self, Error> {
        plan::validate(&steps)?;
        Ok(PipelineDoc {
            format_version: FORMAT_VERSION,
            pipeline_id,
            run_id,
            current_step: steps.first().map(|s| s.step_id.clone()),
            steps,
            batch_number: 0,
            lease: None,
            generation: 0,
            step_generations: BTreeMap::new(),
            version: 0,
            created_at: now,
            updated_at: now,
        })
    }
}

impl PipelineDoc {
    /// The plan of `step`, if it is one of this pipeline's steps.
    pub fn step(&self, step: &StepId) -> Option<&StepPlan> {
        self.steps.iter().find(|s| &s.step_id == step)
    }
}

impl PartitionDoc {
    /// A new, pending partition. `version` 0: the first write makes it 1.
    pub fn new(pipeline_id: PipelineId, partition: PartitionId, run_id: RunId, now: Timestamp) -> Self {
        PartitionDoc {
            format_version: FORMAT_VERSION,
            pipeline_id,
            step_id: partition.step_id,
            shard: partition.shard,
            run_id,
            status: StepStatus::Pending,
            last_processed_id: None,
            last_processed_at: None,
            batch_number: 0,
            records_processed: 0,
            records_failed: 0,
            bytes_processed: 0,
            processing_time_ms: 0,
            last_heartbeat: None,
            worker_id: None,
            attempts: 0,
            failures: 0,
            errors: ErrorLog::default(),
            extra: BTreeMap::new(),
            lease: None,
            generation: 0,
            version: 0,
            updated_at: now,
        }
    }

    /// The step and shard this document stores.
    pub fn partition_id(&self) -> PartitionId {
        PartitionId { step_id: self.step_id.clone(), shard: self.shard }
    }
}

/// What every stored document offers the codec and the protocol drivers.
pub trait Document: Clone + PartialEq + fmt::Debug + Serialize + DeserializeOwned {
    /// For messages: "pipeline" or "partition".
    const KIND: &'static str;
    /// The lease guarding the document, if it was ever claimed.
    fn lease(&self) -> Option<&Lease>;
    /// The lease slot, for claims and releases to fill or update.
    fn lease_mut(&mut self) -> &mut Option<Lease>;
    /// The write counter: bumped by every write.
    fn version(&self) -> u64;
    /// Marks a write: bumps `version`, sets `updated_at`.
    fn stamp(&mut self, now: Timestamp);
    /// Sets `version`, for a copy put in place of a stored document (the
    /// next stamp then continues from the stored version).
    fn set_version(&mut self, version: u64);
    /// Checks the invariants a decoded document must hold; the reason names
    /// the field.
    fn check(&self, limits: &Limits) -> Result<(), String>;
}

fn check_lease(lease: Option<&Lease>) -> Result<(), String> {
    if let Some(l) = lease {
        if l.epoch == 0 {
            return Err("lease.epoch must be at least 1".into());
        }
        if l.expires_at < l.acquired_at {
            return Err("lease.expires_at is before lease.acquired_at".into());
        }
    }
    Ok(())
}

fn check_format(format_version: u64, version: u64) -> Result<(), String> {
    if format_version != FORMAT_VERSION {
        return Err(alloc::format!("format_version {format_version} in a format {FORMAT_VERSION} body"));
    }
    if version == 0 {
        return Err("version must be at least 1 once stored".into());
    }
    Ok(())
}

/// The `Document` methods both documents implement the same way, over their
/// `lease`, `version` and `updated_at` fields.
macro_rules! document_fields {
    () => {
        fn lease(&self) -> Option<&Lease> {
            self.lease.as_ref()
        }
        fn lease_mut(&mut self) -> &mut Option<Lease> {
            &mut self.lease
        }
        fn version(&self) -> u64 {
            self.version
        }
        fn stamp(&mut self, now: Timestamp) {
            self.version += 1;
            self.updated_at = now;
        }
        fn set_version(&mut self, version: u64) {
            self.version = version;
        }
    };
}

impl Document for PipelineDoc {
    const KIND: &'static str = "pipeline";

    document_fields!();
    fn check(&self, _limits: &Limits) -> Result<(), String> {
        check_format(self.format_version, self.version)?;
        check_lease(self.lease.as_ref())?;
        plan::validate(&self.steps).map_err(|e| alloc::format!("steps: {e}"))?;
        if let Some(s) = &self.current_step {
            if self.step(s).is_none() {
                return Err(alloc::format!("current_step {s} is not one of the pipeline's steps"));
            }
        }
        Ok(())
    }
}

impl Document for PartitionDoc {
    const KIND: &'static str = "partition";

    document_fields!();
    fn check(&self, limits: &Limits) -> Result<(), String> {
        check_format(self.format_version, self.version)?;
        check_lease(self.lease.as_ref())?;
        if self.errors.recent.len() > MAX_ERRORS_KEPT {
            return Err(alloc::format!("errors.recent holds {} records, over the cap of {MAX_ERRORS_KEPT}", self.errors.recent.len()));
        }
        if (self.errors.recent.len() as u64) > self.errors.total {
            return Err("errors.total is smaller than the number of recent errors".into());
        }
        if let Some(b) = &self.last_processed_id {
            check_len("last_processed_id", b, limits.max_bookmark_bytes)?;
        }
        check_extra(&self.extra, limits)
    }
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

pub(crate) fn check_len(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(alloc::format!("{field} is {} bytes, over the {max}-byte limit", value.len()));
    }
    Ok(())
}

pub(crate) fn check_extra(extra: &BTreeMap<String, String>, limits: &Limits) -> Result<(), String> {
    if extra.len() > limits.max_extra_entries {
        return Err(alloc::format!("extra has {} entries, over the limit of {}", extra.len(), limits.max_extra_entries));
    }
    for (k, v) in extra {
        if k.is_empty() {
            return Err("extra has an empty key".into());
        }
        check_len("an extra key", k, limits.max_extra_key_bytes)?;
        check_len(&alloc::format!("extra[{k:?}]"), v, limits.max_extra_value_bytes)?;
    }
    Ok(())
}
