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
    /// The pipeline restored.
    pub pipeline_id: PipelineId,
    /// The partition restored (`step` or `step@shard`).
    pub partition: String,
    /// The history copy put back (its document version when it was written).
    pub restored_version: u64,
    /// The stored document's version now.
    pub version: u64,
    /// The epoch the restored lease was released at: above any either copy had.
    pub epoch: u64,
    /// Records the stored document had counted beyond the copy's:
    /// acknowledged progress the restore gave up (0 over a corrupt one).
    pub discarded_records: u64,
    /// The stored document was corrupt and was replaced as it was.
    pub replaced_corrupt: bool,
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
        let claim = Claim::<PipelineDoc>::new(by.clone(), self.random());
        let claimed = self.run(Update::from_cached(&key, claim, *self.config(), doc, version)).await?;
        let mut held = Session::claimed(key.clone(), claimed, *self.config(), self.now());
        self.refresh(&mut snapshot).await?;
        if let Err(e) = unheld(&snapshot) {
            let _ = self.run(held.write(PipelineProgress::default(), Some(Finish::Release), self.random())).await;
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

    /// Puts `copy` (one of `kept`, a partition's history copies) in place
    /// through the core's [`Restore`]: the restored lease is released at one
    /// past the highest epoch either copy had, so a holder of either is
    /// fenced; refused while a live lease is held, unless `force`. The copy
    /// counts in the step's current generation, so a reset made after the
    /// copy was written does not hide it. A stored document that is corrupt
    /// (exit 7) is replaced as it is, its lease released above every epoch
    /// the kept copies had: nothing can be read from it to refuse over.
    pub async fn restore_partition(&self, copy: &PartitionDoc, kept: &[PartitionDoc], force: bool) -> Result<Restored> {
        let pipeline = &copy.pipeline_id;
        let key = keys::partition_doc(pipeline, &copy.partition_id());
        let (pipeline_doc, _) = self
            .read::<PipelineDoc>(&keys::pipeline_doc(pipeline))
            .await?
            .ok_or_else(|| crate::Error::Core(oxiflow_core::Error::NotFound { key: keys::pipeline_doc(pipeline) }))?;
        let now = self.now();
        let generation = copy.generation.max(pipeline_doc.generation_of(&copy.step_id));
        let doc = PartitionDoc { generation, ..copy.clone() };
        let (before, replaced_corrupt) = match self.read::<PartitionDoc>(&key).await {
            Ok(stored) => (stored.map(|(d, _)| d.as_of(&pipeline_doc, now).records_processed).unwrap_or(0), false),
            Err(crate::Error::Core(oxiflow_core::Error::Corrupt { .. })) => (0, true),
            Err(e) => return Err(e),
        };
        let stored = if replaced_corrupt {
            self.replace_corrupt(&key, doc, kept).await?
        } else {
            self.run(Update::new(&key, Restore { doc, force, holder: None }, *self.config())).await?.doc
        };
        Ok(Restored {
            pipeline_id: pipeline.clone(),
            partition: copy.partition_id().to_string(),
            restored_version: copy.version,
            version: stored.version,
            epoch: stored.lease.as_ref().map_or(0, |l| l.epoch),
            discarded_records: before.saturating_sub(copy.records_processed),
            replaced_corrupt,
        })
    }

    /// Writes `doc` over the corrupt object at `key` (compare-and-swap on
    /// the object's version): its lease released one above every epoch the
    /// kept copies had, its version one above theirs.
    async fn replace_corrupt(&self, key: &str, mut doc: PartitionDoc, kept: &[PartitionDoc]) -> Result<PartitionDoc> {
        let limits = &self.config().limits;
        let object = self.store().get(key, usize::MAX).await?.ok_or_else(|| oxiflow_core::Error::NotFound { key: key.into() })?;
        let epoch = kept.iter().chain([&doc]).filter_map(|d| d.lease.as_ref()).map(|l| l.epoch).max();
        if let (Some(lease), Some(epoch)) = (doc.lease.as_mut(), epoch) {
            lease.epoch = epoch + 1;
            lease.released_at = Some(lease.released_at.unwrap_or(self.now()));
            lease.stop_requested = None;
        }
        doc.version = kept.iter().chain([&doc]).map(|d| d.version).max().unwrap_or(0) + 1;
        self.store().put_if_match(key, oxiflow_core::codec::encode(key, &doc, limits)?, &object.version).await?;
        Ok(doc)
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
