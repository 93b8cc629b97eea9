//! The handler's side: one batch at a time, after the bookmark.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use oxiflow_core::{PartitionId, PipelineId, Progress};

/// What the runner tells the handler before each batch.
#[derive(Debug, Clone)]
pub struct BatchInput {
    /// The pipeline.
    pub pipeline: PipelineId,
    /// The partition being worked on.
    pub partition: PartitionId,
    /// Where to resume: the last id the previous batch stored (none before
    /// the first batch of the partition).
    pub bookmark: Option<String>,
    /// Batches stored for this partition so far (in every invocation).
    pub batch_number: u64,
    /// How long this batch may take and still leave time to store it and
    /// release the lease before the deadline. Size the batch by it.
    pub budget: Duration,
}

/// One processed batch, as the handler reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The new bookmark: the last id processed.
    pub last_id: Option<String>,
    /// Records processed.
    pub records: u64,
    /// Records that failed (counted, not retried).
    pub failed: u64,
    /// Bytes processed.
    pub bytes: u64,
    /// Merged into the partition's `extra` map.
    pub extra: BTreeMap<String, String>,
    /// This was the partition's last batch: it is completed by the same
    /// write that stores it.
    pub last: bool,
}

impl Batch {
    /// A batch of `records` ending at `last_id`.
    pub fn new(last_id: impl Into<String>, records: u64) -> Self {
        Batch { last_id: Some(last_id.into()), records, ..Batch::default() }
    }

    /// The same batch, marked as the partition's last.
    pub fn last(self) -> Self {
        Batch { last: true, ..self }
    }

    /// Nothing more to process: completes the partition.
    pub fn done() -> Self {
        Batch { last: true, ..Batch::default() }
    }

    pub(crate) fn progress(&self, batch_number: u64, took: Duration) -> Progress {
        Progress {
            last_processed_id: self.last_id.clone(),
            batch_number: Some(batch_number),
            add_records: self.records,
            add_failed: self.failed,
            add_bytes: self.bytes,
            add_processing_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            extra: self.extra.clone(),
            ..Progress::default()
        }
    }
}

/// A handler error. Retryable by default: the partition is failed with the
/// message and a later claim tries again after the scheduler's backoff.
/// Wrap it in [`Permanent`] to fail the partition for good.
pub type BatchError = Box<dyn std::error::Error + Send + Sync>;

/// An error that retrying will not fix: the partition fails for good until
/// an operator resets it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Permanent(pub BatchError);

/// The work of one step: called once per batch while time allows.
#[async_trait]
pub trait Step: Send + Sync {
    /// Processes the records after `input.bookmark`, at most what fits in
    /// `input.budget`, and reports them. Return [`Batch::last`] (or
    /// [`Batch::done`]) when the partition has nothing more.
    async fn batch(&self, input: BatchInput) -> Result<Batch, BatchError>;
}
