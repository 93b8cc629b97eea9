//! The aggregated view: what the seeds called `PipelineState`, computed from
//! the pipeline document and its partition documents. Dashboards, the CLI's
//! `state show` and orchestrators read this.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use serde::Serialize;

use crate::doc::{ErrorRecord, PartitionDoc, PipelineDoc, StatusKind, StepStatus};
use crate::error::Error;
use crate::id::{PartitionId, PipelineId, RunId, StepId, WorkerId};
use crate::lease::{Lease, LeaseConfig, LeaseStatus};
use crate::protocol::Config;
use crate::schedule::{schedule, Readiness};
use crate::time::Timestamp;

/// A pipeline at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PipelineState {
    /// Which pipeline.
    pub pipeline_id: PipelineId,
    /// The pipeline's current run.
    pub run_id: RunId,
    /// The first step still to finish, in dependency order (the last step
    /// once all completed): derived by the scheduler, not stored.
    pub current_step: Option<StepId>,
    /// Steps with partitions running, ready or retrying.
    pub frontier: Vec<StepId>,
    /// From the pipeline document.
    pub batch_number: u64,
    /// The pipeline document's write counter.
    pub version: u64,
    /// The latest write of any of its documents (the pipeline document
    /// itself is written rarely: at creation and by operators).
    pub updated_at: Timestamp,
    /// The pipeline document's lease: an operator's reset in progress.
    pub lease: Option<LeaseView>,
    /// The scheduler's status ([`crate::Schedule::status`]).
    pub status: StatusKind,
    /// Summed over the steps, this run only.
    pub records_processed: u64,
    /// Summed over the steps, this run only.
    pub records_failed: u64,
    /// Summed over the steps, this run only.
    pub bytes_processed: u64,
    /// Errors ever recorded, summed over the steps.
    pub total_errors: u64,
    /// Steps in pipeline order; steps that have partitions but are not in
    /// the plan come last.
    pub steps: Vec<StepState>,
    /// The most recent errors across partitions, newest first.
    pub recent_errors: Vec<StepError>,
}

/// A step: its partitions and their sums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepState {
    /// Which step.
    pub step_id: StepId,
    /// Failed if any partition failed for good; else Running if any runs,
    /// retries or only some completed; else Paused if any is paused;
    /// Completed when all are.
    pub status: StatusKind,
    /// What it waits for ([`crate::StepPlan::after`]), as `step` or `step (aligned)`.
    pub after: Vec<String>,
    /// Partitions the plan expects, and how many completed.
    pub total: usize,
    /// Of `total`, completed in this run.
    pub completed: usize,
    /// Summed over partitions in this run.
    pub records_processed: u64,
    /// Summed over partitions in this run.
    pub records_failed: u64,
    /// Summed over partitions in this run.
    pub bytes_processed: u64,
    /// Summed over partitions in this run.
    pub processing_time_ms: u64,
    /// Errors ever recorded, summed over partitions.
    pub total_errors: u64,
    /// The step's partition documents, by shard.
    pub partitions: Vec<PartitionState>,
}

/// One partition as a dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionState {
    /// Its name, `step` or `step@shard`.
    pub partition: String,
    /// Which shard, for a sharded step.
    pub shard: Option<u32>,
    /// As stored (or as adopted, behind a reset).
    pub status: StepStatus,
    /// False when the partition still carries an older run's state; its
    /// status then counts as Pending.
    pub current_run: bool,
    /// Whether it may be claimed now, and if not, why.
    pub readiness: Readiness,
    /// Who may work on it, and whether that looks alive.
    pub lease: Option<LeaseView>,
    /// The worker that last made progress.
    pub worker_id: Option<WorkerId>,
    /// The bookmark: where the work resumes.
    pub last_processed_id: Option<String>,
    /// When the bookmark last moved.
    pub last_processed_at: Option<Timestamp>,
    /// The holder's last write.
    pub last_heartbeat: Option<Timestamp>,
    /// The holder's batch counter.
    pub batch_number: u64,
    /// In the partition's run.
    pub records_processed: u64,
    /// In the partition's run.
    pub records_failed: u64,
    /// In the partition's run.
    pub bytes_processed: u64,
    /// Claims in the partition's run.
    pub attempts: u32,
    /// Failed attempts in this run.
    pub failures: u32,
    /// Errors ever recorded here.
    pub total_errors: u64,
    /// The partition's user fields.
    pub extra: BTreeMap<String, String>,
    /// The document's write counter.
    pub version: u64,
    /// When the document was last written.
    pub updated_at: Timestamp,
}

/// A lease and how it looks at the view's moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseView {
    /// Who holds (or last held) the lease.
    pub worker_id: WorkerId,
    /// Its fencing token.
    pub epoch: u64,
    /// When the current holder claimed it.
    pub acquired_at: Timestamp,
    /// When it runs out unless renewed.
    pub expires_at: Timestamp,
    /// Free, released, held or expired at the view's moment.
    pub status: LeaseStatus,
    /// Held past `expires_at` but not yet claimable, or expired without a
    /// release: the holder looks dead.
    pub stale: bool,
    /// Someone asked the holder to release and stop.
    pub stop_requested: bool,
}

impl LeaseView {
    /// `lease` as it looks at `now`.
    pub fn of(lease: &Lease, now: Timestamp, config: &LeaseConfig) -> Self {
        let status = LeaseStatus::of(Some(lease), now, config);
        LeaseView {
            worker_id: lease.worker_id.clone(),
            epoch: lease.epoch,
            acquired_at: lease.acquired_at,
            expires_at: lease.expires_at,
            stale: lease.is_open() && now > lease.expires_at,
            stop_requested: lease.stop_requested.is_some(),
            status,
        }
    }
}

/// An error record with the partition it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepError {
    /// The step of the partition.
    pub step_id: StepId,
    /// The partition's name, `step` or `step@shard`.
    pub partition: String,
    /// The error as recorded.
    #[serde(flatten)]
    pub record: ErrorRecord,
}

/// Combines statuses by the rule on [`StepState::status`].
fn combine(kinds: impl Iterator<Item = StatusKind>) -> StatusKind {
    let (mut any, mut failed, mut running, mut paused, mut completed, mut all_completed) = (false, false, false, false, false, true);
    for k in kinds {
        any = true;
        failed |= k == StatusKind::Failed;
        running |= k == StatusKind::Running;
        paused |= k == StatusKind::Paused;
        completed |= k == StatusKind::Completed;
        all_completed &= k == StatusKind::Completed;
    }
    match () {
        _ if !any => StatusKind::Pending,
        _ if failed => StatusKind::Failed,
        _ if running || (completed && !all_completed && !paused) => StatusKind::Running,
        _ if paused => StatusKind::Paused,
        _ if all_completed => StatusKind::Completed,
        _ => StatusKind::Pending,
    }
}

/// Builds the view. Partition documents of another pipeline are refused;
/// `recent_errors` keeps the newest `config.limits.errors_keep_last` records.
pub fn aggregate(pipeline: &PipelineDoc, partitions: &[PartitionDoc], now: Timestamp, config: &Config) -> Result<PipelineState, Error> {
    let keep_errors = config.limits.errors_keep_last;
    // Partitions behind a committed reset read as fresh ones of this run.
    let partitions: Vec<PartitionDoc> = partitions.iter().map(|p| p.as_of(pipeline, now)).collect();
    let partitions = partitions.as_slice();
    let mut by_step: BTreeMap<&StepId, Vec<&PartitionDoc>> = BTreeMap::new();
    for p in partitions {
        if p.pipeline_id != pipeline.pipeline_id {
            return Err(Error::invalid(alloc::format!(
                "partition {} belongs to pipeline {}, not {}",
                p.partition_id(),
                p.pipeline_id,
                pipeline.pipeline_id
            )));
        }
        by_step.entry(&p.step_id).or_default().push(p);
    }
    let plan = schedule(pipeline, partitions, now, None, &config.lease, &config.schedule, 0);
    let mut order: Vec<&StepId> = pipeline.steps.iter().map(|s| &s.step_id).collect();
    order.extend(by_step.keys().copied().filter(|s| pipeline.step(s).is_none()));

    let mut steps = Vec::with_capacity(order.len());
    let mut errors: Vec<StepError> = Vec::new();
    for step_id in order {
        let mut parts: Vec<&PartitionDoc> = by_step.remove(step_id).unwrap_or_default();
        parts.sort_by_key(|p| p.shard);
        let judged = plan.steps.iter().find(|s| &s.step_id == step_id);
        let readiness_of = |id: &PartitionId| {
            judged.and_then(|s| s.partitions.iter().find(|p| &p.partition == id)).map_or(Readiness::Missing, |p| p.readiness.clone())
        };
        let after = pipeline.step(step_id).map_or_else(Vec::new, |s| {
            s.after
                .iter()
                .map(|d| match d.kind {
                    crate::plan::DependencyKind::Barrier => d.step_id.to_string(),
                    crate::plan::DependencyKind::Aligned => alloc::format!("{} (aligned)", d.step_id),
                })
                .collect()
        });
        let mut step = StepState {
            step_id: step_id.clone(),
            status: StatusKind::Pending,
            after,
            total: judged.map_or(0, |s| s.total),
            completed: judged.map_or(0, |s| s.completed),
            records_processed: 0,
            records_failed: 0,
            bytes_processed: 0,
            processing_time_ms: 0,
            total_errors: 0,
            partitions: Vec::with_capacity(parts.len()),
        };
        for p in parts {
            let current_run = p.run_id == pipeline.run_id;
            let id = p.partition_id();
            let name = id.to_string();
            if current_run {
                step.records_processed += p.records_processed;
                step.records_failed += p.records_failed;
                step.bytes_processed += p.bytes_processed;
                step.processing_time_ms += p.processing_time_ms;
            }
            step.total_errors += p.errors.total;
            errors.extend(p.errors.recent.iter().map(|r| StepError {
                step_id: p.step_id.clone(),
                partition: name.clone(),
                record: r.clone(),
            }));
            step.partitions.push(PartitionState {
                partition: name,
                shard: p.shard,
                status: p.status.clone(),
                current_run,
                readiness: readiness_of(&id),
                lease: p.lease.as_ref().map(|l| LeaseView::of(l, now, &config.lease)),
                worker_id: p.worker_id.clone(),
                last_processed_id: p.last_processed_id.clone(),
                last_processed_at: p.last_processed_at,
                last_heartbeat: p.last_heartbeat,
                batch_number: p.batch_number,
                records_processed: p.records_processed,
                records_failed: p.records_failed,
                bytes_processed: p.bytes_processed,
                attempts: p.attempts,
                failures: p.failures,
                total_errors: p.errors.total,
                extra: p.extra.clone(),
                version: p.version,
                updated_at: p.updated_at,
            });
        }
        step.status = combine(step.partitions.iter().map(|p| match (&p.readiness, p.status.kind()) {
            (Readiness::Failed { .. }, _) => StatusKind::Failed,
            (_, StatusKind::Failed) => StatusKind::Running, // retrying
            (_, kind) if p.current_run => kind,
            _ => StatusKind::Pending,
        }));
        steps.push(step);
    }
    errors.sort_by_key(|e| core::cmp::Reverse(e.record.at));
    errors.truncate(keep_errors);

    Ok(PipelineState {
        pipeline_id: pipeline.pipeline_id.clone(),
        run_id: pipeline.run_id.clone(),
        current_step: plan.current_step,
        frontier: plan.frontier,
        batch_number: pipeline.batch_number,
        version: pipeline.version,
        updated_at: partitions.iter().map(|p| p.updated_at).fold(pipeline.updated_at, Timestamp::max),
        lease: pipeline.lease.as_ref().map(|l| LeaseView::of(l, now, &config.lease)),
        status: plan.status,
        records_processed: steps.iter().map(|s| s.records_processed).sum(),
        records_failed: steps.iter().map(|s| s.records_failed).sum(),
        bytes_processed: steps.iter().map(|s| s.bytes_processed).sum(),
        total_errors: steps.iter().map(|s| s.total_errors).sum(),
        steps,
        recent_errors: errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatusKind::*;

    #[test]
    fn combine_follows_the_documented_rule() {
        let cases: &[(&[StatusKind], StatusKind)] = &[
            (&[], Pending),
            (&[Pending, Pending], Pending),
            (&[Completed, Completed], Completed),
            (&[Completed, Pending], Running),
            (&[Completed, Running], Running),
            (&[Running, Failed, Completed], Failed),
            (&[Paused, Pending], Paused),
            (&[Paused, Running], Running),
            (&[Paused, Completed], Paused),
        ];
        for (kinds, want) in cases {
            assert_eq!(combine(kinds.iter().copied()), *want, "{kinds:?}");
        }
    }
}
