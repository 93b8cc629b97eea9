//! Claims and holder writes: a claim checked against the pipeline (no reset
//! raced it), the scheduler's pick, and the writes of a held partition
//! through the core's holder session.

use futures::{StreamExt, TryStreamExt};
use oxiflow_core::{
    check_claim, keys, schedule, Adoption, Claim, ClaimCheck, Finish, PartitionDoc, PartitionId, PipelineDoc, PipelineId, Progress,
    Readiness, Schedule, Session, Update, Version, WorkerId, Written,
};

use crate::error::{Error, Result};
use crate::manager::{StateManager, READ_CONCURRENCY};
use crate::snapshot::Snapshot;

/// A partition this process holds: the core's holder [`Session`], which
/// owns the document as last written, its version (so the next write is a
/// single conditional PUT) and any write whose outcome is not known yet.
pub type Claimed = Session<PartitionDoc>;

/// What [`StateManager::claim_next`] found.
#[derive(Debug)]
pub enum Next {
    /// A ready partition, claimed.
    Claimed(Box<Claimed>),
    /// Nothing is claimable now; the schedule says why each partition waits.
    Wait(Box<Schedule>),
    /// Nothing is left to claim in this run without an operator: the
    /// pipeline completed, or failed with nothing else able to run.
    Finished(Box<Schedule>),
}

/// Claims in a row that may each find a newer reset committed.
const MAX_ADOPTIONS: usize = 4;

impl StateManager {
    /// Claims a partition (or takes over an expired lease): GET + one
    /// conditional PUT. It does not look at the pipeline's order: use
    /// [`StateManager::claim_in_order`] or [`StateManager::claim_next`]
    /// unless an operator means to run this partition regardless.
    pub async fn claim(&self, pipeline: &PipelineId, partition: &PartitionId, worker: &WorkerId) -> Result<Claimed> {
        self.claim_checked(pipeline, partition, worker, None, None).await
    }

    /// Drives a claim, then reads the pipeline document to check it
    /// ([`check_claim`]): a reset in progress makes it let go (NotReady), a
    /// committed one is adopted by claiming again; then starts the holder's
    /// session on what it stored. One GET more than the claim itself.
    /// `adopt`: the pipeline's adoption for the step, when the caller read
    /// the pipeline already; without it, a claim refused by a state that a
    /// reset made stale (completed, held by a stale claimer) reads the
    /// pipeline and tries once more, adopting.
    async fn claim_checked(
        &self,
        pipeline: &PipelineId,
        partition: &PartitionId,
        worker: &WorkerId,
        mut adopt: Option<Adoption>,
        mut cached: Option<(PartitionDoc, Version)>,
    ) -> Result<Claimed> {
        let key = keys::partition_doc(pipeline, partition);
        let read_pipeline = || async {
            let pipeline_key = keys::pipeline_doc(pipeline);
            let found = self.read::<PipelineDoc>(&pipeline_key).await?;
            found.map(|(doc, _)| doc).ok_or(Error::Core(oxiflow_core::Error::NotFound { key: pipeline_key }))
        };
        for _ in 0..MAX_ADOPTIONS {
            let claim = Claim::<PartitionDoc>::new(worker.clone(), self.random());
            let claim = match adopt.clone() {
                Some(to) => claim.adopting(to),
                None => claim,
            };
            let claim = match self.deadline {
                Some(deadline) => claim.with_deadline(deadline),
                None => claim,
            };
            let op = match cached.take() {
                Some((doc, version)) => Update::from_cached(&key, claim, self.config, doc, version),
                None => Update::new(&key, claim, self.config),
            };
            let c = match self.run(op).await {
                Ok(c) => c,
                Err(Error::Core(e @ (oxiflow_core::Error::InvalidTransition { .. } | oxiflow_core::Error::LeaseHeld { .. })))
                    if adopt.is_none() =>
                {
                    let to = read_pipeline().await?.adoption(&partition.step_id);
                    if to.generation == 0 {
                        return Err(e.into());
                    }
                    adopt = Some(to);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if c.wrote {
                self.keep_history(&c.doc).await?;
            }
            let mut session = self.bounded(Session::claimed(key.clone(), c, self.config, self.now()));
            match check_claim(&read_pipeline().await?, session.doc(), self.now(), &self.config.lease) {
                ClaimCheck::Current => return Ok(session),
                ClaimCheck::Stale(to) => {
                    adopt = Some(to);
                    cached = Some((session.doc().clone(), session.version().clone()));
                }
                ClaimCheck::Locked { worker_id, until } => {
                    // Nothing was done under this claim; if the release is
                    // lost, the lease simply expires.
                    let _ = self.run(session.write(Progress::default(), Some(Finish::Release), self.random())).await;
                    return Err(
                        oxiflow_core::Error::NotReady { key, reason: readiness_reason(&Readiness::Locked { worker_id, until }) }.into()
                    );
                }
            }
        }
        Err(oxiflow_core::Error::Conflict { key, reason: "the pipeline was reset again during each of several claims; try again".into() }
            .into())
    }

    /// Claims a partition only if the scheduler says its upstream is done:
    /// otherwise [`oxiflow_core::Error::NotReady`] naming what it waits on.
    /// Reads the pipeline document and only the partitions this one depends
    /// on (one per aligned edge, a whole step per barrier), so a claim in
    /// the first step of a big pipeline stays a few requests.
    pub async fn claim_in_order(&self, pipeline: &PipelineId, partition: &PartitionId, worker: &WorkerId) -> Result<Claimed> {
        self.claim_ordered(pipeline, partition, worker, false).await
    }

    /// As [`StateManager::claim_in_order`], and a partition still in its
    /// retry backoff after a failure is [`oxiflow_core::Error::NotReady`]
    /// too: for events redelivered by a platform (a retried Lambda
    /// invocation), which must not retry early.
    pub async fn claim_when_due(&self, pipeline: &PipelineId, partition: &PartitionId, worker: &WorkerId) -> Result<Claimed> {
        self.claim_ordered(pipeline, partition, worker, true).await
    }

    async fn claim_ordered(
        &self,
        pipeline: &PipelineId,
        partition: &PartitionId,
        worker: &WorkerId,
        wait_backoff: bool,
    ) -> Result<Claimed> {
        let pipeline_key = keys::pipeline_doc(pipeline);
        let (doc, _) = self.read::<PipelineDoc>(&pipeline_key).await?.ok_or(oxiflow_core::Error::NotFound { key: pipeline_key })?;
        let key = keys::partition_doc(pipeline, partition);
        if doc.step(&partition.step_id).is_none() {
            return Err(oxiflow_core::Error::NotFound { key }.into());
        }
        // The partition itself with its version (the claim then needs no
        // GET of its own), and what it depends on.
        let upstream = self.upstream_of(&doc, partition).await?;
        let (own, mut docs) = futures::try_join!(self.read::<PartitionDoc>(&key), self.read_partitions(pipeline, upstream))?;
        let (own, version) = own.ok_or_else(|| oxiflow_core::Error::NotFound { key: key.clone() })?;
        docs.push(own.clone());
        // The core's scheduler over just these documents: the partition's
        // readiness depends on nothing else.
        match self.schedule(&doc, &docs, Some(worker)).readiness(partition) {
            Some(
                r @ (Readiness::Waiting { .. }
                | Readiness::Blocked { .. }
                | Readiness::OtherRun
                | Readiness::Missing
                | Readiness::Locked { .. }),
            ) => Err(oxiflow_core::Error::NotReady { key, reason: readiness_reason(r) }.into()),
            Some(r @ Readiness::Backoff { .. }) if wait_backoff => {
                Err(oxiflow_core::Error::NotReady { key, reason: readiness_reason(r) }.into())
            }
            _ => self.claim_checked(pipeline, partition, worker, Some(doc.adoption(&partition.step_id)), Some((own, version))).await,
        }
    }

    /// The partitions `partition` depends on: one per aligned edge, a whole
    /// step per barrier (a plan migrated from format 2, which does not know
    /// its shards, is listed).
    pub(crate) async fn upstream_of(&self, doc: &PipelineDoc, partition: &PartitionId) -> Result<Vec<PartitionId>> {
        let Some(step) = doc.step(&partition.step_id) else { return Ok(Vec::new()) };
        let mut wanted = Vec::new();
        for dep in &step.after {
            match (doc.step(&dep.step_id).map(|up| up.shards), dep.kind) {
                (None, _) => {}
                (Some(Some(_)), oxiflow_core::DependencyKind::Aligned) => {
                    wanted.push(PartitionId { step_id: dep.step_id.clone(), shard: partition.shard })
                }
                (Some(_), _) => wanted.extend(self.partitions_of(doc, &dep.step_id).await?),
            }
        }
        Ok(wanted)
    }

    /// A step's partitions: from the plan, or listed when the plan does not
    /// know its shards (migrated from format 2).
    pub(crate) async fn partitions_of(&self, doc: &PipelineDoc, step: &oxiflow_core::StepId) -> Result<Vec<PartitionId>> {
        match doc.step(step) {
            Some(plan) if plan.shards.is_some() => Ok(plan.partitions()),
            _ => Ok(self
                .store
                .list(&keys::partitions_prefix(&doc.pipeline_id))
                .await?
                .iter()
                .filter_map(|l| match keys::parse(&l.key) {
                    Ok(keys::DocKey::Partition(_, id)) if &id.step_id == step => Some(id),
                    _ => None,
                })
                .collect()),
        }
    }

    /// Reads these partition documents, 16 at a time; absent ones are left out.
    pub(crate) async fn read_partitions(&self, pipeline: &PipelineId, ids: Vec<PartitionId>) -> Result<Vec<PartitionDoc>> {
        futures::stream::iter(ids)
            .map(|id| async move { self.read::<PartitionDoc>(&keys::partition_doc(pipeline, &id)).await })
            .buffered(READ_CONCURRENCY)
            .try_filter_map(|d| async move { Ok(d.map(|(doc, _)| doc)) })
            .try_collect()
            .await
    }

    /// The scheduler over documents this manager read, at its clock.
    pub fn schedule(&self, pipeline: &PipelineDoc, partitions: &[PartitionDoc], worker: Option<&WorkerId>) -> Schedule {
        schedule(pipeline, partitions, self.now(), worker, &self.config.lease, &self.config.schedule, self.random())
    }

    /// Claims the best ready partition of the pipeline for `worker`, after
    /// refreshing `snapshot` (one LIST, plus GETs of what changed). The claim
    /// starts from the document just read, so uncontended it is one
    /// conditional PUT; a partition someone else claimed first is skipped
    /// for the next one.
    pub async fn claim_next(&self, snapshot: &mut Snapshot, worker: &WorkerId) -> Result<Next> {
        self.refresh(snapshot).await?;
        let pipeline = snapshot.pipeline().expect("a refreshed snapshot has its pipeline").clone();
        let plan = self.schedule(&pipeline, &snapshot.partitions(), Some(worker));
        for partition in &plan.claimable {
            let key = keys::partition_doc(&pipeline.pipeline_id, partition);
            let cached = snapshot.partition(&key).cloned();
            let adopt = Some(pipeline.adoption(&partition.step_id));
            match self.claim_checked(&pipeline.pipeline_id, partition, worker, adopt, cached).await {
                Ok(c) => return Ok(Next::Claimed(Box::new(c))),
                // Lost the race for it (or it changed meanwhile): the next one.
                Err(Error::Core(
                    oxiflow_core::Error::LeaseHeld { .. }
                    | oxiflow_core::Error::Conflict { .. }
                    | oxiflow_core::Error::InvalidTransition { .. }
                    | oxiflow_core::Error::NotReady { .. }
                    | oxiflow_core::Error::NotFound { .. },
                )) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(if plan.is_finished() { Next::Finished(Box::new(plan)) } else { Next::Wait(Box::new(plan)) })
    }

    /// Adopts the lease `worker` holds on a partition, for short-lived
    /// processes (one CLI call per checkpoint): one GET.
    pub async fn adopt(&self, pipeline: &PipelineId, partition: &PartitionId, worker: &WorkerId) -> Result<Claimed> {
        let key = keys::partition_doc(pipeline, partition);
        let (doc, version) = self.read::<PartitionDoc>(&key).await?.ok_or_else(|| oxiflow_core::Error::NotFound { key: key.clone() })?;
        Ok(self.bounded(Session::resume(key, doc, version, worker, self.config, self.now())?))
    }

    /// A holder session under this manager's deadline, if it has one.
    fn bounded(&self, session: Claimed) -> Claimed {
        match self.deadline {
            Some(deadline) => session.with_deadline(deadline),
            None => session,
        }
    }

    /// Records progress and extends the lease: one conditional PUT. A stop
    /// request in the outcome ([`Written::stop`]) means the progress is
    /// stored and the lease released: stop working on this partition.
    pub async fn checkpoint(&self, claimed: &mut Claimed, progress: Progress) -> Result<Written> {
        self.write(claimed, progress, None).await
    }

    /// Extends the lease without progress: one conditional PUT.
    pub async fn heartbeat(&self, claimed: &mut Claimed) -> Result<Written> {
        self.write(claimed, Progress::default(), None).await
    }

    /// Gives the partition back unfinished; the bookmark stays. After an
    /// `Unavailable` error, call again with the same `claimed`: the earlier
    /// attempt is settled first, so nothing is applied twice.
    pub async fn release(&self, claimed: &mut Claimed, progress: Progress) -> Result<Written> {
        self.write(claimed, progress, Some(Finish::Release)).await
    }

    /// Finishes the partition: completed, the lease released; one conditional PUT.
    pub async fn complete(&self, claimed: &mut Claimed, progress: Progress) -> Result<Written> {
        self.write(claimed, progress, Some(Finish::Complete)).await
    }

    /// Gives the partition up as failed, the lease released; `retryable`
    /// lets a later claim try again after the backoff.
    pub async fn fail(&self, claimed: &mut Claimed, progress: Progress, error: String, retryable: bool) -> Result<Written> {
        self.write(claimed, progress, Some(Finish::Fail { error, retryable })).await
    }

    /// One holder write through the session: an unresolved earlier write is
    /// replayed first, a stop request releases (all core rules).
    async fn write(&self, claimed: &mut Claimed, progress: Progress, finish: Option<Finish>) -> Result<Written> {
        let before = claimed.doc().version;
        let outcome = self.run(claimed.write(progress, finish, self.random())).await;
        if claimed.doc().version != before {
            self.keep_history(claimed.doc()).await?;
        }
        outcome
    }
}

/// Why a partition may not be claimed, in one sentence with what to do.
pub fn readiness_reason(readiness: &Readiness) -> String {
    let names = |on: &[String], count: usize| {
        let more = count.saturating_sub(on.len());
        if more > 0 {
            format!("{} and {more} more", on.join(", "))
        } else {
            on.join(", ")
        }
    };
    match readiness {
        Readiness::Waiting { on, count } => format!("it waits on {}; claim it once they completed, or pass --force", names(on, *count)),
        Readiness::Blocked { by, count } => {
            format!("upstream {} failed for good; reset the failed partitions, or pass --force", names(by, *count))
        }
        Readiness::OtherRun => "it still carries an older run's state; finish starting the new run first".into(),
        Readiness::Locked { worker_id, until } => {
            format!("{worker_id} is resetting the pipeline (its hold ends by {until}); try again when it is done")
        }
        Readiness::Missing => "the plan expects it but it has no document; create the pipeline again".into(),
        other => format!("{other:?}"),
    }
}
