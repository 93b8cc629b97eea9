//! One file per group of subcommands; this one holds what they share.

pub(crate) mod dashboard;
pub(crate) mod demo;
pub(crate) mod doctor;
pub(crate) mod lease;
pub(crate) mod live;
pub(crate) mod repair;
pub(crate) mod serve;
mod serve_errors;
pub(crate) mod state;
pub(crate) mod transfer;
pub(crate) mod worker;

use oxiflow_backends::StateManager;
use oxiflow_core::{LeaseStatus, PartitionDoc, PartitionId, PipelineDoc, PipelineId, Timestamp, WorkerId};
use serde::Serialize;

use crate::exit::Missing;
use oxiflow_backends::config::Settings;

/// What every command gets.
pub(crate) struct Ctx {
    pub settings: Settings,
    pub json: bool,
}

impl Ctx {
    pub(crate) fn manager(&self) -> anyhow::Result<StateManager> {
        Ok(self.settings.open()?)
    }
}

pub(crate) fn pipeline_id(s: &str) -> anyhow::Result<PipelineId> {
    Ok(s.parse()?)
}

pub(crate) fn partition_id(s: &str) -> anyhow::Result<PartitionId> {
    Ok(PartitionId::parse(s)?)
}

/// The partitions `spec` (`step` or `step@shard`) names in the pipeline's
/// plan: every shard of a step, or one. A step or shard the plan does not
/// have is not found (exit 3), naming what the pipeline has.
pub(crate) fn partitions_of(doc: &PipelineDoc, spec: &str) -> anyhow::Result<Vec<PartitionId>> {
    let id = partition_id(spec)?;
    let Some(plan) = doc.step(&id.step_id) else {
        return Err(Missing(format!("pipeline {} has no step {}; its steps: {}", doc.pipeline_id, id.step_id, steps_of(doc))).into());
    };
    match (id.shard, plan.shards) {
        (None, _) => Ok(plan.partitions()),
        (Some(shard), Some(n)) if shard < n => Ok(vec![id]),
        (Some(_), Some(n)) => Err(Missing(format!("{} has {n} shard(s): {}", plan.step_id, shard_range(&plan.step_id, n))).into()),
        (Some(_), None) => Err(Missing(format!("{} is not sharded: write {}", plan.step_id, plan.step_id)).into()),
    }
}

/// `a, b:4, c`: the pipeline's steps and their shards.
pub(crate) fn steps_of(doc: &PipelineDoc) -> String {
    let step = |s: &oxiflow_core::StepPlan| match s.shards {
        Some(n) => format!("{}:{n}", s.step_id),
        None => s.step_id.to_string(),
    };
    doc.steps.iter().map(step).collect::<Vec<_>>().join(", ")
}

/// `t@0…t@3`.
pub(crate) fn shard_range(step: &oxiflow_core::StepId, n: u32) -> String {
    match n {
        1 => format!("{step}@0"),
        n => format!("{step}@0…{step}@{}", n - 1),
    }
}

pub(crate) fn worker_id(s: &str) -> anyhow::Result<WorkerId> {
    Ok(s.parse()?)
}

/// A partition as the lease commands report it (`--json` schema).
#[derive(Debug, Serialize)]
pub(crate) struct PartitionReport {
    pub pipeline_id: PipelineId,
    pub partition: String,
    pub status: oxiflow_core::StepStatus,
    pub worker_id: Option<WorkerId>,
    pub epoch: Option<u64>,
    pub lease: Option<LeaseStatus>,
    pub expires_at: Option<Timestamp>,
    pub last_processed_id: Option<String>,
    pub batch_number: u64,
    pub records_processed: u64,
    pub records_failed: u64,
    pub bytes_processed: u64,
    pub version: u64,
}

impl PartitionReport {
    pub(crate) fn of(doc: &PartitionDoc, now: Timestamp, config: &oxiflow_core::LeaseConfig) -> Self {
        let lease = doc.lease.as_ref();
        PartitionReport {
            pipeline_id: doc.pipeline_id.clone(),
            partition: doc.partition_id().to_string(),
            status: doc.status.clone(),
            worker_id: lease.filter(|l| l.released_at.is_none()).map(|l| l.worker_id.clone()),
            epoch: lease.map(|l| l.epoch),
            lease: lease.map(|_| LeaseStatus::of(lease, now, config)),
            expires_at: lease.filter(|l| l.released_at.is_none()).map(|l| l.expires_at),
            last_processed_id: doc.last_processed_id.clone(),
            batch_number: doc.batch_number,
            records_processed: doc.records_processed,
            records_failed: doc.records_failed,
            bytes_processed: doc.bytes_processed,
            version: doc.version,
        }
    }

    /// One line for people: `orders/extract@0  running  held by w1 (epoch 2, expires in 25s)  1200 records  at order-1200`.
    pub(crate) fn line(&self, now: Timestamp) -> String {
        let holder = match (&self.worker_id, self.expires_at) {
            (Some(w), Some(t)) => format!("held by {w} (epoch {}, expires {})", self.epoch.unwrap_or(0), crate::output::relative(t, now)),
            _ => "free".into(),
        };
        let at = self.last_processed_id.as_deref().map(|b| format!("  at {b}")).unwrap_or_default();
        format!(
            "{}/{}  {}  {holder}  {} records{at}",
            self.pipeline_id,
            self.partition,
            crate::output::status(self.status.kind()),
            self.records_processed
        )
    }
}
