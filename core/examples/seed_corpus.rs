//! Writes a few valid encoded documents into a folder, to seed the fuzzer.

use oxiflow_core::*;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: seed_corpus DIR");
    let t = Timestamp::from_millis;
    let limits = Limits::default();
    let w = WorkerId::new("w1").unwrap();
    let p = PipelineId::new("fuzz").unwrap();
    let mut doc = PartitionDoc::new(p.clone(), PartitionId::shard(StepId::new("s").unwrap(), 3), RunId::new("r").unwrap(), t(1));
    doc.start(t(2)).unwrap();
    doc.lease = Some(Lease {
        worker_id: w.clone(),
        epoch: 2,
        acquired_at: t(2),
        expires_at: t(30_002),
        released_at: None,
        last_write: 9,
        stop_requested: None,
        ttl_ms: None,
        previous: Vec::new(),
    });
    let mut progress = Progress {
        last_processed_id: Some("id-1".into()),
        batch_number: Some(1),
        add_records: 10,
        errors: vec!["oops".into()],
        ..Progress::default()
    };
    progress.extra.insert("k".into(), "v".into());
    doc.record(&progress, &w, t(3), &limits).unwrap();
    doc.stamp(t(3));
    let mut pipeline = PipelineDoc::new(p, RunId::new("r").unwrap(), vec![StepPlan::new(StepId::new("s").unwrap(), None)], t(1)).unwrap();
    pipeline.stamp(t(1));
    let files = [
        ("partition.json", codec::encode("k", &doc, &limits).unwrap()),
        ("pipeline.json", codec::encode("k", &pipeline, &limits).unwrap()),
    ];
    for (name, bytes) in files {
        std::fs::write(format!("{dir}/{name}"), bytes).unwrap();
    }
}
