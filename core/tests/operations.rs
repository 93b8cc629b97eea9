//! Driver and operation behaviour not covered by the shared vectors:
//! misuse, retry timing, pipeline-level leases and the aggregated view.

use std::collections::HashMap;

use oxiflow_core::*;
use proptest::prelude::*;

/// A minimal in-test conditional store.
#[derive(Default)]
struct Store(HashMap<String, (Vec<u8>, u64)>, u64);

impl Store {
    fn serve(&mut self, req: Request) -> Response {
        let tag = |n: u64| Version { e_tag: Some(n.to_string()), version: None };
        match req {
            Request::Get { key } => Response::Object(self.0.get(&key).map(|(b, n)| Object { body: b.clone(), version: tag(*n) })),
            Request::PutIfAbsent { key, body } if !self.0.contains_key(&key) => {
                self.1 += 1;
                self.0.insert(key, (body, self.1));
                Response::Written(tag(self.1))
            }
            Request::PutIfAbsent { .. } => Response::AlreadyExists,
            Request::PutIfMatch { key, body, version } => match self.0.get(&key) {
                Some((_, n)) if tag(*n) == version => {
                    self.1 += 1;
                    self.0.insert(key, (body, self.1));
                    Response::Written(tag(self.1))
                }
                _ => Response::Precondition,
            },
        }
    }

    fn run<M: Mutation>(&mut self, mut op: Update<M>, now: i64) -> Result<Committed<M::Doc>, Error> {
        let now = Timestamp::from_millis(now);
        let mut action = op.start(now);
        loop {
            action = match action {
                Action::Send(r) => op.handle(self.serve(r), now, 0),
                Action::Sleep(_) => op.wake(now),
                Action::Done(r) => return r,
            };
        }
    }
}

fn ids() -> (PipelineId, StepId, StepId, WorkerId) {
    (PipelineId::new("orders").unwrap(), StepId::new("extract").unwrap(), StepId::new("load").unwrap(), WorkerId::new("w1").unwrap())
}

#[test]
fn misusing_a_driver_is_a_protocol_error_not_a_panic() {
    let (p, s, _, w) = ids();
    let key = keys::partition_doc(&p, &PartitionId::step(s));
    let mut op: Update<Claim<PartitionDoc>> = Update::new(key, Claim::new(w, 1), Config::default());
    let now = Timestamp::from_millis(0);
    assert!(matches!(op.wake(now), Action::Done(Err(Error::Protocol { .. }))));
    let mut op: Update<Claim<PartitionDoc>> = Update::new("k", Claim::new(WorkerId::new("w").unwrap(), 1), Config::default());
    assert!(matches!(op.start(now), Action::Send(Request::Get { .. })));
    let answer = op.handle(Response::Written(Version::default()), now, 0);
    assert!(matches!(answer, Action::Done(Err(Error::Protocol { .. }))), "{answer:?}");
    assert!(matches!(op.start(now), Action::Done(Err(Error::Protocol { .. }))));
}

proptest! {
    #[test]
    fn backoff_stays_within_half_and_whole_of_the_capped_step(attempt in 1u32..40, random in any::<u64>()) {
        let policy = RetryPolicy::default();
        let step = policy.base_delay.saturating_mul(1 << (attempt - 1).min(20)).min(policy.max_delay);
        let d = policy.delay(attempt, random);
        prop_assert!(d >= step / 2 && d <= step, "attempt {} delay {:?} step {:?}", attempt, d, step);
    }
}

#[test]
fn pipeline_document_has_its_own_lease_and_progress() {
    let (p, extract, load, w) = ids();
    let mut store = Store::default();
    let config = Config::default();
    let key = keys::pipeline_doc(&p);
    let doc = PipelineDoc::new(
        p.clone(),
        RunId::new("run-1").unwrap(),
        plan::chain([(extract.clone(), None), (load.clone(), None)]),
        Timestamp::from_millis(0),
    )
    .unwrap();
    let created = store.run(Update::new(&key, Create(doc), config), 0).unwrap();
    assert_eq!((created.doc.version, created.doc.current_step.as_ref()), (1, Some(&extract)));

    let claimed = store.run(Update::new(&key, Claim::<PipelineDoc>::new(w.clone(), 7), config), 10).unwrap();
    let holder = Holder::of(claimed.doc.lease.as_ref().unwrap());
    let progress = PipelineProgress { current_step: Some(load.clone()), batch_number: Some(3) };
    let saved = store
        .run(
            Update::from_cached(&key, Write::checkpoint(holder.clone(), 8, progress), config, claimed.doc.clone(), claimed.version.clone()),
            20,
        )
        .unwrap();
    assert_eq!((saved.requests, saved.doc.current_step.as_ref(), saved.doc.batch_number), (1, Some(&load), 3));

    let holder = Holder::of(saved.doc.lease.as_ref().unwrap());
    let back = PipelineProgress { batch_number: Some(2), ..PipelineProgress::default() };
    let err = store
        .run(Update::from_cached(&key, Write::checkpoint(holder.clone(), 9, back), config, saved.doc.clone(), saved.version.clone()), 30)
        .unwrap_err();
    assert!(matches!(err, Error::CounterRegression { field: "batch_number", .. }), "{err}");
    let unknown = PipelineProgress { current_step: Some(StepId::new("nope").unwrap()), ..PipelineProgress::default() };
    let err = store
        .run(Update::from_cached(&key, Write::checkpoint(holder.clone(), 9, unknown), config, saved.doc.clone(), saved.version.clone()), 30)
        .unwrap_err();
    assert!(err.to_string().contains("not a step of pipeline orders"), "{err}");
    let err = store
        .run(
            Update::from_cached(
                &key,
                Write::complete(holder.clone(), 9, PipelineProgress::default()),
                config,
                saved.doc.clone(),
                saved.version.clone(),
            ),
            30,
        )
        .unwrap_err();
    assert!(err.to_string().contains("no status"), "{err}");

    let new_run = CommitReset { holder, write_id: 10, scope: ResetScope::NewRun { run_id: RunId::new("run-2").unwrap() } };
    let run2 = store.run(Update::from_cached(&key, new_run, config, saved.doc, saved.version), 40).unwrap();
    assert_eq!((run2.doc.run_id.as_str(), run2.doc.current_step.as_ref(), run2.doc.generation), ("run-2", Some(&extract), 1));
    assert!(run2.doc.lease.as_ref().unwrap().released_at.is_some(), "the commit lets go of the pipeline");
}

#[test]
fn duplicate_steps_are_refused() {
    let (p, s, _, _) = ids();
    let err = PipelineDoc::new(
        p,
        RunId::new("r").unwrap(),
        vec![StepPlan::new(s.clone(), None), StepPlan::new(s, None)],
        Timestamp::from_millis(0),
    )
    .unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");
}

#[test]
fn operator_pause_and_resume_round_trip_when_nobody_holds_it() {
    let (p, s, _, w) = ids();
    let mut store = Store::default();
    let config = Config::default();
    let key = keys::partition_doc(&p, &PartitionId::step(s.clone()));
    store
        .run(
            Update::new(
                &key,
                Create(PartitionDoc::new(p, PartitionId::step(s), RunId::new("r").unwrap(), Timestamp::from_millis(0))),
                config,
            ),
            0,
        )
        .unwrap();
    let paused = store.run(Update::new(&key, Operator::Pause, config), 1).unwrap();
    assert_eq!(paused.doc.status, StepStatus::Paused);
    let err = store.run(Update::new(&key, Claim::<PartitionDoc>::new(w.clone(), 1), config), 2).unwrap_err();
    assert!(err.to_string().contains("resume it first"), "{err}");
    let again = store.run(Update::new(&key, Operator::Pause, config), 3).unwrap();
    assert!(!again.wrote, "pausing twice writes once");
    store.run(Update::new(&key, Operator::Resume, config), 4).unwrap();
    store.run(Update::new(&key, Claim::<PartitionDoc>::new(w, 2), config), 5).unwrap();
}

#[test]
fn aggregate_sums_shards_orders_steps_and_flags_stale_leases() {
    let (p, extract, load, w) = ids();
    let run = RunId::new("run-2").unwrap();
    let t = Timestamp::from_millis;
    let limits = Limits::default();
    let pipeline = PipelineDoc::new(p.clone(), run.clone(), plan::chain([(extract.clone(), None), (load.clone(), Some(2))]), t(0)).unwrap();

    let mut done = PartitionDoc::new(p.clone(), PartitionId::step(extract.clone()), run.clone(), t(0));
    done.start(t(1)).unwrap();
    done.record(&Progress { add_records: 100, add_bytes: 1000, ..Progress::default() }, &w, t(2), &limits).unwrap();
    done.finish(&Finish::Complete, &w, t(3), &limits).unwrap();

    let mut shard0 = PartitionDoc::new(p.clone(), PartitionId::shard(load.clone(), 0), run.clone(), t(0));
    shard0.start(t(1)).unwrap();
    shard0.record(&Progress { add_records: 40, errors: vec!["bad row 7".into()], ..Progress::default() }, &w, t(5), &limits).unwrap();
    shard0.lease = Some(Lease {
        worker_id: w.clone(),
        epoch: 1,
        acquired_at: t(1),
        expires_at: t(1000),
        released_at: None,
        last_write: 1,
        stop_requested: None,
        ttl_ms: None,
        previous: Vec::new(),
    });
    let mut shard1 = PartitionDoc::new(p.clone(), PartitionId::shard(load.clone(), 1), RunId::new("run-1").unwrap(), t(0));
    shard1.records_processed = 999; // an older run's count: not summed
    shard1.status = StepStatus::Completed { completed_at: t(0) };

    let view = aggregate(&pipeline, &[shard1, shard0, done], t(1500), &Config::default()).unwrap();
    assert_eq!(view.steps.iter().map(|s| s.step_id.as_str()).collect::<Vec<_>>(), ["extract", "load"]);
    assert_eq!((view.steps[0].status, view.steps[0].records_processed), (StatusKind::Completed, 100));
    let load_view = &view.steps[1];
    assert_eq!((load_view.status, load_view.records_processed), (StatusKind::Running, 40));
    assert_eq!(load_view.partitions.iter().map(|p| p.partition.as_str()).collect::<Vec<_>>(), ["load@0", "load@1"]);
    assert!(!load_view.partitions[1].current_run);
    let lease = load_view.partitions[0].lease.as_ref().unwrap();
    assert!(lease.stale && lease.status == LeaseStatus::Held { expires_at: t(1000) }, "{lease:?}");
    assert_eq!((view.records_processed, view.bytes_processed, view.total_errors), (140, 1000, 1));
    assert_eq!(view.recent_errors[0].partition, "load@0");
    assert_eq!(view.status, StatusKind::Running);

    let other = PartitionDoc::new(PipelineId::new("other").unwrap(), PartitionId::step(load), run, t(0));
    assert!(aggregate(&pipeline, &[other], t(0), &Config::default()).is_err());
}

#[test]
fn a_claims_ttl_outlives_the_writers_config() {
    let (p, s, _, w) = ids();
    let key = keys::partition_doc(&p, &PartitionId::step(s.clone()));
    let mut store = Store::default();
    let short = Config::default();
    let mut long = short;
    long.lease.ttl = std::time::Duration::from_secs(3600);
    let run = RunId::new("run-1").unwrap();
    store
        .run(Update::new(key.clone(), Create(PartitionDoc::new(p, PartitionId::step(s), run, Timestamp::from_millis(0))), short), 0)
        .unwrap();
    let claimed = store.run(Update::new(key.clone(), Claim::<PartitionDoc>::new(w, 1), long), 1_000).unwrap();
    let holder = Holder::of(claimed.doc.lease.as_ref().unwrap());
    // A checkpoint written under the default 30 s config keeps the hour.
    let written = store.run(Update::new(key, Write::<PartitionDoc>::checkpoint(holder, 2, Progress::default()), short), 5_000).unwrap();
    assert_eq!(written.doc.lease.unwrap().expires_at, Timestamp::from_millis(5_000 + 3_600_000));
}
