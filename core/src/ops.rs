//! The operations: claim (and takeover), checkpoint, heartbeat, release,
//! complete, fail, remote stop, and the operator's pause and resume (resets
//! and new runs are pipeline-wide: [`crate::generation`]).
//! Each is a [`Mutation`] for the [`Update`](crate::protocol::Update) driver.

use alloc::string::String;
use core::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::doc::{Document, Limits, PartitionDoc, PipelineDoc, StepStatus};
use crate::error::Error;
use crate::generation::Adoption;
use crate::id::{StepId, WorkerId};
use crate::lease::{
    capped, check_holder, ensure_trusted, take, Holder, HolderCheck, Lease, LeaseConfig, LeaseStatus, StopRequest, PREVIOUS_HOLDERS,
};
use crate::protocol::{Context, Mutation};
use crate::step::{Finish, Progress};
use crate::time::Timestamp;

/// A document a worker can hold and make progress on.
pub trait Work: Document {
    /// What one checkpoint reports.
    type Progress: Clone + PartialEq + core::fmt::Debug + Default + Serialize + for<'de> Deserialize<'de>;
    /// Status change on claim.
    fn start(&mut self, now: Timestamp) -> Result<(), Error>;
    /// Applies a checkpoint's progress; all or nothing.
    fn record(&mut self, progress: &Self::Progress, worker: &WorkerId, now: Timestamp, limits: &Limits) -> Result<(), Error>;
    /// Status change when the holder lets go.
    fn finish(&mut self, finish: &Finish, worker: &WorkerId, now: Timestamp, limits: &Limits) -> Result<(), Error>;
    /// Catches up with a reset the pipeline committed ([`crate::generation`]).
    fn adopt(&mut self, _to: &Adoption, _now: Timestamp) -> bool {
        false
    }
}

impl Work for PartitionDoc {
    type Progress = Progress;
    fn start(&mut self, now: Timestamp) -> Result<(), Error> {
        PartitionDoc::start(self, now)
    }
    fn record(&mut self, progress: &Progress, worker: &WorkerId, now: Timestamp, limits: &Limits) -> Result<(), Error> {
        PartitionDoc::record(self, progress, worker, now, limits)
    }
    fn finish(&mut self, finish: &Finish, worker: &WorkerId, now: Timestamp, limits: &Limits) -> Result<(), Error> {
        PartitionDoc::finish(self, finish, worker, now, limits)
    }
    fn adopt(&mut self, to: &Adoption, now: Timestamp) -> bool {
        PartitionDoc::adopt(self, to, now)
    }
}

/// Progress on the pipeline document: which step is current, which batch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineProgress {
    /// The step the runner is on now; must be one of the plan's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_step: Option<StepId>,
    /// The runner's batch counter; may not go backwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_number: Option<u64>,
}

impl Work for PipelineDoc {
    type Progress = PipelineProgress;
    fn start(&mut self, _now: Timestamp) -> Result<(), Error> {
        Ok(())
    }
    fn record(&mut self, p: &PipelineProgress, _worker: &WorkerId, _now: Timestamp, _limits: &Limits) -> Result<(), Error> {
        if let Some(step) = &p.current_step {
            if self.step(step).is_none() {
                return Err(Error::invalid(alloc::format!("step {step} is not a step of pipeline {}", self.pipeline_id)));
            }
        }
        if let Some(b) = p.batch_number {
            if b < self.batch_number {
                return Err(Error::CounterRegression { field: "batch_number", current: self.batch_number.into(), proposed: b.into() });
            }
            self.batch_number = b;
        }
        if p.current_step.is_some() {
            self.current_step.clone_from(&p.current_step);
        }
        Ok(())
    }
    fn finish(&mut self, finish: &Finish, _worker: &WorkerId, _now: Timestamp, _limits: &Limits) -> Result<(), Error> {
        match finish {
            Finish::Release => Ok(()),
            _ => Err(Error::invalid("a pipeline document has no status to complete or fail; finish its steps instead")),
        }
    }
}

/// Create the document if it is absent; otherwise leave the stored one as is.
#[derive(Debug, Clone, PartialEq)]
pub struct Create<D>(pub D);

impl<D: Document> Mutation for Create<D> {
    type Doc = D;
    fn create(&self, _ctx: &Context) -> Result<Option<D>, Error> {
        Ok(Some(self.0.clone()))
    }
    fn apply(&self, _key: &str, _doc: &mut D, _ctx: &Context) -> Result<bool, Error> {
        Ok(false)
    }
}

/// Claim a free, released or expired lease (a takeover when expired), with
/// the epoch one higher. `write_id` is a fresh random number from the caller:
/// finding it in the stored lease after a lost response means the claim landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim<D> {
    /// Who claims.
    pub worker_id: WorkerId,
    /// A fresh random number; see [`Lease::last_write`].
    pub write_id: u64,
    /// The pipeline's current generation, when the claimer read it: a
    /// partition behind it is reset to it first ([`crate::generation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<Adoption>,
    /// The claimer's hard deadline ([`crate::deadline`]): the lease ends
    /// there at the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    #[serde(skip)]
    _doc: PhantomData<D>,
}

impl<D> Claim<D> {
    /// A claim by `worker_id` that adopts no reset.
    pub fn new(worker_id: WorkerId, write_id: u64) -> Self {
        Claim { worker_id, write_id, adopt: None, deadline: None, _doc: PhantomData }
    }

    /// The same claim by a holder that must be done by `deadline`
    /// ([`crate::deadline`]): the lease ends there at the latest.
    pub fn with_deadline(self, deadline: Timestamp) -> Self {
        Claim { deadline: Some(deadline), ..self }
    }

    /// The same claim, catching the partition up with `to` first.
    pub fn adopting(self, to: Adoption) -> Self {
        Claim { adopt: Some(to), ..self }
    }
}

impl<D: Work> Mutation for Claim<D> {
    type Doc = D;
    fn apply(&self, key: &str, doc: &mut D, ctx: &Context) -> Result<bool, Error> {
        if let Some(l) = doc.lease() {
            if l.worker_id == self.worker_id && l.last_write == self.write_id {
                return Ok(false);
            }
        }
        if let Some(to) = &self.adopt {
            doc.adopt(to, ctx.now);
        }
        doc.start(ctx.now)?;
        take(key, doc.lease_mut(), &self.worker_id, self.write_id, ctx.now, &ctx.config.lease, self.deadline).map(|()| true)
    }
}

/// A holder's write: progress (possibly none, which makes it a heartbeat),
/// optionally ending the work. Every write extends the lease by the ttl,
/// unless it ends the work or a stop was requested, which releases it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Write<D: Work> {
    /// Who writes, under which epoch, after which of its writes.
    pub holder: Holder,
    /// A fresh random number per write; see [`Lease::last_write`].
    pub write_id: u64,
    /// Progress to record; the default records none.
    #[serde(default)]
    pub progress: D::Progress,
    /// Ends the work with this write; the lease is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<Finish>,
    /// The holder's hard deadline: the extension stops there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
}

impl<D: Work> Write<D> {
    /// Records progress and extends the lease.
    pub fn checkpoint(holder: Holder, write_id: u64, progress: D::Progress) -> Self {
        Write { holder, write_id, progress, finish: None, deadline: None }
    }
    /// Extends the lease, recording nothing.
    pub fn heartbeat(holder: Holder, write_id: u64) -> Self {
        Write { holder, write_id, progress: D::Progress::default(), finish: None, deadline: None }
    }
    /// Records progress and gives the partition back unfinished.
    pub fn release(holder: Holder, write_id: u64, progress: D::Progress) -> Self {
        Write { holder, write_id, progress, finish: Some(Finish::Release), deadline: None }
    }
    /// Records progress and completes the partition.
    pub fn complete(holder: Holder, write_id: u64, progress: D::Progress) -> Self {
        Write { holder, write_id, progress, finish: Some(Finish::Complete), deadline: None }
    }
    /// Records progress and fails the partition with `error`.
    pub fn fail(holder: Holder, write_id: u64, progress: D::Progress, error: String, retryable: bool) -> Self {
        Write { holder, write_id, progress, finish: Some(Finish::Fail { error, retryable }), deadline: None }
    }
}

impl<D: Work> Mutation for Write<D> {
    type Doc = D;
    fn apply(&self, key: &str, doc: &mut D, ctx: &Context) -> Result<bool, Error> {
        if check_holder(key, doc.lease(), &self.holder, self.write_id)? == HolderCheck::Landed {
            return Ok(false);
        }
        ensure_trusted(key, doc.lease(), ctx.now, &ctx.config.lease)?;
        let worker = &self.holder.worker_id;
        doc.record(&self.progress, worker, ctx.now, &ctx.config.limits)?;
        let stop_requested = doc.lease().is_some_and(|l| l.stop_requested.is_some());
        let finish = self.finish.clone().or(stop_requested.then_some(Finish::Release));
        if let Some(finish) = &finish {
            doc.finish(finish, worker, ctx.now, &ctx.config.limits)?;
        }
        let lease = doc.lease_mut().as_mut().expect("check_holder found our lease");
        lease.last_write = self.write_id;
        if finish.is_some() {
            lease.released_at = Some(ctx.now);
        } else {
            // A write never shortens the lease: a holder whose clock stepped
            // back keeps what it had (and never ends before it began).
            let ttl = lease.ttl_ms.map_or(ctx.config.lease.ttl, core::time::Duration::from_millis);
            lease.expires_at = capped(ctx.now.plus(ttl), self.deadline).max(lease.expires_at);
        }
        Ok(true)
    }
}

/// Put a restored copy of a document in place (import, copy between
/// stores, restore from history). Epochs never go backwards: the restored
/// lease is released at one past the highest epoch either copy has had, so
/// a holder of the stored document and a holder of the copy are both fenced.
/// Refused while someone holds a live lease on the stored document, unless
/// `force`. The stored version number keeps growing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore<D> {
    /// The copy to put in place.
    pub doc: D,
    /// Restore even over a live lease.
    pub force: bool,
    /// The restorer's own lease on the document (an import holding the
    /// pipeline while it writes): not a live lease to refuse over.
    pub holder: Option<Holder>,
}

/// The restored copy's lease, released at `epoch`, or none if neither copy had one.
fn restored_lease(copy: Option<&Lease>, stored: Option<&Lease>, epoch: u64, now: Timestamp) -> Option<Lease> {
    let base = copy.or(stored)?;
    Some(Lease {
        epoch,
        released_at: Some(base.released_at.unwrap_or(now)),
        stop_requested: None,
        // The stored holder's last write, so a release of theirs that
        // landed is still recognised; on a fresh store, the copy's own.
        previous: match stored {
            Some(s) => core::iter::once(Holder::of(s)).chain(s.previous.iter().cloned()).take(PREVIOUS_HOLDERS).collect(),
            None => base.previous.clone(),
        },
        ..base.clone()
    })
}

impl<D: Document> Mutation for Restore<D> {
    type Doc = D;
    fn create(&self, ctx: &Context) -> Result<Option<D>, Error> {
        let mut doc = self.doc.clone();
        let epoch = doc.lease().map_or(0, |l| l.epoch);
        *doc.lease_mut() = restored_lease(self.doc.lease(), None, epoch, ctx.now);
        Ok(Some(doc))
    }
    fn apply(&self, key: &str, doc: &mut D, ctx: &Context) -> Result<bool, Error> {
        match &self.holder {
            Some(holder) => {
                check_holder(key, doc.lease(), holder, holder.last_write)?;
                ensure_trusted(key, doc.lease(), ctx.now, &ctx.config.lease)?;
            }
            None if !self.force => ensure_unheld(key, doc.lease(), ctx.now, &ctx.config.lease)?,
            None => {}
        }
        let highest = doc.lease().map_or(0, |l| l.epoch).max(self.doc.lease().map_or(0, |l| l.epoch));
        let lease = restored_lease(self.doc.lease(), doc.lease(), highest + 1, ctx.now);
        let version = doc.version();
        *doc = self.doc.clone();
        *doc.lease_mut() = lease;
        doc.set_version(version);
        Ok(true)
    }
}

/// Ask `worker_id` to release the document and stop. Its next write sees
/// the request and releases; nothing is written when it does not hold the
/// lease (or was already asked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStop<D> {
    /// The holder asked to stop.
    pub worker_id: WorkerId,
    /// Who asks, recorded in the lease.
    pub requested_by: WorkerId,
    #[serde(skip)]
    _doc: PhantomData<D>,
}

impl<D> RequestStop<D> {
    /// `requested_by` asks `worker_id` to stop.
    pub fn new(worker_id: WorkerId, requested_by: WorkerId) -> Self {
        RequestStop { worker_id, requested_by, _doc: PhantomData }
    }
}

impl<D: Document> Mutation for RequestStop<D> {
    type Doc = D;
    fn apply(&self, _key: &str, doc: &mut D, ctx: &Context) -> Result<bool, Error> {
        match doc.lease_mut() {
            Some(l) if l.worker_id == self.worker_id && l.is_open() && l.stop_requested.is_none() => {
                l.stop_requested = Some(StopRequest { requested_by: self.requested_by.clone(), requested_at: ctx.now });
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

fn ensure_unheld(key: &str, lease: Option<&Lease>, now: Timestamp, config: &LeaseConfig) -> Result<(), Error> {
    match (LeaseStatus::of(lease, now, config), lease) {
        (LeaseStatus::Held { expires_at }, Some(l)) => {
            Err(Error::LeaseHeld { key: key.into(), holder: l.worker_id.clone(), epoch: l.epoch, expires_at })
        }
        _ => Ok(()),
    }
}

/// The operator's changes to a partition that nobody holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// Pending, Failed or abandoned Running → Paused; claims are refused until resumed.
    Pause,
    /// Paused → Pending.
    Resume,
    /// Marks a lease that expired past the skew allowance as released (a
    /// dead worker's), Running → Pending. Nothing changes for a live lease.
    ReleaseExpired,
}

impl Mutation for Operator {
    type Doc = PartitionDoc;
    fn apply(&self, key: &str, doc: &mut PartitionDoc, ctx: &Context) -> Result<bool, Error> {
        match self {
            Operator::Pause => {
                ensure_unheld(key, doc.lease.as_ref(), ctx.now, &ctx.config.lease)?;
                doc.pause()
            }
            Operator::Resume => doc.resume(),
            Operator::ReleaseExpired => {
                if !matches!(LeaseStatus::of(doc.lease.as_ref(), ctx.now, &ctx.config.lease), LeaseStatus::Expired { .. }) {
                    return Ok(false);
                }
                if let Some(lease) = doc.lease.as_mut() {
                    lease.released_at = Some(ctx.now);
                }
                if matches!(doc.status, StepStatus::Running { .. }) {
                    doc.status = StepStatus::Pending;
                }
                Ok(true)
            }
        }
    }
}
