//! Holders with a hard deadline (a Lambda invocation): the lease ends at the
//! deadline whatever is written, so the partition is claimable again
//! `skew_allowance` after it; and the hand-off names exactly what a
//! completion made ready.

use oxiflow_core::*;

const T0: i64 = 1_800_000_000_000;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

fn id<T: std::str::FromStr<Err = Error>>(s: &str) -> T {
    s.parse().unwrap()
}

fn apply<M: Mutation>(m: &M, doc: &mut M::Doc, now: Timestamp) -> Result<bool, Error> {
    m.apply("key", doc, &Context { now, config: &Config::default() })
}

fn partition(pipeline: &PipelineDoc, part: &str) -> PartitionDoc {
    PartitionDoc::new(pipeline.pipeline_id.clone(), PartitionId::parse(part).unwrap(), pipeline.run_id.clone(), at(0))
}

#[test]
fn a_deadline_lease_ends_at_the_deadline_whatever_is_written() {
    let p = PipelineDoc::new(id("orders"), id("run-1"), plan::chain([(id("extract"), None)]), at(0)).unwrap();
    let mut doc = partition(&p, "extract");
    let deadline = at(5_000);
    // The configured ttl (30 s) is longer than the time left: the deadline wins.
    apply(&Claim::<PartitionDoc>::new(id("lambda-1"), 1).with_deadline(deadline), &mut doc, at(0)).unwrap();
    assert_eq!(doc.lease.as_ref().unwrap().expires_at, deadline);

    // A checkpoint (inside the holder's trust: deadline − 2 s margin) does not extend it…
    let holder = Holder::of(doc.lease.as_ref().unwrap());
    let write =
        Write { deadline: Some(deadline), ..Write::checkpoint(holder.clone(), 2, Progress { add_records: 5, ..Progress::default() }) };
    apply(&write, &mut doc, at(2_000)).unwrap();
    assert_eq!((doc.lease.as_ref().unwrap().expires_at, doc.records_processed), (deadline, 5));
    // …where one without the cap pushes it a whole ttl on.
    let mut uncapped = doc.clone();
    apply(&Write::checkpoint(Holder::of(uncapped.lease.as_ref().unwrap()), 3, Progress::default()), &mut uncapped, at(2_100)).unwrap();
    assert_eq!(uncapped.lease.as_ref().unwrap().expires_at, at(32_100));

    // Killed at the deadline: another invocation takes over skew_allowance (2 s) later, not 30 s later.
    let skew = Config::default().lease.skew_allowance.as_millis() as i64;
    let early = apply(&Claim::<PartitionDoc>::new(id("lambda-2"), 9), &mut doc.clone(), at(5_000 + skew)).unwrap_err();
    assert_eq!(early.kind(), ErrorKind::LeaseHeld);
    apply(&Claim::<PartitionDoc>::new(id("lambda-2"), 9), &mut doc, at(5_000 + skew + 1)).unwrap();
    assert_eq!(doc.lease.as_ref().map(|l| (l.worker_id.as_str().to_string(), l.epoch)), Some(("lambda-2".into(), 2)));
}

#[test]
fn the_holder_session_caps_every_write_at_its_deadline() {
    let p = PipelineDoc::new(id("orders"), id("run-1"), plan::chain([(id("extract"), None)]), at(0)).unwrap();
    let mut doc = partition(&p, "extract");
    let deadline = at(5_000);
    apply(&Claim::<PartitionDoc>::new(id("lambda-1"), 1).with_deadline(deadline), &mut doc, at(0)).unwrap();
    let claimed = Committed { doc, version: Version { e_tag: Some("1".into()), version: None }, requests: 2, wrote: true };
    let mut session = Session::claimed("key", claimed, Config::default(), at(0)).with_deadline(deadline);
    assert_eq!(session.deadline(), Some(deadline));
    let Action::Send(Request::PutIfMatch { body, .. }) = session.begin(Progress::default(), None, 2, at(1_000)) else {
        panic!("a checkpoint is one conditional PUT")
    };
    let sent: PartitionDoc = codec::decode("key", &body, &Limits::default()).unwrap();
    assert_eq!(sent.lease.unwrap().expires_at, deadline);
}

#[test]
fn a_completion_hands_off_its_aligned_shard_and_a_barrier_only_when_all_are_done() {
    let extract = StepPlan::new(id("extract"), Some(2));
    let transform = StepPlan::new(id("transform"), Some(2)).after(Dependency::aligned(id("extract")));
    let load = StepPlan::new(id("load"), None).after(Dependency::barrier(id("transform")));
    let p = PipelineDoc::new(id("orders"), id("run-1"), vec![extract, transform, load], at(0)).unwrap();
    let mut docs: Vec<PartitionDoc> =
        ["extract@0", "extract@1", "transform@0", "transform@1", "load"].iter().map(|s| partition(&p, s)).collect();
    let complete = |doc: &mut PartitionDoc| doc.status = StepStatus::Completed { completed_at: at(10) };
    let policy = SchedulePolicy::default();
    let handoff_of = |docs: &[PartitionDoc], done: &str| {
        let s = schedule(&p, docs, at(20), None, &LeaseConfig::default(), &policy, 7);
        handoff(&p, &s, &PartitionId::parse(done).unwrap()).iter().map(|p| p.to_string()).collect::<Vec<_>>()
    };

    complete(&mut docs[1]);
    assert_eq!(handoff_of(&docs, "extract@1"), ["transform@1"], "aligned: only its own shard");
    complete(&mut docs[3]);
    assert_eq!(handoff_of(&docs, "transform@1"), Vec::<String>::new(), "the barrier waits on transform@0");
    complete(&mut docs[0]);
    assert_eq!(handoff_of(&docs, "extract@0"), ["transform@0"]);
    complete(&mut docs[2]);
    assert_eq!(handoff_of(&docs, "transform@0"), ["load"], "the last of the barrier's upstream");
    complete(&mut docs[4]);
    assert_eq!(handoff_of(&docs, "load"), Vec::<String>::new(), "nothing follows the last step");
}

#[test]
fn a_holder_whose_clock_stepped_back_never_shortens_its_lease() {
    let p = PipelineDoc::new(id("orders"), id("run-1"), plan::chain([(id("extract"), None)]), at(0)).unwrap();
    let mut doc = partition(&p, "extract");
    apply(&Claim::<PartitionDoc>::new(id("w1"), 1), &mut doc, at(60_000)).unwrap();
    let before = doc.lease.as_ref().unwrap().expires_at;
    // The holder's clock jumps a minute back (NTP step) before its checkpoint.
    let holder = Holder::of(doc.lease.as_ref().unwrap());
    apply(&Write::checkpoint(holder, 2, Progress { add_records: 3, ..Progress::default() }), &mut doc, at(0)).unwrap();
    let lease = doc.lease.as_ref().unwrap();
    assert_eq!(lease.expires_at, before, "kept, not moved before the claim");
    // What it stores still decodes: a lease never ends before it began.
    doc.version = 2; // as the driver stores it
    let body = codec::encode("key", &doc, &Limits::default()).unwrap();
    let decoded: PartitionDoc = codec::decode("key", &body, &Limits::default()).unwrap();
    assert_eq!(decoded.records_processed, 3);
}
