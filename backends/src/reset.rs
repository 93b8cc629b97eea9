//! Resets and new runs: one compare-and-swap on the pipeline document, in
//! the three steps [`oxiflow_core::generation`] proves safe. Refusals come
//! before any write whenever they can be seen then.

use oxiflow_core::{
    keys, Claim, CommitReset, Finish, Holder, LeaseStatus, PartitionDoc, PipelineDoc, PipelineId, PipelineProgress, ResetScope, RunId,
    Session, StepId, Update, WorkerId,
};
use serde::Serialize;

use crate::error::Result;
use crate::manager::StateManager;
use crate::snapshot::Snapshot;

/// What a committed reset or new run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResetDone {
    /// The pipeline reset.
    pub pipeline_id: PipelineId,
    /// Its run after the reset (a new one for a new run).
    pub run_id: RunId,
    /// The pipeline's generation after the reset.
    pub generation: u64,
    /// Partitions the reset covers.
    pub partitions: usize,
    /// Records those partitions had counted: acknowledged progress the
    /// reset set back to zero (bookmarks are kept).
    pub discarded_records: u64,
}

impl StateManager {
    /// Sets one step's partitions (or all) back to Pending in this run,
    /// counters zeroed, bookmarks kept.
    pub async fn reset(&self, pipeline: &PipelineId, step: Option<&StepId>, by: &WorkerId) -> Result<ResetDone> {
        let scope = match step {
            Some(s) => ResetScope::Step { step_id: s.clone() },
            None => ResetScope::Pipeline,
        };
        self.reset_scope(pipeline, scope, by).await
    }

    /// Starts run `run_id`: every partition Pending under it, counters
    /// zeroed, bookmarks kept.
    pub async fn new_run(&self, pipeline: &PipelineId, run_id: &RunId, by: &WorkerId) -> Result<ResetDone> {
        self.reset_scope(pipeline, ResetScope::NewRun { run_id: run_id.clone() }, by).await
    }

    /// Refused while a partition in scope is held (nothing written), or
    /// when a claim raced the reset (the pipeline's lease let go again);
    /// otherwise one write commits it for every partition at once.
    pub async fn reset_scope(&self, pipeline: &PipelineId, scope: ResetScope, by: &WorkerId) -> Result<ResetDone> {
        let key = keys::pipeline_doc(pipeline);
        let mut snapshot = Snapshot::new(pipeline.clone());
        self.refresh(&mut snapshot).await?;
        let doc = snapshot.pipeline().expect("a refreshed snapshot has its pipeline").clone();
        doc.clone().reset(&scope)?;
        self.ensure_unheld(&snapshot, &scope)?;

        let claim = Claim::<PipelineDoc>::new(by.clone(), self.random());
        let version = snapshot.pipeline_version().cloned().unwrap_or_default();
        let mut session = Session::claimed(
            key.clone(),
            self.run(Update::from_cached(&key, claim, *self.config(), doc, version)).await?,
            *self.config(),
            self.now(),
        );

        self.refresh(&mut snapshot).await?;
        if let Err(e) = self.ensure_unheld(&snapshot, &scope) {
            // A claim that read the pipeline before we held it landed.
            let _ = self.run(session.write(PipelineProgress::default(), Some(Finish::Release), self.random())).await;
            return Err(e);
        }
        let covered: Vec<PartitionDoc> = self.in_scope(&snapshot, &scope).collect();
        let (partitions, discarded_records) = (covered.len(), covered.iter().map(|p| p.records_processed).sum());
        let commit = CommitReset { holder: Holder::of(session.lease()), write_id: self.random(), scope };
        let done = self.run(Update::from_cached(&key, commit, *self.config(), session.doc().clone(), session.version().clone())).await?;
        Ok(ResetDone {
            pipeline_id: pipeline.clone(),
            run_id: done.doc.run_id.clone(),
            generation: done.doc.generation,
            partitions,
            discarded_records,
        })
    }

    /// The partitions a reset covers, as readers see them now.
    fn in_scope<'a>(&self, snapshot: &'a Snapshot, scope: &'a ResetScope) -> impl Iterator<Item = PartitionDoc> + 'a {
        let pipeline = snapshot.pipeline().expect("a refreshed snapshot has its pipeline").clone();
        let now = self.now();
        snapshot.partitions().into_iter().filter(move |p| scope.covers(&p.step_id)).map(move |p| p.as_of(&pipeline, now))
    }

    /// Refuses while any partition in scope carries a live lease — also one
    /// a reset already made stale, whose claimer has not checked back yet.
    pub(crate) fn ensure_unheld(&self, snapshot: &Snapshot, scope: &ResetScope) -> Result<()> {
        let now = self.now();
        for p in snapshot.partitions().iter().filter(|p| scope.covers(&p.step_id)) {
            if let (LeaseStatus::Held { expires_at }, Some(l)) = (LeaseStatus::of(p.lease.as_ref(), now, &self.config().lease), &p.lease) {
                let key = keys::partition_doc(&p.pipeline_id, &p.partition_id());
                return Err(oxiflow_core::Error::LeaseHeld { key, holder: l.worker_id.clone(), epoch: l.epoch, expires_at }.into());
            }
        }
        Ok(())
    }
}
