//! What an invocation is asked to do, and what it answers.

use oxiflow_core::{PartitionId, PipelineId, Timestamp, WorkerId};
use serde::{Deserialize, Serialize};

/// The event a step's function is invoked with: the first one (sent by
/// whatever starts the pipeline), a hand-off or a continuation.
///
/// ```json
/// {"pipeline": "orders", "partition": "transform@2", "hop": 3}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepEvent {
    /// The pipeline.
    pub pipeline: PipelineId,
    /// The partition to work on (`step` or `step@shard`); absent: the
    /// scheduler's next ready partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionId>,
    /// How many continuations came before this one in the chain (0 for a
    /// first event or a hand-off). Lambda stops a chain of self-invocations
    /// after about 16 unless recursive-loop detection is turned off for the
    /// function: see docs/lambda.md.
    #[serde(default)]
    pub hop: u32,
}

impl StepEvent {
    /// The first event for `partition` (a hand-off).
    pub fn start(pipeline: PipelineId, partition: PartitionId) -> Self {
        StepEvent { pipeline, partition: Some(partition), hop: 0 }
    }

    /// The event that continues `partition` in a new invocation.
    pub fn continued(&self, partition: PartitionId) -> Self {
        StepEvent { pipeline: self.pipeline.clone(), partition: Some(partition), hop: self.hop.saturating_add(1) }
    }
}

/// How one invocation ended. Serialized as the function's response, with
/// an `outcome` tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StepOutcome {
    /// The partition's last batch is stored and it is completed; `handed_off`
    /// are the events sent for what became ready.
    Completed {
        /// The partition.
        partition: PartitionId,
        /// Its records in all (this run).
        records_processed: u64,
        /// Batches this invocation stored.
        batches: u32,
        /// Events sent to start the partitions that became ready.
        handed_off: Vec<StepEvent>,
    },
    /// Time ran out: progress is stored, the lease released, and `next`
    /// (the same partition, one hop further) was sent.
    Continue {
        /// The partition.
        partition: PartitionId,
        /// Its records in all (this run).
        records_processed: u64,
        /// Batches this invocation stored.
        batches: u32,
        /// The continuation event sent.
        next: StepEvent,
    },
    /// An operator asked the holder to stop: the last batch is stored and
    /// the lease released; nothing is handed off.
    Stopped {
        /// The partition.
        partition: PartitionId,
        /// Who asked.
        requested_by: WorkerId,
        /// Batches this invocation stored.
        batches: u32,
    },
    /// The handler failed; the failure is recorded on the partition (a
    /// retryable one is retried by a later claim after its backoff).
    Failed {
        /// The partition.
        partition: PartitionId,
        /// The handler's error.
        error: String,
        /// Whether a later claim retries it.
        retryable: bool,
    },
    /// Someone else holds the partition (a duplicate delivery, or a killed
    /// invocation whose lease has not ended): nothing was written.
    AlreadyRunning {
        /// The partition.
        partition: PartitionId,
        /// The holder.
        holder: WorkerId,
        /// When the lease can be taken over, if its holder is dead.
        retry_at: Timestamp,
    },
    /// The partition is completed in the current run: nothing to do. Any
    /// ready partition after it is handed off again (`handed_off`), in case
    /// the invocation that completed it died before it could.
    AlreadyDone {
        /// The partition.
        partition: PartitionId,
        /// Events sent for partitions after it that are still ready.
        handed_off: Vec<StepEvent>,
    },
    /// Not claimable now: its upstream is not done, it is paused or failed
    /// for good, or an operator holds the pipeline. `reason` says which and
    /// what to do.
    NotReady {
        /// The partition asked for, if one was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<PartitionId>,
        /// Why, in one sentence.
        reason: String,
    },
    /// Asked for the next ready partition of a pipeline with nothing left
    /// to run in this run.
    Finished {
        /// The pipeline.
        pipeline: PipelineId,
    },
}
