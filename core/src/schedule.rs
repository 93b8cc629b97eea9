//! The scheduler: which partitions may be claimed now, and why every other
//! one may not. One pure function of the pipeline document, its partition
//! documents, the time, the worker and the caller's randomness — the only
//! place that decides what to claim, used by the CLI worker, the demo,
//! `oxiflow serve`, the wasm package and the Lambda runner alike.
//!
//! Rules, in the order they are checked for each partition of the plan:
//!
//! 1. completed in the current run → [`Readiness::Completed`];
//! 2. still carrying an older run's state → [`Readiness::OtherRun`];
//! 3. paused → [`Readiness::Paused`];
//! 4. failed for good (not retryable, or failed `max_attempts` times) →
//!    [`Readiness::Failed`];
//! 5. a live lease → [`Readiness::Held`];
//! 6. an upstream partition it depends on failed for good or is blocked →
//!    [`Readiness::Blocked`];
//! 7. an upstream partition it depends on is not completed →
//!    [`Readiness::Waiting`];
//! 8. a retryable failure still in its backoff → [`Readiness::Backoff`];
//! 9. otherwise [`Readiness::Ready`].
//!
//! A partition the plan expects but the store lacks is [`Readiness::Missing`]
//! and is never claimable.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::doc::{PartitionDoc, PipelineDoc, StatusKind, StepStatus};
use crate::id::{PartitionId, StepId, WorkerId};
use crate::lease::{LeaseConfig, LeaseStatus};
use crate::plan::{topological_order, DependencyKind, StepPlan};
use crate::time::{duration_ms, Timestamp};

/// At most this many upstream partitions are named in a
/// [`Readiness::Waiting`] or [`Readiness::Blocked`]; `count` says how many.
pub const NAMED_UPSTREAM: usize = 8;

/// How retryable failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulePolicy {
    /// Wait after the first failure; doubles with each further attempt.
    #[serde(with = "duration_ms", rename = "retry_base_ms")]
    pub retry_base: Duration,
    /// Longest wait between attempts.
    #[serde(with = "duration_ms", rename = "retry_max_ms")]
    pub retry_max: Duration,
    /// A partition whose attempts failed this many times is failed for good
    /// until an operator resets it (takeovers and releases do not count).
    pub max_attempts: u32,
}

impl Default for SchedulePolicy {
    fn default() -> Self {
        SchedulePolicy { retry_base: Duration::from_secs(1), retry_max: Duration::from_secs(300), max_attempts: 10 }
    }
}

impl SchedulePolicy {
    /// Wait after failure number `failures` (1-based).
    pub fn backoff(&self, failures: u32) -> Duration {
        self.retry_base.saturating_mul(1u32 << failures.saturating_sub(1).min(20)).min(self.retry_max)
    }
}

/// Whether a partition may be claimed now, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Readiness {
    /// Claimable now (`takeover`: by taking over an expired lease).
    Ready {
        /// The claim takes over an expired lease.
        takeover: bool,
    },
    /// Completed in the current run.
    Completed,
    /// Carries an older run's state: a new run has not reached it yet.
    OtherRun,
    /// Paused by an operator: resume it first.
    Paused,
    /// Failed for good: an operator must reset it. `failures`: failed
    /// attempts in this run.
    Failed {
        /// The last failure's message.
        error: String,
        /// Failed attempts in this run.
        failures: u32,
    },
    /// Held by a live lease.
    Held {
        /// Who holds it.
        worker_id: WorkerId,
        /// When the lease runs out unless renewed.
        until: Timestamp,
    },
    /// An operator holds the pipeline for a reset or a new run; claims wait
    /// until it commits or its lease ends.
    Locked {
        /// The operator holding the pipeline.
        worker_id: WorkerId,
        /// When its lease runs out.
        until: Timestamp,
    },
    /// Upstream of it failed for good: it cannot run in this run.
    Blocked {
        /// Upstream partitions that failed or are blocked, the first
        /// [`NAMED_UPSTREAM`].
        by: Vec<String>,
        /// How many there are in all.
        count: usize,
    },
    /// Upstream partitions are not completed yet.
    Waiting {
        /// Upstream partitions not completed, the first [`NAMED_UPSTREAM`].
        on: Vec<String>,
        /// How many there are in all.
        count: usize,
    },
    /// Failed, retryable; claimable again at `until` (the wait doubles with
    /// each of the `failures`).
    Backoff {
        /// When it may be claimed again.
        until: Timestamp,
        /// Failed attempts in this run.
        failures: u32,
    },
    /// The plan expects it, the store has no document for it.
    Missing,
}

impl Readiness {
    /// May be claimed now.
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready { .. })
    }
    fn is_done(&self) -> bool {
        matches!(self, Readiness::Completed)
    }
    /// Can never run in this run without an operator.
    fn is_dead(&self) -> bool {
        matches!(self, Readiness::Failed { .. } | Readiness::Blocked { .. })
    }
}

/// One partition of the plan and its readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionReadiness {
    /// Which partition.
    pub partition: PartitionId,
    /// Whether it may be claimed, and if not, why.
    pub readiness: Readiness,
}

/// One step: its partitions and how many are where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReadiness {
    /// Which step.
    pub step_id: StepId,
    /// Partitions the plan expects (or, without a shard count, found).
    pub total: usize,
    /// Of `total`, completed in the current run.
    pub completed: usize,
    /// Of `total`, held by a live lease.
    pub running: usize,
    /// Of `total`, claimable now.
    pub ready: usize,
    /// Each partition, in shard order.
    pub partitions: Vec<PartitionReadiness>,
}

/// The pipeline as the scheduler sees it at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[must_use = "a schedule only says what to claim; computing one does nothing"]
pub struct Schedule {
    /// Completed when every partition is; Failed when one failed for good;
    /// Running once anything started (or is retrying); Paused when nothing
    /// can go on until something is resumed; otherwise Pending.
    pub status: StatusKind,
    /// The first step of the frontier in dependency order; the last step
    /// once everything completed.
    pub current_step: Option<StepId>,
    /// Steps with partitions running, ready or retrying, in plan order.
    pub frontier: Vec<StepId>,
    /// What `worker` should try to claim, best first: upstream steps first,
    /// spread by the caller's randomness within a step so that workers do
    /// not all collide on one key; its own live leases last.
    pub claimable: Vec<PartitionId>,
    /// Every step in plan order (steps found but not planned last).
    pub steps: Vec<StepReadiness>,
}

impl Schedule {
    /// The readiness of one partition.
    pub fn readiness(&self, partition: &PartitionId) -> Option<&Readiness> {
        self.steps.iter().flat_map(|s| &s.partitions).find(|p| &p.partition == partition).map(|p| &p.readiness)
    }

    /// True when nothing is left to do and nothing can be claimed later
    /// without an operator: completed, or failed with nothing else running.
    pub fn is_finished(&self) -> bool {
        let stuck = self.steps.iter().flat_map(|s| &s.partitions).all(|p| {
            matches!(
                p.readiness,
                Readiness::Completed | Readiness::Failed { .. } | Readiness::Blocked { .. } | Readiness::Missing | Readiness::Paused
            )
        });
        self.status == StatusKind::Completed || (self.status == StatusKind::Failed && stuck)
    }

    /// True when no partition is ready, held, backing off, locked by an
    /// operator or waiting for a new run to reach it: nothing will change
    /// until someone acts (resumes, resets, restores a missing or damaged
    /// document). A worker that finds it so with damaged documents gives up.
    pub fn is_stalled(&self) -> bool {
        !self.steps.iter().flat_map(|s| &s.partitions).any(|p| {
            matches!(
                p.readiness,
                Readiness::Ready { .. }
                    | Readiness::Held { .. }
                    | Readiness::Backoff { .. }
                    | Readiness::Locked { .. }
                    | Readiness::OtherRun
            )
        })
    }
}

/// What the scheduler knows of one upstream step once its partitions are
/// judged.
struct Judged {
    /// Partition names in shard order with their readiness.
    slots: Vec<(PartitionId, Readiness)>,
}

impl Judged {
    fn by_shard(&self, shard: Option<u32>) -> Option<&(PartitionId, Readiness)> {
        self.slots.iter().find(|(id, _)| id.shard == shard)
    }
}

/// Computes the schedule. `worker` is who asks (its own live leases are
/// claimable again: a restarted process resumes at once); `random` spreads
/// equally good partitions across workers.
pub fn schedule(
    pipeline: &PipelineDoc,
    partitions: &[PartitionDoc],
    now: Timestamp,
    worker: Option<&WorkerId>,
    lease: &LeaseConfig,
    policy: &SchedulePolicy,
    random: u64,
) -> Schedule {
    // Partitions behind a committed reset read as fresh ones of this run.
    let partitions: Vec<PartitionDoc> =
        partitions.iter().filter(|p| p.pipeline_id == pipeline.pipeline_id).map(|p| p.as_of(pipeline, now)).collect();
    let locked = pipeline.locked_by(now, lease).map(|(worker_id, until)| Readiness::Locked { worker_id: worker_id.clone(), until });
    let mut docs: BTreeMap<&StepId, Vec<&PartitionDoc>> = BTreeMap::new();
    for p in &partitions {
        docs.entry(&p.step_id).or_default().push(p);
    }
    // Planned steps in dependency order, then steps found but not planned.
    let order = topological_order(&pipeline.steps).unwrap_or_else(|_| (0..pipeline.steps.len()).collect());
    let unplanned: Vec<StepPlan> = docs.keys().filter(|s| pipeline.step(s).is_none()).map(|s| StepPlan::new((*s).clone(), None)).collect();
    let plans: Vec<&StepPlan> = order.iter().map(|&i| &pipeline.steps[i]).chain(unplanned.iter()).collect();

    let mut judged: BTreeMap<&StepId, Judged> = BTreeMap::new();
    let mut own_leases = Vec::new();
    let mut ready_by_tier: Vec<Vec<PartitionId>> = Vec::new();
    for plan in &plans {
        let found = docs.remove(&plan.step_id).unwrap_or_default();
        let mut ids: Vec<PartitionId> = match plan.shards {
            Some(_) => plan.partitions(),
            None if found.is_empty() => plan.partitions(),
            None => found.iter().map(|d| d.partition_id()).collect(),
        };
        ids.sort_by_key(|id| id.shard);
        let mut slots = Vec::with_capacity(ids.len());
        let mut tier = Vec::new();
        for id in ids {
            let doc = found.iter().find(|d| d.shard == id.shard).copied();
            let readiness = match (doc, &locked) {
                (None, _) => Readiness::Missing,
                (Some(doc), locked) => match judge(pipeline, plan, doc, &judged, now, lease, policy) {
                    r if r.is_ready() => locked.clone().unwrap_or(r),
                    r => r,
                },
            };
            // Our own live lease (a restarted process) is ours to take back,
            // but not on a partition still carrying an older run's state.
            let current = doc.is_some_and(|d| d.run_id == pipeline.run_id);
            if let (Readiness::Held { worker_id, .. }, Some(me), true, None) = (&readiness, worker, current, &locked) {
                if worker_id == me {
                    own_leases.push(id.clone());
                }
            }
            if readiness.is_ready() {
                tier.push(id.clone());
            }
            slots.push((id, readiness));
        }
        ready_by_tier.push(tier);
        judged.insert(&plan.step_id, Judged { slots });
    }

    let mut rng = SplitMix(random);
    let mut claimable = Vec::new();
    for mut tier in ready_by_tier {
        shuffle(&mut tier, &mut rng);
        claimable.extend(tier);
    }
    claimable.extend(own_leases);

    // Report in plan order, then unplanned steps.
    let steps: Vec<StepReadiness> = pipeline
        .steps
        .iter()
        .map(|s| &s.step_id)
        .chain(unplanned.iter().map(|s| &s.step_id))
        .filter_map(|id| judged.remove(id).map(|j| (id, j)))
        .map(|(id, j)| step_readiness(id, j))
        .collect();
    let all: Vec<&Readiness> = steps.iter().flat_map(|s| &s.partitions).map(|p| &p.readiness).collect();
    // Started in this run: claimed at least once (a holder that died, a
    // retry past its backoff and a release all leave attempts behind).
    let started = partitions.iter().any(|p| p.run_id == pipeline.run_id && p.attempts > 0);
    let status = pipeline_status(&all, started);
    let active = |r: &Readiness| matches!(r, Readiness::Ready { .. } | Readiness::Held { .. } | Readiness::Backoff { .. });
    let frontier: Vec<StepId> =
        steps.iter().filter(|s| s.partitions.iter().any(|p| active(&p.readiness))).map(|s| s.step_id.clone()).collect();
    let topo_first = |pick: &dyn Fn(&StepId) -> bool| plans.iter().map(|p| &p.step_id).find(|s| pick(s)).cloned();
    let current_step = match status {
        StatusKind::Completed => order.last().map(|&i| pipeline.steps[i].step_id.clone()),
        _ => topo_first(&|s| frontier.contains(s)).or_else(|| {
            let stuck = |s: &StepId| steps.iter().any(|st| &st.step_id == s && st.partitions.iter().any(|p| !p.readiness.is_done()));
            topo_first(&stuck)
        }),
    };
    Schedule { status, current_step, frontier, claimable, steps }
}

/// What to start once `completed` is done: the partitions of the steps
/// that depend on its step — its own shard for an aligned dependency,
/// every partition for a barrier — that `schedule` (computed after the
/// completion was stored) finds ready. A Lambda hands these off to new
/// invocations; two upstream partitions completing at once may both name
/// the same downstream one, and the second claim finds it held.
pub fn handoff(pipeline: &PipelineDoc, schedule: &Schedule, completed: &PartitionId) -> Vec<PartitionId> {
    let downstream = pipeline
        .steps
        .iter()
        .flat_map(|plan| plan.after.iter().filter(|dep| dep.step_id == completed.step_id).map(move |dep| (plan, dep.kind)));
    let mut ready = Vec::new();
    for (plan, kind) in downstream {
        let Some(step) = schedule.steps.iter().find(|s| s.step_id == plan.step_id) else { continue };
        for p in &step.partitions {
            let follows = kind == DependencyKind::Barrier || p.partition.shard == completed.shard;
            if follows && p.readiness.is_ready() && !ready.contains(&p.partition) {
                ready.push(p.partition.clone());
            }
        }
    }
    ready
}

/// The readiness of one stored partition, its upstream steps judged already.
fn judge(
    pipeline: &PipelineDoc,
    plan: &StepPlan,
    doc: &PartitionDoc,
    judged: &BTreeMap<&StepId, Judged>,
    now: Timestamp,
    lease: &LeaseConfig,
    policy: &SchedulePolicy,
) -> Readiness {
    let lease_status = LeaseStatus::of(doc.lease.as_ref(), now, lease);
    let held = match (lease_status, doc.lease.as_ref()) {
        (LeaseStatus::Held { expires_at }, Some(l)) => Some(Readiness::Held { worker_id: l.worker_id.clone(), until: expires_at }),
        _ => None,
    };
    if doc.run_id != pipeline.run_id {
        return held.unwrap_or(Readiness::OtherRun);
    }
    let failures = doc.failures;
    match &doc.status {
        StepStatus::Completed { .. } => return Readiness::Completed,
        StepStatus::Paused => return Readiness::Paused,
        StepStatus::Failed { error, retryable, .. } if !retryable || failures >= policy.max_attempts => {
            return Readiness::Failed { error: error.clone(), failures };
        }
        _ => {}
    }
    if let Some(held) = held {
        return held;
    }
    let (mut blocked, mut waiting) = (Names::default(), Names::default());
    for dep in &plan.after {
        // Judged already unless the plan is invalid (an unknown step, a
        // cycle): an edge is never ignored, the step waits.
        let Some(up) = judged.get(&dep.step_id) else {
            waiting.push(alloc::format!("{} (not schedulable: the plan is invalid)", dep.step_id));
            continue;
        };
        let upstream: Vec<&(PartitionId, Readiness)> = match dep.kind {
            DependencyKind::Barrier => up.slots.iter().collect(),
            DependencyKind::Aligned => up.by_shard(doc.shard).into_iter().collect(),
        };
        if upstream.is_empty() {
            waiting.push(alloc::format!("{} (no partitions)", dep.step_id));
        }
        for (id, r) in upstream {
            if r.is_dead() {
                blocked.push(id.to_string());
            } else if !r.is_done() {
                waiting.push(id.to_string());
            }
        }
    }
    if blocked.count > 0 {
        return Readiness::Blocked { by: blocked.names, count: blocked.count };
    }
    if waiting.count > 0 {
        return Readiness::Waiting { on: waiting.names, count: waiting.count };
    }
    if let StepStatus::Failed { failed_at, .. } = &doc.status {
        let until = failed_at.plus(policy.backoff(failures));
        if now < until {
            return Readiness::Backoff { until, failures };
        }
    }
    Readiness::Ready { takeover: matches!(lease_status, LeaseStatus::Expired { .. }) }
}

/// The first [`NAMED_UPSTREAM`] names and how many there were.
#[derive(Default)]
struct Names {
    names: Vec<String>,
    count: usize,
}

impl Names {
    fn push(&mut self, name: String) {
        self.count += 1;
        if self.names.len() < NAMED_UPSTREAM {
            self.names.push(name);
        }
    }
}

fn step_readiness(step_id: &StepId, judged: Judged) -> StepReadiness {
    let count = |f: fn(&Readiness) -> bool| judged.slots.iter().filter(|(_, r)| f(r)).count();
    StepReadiness {
        step_id: step_id.clone(),
        total: judged.slots.len(),
        completed: count(Readiness::is_done),
        running: count(|r| matches!(r, Readiness::Held { .. })),
        ready: count(Readiness::is_ready),
        partitions: judged.slots.into_iter().map(|(partition, readiness)| PartitionReadiness { partition, readiness }).collect(),
    }
}

/// The rule on [`Schedule::status`].
fn pipeline_status(all: &[&Readiness], started: bool) -> StatusKind {
    let any = |f: &dyn Fn(&Readiness) -> bool| all.iter().any(|r| f(r));
    if any(&|r| matches!(r, Readiness::Failed { .. })) {
        StatusKind::Failed
    } else if !all.is_empty() && all.iter().all(|r| r.is_done()) {
        StatusKind::Completed
    } else if any(&|r| matches!(r, Readiness::Held { .. } | Readiness::Backoff { .. })) {
        StatusKind::Running
    } else if any(&|r| matches!(r, Readiness::Paused)) && !any(&|r| r.is_ready()) {
        StatusKind::Paused
    } else if started || any(&|r| r.is_done()) {
        StatusKind::Running
    } else {
        StatusKind::Pending
    }
}

/// A small deterministic generator seeded by the caller's randomness.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Fisher–Yates.
fn shuffle<T>(items: &mut [T], rng: &mut SplitMix) {
    for i in (1..items.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
