//! Resets and new runs as one write to the pipeline document: what readers
//! see of partitions behind the generation, what a claim adopts, what the
//! operator's lease does to claims, and what the commit refuses.

use oxiflow_core::*;

const T0: i64 = 1_000_000;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

fn id<T: std::str::FromStr<Err = Error>>(s: &str) -> T {
    s.parse().unwrap()
}

fn pipeline() -> PipelineDoc {
    let plan = plan::chain([(id("extract"), Some(2)), (id("load"), None)]);
    PipelineDoc::new(id("orders"), id("run-1"), plan, at(0)).unwrap()
}

/// A partition with progress, a bookmark and a released lease at epoch 3.
fn worked(pipeline: &PipelineDoc, part: &str) -> PartitionDoc {
    let mut doc = PartitionDoc::new(pipeline.pipeline_id.clone(), PartitionId::parse(part).unwrap(), pipeline.run_id.clone(), at(0));
    doc.records_processed = 40;
    doc.attempts = 2;
    doc.last_processed_id = Some("order-40".into());
    doc.status = StepStatus::Completed { completed_at: at(10) };
    doc.lease = Some(Lease {
        worker_id: id("w1"),
        epoch: 3,
        acquired_at: at(0),
        expires_at: at(30_000),
        released_at: Some(at(10)),
        last_write: 7,
        stop_requested: None,
        ttl_ms: Some(30_000),
        previous: vec![],
    });
    doc
}

fn apply<M: Mutation>(m: &M, doc: &mut M::Doc, now: Timestamp) -> Result<bool, Error> {
    m.apply("key", doc, &Context { now, config: &Config::default() })
}

/// The pipeline's lease taken by `operator` at `now`.
fn locked(mut p: PipelineDoc, now: Timestamp) -> PipelineDoc {
    apply(&Claim::<PipelineDoc>::new(id("operator"), 41), &mut p, now).unwrap();
    p
}

#[test]
fn a_step_reset_is_one_change_to_the_pipeline_and_readers_see_its_partitions_fresh() {
    let mut p = pipeline();
    let extract = worked(&p, "extract@0");
    let load = worked(&p, "load");
    p.reset(&ResetScope::Step { step_id: id("extract") }).unwrap();
    assert_eq!((p.generation, p.generation_of(&id("extract")), p.generation_of(&id("load"))), (1, 1, 0));

    let seen = extract.as_of(&p, at(20));
    assert_eq!((seen.status.kind(), seen.records_processed, seen.attempts, seen.generation), (StatusKind::Pending, 0, 0, 1));
    assert_eq!(seen.last_processed_id.as_deref(), Some("order-40"), "the bookmark is kept");
    assert_eq!(seen.lease.as_ref().map(|l| l.epoch), Some(3), "the epoch is kept, so the next claim goes above it");
    assert_eq!(load.as_of(&p, at(20)), load, "another step is untouched");

    let view = aggregate(&p, &[extract, worked(&p, "extract@1"), load], at(20), &Config::default()).unwrap();
    assert_eq!((view.steps[0].records_processed, view.steps[1].records_processed), (0, 40));
}

#[test]
fn a_reset_of_an_unknown_step_is_refused_and_changes_nothing() {
    let mut p = pipeline();
    let before = p.clone();
    let err = p.reset(&ResetScope::Step { step_id: id("nope") }).unwrap_err();
    assert!(err.to_string().contains("extract, load"), "names the steps: {err}");
    assert_eq!(p, before);
}

#[test]
fn a_new_run_moves_every_step_and_the_run_id_and_starts_over_at_the_first_step() {
    let mut p = pipeline();
    p.current_step = Some(id("load"));
    p.reset(&ResetScope::NewRun { run_id: id("run-2") }).unwrap();
    assert_eq!((p.run_id.as_str(), p.current_step.as_ref().map(StepId::as_str)), ("run-2", Some("extract")));
    assert_eq!((p.generation_of(&id("extract")), p.generation_of(&id("load"))), (1, 1));
    let seen = worked(&pipeline(), "load").as_of(&p, at(20));
    assert_eq!((seen.run_id.as_str(), seen.records_processed), ("run-2", 0));
}

#[test]
fn a_claim_adopts_the_generation_and_takes_over_a_stale_claimers_live_lease() {
    let mut p = pipeline();
    let mut doc = worked(&p, "extract@0");
    // Someone claimed under the old generation and still holds it.
    apply(&Claim::<PartitionDoc>::new(id("stale"), 8), &mut doc, at(20)).unwrap_err(); // completed: not claimable
    doc.status = StepStatus::Pending;
    apply(&Claim::<PartitionDoc>::new(id("stale"), 8), &mut doc, at(20)).unwrap();
    p.reset(&ResetScope::Pipeline).unwrap();
    assert_eq!(check_claim(&p, &doc, at(30), &LeaseConfig::default()), ClaimCheck::Stale(p.adoption(&id("extract"))));

    let claim = Claim::<PartitionDoc>::new(id("w2"), 9).adopting(p.adoption(&id("extract")));
    apply(&claim, &mut doc, at(40)).unwrap();
    let lease = doc.lease.as_ref().unwrap();
    assert_eq!((lease.worker_id.as_str(), lease.epoch, doc.generation, doc.records_processed), ("w2", 5, 1, 0));
    assert_eq!(lease.previous[0].worker_id.as_str(), "stale", "the stale claimer is fenced by the epoch");
    assert_eq!(check_claim(&p, &doc, at(50), &LeaseConfig::default()), ClaimCheck::Current);
}

#[test]
fn while_an_operator_holds_the_pipeline_claims_wait_and_a_landed_claim_lets_go() {
    let p = locked(pipeline(), at(100));
    let parts: Vec<PartitionDoc> = ["extract@0", "extract@1", "load"]
        .iter()
        .map(|s| PartitionDoc::new(id("orders"), PartitionId::parse(s).unwrap(), id("run-1"), at(0)))
        .collect();
    let s = schedule(&p, &parts, at(200), Some(&id("w1")), &LeaseConfig::default(), &SchedulePolicy::default(), 1);
    assert!(s.claimable.is_empty(), "{s:?}");
    assert!(
        matches!(s.readiness(&PartitionId::parse("extract@0").unwrap()), Some(Readiness::Locked { worker_id, .. }) if worker_id.as_str() == "operator")
    );
    assert!(matches!(s.readiness(&PartitionId::parse("load").unwrap()), Some(Readiness::Waiting { .. })), "what waits anyway says so");
    assert!(matches!(check_claim(&p, &parts[0], at(200), &LeaseConfig::default()), ClaimCheck::Locked { .. }));
    // An operator that died: its lease ends, claims go on.
    let later = at(100 + 30_000 + 2_001);
    assert_eq!(check_claim(&p, &parts[0], later, &LeaseConfig::default()), ClaimCheck::Current);
    let s = schedule(&p, &parts, later, Some(&id("w1")), &LeaseConfig::default(), &SchedulePolicy::default(), 1);
    assert_eq!(s.claimable.len(), 2);
}

#[test]
fn the_commit_needs_the_operators_own_trusted_lease_and_lands_once() {
    let p = locked(pipeline(), at(100));
    let holder = Holder::of(p.lease.as_ref().unwrap());
    let commit = CommitReset { holder: holder.clone(), write_id: 42, scope: ResetScope::Pipeline };

    let mut late = p.clone();
    let err = apply(&commit, &mut late, at(100 + 28_000)).unwrap_err();
    assert!(matches!(err, Error::Expired { .. }), "past its trusted time: {err}");
    assert_eq!(late, p, "nothing changed");

    let someone_else = CommitReset { holder: Holder { worker_id: id("intruder"), ..holder }, write_id: 43, scope: ResetScope::Pipeline };
    assert!(matches!(apply(&someone_else, &mut p.clone(), at(200)).unwrap_err(), Error::Fenced { .. }));

    let mut done = p.clone();
    assert!(apply(&commit, &mut done, at(200)).unwrap());
    assert_eq!((done.generation, done.lease.as_ref().unwrap().released_at), (1, Some(at(200))));
    let mut again = done.clone();
    assert!(!apply(&commit, &mut again, at(300)).unwrap(), "a replay after a lost response finds it landed");
    assert_eq!(again, done);
}

#[test]
fn a_holder_write_past_its_trusted_time_is_refused_and_changes_nothing() {
    let p = pipeline();
    let mut doc = PartitionDoc::new(p.pipeline_id.clone(), PartitionId::parse("load").unwrap(), p.run_id.clone(), at(0));
    apply(&Claim::<PartitionDoc>::new(id("w1"), 1), &mut doc, at(0)).unwrap();
    let holder = Holder::of(doc.lease.as_ref().unwrap());
    let progress = Progress { add_records: 5, ..Progress::default() };
    // ttl 30 s, safety margin 2 s: trusted until 28 s.
    let mut ok = doc.clone();
    assert!(apply(&Write::checkpoint(holder.clone(), 2, progress.clone()), &mut ok, at(27_999)).unwrap());
    let mut late = doc.clone();
    let err = apply(&Write::checkpoint(holder, 2, progress), &mut late, at(28_000)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fenced, "{err}");
    assert_eq!(late, doc);
}
