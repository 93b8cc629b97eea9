//! Pipeline-wide actions — a reset (of one step or all) and a new run — as
//! one compare-and-swap on the pipeline document, never a loop of partition
//! writes that can stop halfway.
//!
//! The pipeline document carries a generation per step. A reset or a new
//! run bumps it in one write; a partition that carries an older generation
//! reads, to every reader, as a fresh partition of the current run
//! ([`PartitionDoc::as_of`]), and the next claim stores it that way
//! ([`PartitionDoc::adopt`], its lease one epoch higher).
//!
//! An operator acts in three steps, so that progress acknowledged before the
//! action is reset and progress acknowledged after it is never hidden:
//!
//! 1. read the partitions: a live lease in scope refuses, nothing written;
//! 2. take the pipeline document's lease: claims wait while it is live;
//! 3. read again — a claim that read the pipeline before step 2 may have
//!    landed meanwhile: let go of the lease and refuse — then commit
//!    ([`CommitReset`]): one write that bumps the generation and releases.
//!
//! A claim reads the pipeline document after its own write landed
//! ([`check_claim`]): it sees the operator's lease and lets go, or the new
//! generation and adopts it. A holder's write is refused once its lease is
//! past its trusted time ([`crate::ops::Write`]), so a holder that was
//! expired at step 1 cannot land anything later.

use serde::{Deserialize, Serialize};

use crate::doc::{PartitionDoc, PipelineDoc};
use crate::error::Error;
use crate::id::{RunId, StepId, WorkerId};
use crate::lease::{check_holder, ensure_trusted, Holder, HolderCheck, LeaseConfig, LeaseStatus};
use crate::protocol::{Context, Mutation};
use crate::time::Timestamp;

/// What a reset covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ResetScope {
    /// Every partition back to Pending in the current run.
    Pipeline,
    /// One step's partitions back to Pending in the current run.
    Step {
        /// The step to reset.
        step_id: StepId,
    },
    /// A new run: every partition Pending under `run_id`.
    NewRun {
        /// The new run's id.
        run_id: RunId,
    },
}

impl ResetScope {
    /// Does the reset cover partitions of `step`?
    pub fn covers(&self, step: &StepId) -> bool {
        match self {
            ResetScope::Step { step_id } => step_id == step,
            ResetScope::Pipeline | ResetScope::NewRun { .. } => true,
        }
    }
}

/// What a partition must carry to count in the pipeline's current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoption {
    /// The pipeline's current run.
    pub run_id: RunId,
    /// The step's current generation.
    pub generation: u64,
}

impl PipelineDoc {
    /// The generation a partition of `step` must carry to count.
    pub fn generation_of(&self, step: &StepId) -> u64 {
        self.step_generations.get(step).copied().unwrap_or(0)
    }

    /// What a partition of `step` adopts when it is behind.
    pub fn adoption(&self, step: &StepId) -> Adoption {
        Adoption { run_id: self.run_id.clone(), generation: self.generation_of(step) }
    }

    /// Applies a reset: the next generation for the steps it covers.
    pub fn reset(&mut self, scope: &ResetScope) -> Result<(), Error> {
        if let ResetScope::Step { step_id } = scope {
            if self.step(step_id).is_none() {
                let steps: alloc::vec::Vec<&str> = self.steps.iter().map(|s| s.step_id.as_str()).collect();
                return Err(Error::invalid(alloc::format!(
                    "step {step_id} is not a step of pipeline {} (its steps: {})",
                    self.pipeline_id,
                    steps.join(", ")
                )));
            }
        }
        self.generation += 1;
        for step in &self.steps {
            if scope.covers(&step.step_id) {
                self.step_generations.insert(step.step_id.clone(), self.generation);
            }
        }
        if let ResetScope::NewRun { run_id } = scope {
            self.run_id = run_id.clone();
            self.current_step = self.steps.first().map(|s| s.step_id.clone());
        }
        Ok(())
    }

    /// The operator holding this pipeline for a reset, and until when: claims wait.
    pub fn locked_by(&self, now: Timestamp, config: &LeaseConfig) -> Option<(&WorkerId, Timestamp)> {
        match (LeaseStatus::of(self.lease.as_ref(), now, config), self.lease.as_ref()) {
            (LeaseStatus::Held { expires_at }, Some(l)) => Some((&l.worker_id, expires_at)),
            _ => None,
        }
    }
}

impl PartitionDoc {
    /// Does this partition carry its step's current generation?
    pub fn is_current(&self, pipeline: &PipelineDoc) -> bool {
        self.generation >= pipeline.generation_of(&self.step_id)
    }

    /// Brings a partition of an older generation to `to`: Pending in that
    /// run, this run's counters zeroed, the bookmark kept, its lease
    /// released (the epoch kept, so the next claim fences its holder).
    /// Returns whether anything changed.
    pub fn adopt(&mut self, to: &Adoption, now: Timestamp) -> bool {
        if self.generation >= to.generation {
            return false;
        }
        self.new_run(&to.run_id);
        self.reset();
        self.generation = to.generation;
        if let Some(lease) = self.lease.as_mut().filter(|l| l.is_open()) {
            lease.released_at = Some(now);
        }
        true
    }

    /// This partition as every reader sees it under `pipeline`.
    pub fn as_of(&self, pipeline: &PipelineDoc, now: Timestamp) -> PartitionDoc {
        let mut doc = self.clone();
        doc.adopt(&pipeline.adoption(&self.step_id), now);
        doc
    }
}

/// What a claim that landed learns from the pipeline document read after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[must_use = "a stale or locked claim must be redone or let go"]
#[serde(rename_all = "snake_case")]
pub enum ClaimCheck {
    /// Keep working.
    Current,
    /// A reset committed: claim again adopting this (one more write).
    Stale(Adoption),
    /// An operator is resetting: let go, nothing was done yet.
    Locked {
        /// The operator holding the pipeline.
        worker_id: WorkerId,
        /// When its lease runs out.
        until: Timestamp,
    },
}

/// Checks a claim that landed against the pipeline document read after it.
pub fn check_claim(pipeline: &PipelineDoc, claimed: &PartitionDoc, now: Timestamp, config: &LeaseConfig) -> ClaimCheck {
    if let Some((worker_id, until)) = pipeline.locked_by(now, config) {
        return ClaimCheck::Locked { worker_id: worker_id.clone(), until };
    }
    match claimed.is_current(pipeline) {
        true => ClaimCheck::Current,
        false => ClaimCheck::Stale(pipeline.adoption(&claimed.step_id)),
    }
}

/// The operator's commit (step 3 above): the reset applied and the
/// pipeline's lease released, in one write by the lease's holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitReset {
    /// The operator, as holder of the pipeline's lease.
    pub holder: Holder,
    /// A fresh random number; see [`Lease::last_write`](crate::Lease::last_write).
    pub write_id: u64,
    /// What the reset covers.
    pub scope: ResetScope,
}

impl Mutation for CommitReset {
    type Doc = PipelineDoc;
    fn apply(&self, key: &str, doc: &mut PipelineDoc, ctx: &Context) -> Result<bool, Error> {
        if check_holder(key, doc.lease.as_ref(), &self.holder, self.write_id)? == HolderCheck::Landed {
            return Ok(false);
        }
        ensure_trusted(key, doc.lease.as_ref(), ctx.now, &ctx.config.lease)?;
        doc.reset(&self.scope)?;
        let lease = doc.lease.as_mut().expect("check_holder found our lease");
        lease.last_write = self.write_id;
        lease.released_at = Some(ctx.now);
        Ok(true)
    }
}
