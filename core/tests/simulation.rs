//! Deterministic simulation: several virtual workers with skewed virtual
//! clocks share one partition through an in-test conditional store that can
//! drop a request or lose the response after applying it. Each worker claims
//! with an `Update` and then writes through its holder `Session`, exactly as
//! every runtime does. Proptest chooses the interleaving, the faults, the
//! clock jumps, crashes and abandoned writes (a driver dropped mid-write, as
//! a cancelled heartbeat is).
//!
//! Properties:
//! - never two workers that trust a lease at the same instant;
//! - a fenced writer never lands a write (the stored epoch never goes back);
//! - counters never go backwards;
//! - no lost update and no double count: the final record count equals the
//!   sum of the deltas of exactly the writes that landed, and every write
//!   reported successful landed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use oxiflow_core::*;
use proptest::prelude::*;
use support::{etag, Driver, Fault, OpAction};

mod support;

const KEY: &str = "pipelines/sim/partitions/work.json";

fn config() -> Config {
    Config { lease: support::short_leases(), ..Config::default() }
}

/// Coverage across all cases, so the test can show it exercised the hard paths.
static TAKEOVERS: AtomicU64 = AtomicU64::new(0);
static CHECKPOINTS: AtomicU64 = AtomicU64::new(0);
static LOST_RESPONSES: AtomicU64 = AtomicU64::new(0);
static REPLAYS: AtomicU64 = AtomicU64::new(0);
static ABANDONED: AtomicU64 = AtomicU64::new(0);
static FENCED: AtomicU64 = AtomicU64::new(0);

/// One scheduling decision.
#[derive(Debug, Clone)]
enum Step {
    /// Let worker `n` take its next action.
    Act { worker: usize, fault: Fault, records: u64, finish: bool },
    /// Real time passes.
    Advance { ms: i64 },
    /// Worker `n` crashes and restarts with no memory; an in-flight request
    /// may still land.
    Crash { worker: usize, deliver: bool },
    /// Worker `n` drops the driver of its write in flight but keeps its
    /// session (a cancelled task); the request may still land.
    Abandon { worker: usize, deliver: bool },
}

fn step() -> impl Strategy<Value = Step> {
    let fault = prop_oneof![6 => Just(Fault::None), 1 => Just(Fault::DropRequest), 1 => Just(Fault::LoseResponse)];
    prop_oneof![
        12 => (0..4usize, fault, 1..100u64, prop::bool::weighted(0.05)).prop_map(|(worker, fault, records, finish)| Step::Act { worker, fault, records, finish }),
        3 => (1..700i64).prop_map(|ms| Step::Advance { ms }),
        1 => (0..4usize, any::<bool>()).prop_map(|(worker, deliver)| Step::Crash { worker, deliver }),
        1 => (0..4usize, any::<bool>()).prop_map(|(worker, deliver)| Step::Abandon { worker, deliver }),
    ]
}

/// The store: bytes and an ETag counter per key, plus the ground truth the
/// properties are checked against.
#[derive(Default)]
struct Store {
    objects: BTreeMap<String, (Vec<u8>, u64)>,
    next_etag: u64,
    landed_writes: BTreeSet<u64>,
    max_epoch: u64,
}

impl Store {
    fn apply(&mut self, request: Request) -> Response {
        match request {
            Request::Get { key } => {
                Response::Object(self.objects.get(&key).map(|(body, tag)| Object { body: body.clone(), version: etag(*tag) }))
            }
            Request::PutIfAbsent { key, body } => {
                if self.objects.contains_key(&key) {
                    return Response::AlreadyExists;
                }
                self.land(key, body)
            }
            Request::PutIfMatch { key, body, version } => match self.objects.get(&key) {
                Some((_, tag)) if etag(*tag) == version => self.land(key, body),
                _ => Response::Precondition,
            },
        }
    }

    fn land(&mut self, key: String, body: Vec<u8>) -> Response {
        let new: PartitionDoc = codec::decode(&key, &body, &Limits::default()).expect("drivers write decodable documents");
        if let Some((old, _)) = self.objects.get(&key) {
            let old: PartitionDoc = codec::decode(&key, old, &Limits::default()).unwrap();
            assert!(
                new.records_processed >= old.records_processed,
                "records went backwards: {} -> {}",
                old.records_processed,
                new.records_processed
            );
            assert!(new.version > old.version, "version did not grow");
            if new.lease != old.lease {
                if let Some(l) = &new.lease {
                    assert!(l.epoch >= self.max_epoch, "a fenced writer landed: epoch {} after epoch {}", l.epoch, self.max_epoch);
                    self.max_epoch = l.epoch;
                    self.landed_writes.insert(l.last_write);
                }
            }
        }
        self.next_etag += 1;
        self.objects.insert(key, (body, self.next_etag));
        Response::Written(etag(self.next_etag))
    }

    fn doc(&self) -> PartitionDoc {
        codec::decode(KEY, &self.objects[KEY].0, &Limits::default()).unwrap()
    }
}

struct Worker {
    id: WorkerId,
    skew: i64,
    /// The partition we hold, once a claim landed.
    session: Option<Session>,
    claim: Option<Update<Claim<PartitionDoc>>>,
    /// The write id of the session write in progress, if any.
    writing: Option<u64>,
    in_flight: Option<Request>,
    sleeping: bool,
}

struct Sim {
    now: i64,
    store: Store,
    workers: Vec<Worker>,
    next_write_id: u64,
    /// Delta of every write id ever issued.
    deltas: BTreeMap<u64, u64>,
    /// Write ids whose operation reported success.
    confirmed: BTreeSet<u64>,
    config: Config,
}

impl Sim {
    fn new(skews: &[i64]) -> Self {
        let mut store = Store::default();
        let doc = PartitionDoc::new(
            PipelineId::new("sim").unwrap(),
            PartitionId::step(StepId::new("work").unwrap()),
            RunId::new("r").unwrap(),
            Timestamp::from_millis(0),
        );
        let mut create = Update::new(KEY, Create(doc), config());
        let Action::Send(req) = create.start(Timestamp::from_millis(0)) else { panic!() };
        let Action::Send(req) = create.handle(store.apply(req), Timestamp::from_millis(0), 0) else { panic!() };
        store.apply(req);
        let workers = skews
            .iter()
            .enumerate()
            .map(|(i, &skew)| Worker {
                id: WorkerId::new(format!("w{i}")).unwrap(),
                skew,
                session: None,
                claim: None,
                writing: None,
                in_flight: None,
                sleeping: false,
            })
            .collect();
        Sim { now: 1_000, store, workers, next_write_id: 1, deltas: BTreeMap::new(), confirmed: BTreeSet::new(), config: config() }
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
                if let (true, Some(req)) = (deliver, self.workers[w].in_flight.take()) {
                    self.store.apply(req);
                }
                let worker = &mut self.workers[w];
                worker.session = None;
                worker.claim = None;
                worker.writing = None;
                worker.in_flight = None;
                worker.sleeping = false;
            }
            Step::Abandon { worker, deliver } => {
                let w = worker % self.workers.len();
                if self.workers[w].writing.is_none() {
                    return;
                }
                ABANDONED.fetch_add(1, Relaxed);
                if let (true, Some(req)) = (deliver, self.workers[w].in_flight.take()) {
                    self.store.apply(req);
                }
                let worker = &mut self.workers[w];
                worker.writing = None;
                worker.in_flight = None;
                worker.sleeping = false;
            }
            Step::Act { worker, fault, records, finish } => self.act(worker % self.workers.len(), fault, records, finish),
        }
        self.check_single_trusted_holder();
    }

    fn act(&mut self, w: usize, fault: Fault, records: u64, finish: bool) {
        let now = self.local(w);
        let random = self.now as u64 ^ records;
        let action = if let Some(req) = self.workers[w].in_flight.take() {
            let response = match fault {
                Fault::None => self.store.apply(req),
                Fault::DropRequest => Response::Unavailable { reason: "dropped".into() },
                Fault::LoseResponse => {
                    LOST_RESPONSES.fetch_add(1, Relaxed);
                    self.store.apply(req);
                    Response::Unavailable { reason: "response lost".into() }
                }
            };
            self.drive(w, |d| d.handle(response, now, random))
        } else if self.workers[w].sleeping {
            self.workers[w].sleeping = false;
            self.drive(w, |d| d.wake(now))
        } else {
            self.start_op(w, records, finish, now)
        };
        self.follow(w, action);
    }

    /// Feeds the claim or the session write in progress.
    fn drive(&mut self, w: usize, f: impl FnOnce(&mut dyn Driver) -> OpAction) -> OpAction {
        let worker = &mut self.workers[w];
        match (&mut worker.claim, &mut worker.session) {
            (Some(claim), _) => f(claim),
            (None, Some(session)) => f(session),
            _ => unreachable!("a worker with a request in flight has an operation"),
        }
    }

    fn start_op(&mut self, w: usize, records: u64, finish: bool, now: Timestamp) -> OpAction {
        let config = self.config;
        let write_id = self.write_id();
        let worker = &mut self.workers[w];
        match worker.session.as_mut() {
            None => {
                let mut u = Update::new(KEY, Claim::new(worker.id.clone(), write_id), config);
                let a = u.start(now);
                worker.claim = Some(u);
                OpAction::Claim(a)
            }
            Some(session) => {
                if session.is_unresolved() {
                    REPLAYS.fetch_add(1, Relaxed);
                }
                let progress = Progress { add_records: records, ..Progress::default() };
                self.deltas.insert(write_id, records);
                worker.writing = Some(write_id);
                OpAction::Write(session.begin(progress, finish.then_some(Finish::Release), write_id, now))
            }
        }
    }

    /// Performs the driver's wish: remember the request, note a sleep, or
    /// take in the outcome.
    fn follow(&mut self, w: usize, action: OpAction) {
        let now = self.local(w);
        let worker = &mut self.workers[w];
        match action {
            OpAction::Claim(Action::Send(r)) | OpAction::Write(Action::Send(r)) => worker.in_flight = Some(r),
            OpAction::Claim(Action::Sleep(_)) | OpAction::Write(Action::Sleep(_)) => worker.sleeping = true,
            OpAction::Claim(Action::Done(result)) => {
                worker.claim = None;
                worker.session = match result {
                    Ok(c) => {
                        if c.doc.lease.as_ref().unwrap().epoch > 1 && c.wrote {
                            TAKEOVERS.fetch_add(1, Relaxed);
                        }
                        Some(Session::claimed(KEY, c, self.config, now))
                    }
                    Err(_) => None,
                };
            }
            OpAction::Write(Action::Done(result)) => {
                let write_id = worker.writing.take().expect("a session write in progress");
                match result {
                    Ok(written) => {
                        CHECKPOINTS.fetch_add(1, Relaxed);
                        if written.landed {
                            self.confirmed.insert(write_id);
                        }
                        if worker.session.as_ref().is_some_and(|s| s.is_released()) {
                            worker.session = None;
                        }
                    }
                    Err(Error::Fenced { .. } | Error::Expired { .. }) => {
                        FENCED.fetch_add(1, Relaxed);
                        worker.session = None;
                    }
                    // Unsure whether it landed: the session replays it (same
                    // id, fresh read) before the worker's next write.
                    Err(Error::Unavailable { .. } | Error::Conflict { .. }) => {}
                    Err(e) => panic!("unexpected outcome for worker {w}: {e}"),
                }
            }
        }
    }

    fn check_single_trusted_holder(&self) {
        let trusting: Vec<_> = self
            .workers
            .iter()
            .enumerate()
            .filter(|(i, w)| w.session.as_ref().is_some_and(|s| s.trusts(self.local(*i))))
            .map(|(i, w)| (i, w.session.as_ref().unwrap().lease().epoch))
            .collect();
        assert!(trusting.len() <= 1, "two workers trust the lease at t={}: {trusting:?}", self.now);
    }

    fn check_totals(&self) {
        let doc = self.store.doc();
        let landed: u64 = self.store.landed_writes.iter().filter_map(|id| self.deltas.get(id)).sum();
        assert_eq!(doc.records_processed, landed, "stored count differs from the landed writes' deltas");
        for id in &self.confirmed {
            assert!(self.store.landed_writes.contains(id), "write {id} reported success but never landed");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2500, max_shrink_iters: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Called by `simulation_reaches_the_hard_paths`, which then checks coverage.
    fn leases_and_checkpoints_stay_safe(
        skews in prop::collection::vec(-100i64..=100, 2..=4),
        steps in prop::collection::vec(step(), 50..400),
    ) {
        let mut sim = Sim::new(&skews);
        for s in &steps {
            sim.step(s);
        }
        sim.check_totals();
    }
}

/// Runs the property over 2,500 random schedules, then shows (and checks)
/// that they reached ≥ 10,000 claims and takeovers, lost responses and fencing.
#[test]
fn simulation_reaches_the_hard_paths() {
    leases_and_checkpoints_stay_safe();
    let (t, c, l, r, f) =
        (TAKEOVERS.load(Relaxed), CHECKPOINTS.load(Relaxed), LOST_RESPONSES.load(Relaxed), REPLAYS.load(Relaxed), FENCED.load(Relaxed));
    let a = ABANDONED.load(Relaxed);
    println!("simulation: {c} successful holder writes, {t} takeovers/re-claims, {l} lost responses, {r} unresolved writes replayed, {a} writes abandoned mid-flight, {f} fenced writers");
    assert!(
        t >= 10_000 && c > 1000 && l > 100 && r > 100 && a > 100 && f > 10,
        "the simulation must exercise takeovers, lost responses, replays, abandoned writes and fencing"
    );
}

/// The harness must be able to see a violation: with no skew allowance and
/// no safety margin, skewed clocks let two workers trust the lease at once.
#[test]
fn harness_detects_double_holders_when_timing_rules_are_broken() {
    let result = std::panic::catch_unwind(|| {
        let mut sim = Sim::new(&[-100, 100]);
        sim.config.lease.skew_allowance = Duration::ZERO;
        sim.config.lease.safety_margin = Duration::ZERO;
        let act = |worker| Step::Act { worker, fault: Fault::None, records: 1, finish: false };
        // w0 claims at local t=900 (get, put, response); w1's clock runs 200 ms ahead.
        for s in [act(0), act(0), act(0), Step::Advance { ms: 850 }, act(1), act(1), act(1)] {
            sim.step(&s);
        }
    });
    let message = result.expect_err("the double holder must be detected");
    let text = message.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("two workers trust the lease"), "{text}");
}
