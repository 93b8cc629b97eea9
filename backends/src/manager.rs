//! The `StateManager` drives the core's sans-I/O operations over any
//! [`ConditionalStore`] with tokio: it owns the clock, the randomness, the
//! sleeping and the requests; the core owns every decision.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use oxiflow_core::{
    aggregate, codec, keys, Action, Config, Create, Document, Drive, PartitionDoc, PartitionId, PipelineDoc, PipelineId, PipelineState,
    Request, Response, RunId, StepPlan, Timestamp, Update,
};

use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::store::ConditionalStore;

/// Where "now" comes from; tests pass a manual clock.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The wall clock, in Unix milliseconds.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        #[allow(clippy::disallowed_methods)] // the one place the wall clock is read
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Timestamp::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
    })
}

/// Where random numbers come from (write ids, the scheduler's spread, the
/// core's jitter); tests pass a seeded source.
pub type Random = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The operating system's generator, drawn afresh for every number: the one
/// place randomness enters. A user-space generator seeded once would hand a
/// `fork()`ed child the parent's next write ids, and a write id that repeats
/// makes a lost write look landed.
pub fn system_random() -> Random {
    use rand::TryRngCore;
    Arc::new(|| rand::rngs::OsRng.try_next_u64().expect("the operating system's random source failed"))
}

/// How many documents are read at once when loading a pipeline.
pub(crate) const READ_CONCURRENCY: usize = 16;

/// Reads and writes pipeline state in one store.
#[derive(Clone)]
pub struct StateManager {
    pub(crate) store: Arc<dyn ConditionalStore>,
    pub(crate) config: Config,
    clock: Clock,
    random: Random,
    /// Create-only copies kept per partition; 0 keeps none.
    pub(crate) history_keep_last: usize,
    /// A hard deadline every lease this manager takes ends by (a Lambda
    /// invocation's): [`StateManager::with_deadline`].
    pub(crate) deadline: Option<Timestamp>,
}

impl std::fmt::Debug for StateManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateManager").field("store", &self.store.describe()).field("config", &self.config).finish()
    }
}

impl StateManager {
    /// A manager of the state in `store`, at the wall clock, keeping no history.
    pub fn new(store: Arc<dyn ConditionalStore>, config: Config) -> Self {
        StateManager { store, config, clock: system_clock(), random: system_random(), history_keep_last: 0, deadline: None }
    }

    /// Keeps the last `keep_last` versions of every partition document as
    /// create-only copies under `history/`. Each write then costs one more
    /// PUT and one LIST (plus a DELETE once the history is full).
    pub fn with_history(mut self, keep_last: usize) -> Self {
        self.history_keep_last = keep_last;
        self
    }

    /// The same manager for a holder that must be done by `deadline` (one
    /// Lambda invocation: [`oxiflow_core::deadline`]). Every lease it takes
    /// lasts until the deadline — no heartbeat needed — and no write
    /// extends one past it, so a holder killed there leaves its partition
    /// claimable `skew_allowance` later.
    pub fn with_deadline(&self, deadline: Timestamp) -> Self {
        let mut bound = self.clone();
        bound.config.lease.ttl = bound.config.lease.ttl.max(self.now().until(deadline));
        bound.deadline = Some(deadline);
        bound
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

    /// The store it writes to.
    pub fn store(&self) -> &Arc<dyn ConditionalStore> {
        &self.store
    }

    /// The core configuration its operations run with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Now, by its clock.
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

    /// Reads and decodes one document. A transient failure is retried
    /// like a write's, by the core's [`oxiflow_core::RetryPolicy`] (a read
    /// changes nothing, so sending it again is always safe).
    pub async fn read<D: Document>(&self, key: &str) -> Result<Option<(D, oxiflow_core::Version)>> {
        let limits = &self.config.limits;
        let mut failures = 0;
        let found = loop {
            match self.store.get(key, limits.max_document_bytes).await {
                Err(Error::Unavailable { .. }) if failures < self.config.retry.max_transient_failures => {
                    failures += 1;
                    tokio::time::sleep(self.config.retry.delay(failures, self.random())).await;
                }
                other => break other?,
            }
        };
        match found {
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
    /// A damaged document is its error: everything is needed.
    pub async fn load(&self, pipeline: &PipelineId) -> Result<(PipelineDoc, Vec<PartitionDoc>)> {
        let mut snapshot = Snapshot::new(pipeline.clone());
        self.refresh(&mut snapshot).await?;
        let doc = snapshot.pipeline().expect("a refreshed snapshot has its pipeline").clone();
        Ok((doc, snapshot.partitions()))
    }

    /// The aggregated view of a pipeline now; a damaged document is its
    /// error ([`StateManager::view_readable`] shows the rest).
    pub async fn view(&self, pipeline: &PipelineId) -> Result<PipelineState> {
        let (doc, partitions) = self.load(pipeline).await?;
        self.aggregate(&doc, &partitions)
    }

    /// The aggregated view of what can be read, and the partition documents
    /// that cannot, named: what people look at (`state show`, `serve`). A
    /// damaged pipeline document is still an error: without it there is no
    /// plan to show.
    pub async fn view_readable(&self, pipeline: &PipelineId) -> Result<ReadableView> {
        let mut snapshot = Snapshot::new(pipeline.clone()).keeping_damaged();
        self.refresh(&mut snapshot).await?;
        self.readable_view(&snapshot)
    }

    /// [`StateManager::view_readable`] of a snapshot already refreshed.
    pub fn readable_view(&self, snapshot: &Snapshot) -> Result<ReadableView> {
        let pipeline =
            snapshot.pipeline().ok_or_else(|| oxiflow_core::Error::NotFound { key: keys::pipeline_doc(snapshot.pipeline_id()) })?;
        Ok(ReadableView { state: self.aggregate(pipeline, &snapshot.partitions())?, damaged: snapshot.damaged() })
    }

    /// The aggregated view of documents already read, at this manager's clock.
    pub fn aggregate(&self, pipeline: &PipelineDoc, partitions: &[PartitionDoc]) -> Result<PipelineState> {
        Ok(aggregate(pipeline, partitions, self.now(), &self.config)?)
    }
}

/// A pipeline's view with the documents that could not be read beside it:
/// as JSON, the view's fields and `damaged` (omitted when empty).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReadableView {
    /// What the readable documents say.
    #[serde(flatten)]
    pub state: PipelineState,
    /// Partition documents left out, each with its reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<crate::Damaged>,
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
