//! The `StateManager` drives the core's sans-I/O operations over any
//! [`ConditionalStore`] with tokio: it owns the clock, the randomness, the
//! sleeping and the requests; the core owns every decision.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use oxiflow_core::{
    aggregate, check_claim, codec, keys, schedule, Action, Adoption, Claim, ClaimCheck, Config, Create, Document, Drive, Finish,
    LeaseStatus, Operator, PartitionDoc, PartitionId, PipelineDoc, PipelineId, PipelineState, Progress, Readiness, Request, RequestStop,
    Response, RunId, Schedule, Session, StepPlan, Timestamp, Update, Version, WorkerId, Written,
};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::store::ConditionalStore;

/// Where "now" comes from; tests pass a manual clock.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The wall clock, in Unix milliseconds.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Timestamp::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
    })
}

/// Where random numbers come from (write ids, the scheduler's spread, the
/// core's jitter); tests pass a seeded source.
pub type Random = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The thread-local generator: the one place randomness enters.
pub fn system_random() -> Random {
    #[allow(clippy::disallowed_methods)]
    Arc::new(rand::random::<u64>)
}

/// How many documents are read at once when loading a pipeline.
pub(crate) const READ_CONCURRENCY: usize = 16;

/// Claims in a row that may each find a newer reset committed.
const MAX_ADOPTIONS: usize = 4;

/// Reads and writes pipeline state in one store.
#[derive(Clone)]
pub struct StateManager {
    store: Arc<dyn ConditionalStore>,
    config: Config,
    clock: Clock,
    random: Random,
    /// Create-only copies kept per partition; 0 keeps none.
    history_keep_last: usize,
}

impl std::fmt::Debug for StateManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateManager").field("store", &self.store.describe()).field("config", &self.config).finish()
    }
}

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

/// What the probe found a store to support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeReport {
    pub store: String,
    /// A second create of the same key was refused (If-None-Match: *).
    pub create_if_absent: bool,
    /// An update with a stale version was refused (If-Match).
    pub update_if_match: bool,
    /// Versions returned: ETags (S3, Azure, local) and/or generations (GCS).
    pub etags: bool,
    pub generations: bool,
    /// How far the store's clock is ahead of ours (negative: behind), in
    /// milliseconds, measured on the probe's write; absent when the store
    /// keeps no write times or shares our clock. Object stores keep whole
    /// seconds, so expect up to ±1,000 ms plus the round trip from a correct
    /// clock.
    pub clock_skew_ms: Option<i64>,
    /// The skew is larger than the configured skew allowance (plus the
    /// measuring error): leases may be taken over early or late.
    pub clock_skew_exceeds_allowance: bool,
}

impl StateManager {
    pub fn new(store: Arc<dyn ConditionalStore>, config: Config) -> Self {
        StateManager { store, config, clock: system_clock(), random: system_random(), history_keep_last: 0 }
    }

    /// Keeps the last `keep_last` versions of every partition document as
    /// create-only copies under `history/`. Each write then costs one more
    /// PUT and one LIST (plus a DELETE once the history is full).
    pub fn with_history(mut self, keep_last: usize) -> Self {
        self.history_keep_last = keep_last;
        self
    }

    /// Replaces the wall clock (tests, simulations).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the random source (tests, simulations).
    pub fn with_random(mut self, random: Random) -> Self {
        self.random = random;
        self
    }

    /// A fresh random number: a write id, a seed.
    pub fn random(&self) -> u64 {
        (self.random)()
    }

    pub fn store(&self) -> &Arc<dyn ConditionalStore> {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Drives one operation to its end: perform each request, sleep when
    /// asked, feed back the answers.
    pub async fn run<D: Drive>(&self, mut op: D) -> Result<D::Output> {
        let mut action = op.start(self.now());
        loop {
            action = match action {
                Action::Send(request) => {
                    let response = self.perform(request).await?;
                    op.handle(response, self.now(), self.random())
                }
                Action::Sleep(delay) => {
                    tokio::time::sleep(delay).await;
                    op.wake(self.now())
                }
                Action::Done(result) => {
                    return result.map_err(|e| match e {
                        oxiflow_core::Error::Unavailable { key, attempts, reason } => Error::Unavailable {
                            store: self.store.describe().to_string(),
                            reason: format!("{reason} (gave up on {key} after {attempts} attempts)"),
                        },
                        e => e.into(),
                    });
                }
            };
        }
    }

    /// Performs one request; the answers the core understands become
    /// responses, anything else (bad credentials, missing bucket) ends the
    /// operation.
    async fn perform(&self, request: Request) -> Result<Response> {
        let max = self.config.limits.max_document_bytes;
        let result = match request {
            Request::Get { key } => self.store.get(&key, max).await.map(Response::Object),
            Request::PutIfAbsent { key, body } => self.store.put_if_absent(&key, body).await.map(Response::Written),
            Request::PutIfMatch { key, body, version } => self.store.put_if_match(&key, body, &version).await.map(Response::Written),
        };
        match result {
            Ok(response) => Ok(response),
            Err(Error::AlreadyExists { .. }) => Ok(Response::AlreadyExists),
            Err(Error::Precondition { .. }) => Ok(Response::Precondition),
            Err(Error::Unavailable { reason, .. }) => Ok(Response::Unavailable { reason }),
            Err(e) => Err(e),
        }
    }

    /// Creates the pipeline document (its plan checked: no cycle, no unknown
    /// step, aligned shard counts equal) and one partition per step or
    /// shard. Idempotent for the same plan; a pipeline that exists with
    /// another plan is refused, naming it.
    pub async fn create_pipeline(&self, pipeline: &PipelineId, run_id: &RunId, steps: &[StepPlan]) -> Result<PipelineDoc> {
        let now = self.now();
        let doc = PipelineDoc::new(pipeline.clone(), run_id.clone(), steps.to_vec(), now)?;
        let created = self.run(Update::new(keys::pipeline_doc(pipeline), Create(doc), self.config)).await?;
        if created.doc.steps != steps {
            return Err(oxiflow_core::Error::InvalidInput {
                reason: format!(
                    "pipeline {pipeline} exists with another plan ({}); nothing was changed: pick another name or delete it first",
                    describe_plan(&created.doc.steps)
                ),
            }
            .into());
        }
        let partitions: Vec<PartitionId> = steps.iter().flat_map(StepPlan::partitions).collect();
        futures::stream::iter(partitions)
            .map(|part| {
                let doc = PartitionDoc::new(pipeline.clone(), part.clone(), created.doc.run_id.clone(), now);
                self.run(Update::new(keys::partition_doc(pipeline, &part), Create(doc), self.config))
            })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(created.doc)
    }

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
            let mut session = Session::claimed(key.clone(), c, self.config, self.now());
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
        let pipeline_key = keys::pipeline_doc(pipeline);
        let (doc, _) = self.read::<PipelineDoc>(&pipeline_key).await?.ok_or(oxiflow_core::Error::NotFound { key: pipeline_key })?;
        let key = keys::partition_doc(pipeline, partition);
        let Some(step) = doc.step(&partition.step_id) else { return Err(oxiflow_core::Error::NotFound { key }.into()) };
        let mut wanted = vec![partition.clone()];
        for dep in &step.after {
            let Some(up) = doc.step(&dep.step_id) else { continue };
            match (up.shards, dep.kind) {
                (Some(_), oxiflow_core::DependencyKind::Aligned) => {
                    wanted.push(PartitionId { step_id: up.step_id.clone(), shard: partition.shard })
                }
                (Some(_), oxiflow_core::DependencyKind::Barrier) => wanted.extend(up.partitions()),
                // A plan migrated from format 2 does not know its shards: list them.
                (None, _) => wanted.extend(self.store.list(&keys::partitions_prefix(pipeline)).await?.iter().filter_map(|l| {
                    match keys::parse(&l.key) {
                        Ok(keys::DocKey::Partition(_, id)) if id.step_id == up.step_id => Some(id),
                        _ => None,
                    }
                })),
            }
        }
        let docs: Vec<PartitionDoc> = futures::stream::iter(wanted)
            .map(|id| async move { self.read::<PartitionDoc>(&keys::partition_doc(pipeline, &id)).await })
            .buffered(READ_CONCURRENCY)
            .try_filter_map(|d| async move { Ok(d.map(|(doc, _)| doc)) })
            .try_collect()
            .await?;
        if !docs.iter().any(|d| &d.partition_id() == partition) {
            return Err(oxiflow_core::Error::NotFound { key }.into());
        }
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
            _ => self.claim_checked(pipeline, partition, worker, Some(doc.adoption(&partition.step_id)), None).await,
        }
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
        Ok(Session::resume(key, doc, version, worker, self.config, self.now())?)
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

    pub async fn complete(&self, claimed: &mut Claimed, progress: Progress) -> Result<Written> {
        self.write(claimed, progress, Some(Finish::Complete)).await
    }

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

    /// Copies a freshly written document into the history, dropping the
    /// oldest copies beyond `history_keep_last`.
    async fn keep_history(&self, doc: &PartitionDoc) -> Result<()> {
        if self.history_keep_last == 0 {
            return Ok(());
        }
        let (pipeline, partition) = (&doc.pipeline_id, doc.partition_id());
        let key = keys::history_doc(pipeline, &partition, doc.version);
        match self.store.put_if_absent(&key, codec::encode(&key, doc, &self.config.limits)?).await {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let copies = self.store.list(&keys::history_prefix(pipeline, &partition)).await?;
        for old in copies.iter().take(copies.len().saturating_sub(self.history_keep_last)) {
            self.store.delete(&old.key).await?;
        }
        Ok(())
    }

    /// A partition's kept history, oldest first.
    pub async fn history(&self, pipeline: &PipelineId, partition: &PartitionId) -> Result<Vec<PartitionDoc>> {
        let mut docs = Vec::new();
        for item in self.store.list(&keys::history_prefix(pipeline, partition)).await? {
            if let Some((doc, _)) = self.read::<PartitionDoc>(&item.key).await? {
                docs.push(doc);
            }
        }
        Ok(docs)
    }

    /// Reads and decodes one document.
    pub async fn read<D: Document>(&self, key: &str) -> Result<Option<(D, oxiflow_core::Version)>> {
        let limits = &self.config.limits;
        match self.store.get(key, limits.max_document_bytes).await? {
            None => Ok(None),
            Some(o) => Ok(Some((codec::decode(key, &o.body, limits)?, o.version))),
        }
    }

    /// All pipelines in the store.
    pub async fn list_pipelines(&self) -> Result<Vec<PipelineId>> {
        let keys = self.store.list(keys::PIPELINES_PREFIX).await?;
        Ok(keys
            .iter()
            .filter_map(|k| match keys::parse(&k.key) {
                Ok(keys::DocKey::Pipeline(p)) => Some(p),
                _ => None,
            })
            .collect())
    }

    /// The pipeline document and all its partition documents: one LIST and
    /// a GET per document. Long-running readers keep a [`Snapshot`] and
    /// [`StateManager::refresh`] it instead.
    pub async fn load(&self, pipeline: &PipelineId) -> Result<(PipelineDoc, Vec<PartitionDoc>)> {
        let mut snapshot = Snapshot::new(pipeline.clone());
        self.refresh(&mut snapshot).await?;
        let doc = snapshot.pipeline().expect("a refreshed snapshot has its pipeline").clone();
        Ok((doc, snapshot.partitions()))
    }

    /// The aggregated view of a pipeline now.
    pub async fn view(&self, pipeline: &PipelineId) -> Result<PipelineState> {
        let (doc, partitions) = self.load(pipeline).await?;
        self.aggregate(&doc, &partitions)
    }

    /// The aggregated view of documents already read, at this manager's clock.
    pub fn aggregate(&self, pipeline: &PipelineDoc, partitions: &[PartitionDoc]) -> Result<PipelineState> {
        Ok(aggregate(pipeline, partitions, self.now(), &self.config)?)
    }

    /// Asks `worker` to release everything it holds and stop. Returns the
    /// keys of the documents that carry the request now.
    pub async fn request_stop(&self, worker: &WorkerId, requested_by: &WorkerId) -> Result<Vec<String>> {
        let mut asked = Vec::new();
        for pipeline in self.list_pipelines().await? {
            for key in self.store.list(&keys::partitions_prefix(&pipeline)).await?.into_iter().map(|l| l.key) {
                let Some((doc, version)) = self.read::<PartitionDoc>(&key).await? else { continue };
                let held = doc.lease.as_ref().is_some_and(|l| &l.worker_id == worker && l.is_open());
                if !held {
                    continue;
                }
                let stop = RequestStop::<PartitionDoc>::new(worker.clone(), requested_by.clone());
                let c = self.run(Update::from_cached(&key, stop, self.config, doc, version)).await?;
                if c.doc.lease.as_ref().is_some_and(|l| l.stop_requested.is_some() && l.is_open()) {
                    asked.push(key);
                }
            }
        }
        Ok(asked)
    }

    /// Releases every lease that expired past the skew allowance (dead
    /// workers'); returns the keys released.
    pub async fn cleanup_stale_leases(&self) -> Result<Vec<String>> {
        let now = self.now();
        let mut released = Vec::new();
        for pipeline in self.list_pipelines().await? {
            for key in self.store.list(&keys::partitions_prefix(&pipeline)).await?.into_iter().map(|l| l.key) {
                let Some((doc, version)) = self.read::<PartitionDoc>(&key).await? else { continue };
                if !matches!(LeaseStatus::of(doc.lease.as_ref(), now, &self.config.lease), LeaseStatus::Expired { .. }) {
                    continue;
                }
                if self.run(Update::from_cached(&key, Operator::ReleaseExpired, self.config, doc, version)).await?.wrote {
                    released.push(key);
                }
            }
        }
        Ok(released)
    }

    /// Checks that the store honours both write conditions, naming what it
    /// ignores. A store that fails is refused: it would let two workers hold
    /// one lease.
    pub async fn probe(&self) -> Result<ProbeReport> {
        let store = self.store.as_ref();
        let key = format!("_oxiflow/probe/{:016x}", self.random());
        let unsafe_store = |reason: &str| Error::UnsafeStore { store: store.describe().into(), reason: reason.into() };
        let before = self.now();
        let v1 = store.put_if_absent(&key, b"probe 1".to_vec()).await?;
        let after = self.now();
        // The store's write time against the middle of our send and receive.
        let clock_skew_ms = store.written_at(&key).await?.map(|t| t.as_millis() - (before.as_millis() + after.as_millis()) / 2);
        let error_ms = (after.as_millis() - before.as_millis()) / 2 + 1000;
        let allowance = i64::try_from(self.config.lease.skew_allowance.as_millis()).unwrap_or(i64::MAX);
        let clock_skew_exceeds_allowance = clock_skew_ms.is_some_and(|s| s.abs() > allowance.saturating_add(error_ms));
        let create_if_absent = match store.put_if_absent(&key, b"probe 2".to_vec()).await {
            Err(Error::AlreadyExists { .. }) => true,
            Ok(_) => false,
            Err(e) => return Err(e),
        };
        let v2 = store.put_if_match(&key, b"probe 3".to_vec(), &v1).await;
        let update_if_match = match (&v2, store.put_if_match(&key, b"probe 4".to_vec(), &v1).await) {
            (Ok(_), Err(Error::Precondition { .. })) => true,
            (Ok(_), Ok(_)) | (Err(Error::Precondition { .. }), _) => false,
            (Err(e), _) => return Err(unsafe_store(&format!("an update with the current version failed: {e}"))),
            (_, Err(e)) => return Err(e),
        };
        store.delete(&key).await?;
        if !create_if_absent {
            return Err(unsafe_store("it ignores If-None-Match: a second create of the same key succeeded"));
        }
        if !update_if_match {
            return Err(unsafe_store("it ignores If-Match: an update with a stale version succeeded"));
        }
        Ok(ProbeReport {
            store: store.describe().into(),
            create_if_absent,
            update_if_match,
            etags: v1.e_tag.is_some(),
            generations: v1.version.is_some(),
            clock_skew_ms,
            clock_skew_exceeds_allowance,
        })
    }
}

/// `extract:4 -> transform:4 (after extract, aligned)`-style text for messages.
fn describe_plan(steps: &[StepPlan]) -> String {
    steps
        .iter()
        .map(|s| {
            let mut text = s.step_id.to_string();
            if let Some(n) = s.shards {
                text += &format!(":{n}");
            }
            if !s.after.is_empty() {
                let deps: Vec<String> = s
                    .after
                    .iter()
                    .map(|d| match d.kind {
                        oxiflow_core::DependencyKind::Barrier => d.step_id.to_string(),
                        oxiflow_core::DependencyKind::Aligned => format!("{} aligned", d.step_id),
                    })
                    .collect();
                text += &format!(" after {}", deps.join(", "));
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ")
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
