//! One invocation: claim (or take over) with a lease ending at the
//! deadline, resume from the bookmark, batches while time allows, then
//! complete and hand off, or release and continue.

use std::time::Duration;

use oxiflow_backends::{Claimed, Next, Snapshot, StateManager};
use oxiflow_core::{Deadline, Pace, PartitionId, StepStatus, Timestamp, WorkerId};

use crate::error::Error;
use crate::event::{StepEvent, StepOutcome};
use crate::handoff::{Handoff, ReturnOnly};
use crate::step::{BatchInput, Permanent, Step};

/// What the platform says about one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The platform's id of this invocation; the lease is held as
    /// `lambda-<request id>`.
    pub request_id: String,
    /// The deadline it reported (Unix ms), if any; judged by
    /// [`Deadline::judge`] before use.
    pub deadline: Option<Timestamp>,
}

impl Invocation {
    /// From lambda_runtime's context (`deadline` is Unix ms there).
    pub fn of(context: &lambda_runtime::Context) -> Self {
        let deadline = i64::try_from(context.deadline).ok().filter(|ms| *ms > 0).map(Timestamp::from_millis);
        Invocation { request_id: context.request_id.clone(), deadline }
    }

    /// The worker id the lease is held under: `lambda-` and the request
    /// id, with characters ids may not hold replaced by `_`.
    pub fn worker(&self) -> Result<WorkerId, Error> {
        let id: String = self
            .request_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
            .take(100)
            .collect();
        Ok(WorkerId::new(format!("lambda-{id}").replace("..", "__"))?)
    }
}

/// Runs one step's batches inside invocations: see the crate docs.
pub struct Runner<S, H = ReturnOnly> {
    manager: StateManager,
    step: S,
    handoff: H,
    release_margin: Duration,
}

/// Time kept for the last write (the release or the completion) before the
/// holder stops trusting its lease: about one S3 PUT with a slow tail.
pub const DEFAULT_RELEASE_MARGIN: Duration = Duration::from_millis(500);

impl<S: Step> Runner<S, ReturnOnly> {
    /// A runner over `manager`'s store and settings (the configured lease
    /// ttl is the fallback when a deadline is not trusted).
    pub fn new(manager: StateManager, step: S) -> Self {
        Runner { manager, step, handoff: ReturnOnly, release_margin: DEFAULT_RELEASE_MARGIN }
    }
}

enum Claim {
    Held(Box<Claimed>),
    Answer(StepOutcome),
}

impl<S: Step, H: Handoff> Runner<S, H> {
    /// The same runner, sending hand-offs and continuations through `handoff`.
    pub fn with_handoff<H2: Handoff>(self, handoff: H2) -> Runner<S, H2> {
        Runner { manager: self.manager, step: self.step, handoff, release_margin: self.release_margin }
    }

    /// Keeps `margin` for the last write before the lease's trusted end
    /// (default [`DEFAULT_RELEASE_MARGIN`]).
    pub fn with_release_margin(mut self, margin: Duration) -> Self {
        self.release_margin = margin;
        self
    }

    /// Serves invocations from the Lambda runtime API until the process
    /// ends (`lambda_runtime::run`).
    pub async fn serve(self) -> Result<(), lambda_runtime::Error>
    where
        S: 'static,
        H: 'static,
    {
        let runner = &self;
        lambda_runtime::run(lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<StepEvent>| async move {
            runner.invoke(event.payload, &Invocation::of(&event.context)).await
        }))
        .await
    }

    /// Handles one event within one invocation.
    pub async fn invoke(&self, event: StepEvent, invocation: &Invocation) -> Result<StepOutcome, Error> {
        let now = self.manager.now();
        let deadline = Deadline::judge(invocation.deadline, now, self.manager.config().lease.ttl);
        if let Some(why) = deadline.distrust {
            tracing::warn!(
                request_id = %invocation.request_id,
                "{why}: not trusted; holding the lease for the configured {} ms instead",
                self.manager.config().lease.ttl.as_millis()
            );
        }
        let manager = self.manager.with_deadline(deadline.ends_at);
        let lease = manager.config().lease;
        if !Pace::default().another_batch(&deadline, now, &lease, self.release_margin) {
            // Not even time to claim and let go: continue in a fresh invocation.
            return match &event.partition {
                Some(p) => self.continue_with(&event, p.clone(), 0, 0).await,
                None => Ok(StepOutcome::NotReady { partition: None, reason: "no time was left in this invocation".into() }),
            };
        }
        let worker = invocation.worker()?;
        let mut claimed = match self.claim(&manager, &event, &worker).await? {
            Claim::Held(c) => c,
            Claim::Answer(outcome) => return Ok(outcome),
        };
        let partition = claimed.doc().partition_id();
        let mut pace = Pace::default();
        let mut batches = 0u32;
        loop {
            let started = manager.now();
            if !pace.another_batch(&deadline, started, &lease, self.release_margin) {
                let doc = manager.release(&mut claimed, Default::default()).await.map(|_| claimed.doc().clone())?;
                return self.continue_with(&event, partition, doc.records_processed, batches).await;
            }
            let doc = claimed.doc();
            let input = BatchInput {
                pipeline: event.pipeline.clone(),
                partition: partition.clone(),
                bookmark: doc.last_processed_id.clone(),
                batch_number: doc.batch_number,
                budget: pace.budget(&deadline, started, &lease, self.release_margin),
            };
            let batch_number = doc.batch_number + 1;
            let batch = match self.step.batch(input).await {
                Ok(batch) => batch,
                Err(e) => {
                    let retryable = !e.is::<Permanent>();
                    let error = e.to_string();
                    manager.fail(&mut claimed, Default::default(), error.clone(), retryable).await?;
                    return Ok(StepOutcome::Failed { partition, error, retryable });
                }
            };
            let progress = batch.progress(batch_number, started.until(manager.now()));
            batches += 1;
            if batch.last {
                manager.complete(&mut claimed, progress).await?;
                let handed_off = self.hand_off(&manager, &event, &partition).await?;
                let records_processed = claimed.doc().records_processed;
                return Ok(StepOutcome::Completed { partition, records_processed, batches, handed_off });
            }
            let written = manager.checkpoint(&mut claimed, progress).await?;
            if let Some(stop) = written.stop {
                return Ok(StepOutcome::Stopped { partition, requested_by: stop.requested_by, batches });
            }
            pace.record(started.until(manager.now()));
        }
    }

    /// Claims the event's partition in the pipeline's order, or the
    /// scheduler's next; refusals that are answers, not failures, become
    /// outcomes (nothing written).
    async fn claim(&self, manager: &StateManager, event: &StepEvent, worker: &WorkerId) -> Result<Claim, Error> {
        let Some(partition) = &event.partition else {
            let mut snapshot = Snapshot::new(event.pipeline.clone());
            return Ok(match manager.claim_next(&mut snapshot, worker).await? {
                Next::Claimed(c) => Claim::Held(c),
                Next::Finished(_) => Claim::Answer(StepOutcome::Finished { pipeline: event.pipeline.clone() }),
                Next::Wait(schedule) => Claim::Answer(StepOutcome::NotReady {
                    partition: None,
                    reason: format!(
                        "nothing is ready in {} ({:?}): its partitions wait on upstream steps or are held",
                        event.pipeline, schedule.status
                    ),
                }),
            });
        };
        use oxiflow_core::Error as Core;
        let refused = match manager.claim_when_due(&event.pipeline, partition, worker).await {
            Ok(c) => return Ok(Claim::Held(Box::new(c))),
            Err(oxiflow_backends::Error::Core(e)) => e,
            Err(e) => return Err(e.into()),
        };
        Ok(Claim::Answer(match refused {
            Core::LeaseHeld { holder, expires_at, .. } => StepOutcome::AlreadyRunning {
                partition: partition.clone(),
                holder,
                retry_at: expires_at.plus(manager.config().lease.skew_allowance),
            },
            Core::NotReady { reason, .. } => StepOutcome::NotReady { partition: Some(partition.clone()), reason },
            Core::InvalidTransition { .. } => {
                let (doc, _) = manager
                    .read::<oxiflow_core::PartitionDoc>(&oxiflow_core::keys::partition_doc(&event.pipeline, partition))
                    .await?
                    .ok_or_else(|| Core::NotFound { key: partition.to_string() })?;
                match doc.status {
                    StepStatus::Completed { .. } => StepOutcome::AlreadyDone {
                        partition: partition.clone(),
                        handed_off: self.hand_off(manager, event, partition).await?,
                    },
                    _ => StepOutcome::NotReady {
                        partition: Some(partition.clone()),
                        reason: format!("{partition} is {}: an operator must reset or resume it", doc.status.kind()),
                    },
                }
            }
            other => return Err(other.into()),
        }))
    }

    /// Sends the events for what `completed` made ready.
    async fn hand_off(&self, manager: &StateManager, event: &StepEvent, completed: &PartitionId) -> Result<Vec<StepEvent>, Error> {
        let ready = manager.handoff(&event.pipeline, completed).await?;
        let events: Vec<StepEvent> = ready.into_iter().map(|p| StepEvent::start(event.pipeline.clone(), p)).collect();
        if !events.is_empty() {
            self.handoff.send(&events).await.map_err(Error::Handoff)?;
        }
        Ok(events)
    }

    /// Sends the continuation of `partition` (released already).
    async fn continue_with(
        &self,
        event: &StepEvent,
        partition: PartitionId,
        records_processed: u64,
        batches: u32,
    ) -> Result<StepOutcome, Error> {
        let next = event.continued(partition.clone());
        self.handoff.send(std::slice::from_ref(&next)).await.map_err(Error::Handoff)?;
        Ok(StepOutcome::Continue { partition, records_processed, batches, next })
    }
}
