//! Deterministic simulation of whole pipelines: random DAGs of 2–6 steps
//! (1–4 shards each, barrier and aligned edges, fan-out and fan-in), run by
//! several virtual workers with skewed clocks over an in-test conditional
//! store that drops requests and loses responses after applying them.
//! Workers crash (losing all memory, restarting under the same id) or drop a
//! write mid-flight; an operator asks holders to stop. Every worker picks
//! with [`schedule`], claims with `Update<Claim>` and writes through its
//! [`Session`]: checkpoints, heartbeats, releases, completions, retryable
//! and permanent failures. Then the workers keep running without faults,
//! time passing backoffs and dead leases, until the scheduler says the
//! pipeline is finished.
//!
//! Properties:
//! - a claim lands only when every upstream partition it depends on is
//!   Completed in the store at that instant (checked by the store as the
//!   claim's PUT lands);
//! - nothing is ever written to a completed partition;
//! - no double counting: each partition's stored record count is the sum of
//!   the deltas of exactly the writes that landed on it, and every write
//!   reported landed did land;
//! - with only retryable failures (and attempts to spare) everything
//!   completes;
//! - a permanent failure (non-retryable, or `max_attempts` used up) blocks
//!   exactly its transitive downstream, which was never claimed, and
//!   everything else completes; the scheduler reports exactly that.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use oxiflow_core::*;
use proptest::prelude::*;
use support::{etag, Driver, Fault, OpAction};

mod support;

const PIPELINE: &str = "dag";
const RUN: &str = "run-1";
const CASES: u32 = 3000;

fn config(max_attempts: u32) -> Config {
    Config {
        lease: support::short_leases(),
        schedule: SchedulePolicy { retry_base: Duration::from_millis(50), retry_max: Duration::from_millis(400), max_attempts },
        ..Config::default()
    }
}

/// Coverage across all cases.
mod seen {
    use super::*;
    pub(crate) static CASES_COMPLETED: AtomicU64 = AtomicU64::new(0);
    pub(crate) static CASES_FAILED: AtomicU64 = AtomicU64::new(0);
    pub(crate) static CLAIMS: AtomicU64 = AtomicU64::new(0);
    pub(crate) static GATED_CLAIMS: AtomicU64 = AtomicU64::new(0);
    pub(crate) static UPSTREAM_CHECKED: AtomicU64 = AtomicU64::new(0);
    pub(crate) static TAKEOVERS: AtomicU64 = AtomicU64::new(0);
    pub(crate) static OWN_RECLAIMS: AtomicU64 = AtomicU64::new(0);
    pub(crate) static LOST_RESPONSES: AtomicU64 = AtomicU64::new(0);
    pub(crate) static DROPPED_REQUESTS: AtomicU64 = AtomicU64::new(0);
    pub(crate) static REPLAYS: AtomicU64 = AtomicU64::new(0);
    pub(crate) static CRASHES: AtomicU64 = AtomicU64::new(0);
    pub(crate) static ABANDONED: AtomicU64 = AtomicU64::new(0);
    pub(crate) static FENCED: AtomicU64 = AtomicU64::new(0);
    pub(crate) static LANDED_THEN_TAKEN_TOO_OFTEN: AtomicU64 = AtomicU64::new(0);
    pub(crate) static STOPS: AtomicU64 = AtomicU64::new(0);
    pub(crate) static RETRYABLE_FAILURES: AtomicU64 = AtomicU64::new(0);
    pub(crate) static PERMANENT_FAILURES: AtomicU64 = AtomicU64::new(0);
    pub(crate) static EXHAUSTED: AtomicU64 = AtomicU64::new(0);
    pub(crate) static BLOCKED_AT_END: AtomicU64 = AtomicU64::new(0);
    pub(crate) static PICKS_IN_BACKOFF: AtomicU64 = AtomicU64::new(0);
    pub(crate) static PICKS_NOTHING: AtomicU64 = AtomicU64::new(0);
    pub(crate) static ALIGNED_EDGES: AtomicU64 = AtomicU64::new(0);
    pub(crate) static BARRIER_EDGES: AtomicU64 = AtomicU64::new(0);
    pub(crate) static FAN_IN: AtomicU64 = AtomicU64::new(0);
    pub(crate) static FAN_OUT: AtomicU64 = AtomicU64::new(0);
    pub(crate) static PARTITIONS: AtomicU64 = AtomicU64::new(0);

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
    pub(crate) fn one(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

// ------------------------------------------------------------- the plan ----

/// Step `i` may depend on any step `j < i`; the plan lists them shuffled, so
/// the scheduler's dependency order is exercised, not the plan order.
fn build_plan(shards: &[Option<u32>], edges: &[(bool, bool)], order: &[usize]) -> Vec<StepPlan> {
    let name = |i: usize| StepId::new(format!("s{i}")).unwrap();
    let mut plans: Vec<StepPlan> = (0..shards.len()).map(|i| StepPlan::new(name(i), shards[i])).collect();
    let mut k = 0;
    for i in 1..shards.len() {
        for j in 0..i {
            let (present, aligned) = edges[k];
            k += 1;
            if !present {
                continue;
            }
            let can_align = shards[i].is_some() && shards[i] == shards[j];
            plans[i].after.push(if aligned && can_align { Dependency::aligned(name(j)) } else { Dependency::barrier(name(j)) });
        }
    }
    order.iter().map(|&i| plans[i].clone()).collect()
}

fn plan_strategy() -> impl Strategy<Value = Vec<StepPlan>> {
    let shard_count = prop_oneof![2 => Just(None), 1 => Just(Some(1u32)), 4 => Just(Some(2)), 2 => Just(Some(3)), 1 => Just(Some(4))];
    (2..=6usize)
        .prop_flat_map(move |n| {
            (
                prop::collection::vec(shard_count.clone(), n),
                prop::collection::vec((prop::bool::weighted(0.45), prop::bool::weighted(0.7)), n * (n - 1) / 2),
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
            )
        })
        .prop_map(|(shards, edges, order)| build_plan(&shards, &edges, &order))
}

/// What can go wrong, besides the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Only retryable failures, attempts to spare: everything must complete.
    RetryOnly,
    /// Non-retryable failures too.
    Permanent,
    /// Only retryable failures, but `max_attempts` is small.
    Exhaust(u32),
}

impl Mode {
    fn max_attempts(self) -> u32 {
        match self {
            Mode::Exhaust(n) => n,
            _ => 1_000_000,
        }
    }
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::RetryOnly), Just(Mode::Permanent), (1..=3u32).prop_map(Mode::Exhaust)]
}

// ------------------------------------------------------------ schedules ----

#[derive(Debug, Clone)]
enum Step {
    /// Worker `worker` takes its next action; `choice` picks what it does.
    Act { worker: usize, fault: Fault, choice: u8, records: u64, random: u64 },
    /// Real time passes.
    Advance { ms: i64 },
    /// The worker dies and restarts with no memory, under the same id; its
    /// request in flight may still land.
    Crash { worker: usize, deliver: bool },
    /// The worker drops its write in flight but keeps its session.
    Abandon { worker: usize, deliver: bool },
    /// An operator asks the worker to stop (whatever it holds).
    Stop { worker: usize },
}

fn step() -> impl Strategy<Value = Step> {
    let fault = prop_oneof![8 => Just(Fault::None), 1 => Just(Fault::DropRequest), 1 => Just(Fault::LoseResponse)];
    prop_oneof![
        24 => (0..4usize, fault, any::<u8>(), 1..50u64, any::<u64>())
            .prop_map(|(worker, fault, choice, records, random)| Step::Act { worker, fault, choice, records, random }),
        4 => (1..500i64).prop_map(|ms| Step::Advance { ms }),
        1 => (0..4usize, any::<bool>()).prop_map(|(worker, deliver)| Step::Crash { worker, deliver }),
        1 => (0..4usize, any::<bool>()).prop_map(|(worker, deliver)| Step::Abandon { worker, deliver }),
        1 => (0..4usize).prop_map(|worker| Step::Stop { worker }),
    ]
}

// ---------------------------------------------------------------- store ----

fn decode(key: &str, body: &[u8]) -> PartitionDoc {
    codec::decode(key, body, &Limits::default()).expect("drivers write decodable documents")
}

/// A conditional store that knows the plan, so it can check each claim as
/// it lands, and the ground truth of which writes landed.
struct Store {
    objects: BTreeMap<String, (Vec<u8>, u64, PartitionDoc)>,
    next_etag: u64,
    /// Partition key → the keys of the upstream partitions it depends on.
    upstream: BTreeMap<String, Vec<String>>,
    /// Partition key → ids of the writes (claims included) that landed on it.
    landed: BTreeMap<String, BTreeSet<u64>>,
    /// Partition key → claims landed on it.
    claims: BTreeMap<String, u64>,
}

impl Store {
    fn apply(&mut self, request: Request) -> Response {
        match request {
            Request::Get { key } => {
                Response::Object(self.objects.get(&key).map(|(body, tag, _)| Object { body: body.clone(), version: etag(*tag) }))
            }
            Request::PutIfAbsent { key, body } => {
                if self.objects.contains_key(&key) {
                    return Response::AlreadyExists;
                }
                self.land(key, body)
            }
            Request::PutIfMatch { key, body, version } => match self.objects.get(&key) {
                Some((_, tag, _)) if etag(*tag) == version => self.land(key, body),
                _ => Response::Precondition,
            },
        }
    }

    fn land(&mut self, key: String, body: Vec<u8>) -> Response {
        let new = decode(&key, &body);
        if let Some(old) = self.objects.get(&key).map(|(_, _, d)| d.clone()) {
            assert!(
                !matches!(old.status, StepStatus::Completed { .. }),
                "a write landed on the completed partition {key}: {:?} -> {:?}",
                old.status,
                new.status
            );
            assert!(new.records_processed >= old.records_processed, "records went backwards on {key}");
            assert!(new.version > old.version, "version did not grow on {key}");
            let old_epoch = old.lease.as_ref().map_or(0, |l| l.epoch);
            if let Some(l) = &new.lease {
                assert!(l.epoch >= old_epoch, "the epoch went back on {key}");
                if new.lease != old.lease {
                    self.landed.entry(key.clone()).or_default().insert(l.last_write);
                }
                if l.epoch > old_epoch {
                    self.claim_landed(&key, old.lease.as_ref(), l);
                }
            }
        }
        self.next_etag += 1;
        self.objects.insert(key, (body, self.next_etag, new));
        Response::Written(etag(self.next_etag))
    }

    /// The property: at the instant a claim lands, every upstream partition
    /// is Completed in this run.
    fn claim_landed(&mut self, key: &str, old: Option<&Lease>, new: &Lease) {
        seen::one(&seen::CLAIMS);
        *self.claims.entry(key.to_string()).or_default() += 1;
        let upstream = &self.upstream[key];
        for up in upstream {
            let doc = self.objects.get(up).map(|(_, _, d)| d);
            let done = doc.is_some_and(|d| matches!(d.status, StepStatus::Completed { .. }) && d.run_id.as_str() == RUN);
            assert!(done, "{key} was claimed by {} while its upstream {up} is {:?}", new.worker_id, doc.map(|d| &d.status));
        }
        if !upstream.is_empty() {
            seen::one(&seen::GATED_CLAIMS);
            seen::add(&seen::UPSTREAM_CHECKED, upstream.len() as u64);
        }
        if let Some(old) = old.filter(|l| l.released_at.is_none()) {
            seen::one(if old.worker_id == new.worker_id { &seen::OWN_RECLAIMS } else { &seen::TAKEOVERS });
        }
    }

    fn docs(&self) -> Vec<PartitionDoc> {
        self.objects.values().map(|(_, _, d)| d.clone()).collect()
    }

    fn doc(&self, key: &str) -> &PartitionDoc {
        &self.objects[key].2
    }
}

// -------------------------------------------------------------- workers ----

struct Worker {
    id: WorkerId,
    skew: i64,
    /// The documents as last read; stale until refreshed.
    snapshot: Option<Vec<PartitionDoc>>,
    claim: Option<Update<Claim<PartitionDoc>>>,
    session: Option<Session>,
    /// The write id of the session write in progress.
    writing: Option<(u64, Intent, u64)>,
    in_flight: Option<Request>,
    sleeping: bool,
    /// A stop request was honoured but its release is unresolved: settle it.
    stopping: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Checkpoint,
    Heartbeat,
    Complete,
    Release,
    FailRetryable,
    FailPermanent,
}

struct Sim {
    now: i64,
    mode: Mode,
    config: Config,
    pipeline: PipelineDoc,
    /// Every partition key of the plan, with its partition id.
    partitions: BTreeMap<String, PartitionId>,
    store: Store,
    workers: Vec<Worker>,
    next_write_id: u64,
    /// Records added by each write id issued.
    deltas: BTreeMap<u64, u64>,
    /// Write ids a session reported landed.
    confirmed: BTreeSet<u64>,
}

fn key_of(p: &PartitionId) -> String {
    keys::partition_doc(&PipelineId::new(PIPELINE).unwrap(), p)
}

impl Sim {
    fn new(plan: Vec<StepPlan>, mode: Mode, skews: &[i64]) -> Self {
        plan::validate(&plan).expect("the generated plan is a valid DAG");
        let pipeline = PipelineDoc::new(PipelineId::new(PIPELINE).unwrap(), RunId::new(RUN).unwrap(), plan, Timestamp::from_millis(0))
            .expect("a valid plan");
        let mut partitions = BTreeMap::new();
        let mut upstream = BTreeMap::new();
        for s in &pipeline.steps {
            for p in s.partitions() {
                let mut ups = Vec::new();
                for dep in &s.after {
                    let up = pipeline.step(&dep.step_id).unwrap();
                    match dep.kind {
                        DependencyKind::Barrier => ups.extend(up.partitions().iter().map(key_of)),
                        DependencyKind::Aligned => ups.push(key_of(&PartitionId { step_id: dep.step_id.clone(), shard: p.shard })),
                    }
                }
                upstream.insert(key_of(&p), ups);
                partitions.insert(key_of(&p), p);
            }
        }
        let config = config(mode.max_attempts());
        let mut store = Store { objects: BTreeMap::new(), next_etag: 0, upstream, landed: BTreeMap::new(), claims: BTreeMap::new() };
        for (key, p) in &partitions {
            let doc = PartitionDoc::new(pipeline.pipeline_id.clone(), p.clone(), pipeline.run_id.clone(), Timestamp::from_millis(0));
            let committed = run_to_end(&mut store, Update::new(key, Create(doc), config), Timestamp::from_millis(0));
            assert!(committed.expect("create").wrote);
        }
        let workers = skews
            .iter()
            .enumerate()
            .map(|(i, &skew)| Worker {
                id: WorkerId::new(format!("w{i}")).unwrap(),
                skew,
                snapshot: None,
                claim: None,
                session: None,
                writing: None,
                in_flight: None,
                sleeping: false,
                stopping: false,
            })
            .collect();
        Sim {
            now: 1_000,
            mode,
            config,
            pipeline,
            partitions,
            store,
            workers,
            next_write_id: 1,
            deltas: BTreeMap::new(),
            confirmed: BTreeSet::new(),
        }
    }

    fn local(&self, w: usize) -> Timestamp {
        Timestamp::from_millis(self.now + self.workers[w].skew)
    }

    fn write_id(&mut self) -> u64 {
        self.next_write_id += 1;
        self.next_write_id
    }

    fn step(&mut self, step: &Step) {
        match *step {
            Step::Advance { ms } => self.now += ms,
            Step::Crash { worker, deliver } => {
                let w = worker % self.workers.len();
                seen::one(&seen::CRASHES);
                if let (true, Some(req)) = (deliver, self.workers[w].in_flight.take()) {
                    self.store.apply(req);
                }
                let worker = &mut self.workers[w];
                worker.snapshot = None;
                worker.claim = None;
                worker.session = None;
                worker.writing = None;
                worker.in_flight = None;
                worker.sleeping = false;
                worker.stopping = false;
            }
            Step::Abandon { worker, deliver } => {
                let w = worker % self.workers.len();
                if self.workers[w].writing.is_none() {
                    return;
                }
                seen::one(&seen::ABANDONED);
                if let (true, Some(req)) = (deliver, self.workers[w].in_flight.take()) {
                    self.store.apply(req);
                }
                let worker = &mut self.workers[w];
                worker.writing = None;
                worker.in_flight = None;
                worker.sleeping = false;
            }
            Step::Stop { worker } => self.request_stop(worker % self.workers.len()),
            Step::Act { worker, fault, choice, records, random } => {
                self.act(worker % self.workers.len(), fault, choice, records, random);
            }
        }
    }

    /// The operator's stop request, on whatever the worker holds, delivered
    /// whole (it is not the subject here).
    fn request_stop(&mut self, w: usize) {
        let who = self.workers[w].id.clone();
        let held = self
            .store
            .objects
            .iter()
            .find(|(_, (_, _, d))| d.lease.as_ref().is_some_and(|l| l.worker_id == who && l.released_at.is_none()));
        let Some((key, _)) = held else { return };
        let key = key.clone();
        let op = Update::new(&key, RequestStop::<PartitionDoc>::new(who, WorkerId::new("ops").unwrap()), self.config);
        run_to_end(&mut self.store, op, Timestamp::from_millis(self.now)).expect("a stop request");
    }

    fn act(&mut self, w: usize, fault: Fault, choice: u8, records: u64, random: u64) {
        let now = self.local(w);
        let action = if let Some(req) = self.workers[w].in_flight.take() {
            let response = match fault {
                Fault::None => self.store.apply(req),
                Fault::DropRequest => {
                    seen::one(&seen::DROPPED_REQUESTS);
                    Response::Unavailable { reason: "dropped".into() }
                }
                Fault::LoseResponse => {
                    seen::one(&seen::LOST_RESPONSES);
                    self.store.apply(req);
                    Response::Unavailable { reason: "response lost".into() }
                }
            };
            Some(self.drive(w, |d| d.handle(response, now, random)))
        } else if self.workers[w].sleeping {
            self.workers[w].sleeping = false;
            Some(self.drive(w, |d| d.wake(now)))
        } else if self.workers[w].session.is_some() {
            Some(self.begin_write(w, choice, records, now))
        } else {
            self.pick_and_claim(w, choice, random, now)
        };
        if let Some(action) = action {
            self.follow(w, action);
        }
    }

    fn drive(&mut self, w: usize, f: impl FnOnce(&mut dyn Driver) -> OpAction) -> OpAction {
        let worker = &mut self.workers[w];
        match (&mut worker.claim, &mut worker.session) {
            (Some(claim), _) => f(claim),
            (None, Some(session)) => f(session),
            _ => unreachable!("a worker with a request in flight has an operation"),
        }
    }

    /// Asks the scheduler, on the worker's (possibly stale) snapshot and by
    /// its own clock, and claims one of the best partitions.
    fn pick_and_claim(&mut self, w: usize, choice: u8, random: u64, now: Timestamp) -> Option<OpAction> {
        if self.workers[w].snapshot.is_none() || choice.is_multiple_of(4) {
            self.workers[w].snapshot = Some(self.store.docs());
        }
        let docs = self.workers[w].snapshot.as_ref().unwrap();
        let me = self.workers[w].id.clone();
        let plan = schedule(&self.pipeline, docs, now, Some(&me), &self.config.lease, &self.config.schedule, random);
        if plan.steps.iter().flat_map(|s| &s.partitions).any(|p| matches!(p.readiness, Readiness::Backoff { .. })) {
            seen::one(&seen::PICKS_IN_BACKOFF);
        }
        if plan.claimable.is_empty() {
            seen::one(&seen::PICKS_NOTHING);
            self.workers[w].snapshot = None;
            return None;
        }
        let pick = &plan.claimable[usize::from(choice) % plan.claimable.len().min(2)];
        let write_id = self.write_id();
        let mut claim = Update::new(key_of(pick), Claim::new(me, write_id), self.config);
        let action = claim.start(now);
        self.workers[w].claim = Some(claim);
        Some(OpAction::Claim(action))
    }

    fn begin_write(&mut self, w: usize, choice: u8, records: u64, now: Timestamp) -> OpAction {
        let intent = if self.workers[w].stopping {
            Intent::Release
        } else {
            match choice % 100 {
                0..=44 => Intent::Checkpoint,
                45..=64 => Intent::Complete,
                65..=74 => Intent::Heartbeat,
                75..=84 => Intent::FailRetryable,
                85..=89 if self.mode == Mode::Permanent => Intent::FailPermanent,
                85..=89 => Intent::Checkpoint,
                _ => Intent::Release,
            }
        };
        self.begin(w, intent, records, now)
    }

    fn begin(&mut self, w: usize, intent: Intent, records: u64, now: Timestamp) -> OpAction {
        let write_id = self.write_id();
        let records = if intent == Intent::Heartbeat { 0 } else { records };
        let progress = Progress { add_records: records, ..Progress::default() };
        let finish = match intent {
            Intent::Checkpoint | Intent::Heartbeat => None,
            Intent::Complete => Some(Finish::Complete),
            Intent::Release => Some(Finish::Release),
            Intent::FailRetryable => Some(Finish::Fail { error: "upstream 503".into(), retryable: true }),
            Intent::FailPermanent => Some(Finish::Fail { error: "bad record".into(), retryable: false }),
        };
        self.deltas.insert(write_id, records);
        let worker = &mut self.workers[w];
        let session = worker.session.as_mut().expect("a session");
        if session.is_unresolved() {
            seen::one(&seen::REPLAYS);
        }
        let claims = self.store.claims.get(session.key()).copied().unwrap_or(0);
        worker.writing = Some((write_id, intent, claims));
        OpAction::Write(session.begin(progress, finish, write_id, now))
    }

    fn follow(&mut self, w: usize, action: OpAction) {
        let now = self.local(w);
        let config = self.config;
        let worker = &mut self.workers[w];
        match action {
            OpAction::Claim(Action::Send(r)) | OpAction::Write(Action::Send(r)) => worker.in_flight = Some(r),
            OpAction::Claim(Action::Sleep(_)) | OpAction::Write(Action::Sleep(_)) => worker.sleeping = true,
            OpAction::Claim(Action::Done(result)) => {
                let claim = worker.claim.take().expect("a claim in progress");
                match result {
                    Ok(c) => worker.session = Some(Session::claimed(claim.key(), c, config, now)),
                    // Lost a race, or the snapshot was stale: read again.
                    Err(Error::LeaseHeld { .. } | Error::InvalidTransition { .. } | Error::Conflict { .. } | Error::Unavailable { .. }) => {
                        worker.snapshot = None;
                    }
                    Err(e) => panic!("unexpected claim outcome for {}: {e}", worker.id),
                }
            }
            OpAction::Write(Action::Done(result)) => {
                let (write_id, intent, claims_before) = worker.writing.take().expect("a session write in progress");
                let session = worker.session.as_ref().expect("a session");
                let claims_since = self.store.claims.get(session.key()).copied().unwrap_or(0) - claims_before;
                // An outcome never calls a landed write fenced, nor a write
                // that did not land landed. The lease remembers the last
                // eight holders, so only after more claims than that could a
                // landing go unseen; counted, never expected here.
                let did_land = self.store.landed.values().any(|ids| ids.contains(&write_id));
                match &result {
                    Ok(w) => assert_eq!(w.landed, did_land, "{} write {write_id} ({intent:?}) reported landed={}", worker.id, w.landed),
                    Err(Error::Fenced { .. }) if did_land && claims_since > oxiflow_core::lease::PREVIOUS_HOLDERS as u64 => {
                        seen::one(&seen::LANDED_THEN_TAKEN_TOO_OFTEN)
                    }
                    Err(Error::Fenced { .. } | Error::Expired { .. }) => {
                        assert!(
                            !did_land,
                            "{} write {write_id} ({intent:?}) landed but was reported fenced ({result:?}); {claims_since} claims since",
                            worker.id
                        )
                    }
                    Err(_) => {}
                }
                match result {
                    Ok(written) => {
                        if written.landed {
                            self.confirmed.insert(write_id);
                            match intent {
                                Intent::FailRetryable => seen::one(&seen::RETRYABLE_FAILURES),
                                Intent::FailPermanent => seen::one(&seen::PERMANENT_FAILURES),
                                _ => {}
                            }
                        }
                        if written.stop.is_some() {
                            seen::one(&seen::STOPS);
                            worker.stopping = true;
                        }
                        if session.is_released() {
                            worker.session = None;
                            worker.stopping = false;
                        }
                    }
                    Err(Error::Fenced { .. } | Error::Expired { .. }) => {
                        seen::one(&seen::FENCED);
                        worker.session = None;
                        worker.stopping = false;
                    }
                    // Unsure whether it landed: the session replays it first.
                    Err(Error::Unavailable { .. } | Error::Conflict { .. }) => {}
                    Err(e) => panic!("unexpected write outcome for {} ({intent:?}): {e}", worker.id),
                }
            }
        }
    }

    fn busy(&self, w: usize) -> bool {
        let worker = &self.workers[w];
        worker.in_flight.is_some() || worker.sleeping || worker.claim.is_some()
    }

    /// Drives worker `w`'s operation in progress to its end, without faults.
    fn settle(&mut self, w: usize) {
        for _ in 0..1_000 {
            if !self.busy(w) {
                return;
            }
            self.act(w, Fault::None, 1, 0, 0);
        }
        panic!("worker {w}'s operation does not end");
    }

    /// The workers keep running, without faults, time passing their
    /// backoffs and dead workers' leases, until the pipeline is finished.
    fn drain(&mut self) {
        for _round in 0..500 {
            for w in 0..self.workers.len() {
                self.settle(w);
                if self.workers[w].session.is_none() {
                    let now = self.local(w);
                    self.workers[w].snapshot = None;
                    match self.pick_and_claim(w, 0, self.now as u64 ^ w as u64, now) {
                        Some(action) => self.follow(w, action),
                        None => continue,
                    }
                    self.settle(w);
                }
                if self.workers[w].session.is_some() {
                    let now = self.local(w);
                    let intent = if self.workers[w].stopping { Intent::Release } else { Intent::Complete };
                    let action = self.begin(w, intent, 1, now);
                    self.follow(w, action);
                    self.settle(w);
                }
            }
            let plan = self.schedule_now();
            if plan.is_finished() && self.workers.iter().all(|w| w.session.is_none()) {
                return;
            }
            self.now += 150;
        }
        panic!("the pipeline did not finish: {:#?}", self.schedule_now());
    }

    fn schedule_now(&self) -> Schedule {
        schedule(&self.pipeline, &self.store.docs(), Timestamp::from_millis(self.now), None, &self.config.lease, &self.config.schedule, 0)
    }

    fn check_totals(&self) {
        for key in self.partitions.keys() {
            let landed = self.store.landed.get(key);
            let sum: u64 = landed.iter().flat_map(|ids| ids.iter()).filter_map(|id| self.deltas.get(id)).sum();
            assert_eq!(self.store.doc(key).records_processed, sum, "{key}: the stored count differs from the landed writes' deltas");
        }
        let all_landed: BTreeSet<u64> = self.store.landed.values().flatten().copied().collect();
        for id in &self.confirmed {
            assert!(all_landed.contains(id), "write {id} was reported landed but never landed");
        }
    }

    /// Failed for good, blocked exactly downstream of those, completed
    /// everywhere else; and the scheduler says so.
    fn check_outcome(&self) {
        let max = self.config.schedule.max_attempts;
        let dead: BTreeSet<&String> = self
            .partitions
            .keys()
            .filter(|k| {
                let d = self.store.doc(k);
                matches!(d.status, StepStatus::Failed { retryable, .. } if !retryable || d.failures >= max)
            })
            .collect();
        // Blocked: depends, directly or through blocked partitions, on a dead one.
        let mut blocked: BTreeSet<&String> = BTreeSet::new();
        loop {
            let more: Vec<&String> = self
                .partitions
                .keys()
                .filter(|k| !blocked.contains(k) && self.store.upstream[*k].iter().any(|u| dead.contains(u) || blocked.contains(u)))
                .collect();
            if more.is_empty() {
                break;
            }
            blocked.extend(more);
        }
        let plan = self.schedule_now();
        for (key, id) in &self.partitions {
            let doc = self.store.doc(key);
            let readiness = plan.readiness(id).expect("every planned partition is scheduled");
            if dead.contains(key) {
                assert!(matches!(readiness, Readiness::Failed { .. }), "{id} failed for good but is {readiness:?}");
                if let StepStatus::Failed { retryable: true, .. } = doc.status {
                    seen::one(&seen::EXHAUSTED);
                }
            } else if blocked.contains(key) {
                assert!(matches!(readiness, Readiness::Blocked { .. }), "{id} is downstream of a failure but {readiness:?}");
                assert_eq!(doc.status, StepStatus::Pending, "{id} is blocked, so it never ran");
                assert!(doc.attempts == 0 && doc.lease.is_none(), "{id} is blocked but was claimed: {doc:?}");
                seen::one(&seen::BLOCKED_AT_END);
            } else {
                assert!(matches!(doc.status, StepStatus::Completed { .. }), "{id} is not downstream of a failure but {:?}", doc.status);
                assert_eq!(readiness, &Readiness::Completed);
            }
        }
        assert!(plan.is_finished());
        if dead.is_empty() {
            assert_eq!(plan.status, StatusKind::Completed);
            seen::one(&seen::CASES_COMPLETED);
        } else {
            assert_eq!(plan.status, StatusKind::Failed);
            seen::one(&seen::CASES_FAILED);
        }
        if self.mode == Mode::RetryOnly {
            assert!(dead.is_empty(), "only retryable failures, attempts to spare: everything completes");
        }
        seen::add(&seen::PARTITIONS, self.partitions.len() as u64);
    }

    fn count_shape(&self) {
        let mut dependents: BTreeMap<&StepId, usize> = BTreeMap::new();
        for s in &self.pipeline.steps {
            for d in &s.after {
                *dependents.entry(&d.step_id).or_default() += 1;
                seen::one(if d.kind == DependencyKind::Aligned { &seen::ALIGNED_EDGES } else { &seen::BARRIER_EDGES });
            }
            if s.after.len() >= 2 {
                seen::one(&seen::FAN_IN);
            }
        }
        seen::add(&seen::FAN_OUT, dependents.values().filter(|&&n| n >= 2).count() as u64);
    }
}

fn run_to_end<M: Mutation<Doc = PartitionDoc>>(
    store: &mut Store,
    mut op: Update<M>,
    now: Timestamp,
) -> Result<Committed<PartitionDoc>, Error> {
    let mut action = op.start(now);
    loop {
        action = match action {
            Action::Send(r) => op.handle(store.apply(r), now, 0),
            Action::Sleep(_) => op.wake(now),
            Action::Done(result) => return result,
        };
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, max_shrink_iters: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Called by `pipelines_run_in_order_and_finish`, which then checks coverage.
    fn dag_pipelines_stay_ordered_and_finish(
        plan in plan_strategy(),
        mode in mode(),
        skews in prop::collection::vec(-100i64..=100, 2..=4),
        steps in prop::collection::vec(step(), 80..400),
    ) {
        let mut sim = Sim::new(plan, mode, &skews);
        sim.count_shape();
        for s in &steps {
            sim.step(s);
        }
        sim.check_totals();
        sim.drain();
        sim.check_totals();
        sim.check_outcome();
    }
}

#[test]
fn pipelines_run_in_order_and_finish() {
    dag_pipelines_stay_ordered_and_finish();
    use seen::*;
    println!(
        "pipeline simulation: {CASES} cases ({} completed, {} failed for good), {} partitions; edges: {} barrier, {} aligned, {} fan-in, {} fan-out steps",
        get(&CASES_COMPLETED),
        get(&CASES_FAILED),
        get(&PARTITIONS),
        get(&BARRIER_EDGES),
        get(&ALIGNED_EDGES),
        get(&FAN_IN),
        get(&FAN_OUT),
    );
    println!(
        "pipeline simulation: {} claims landed ({} gated by upstream, {} upstream partitions checked Completed as they landed), {} takeovers, {} own re-claims",
        get(&CLAIMS),
        get(&GATED_CLAIMS),
        get(&UPSTREAM_CHECKED),
        get(&TAKEOVERS),
        get(&OWN_RECLAIMS),
    );
    println!(
        "pipeline simulation: {} lost responses, {} dropped requests, {} replays, {} crashes, {} abandoned writes, {} fenced ({} of them landed before more claims than a lease remembers), {} stops honoured",
        get(&LOST_RESPONSES),
        get(&DROPPED_REQUESTS),
        get(&REPLAYS),
        get(&CRASHES),
        get(&ABANDONED),
        get(&FENCED),
        get(&LANDED_THEN_TAKEN_TOO_OFTEN),
        get(&STOPS),
    );
    println!(
        "pipeline simulation: {} retryable failures, {} permanent failures, {} retries exhausted, {} partitions blocked at the end, {} picks during a backoff, {} picks with nothing claimable",
        get(&RETRYABLE_FAILURES),
        get(&PERMANENT_FAILURES),
        get(&EXHAUSTED),
        get(&BLOCKED_AT_END),
        get(&PICKS_IN_BACKOFF),
        get(&PICKS_NOTHING),
    );
    let cases = u64::from(CASES);
    assert!(get(&CASES_COMPLETED) > cases / 4 && get(&CASES_FAILED) > cases / 10, "both outcomes must be common");
    assert!(get(&ALIGNED_EDGES) > cases / 4 && get(&BARRIER_EDGES) > cases && get(&FAN_IN) > cases / 4 && get(&FAN_OUT) > cases / 4);
    assert!(get(&GATED_CLAIMS) > cases * 3 && get(&UPSTREAM_CHECKED) > get(&GATED_CLAIMS), "claims behind upstream steps");
    assert!(get(&TAKEOVERS) > cases / 4 && get(&OWN_RECLAIMS) > cases / 20);
    assert!(get(&LOST_RESPONSES) > cases && get(&DROPPED_REQUESTS) > cases && get(&REPLAYS) > cases / 2);
    assert!(get(&ABANDONED) > cases / 4 && get(&FENCED) > cases / 10 && get(&STOPS) > cases / 10);
    assert!(get(&RETRYABLE_FAILURES) > cases && get(&PERMANENT_FAILURES) > cases / 10 && get(&EXHAUSTED) > cases / 20);
    assert!(get(&BLOCKED_AT_END) > cases / 10 && get(&PICKS_IN_BACKOFF) > cases / 4 && get(&PICKS_NOTHING) > cases);
}

/// The harness must see a violation: a worker that claims a partition
/// without asking the scheduler trips the store's upstream check.
#[test]
fn harness_detects_a_claim_before_its_upstream_completed() {
    let plan = vec![
        StepPlan::new(StepId::new("s0").unwrap(), Some(2)),
        StepPlan::new(StepId::new("s1").unwrap(), Some(2)).after(Dependency::aligned(StepId::new("s0").unwrap())),
    ];
    let mut sim = Sim::new(plan, Mode::RetryOnly, &[0, 0]);
    // s0@0 completes; s1@0 may then be claimed, s1@1 may not.
    let now = sim.local(0);
    let key = key_of(&PartitionId::parse("s0@0").unwrap());
    let c = run_to_end(&mut sim.store, Update::new(&key, Claim::new(sim.workers[0].id.clone(), 2), sim.config), now).unwrap();
    let mut session = Session::claimed(&key, c, sim.config, now);
    let mut write = session.write(Progress::default(), Some(Finish::Complete), 3);
    let mut action = write.start(now);
    while let Action::Send(r) = action {
        action = write.handle(sim.store.apply(r), now, 0);
    }
    assert!(matches!(action, Action::Done(Ok(Written { landed: true, .. }))), "{action:?}");
    let ok = PartitionId::parse("s1@0").unwrap();
    run_to_end(&mut sim.store, Update::new(key_of(&ok), Claim::new(sim.workers[1].id.clone(), 4), sim.config), now).unwrap();

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let early = PartitionId::parse("s1@1").unwrap();
        let _ = run_to_end(&mut sim.store, Update::new(key_of(&early), Claim::new(WorkerId::new("w1").unwrap(), 5), sim.config), now);
    }));
    let message = result.expect_err("a claim before its upstream completed must be detected");
    let text = message.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("s1@1") && text.contains("while its upstream"), "{text}");
}

/// The harness must see double counting: a store that applies a write
/// twice breaks the totals check.
#[test]
fn harness_detects_a_write_counted_twice() {
    let plan = vec![StepPlan::new(StepId::new("s0").unwrap(), None)];
    let mut sim = Sim::new(plan, Mode::RetryOnly, &[0]);
    let now = sim.local(0);
    let key = key_of(&PartitionId::parse("s0").unwrap());
    let claim_id = sim.write_id();
    let c = run_to_end(&mut sim.store, Update::new(&key, Claim::new(sim.workers[0].id.clone(), claim_id), sim.config), now).unwrap();
    sim.workers[0].session = Some(Session::claimed(&key, c, sim.config, now));
    let action = sim.begin(0, Intent::Checkpoint, 10, now);
    let OpAction::Write(Action::Send(request)) = action else { panic!("a checkpoint is one PUT") };
    sim.store.apply(request);
    sim.check_totals();
    // Tamper: the same delta again, as a store that applied it twice would.
    let (_, _, mut doc) = sim.store.objects[&key].clone();
    doc.records_processed += 10;
    let tampered = codec::encode(&key, &doc, &Limits::default()).unwrap();
    let tag = sim.store.objects[&key].1;
    sim.store.objects.insert(key.clone(), (tampered, tag, doc));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.check_totals()));
    assert!(result.is_err(), "the totals check must catch a double count");
}
