//! The runner's rules on a store in memory with a clock the test moves: the
//! lease ends at the deadline, batches stop before it, continuations
//! resume from the bookmark, duplicates write nothing, completions hand off
//! exactly what became ready. (The example under `cargo lambda watch` on
//! S3 is examples/lambda-steps.)
#![allow(unreachable_pub, clippy::disallowed_methods)]

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use oxiflow_backends::{ObjectStoreBackend, ObjectStoreOptions, StateManager};
use oxiflow_core::{Config, Dependency, LeaseConfig, PartitionDoc, PartitionId, PipelineId, RunId, StepPlan, Timestamp};
use oxiflow_lambda::{Batch, BatchError, BatchInput, Invocation, Permanent, Runner, Step, StepEvent, StepOutcome};

const T0: i64 = 1_800_000_000_000;

fn part(s: &str) -> PartitionId {
    PartitionId::parse(s).unwrap()
}

/// The partitions and bookmarks each batch was called with.
type Seen = Arc<Mutex<Vec<(PartitionId, Option<String>)>>>;

/// A clock the test (and the handler) moves.
#[derive(Clone, Default)]
struct Clock(Arc<AtomicI64>);

impl Clock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(T0 + self.0.load(Ordering::SeqCst))
    }
    fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

/// Counts to `total` in batches of `size`, each taking `batch_ms` of the
/// test's clock; fails once at `fail_at` if set.
struct Counter {
    clock: Clock,
    total: u64,
    size: u64,
    batch_ms: i64,
    fail: Mutex<Option<(u64, bool)>>,
    seen: Seen,
}

#[async_trait]
impl Step for Counter {
    async fn batch(&self, input: BatchInput) -> Result<Batch, BatchError> {
        self.seen.lock().unwrap().push((input.partition.clone(), input.bookmark.clone()));
        let after: u64 = input.bookmark.as_deref().unwrap_or("0").parse()?;
        self.clock.advance(self.batch_ms);
        let fail = *self.fail.lock().unwrap();
        if let Some((at, permanent)) = fail {
            if after >= at {
                *self.fail.lock().unwrap() = None;
                let e: BatchError = format!("source unreachable after {after}").into();
                return Err(if permanent { Box::new(Permanent(e)) } else { e });
            }
        }
        let end = (after + self.size).min(self.total);
        let batch = Batch::new(end.to_string(), end - after);
        Ok(if end == self.total { batch.last() } else { batch })
    }
}

struct Rig {
    clock: Clock,
    manager: StateManager,
    pipeline: PipelineId,
    seen: Seen,
    requests: Arc<AtomicU64>,
}

fn lease() -> LeaseConfig {
    LeaseConfig {
        ttl: Duration::from_secs(30),
        heartbeat_interval: Duration::from_secs(10),
        skew_allowance: Duration::from_millis(500),
        safety_margin: Duration::from_millis(200),
    }
}

async fn rig() -> Rig {
    let clock = Clock::default();
    let store = Arc::new(ObjectStoreBackend::open("memory://", &ObjectStoreOptions::default()).unwrap());
    let config = Config { lease: lease(), ..Config::default() };
    let c = clock.clone();
    let counter = Arc::new(AtomicU64::new(1));
    let r = counter.clone();
    let manager = StateManager::new(store, config)
        .with_clock(Arc::new(move || c.now()))
        .with_random(Arc::new(move || r.fetch_add(0x9E37_79B9, Ordering::SeqCst)));
    let pipeline: PipelineId = "orders".parse().unwrap();
    let plan = vec![
        StepPlan::new("extract".parse().unwrap(), None),
        StepPlan::new("transform".parse().unwrap(), Some(2)).after(Dependency::barrier("extract".parse().unwrap())),
        StepPlan::new("load".parse().unwrap(), None).after(Dependency::barrier("transform".parse().unwrap())),
    ];
    manager.create_pipeline(&pipeline, &RunId::new("run-1").unwrap(), &plan).await.unwrap();
    Rig { clock, manager, pipeline, seen: Arc::default(), requests: Arc::default() }
}

impl Rig {
    fn runner(&self, total: u64, size: u64, batch_ms: i64) -> Runner<Counter> {
        let step = Counter { clock: self.clock.clone(), total, size, batch_ms, fail: Mutex::new(None), seen: self.seen.clone() };
        Runner::new(self.manager.clone(), step).with_release_margin(Duration::from_millis(300))
    }

    fn event(&self, partition: &str) -> StepEvent {
        StepEvent::start(self.pipeline.clone(), part(partition))
    }

    /// An invocation with `ms` left before its deadline.
    fn invocation(&self, id: &str, ms: i64) -> Invocation {
        self.requests.fetch_add(1, Ordering::SeqCst);
        Invocation { request_id: id.into(), deadline: Some(self.clock.now().plus(Duration::from_millis(ms as u64))) }
    }

    async fn doc(&self, partition: &str) -> PartitionDoc {
        let key = oxiflow_core::keys::partition_doc(&self.pipeline, &part(partition));
        self.manager.read::<PartitionDoc>(&key).await.unwrap().unwrap().0
    }
}

#[tokio::test]
async fn time_running_out_releases_with_progress_and_the_continuation_resumes_from_the_bookmark() {
    let rig = rig().await;
    // 100 ms batches, 1,000 ms to the deadline: the last write must begin
    // by 1000 − 200 (safety) − 300 (margin) = 500 ms, so batches begin at
    // 0…400 ms: five of them.
    let runner = rig.runner(1_000, 10, 100);
    let out = runner.invoke(rig.event("extract"), &rig.invocation("req-1", 1_000)).await.unwrap();
    let StepOutcome::Continue { partition, records_processed, batches, next } = out else { panic!("{out:?}") };
    assert_eq!((partition.to_string(), records_processed, batches), ("extract".into(), 50, 5));
    assert_eq!((next.partition.as_ref().map(|p| p.to_string()), next.hop), (Some("extract".into()), 1));
    let doc = rig.doc("extract").await;
    assert_eq!((doc.last_processed_id.as_deref(), doc.records_processed, doc.batch_number), (Some("50"), 50, 5));
    assert!(!doc.lease.as_ref().unwrap().is_open(), "released before the deadline");
    assert!(rig.clock.now() <= Timestamp::from_millis(T0 + 1_000 - 200), "the last write began while the lease was trusted");

    // The continuation starts where the bookmark is.
    let out = runner.invoke(next, &rig.invocation("req-2", 60_000)).await.unwrap();
    assert!(matches!(out, StepOutcome::Completed { records_processed: 1_000, .. }), "{out:?}");
    let seen = rig.seen.lock().unwrap();
    assert_eq!(seen[5].1.as_deref(), Some("50"), "the sixth batch resumed after the fifth");
}

#[tokio::test]
async fn the_lease_ends_at_the_deadline_so_a_killed_invocation_is_taken_over_a_skew_later() {
    let rig = rig().await;
    // An invocation claims, stores one batch and is killed: simulated by a
    // step that never returns after its first batch.
    struct Hangs(Clock);
    #[async_trait]
    impl Step for Hangs {
        async fn batch(&self, input: BatchInput) -> Result<Batch, BatchError> {
            if input.bookmark.is_some() {
                std::future::pending::<()>().await;
            }
            self.0.advance(100);
            Ok(Batch::new("7", 7))
        }
    }
    let killed = Runner::new(rig.manager.clone(), Hangs(rig.clock.clone()));
    let invocation = rig.invocation("req-killed", 2_500);
    let deadline = invocation.deadline.unwrap();
    let run = tokio::time::timeout(Duration::from_millis(200), killed.invoke(rig.event("extract"), &invocation)).await;
    assert!(run.is_err(), "the first invocation hangs in its second batch");
    let doc = rig.doc("extract").await;
    assert_eq!(doc.lease.as_ref().unwrap().expires_at, deadline, "the lease ends at the deadline, not 30 s on");
    assert_eq!(doc.records_processed, 7);

    // A duplicate delivered meanwhile: the lease is held, nothing is written.
    let runner = rig.runner(100, 10, 10);
    rig.clock.advance(2_500 - 100); // at the deadline: the platform killed it
    let before = rig.doc("extract").await;
    let out = runner.invoke(rig.event("extract"), &rig.invocation("req-dup", 2_500)).await.unwrap();
    let skew = lease().skew_allowance;
    assert_eq!(
        out,
        StepOutcome::AlreadyRunning {
            partition: part("extract"),
            holder: "lambda-req-killed".parse().unwrap(),
            retry_at: deadline.plus(skew)
        }
    );
    assert_eq!(rig.doc("extract").await, before, "a duplicate writes nothing");

    // At retry_at the redelivered event takes over and resumes from 7.
    rig.clock.advance(skew.as_millis() as i64 + 1);
    let out = runner.invoke(rig.event("extract"), &rig.invocation("req-retry", 2_500)).await.unwrap();
    assert!(matches!(out, StepOutcome::Completed { records_processed: 100, .. }), "{out:?}");
    assert_eq!(rig.seen.lock().unwrap().first().unwrap().1.as_deref(), Some("7"));
    assert_eq!(rig.doc("extract").await.lease.unwrap().epoch, 2);
}

#[tokio::test]
async fn completing_hands_off_exactly_what_became_ready_and_a_done_partition_says_so() {
    let rig = rig().await;
    let runner = rig.runner(20, 10, 10);
    let out = runner.invoke(rig.event("extract"), &rig.invocation("a", 60_000)).await.unwrap();
    let StepOutcome::Completed { handed_off, .. } = out else { panic!("{out:?}") };
    let names: Vec<String> = handed_off.iter().map(|e| e.partition.as_ref().unwrap().to_string()).collect();
    assert_eq!(names, ["transform@0", "transform@1"]);

    // The barrier: load waits on both transform shards.
    let out = runner.invoke(handed_off[1].clone(), &rig.invocation("b", 60_000)).await.unwrap();
    assert!(matches!(&out, StepOutcome::Completed { handed_off, .. } if handed_off.is_empty()), "{out:?}");
    let out = runner.invoke(rig.event("load"), &rig.invocation("c", 60_000)).await.unwrap();
    assert!(matches!(&out, StepOutcome::NotReady { reason, .. } if reason.contains("transform@0")), "{out:?}");
    let out = runner.invoke(handed_off[0].clone(), &rig.invocation("d", 60_000)).await.unwrap();
    let StepOutcome::Completed { handed_off: last, .. } = out else { panic!("{out:?}") };
    assert_eq!(last, vec![rig.event("load")]);

    // A late duplicate of a completed partition writes nothing and re-sends
    // only what is still ready (load has not started: it is sent again).
    let before = rig.doc("transform@0").await;
    let out = runner.invoke(handed_off[0].clone(), &rig.invocation("e", 60_000)).await.unwrap();
    assert_eq!(out, StepOutcome::AlreadyDone { partition: part("transform@0"), handed_off: vec![rig.event("load")] });
    assert_eq!(rig.doc("transform@0").await, before);
    runner.invoke(rig.event("load"), &rig.invocation("f", 60_000)).await.unwrap();
    let out = runner.invoke(handed_off[0].clone(), &rig.invocation("g", 60_000)).await.unwrap();
    assert_eq!(out, StepOutcome::AlreadyDone { partition: part("transform@0"), handed_off: vec![] });
    let next = StepEvent { pipeline: rig.pipeline.clone(), partition: None, hop: 0 };
    assert_eq!(runner.invoke(next, &rig.invocation("h", 60_000)).await.unwrap(), StepOutcome::Finished { pipeline: rig.pipeline.clone() });
}

#[tokio::test]
async fn a_deadline_that_lies_falls_back_to_the_configured_lease() {
    let rig = rig().await;
    let runner = rig.runner(1_000, 10, 1_000);
    // `cargo lambda watch` reports 600000: a duration where a Unix time belongs.
    let lying = Invocation { request_id: "emulated".into(), deadline: Some(Timestamp::from_millis(600_000)) };
    let started = rig.clock.now();
    let out = runner.invoke(rig.event("extract"), &lying).await.unwrap();
    // 30 s configured lease: batches of 1 s while 30 − 0.2 − 0.3 s allow → 29.
    assert!(matches!(out, StepOutcome::Continue { batches: 29, records_processed: 290, .. }), "{out:?}");
    let doc = rig.doc("extract").await;
    assert!(doc.lease.as_ref().unwrap().expires_at <= started.plus(lease().ttl), "never past one configured lease");
}

#[tokio::test]
async fn handler_errors_are_recorded_retryable_or_for_good() {
    let rig = rig().await;
    let step = Counter {
        clock: rig.clock.clone(),
        total: 100,
        size: 10,
        batch_ms: 10,
        fail: Mutex::new(Some((30, false))),
        seen: rig.seen.clone(),
    };
    let runner = Runner::new(rig.manager.clone(), step);
    let out = runner.invoke(rig.event("extract"), &rig.invocation("a", 60_000)).await.unwrap();
    assert_eq!(out, StepOutcome::Failed { partition: part("extract"), error: "source unreachable after 30".into(), retryable: true });
    let doc = rig.doc("extract").await;
    assert_eq!((doc.records_processed, doc.last_processed_id.as_deref()), (30, Some("30")));

    // The retry waits out the backoff, then resumes from 30.
    let out = runner.invoke(rig.event("extract"), &rig.invocation("b", 60_000)).await.unwrap();
    assert!(matches!(out, StepOutcome::NotReady { .. }), "in backoff: {out:?}");
    rig.clock.advance(1_001);
    let out = runner.invoke(rig.event("extract"), &rig.invocation("c", 60_000)).await.unwrap();
    assert!(matches!(out, StepOutcome::Completed { records_processed: 100, .. }), "{out:?}");

    let rig = rig_with_permanent_failure().await;
    let doc = rig.doc("extract").await;
    assert_eq!(doc.status.kind(), oxiflow_core::StatusKind::Failed);
}

async fn rig_with_permanent_failure() -> Rig {
    let rig = rig().await;
    let step =
        Counter { clock: rig.clock.clone(), total: 100, size: 10, batch_ms: 10, fail: Mutex::new(Some((0, true))), seen: rig.seen.clone() };
    let out = Runner::new(rig.manager.clone(), step).invoke(rig.event("extract"), &rig.invocation("a", 60_000)).await.unwrap();
    assert!(matches!(out, StepOutcome::Failed { retryable: false, .. }), "{out:?}");
    let out = rig.runner(100, 10, 10).invoke(rig.event("extract"), &rig.invocation("b", 60_000)).await.unwrap();
    assert!(matches!(&out, StepOutcome::NotReady { reason, .. } if reason.contains("failed")), "failed for good: {out:?}");
    rig
}
