//! An operator's repairs: deleting a pipeline, restoring a partition from a
//! kept history copy, and releasing dead workers' leases one pipeline at a
//! time (or only listing them).

use oxiflow_core::{
    keys, Claim, Finish, LeaseStatus, Operator, PartitionDoc, PipelineDoc, PipelineId, PipelineProgress, ResetScope, Restore, Session,
    Update, WorkerId,
};
use serde::Serialize;

use crate::error::Result;
use crate::manager::StateManager;
use crate::snapshot::Snapshot;

/// What a restore from history did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restored {
    pub pipeline_id: PipelineId,
    pub partition: String,
    /// The history copy put back (its document version when it was written).
    pub restored_version: u64,
    /// The stored document's version now.
    pub version: u64,
    /// The epoch the restored lease was released at: above any either copy had.
    pub epoch: u64,
    /// Records the stored document had counted beyond the copy's:
    /// acknowledged progress the restore gave up.
    pub discarded_records: u64,
}

impl StateManager {
    /// Deletes every document of `pipeline` (partitions, history, then the
    /// pipeline document). Refused while a live lease is held on any of
    /// them, unless `force`. It holds the pipeline as a reset does while it
    /// deletes: claims wait, and a claim that raced the check makes it let
    /// go and refuse. Returns how many documents were deleted.
    pub async fn delete_pipeline(&self, pipeline: &PipelineId, force: bool, by: &WorkerId) -> Result<usize> {
        let key = keys::pipeline_doc(pipeline);
        let mut snapshot = Snapshot::new(pipeline.clone());
        self.refresh(&mut snapshot).await?;
        let unheld = |s: &Snapshot| if force { Ok(()) } else { self.ensure_unheld(s, &ResetScope::Pipeline) };
        unheld(&snapshot)?;
        let doc = snapshot.pipeline().expect("a refreshed snapshot has its pipeline").clone();
        let version = snapshot.pipeline_version().cloned().unwrap_or_default();
        let claim = Claim::<PipelineDoc>::new(by.clone(), rand::random());
        let claimed = self.run(Update::from_cached(&key, claim, *self.config(), doc, version)).await?;
        let mut held = Session::claimed(key.clone(), claimed, *self.config(), self.now());
        self.refresh(&mut snapshot).await?;
        if let Err(e) = unheld(&snapshot) {
            let _ = self.run(held.write(PipelineProgress::default(), Some(Finish::Release), rand::random())).await;
            return Err(e);
        }
        let mut deleted = 0;
        for item in self.store().list(&keys::pipeline_prefix(pipeline)).await? {
            if item.key != key {
                self.store().delete(&item.key).await?;
                deleted += 1;
            }
        }
        self.store().delete(&key).await?;
        Ok(deleted + 1)
    }

    /// Puts `copy` (a history copy of one of `pipeline`'s partitions) in
    /// place through the core's [`Restore`]: the restored lease is released
    /// at one past the highest epoch either copy had, so a holder of either
    /// is fenced; refused while a live lease is held, unless `force`. The
    /// copy counts in the step's current generation, so a reset made after
    /// the copy was written does not hide it.
    pub async fn restore_partition(&self, copy: &PartitionDoc, force: bool) -> Result<Restored> {
        let pipeline = &copy.pipeline_id;
        let key = keys::partition_doc(pipeline, &copy.partition_id());
        let (pipeline_doc, _) = self
            .read::<PipelineDoc>(&keys::pipeline_doc(pipeline))
            .await?
            .ok_or_else(|| crate::Error::Core(oxiflow_core::Error::NotFound { key: keys::pipeline_doc(pipeline) }))?;
        let now = self.now();
        let before = self.read::<PartitionDoc>(&key).await?.map(|(d, _)| d.as_of(&pipeline_doc, now).records_processed).unwrap_or(0);
        let generation = copy.generation.max(pipeline_doc.generation_of(&copy.step_id));
        let doc = PartitionDoc { generation, ..copy.clone() };
        let done = self.run(Update::new(&key, Restore { doc, force, holder: None }, *self.config())).await?;
        Ok(Restored {
            pipeline_id: pipeline.clone(),
            partition: copy.partition_id().to_string(),
            restored_version: copy.version,
            version: done.doc.version,
            epoch: done.doc.lease.as_ref().map_or(0, |l| l.epoch),
            discarded_records: before.saturating_sub(copy.records_processed),
        })
    }

    /// Leases of `pipeline` (every pipeline when `None`) that expired past
    /// the skew allowance — dead workers' — released, or with `dry_run`
    /// only listed. Returns their keys.
    pub async fn stale_leases(&self, pipeline: Option<&PipelineId>, dry_run: bool) -> Result<Vec<String>> {
        let pipelines = match pipeline {
            Some(p) => {
                self.read::<PipelineDoc>(&keys::pipeline_doc(p))
                    .await?
                    .ok_or_else(|| crate::Error::Core(oxiflow_core::Error::NotFound { key: keys::pipeline_doc(p) }))?;
                vec![p.clone()]
            }
            None => self.list_pipelines().await?,
        };
        let mut found = Vec::new();
        for p in pipelines {
            for key in self.store().list(&keys::partitions_prefix(&p)).await?.into_iter().map(|l| l.key) {
                let Some((doc, version)) = self.read::<PartitionDoc>(&key).await? else { continue };
                if !matches!(LeaseStatus::of(doc.lease.as_ref(), self.now(), &self.config().lease), LeaseStatus::Expired { .. }) {
                    continue;
                }
                if dry_run || self.run(Update::from_cached(&key, Operator::ReleaseExpired, *self.config(), doc, version)).await?.wrote {
                    found.push(key);
                }
            }
        }
        Ok(found)
    }
}
