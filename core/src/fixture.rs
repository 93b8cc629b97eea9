//! The codec bench's documents (feature `testing`), shared with the wasm-vs-native comparison
//! (`scripts/bench-wasm.sh`), so both measure exactly the same work.

use crate::*;
use alloc::format;
use alloc::vec::Vec;

/// A 50-step pipeline holding 100 error records: the pipeline document and
/// 50 partition documents, encoded.
pub fn fixture() -> (Vec<u8>, Vec<Vec<u8>>) {
    let t = Timestamp::from_millis;
    let limits = Limits::default();
    let p = PipelineId::new("bench").unwrap();
    let steps: Vec<StepId> = (0..50).map(|i| StepId::new(format!("step-{i:02}")).unwrap()).collect();
    let plan = plan::chain(steps.iter().map(|s| (s.clone(), None)));
    let mut pipeline = PipelineDoc::new(p.clone(), RunId::new("run-1").unwrap(), plan, t(1_764_000_000_000)).unwrap();
    pipeline.stamp(t(1_764_000_000_000));
    let key = keys::pipeline_doc(&p);
    let pipeline_bytes = codec::encode(&key, &pipeline, &limits).unwrap();
    let partitions = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let w = WorkerId::new(format!("worker-{}", i % 8)).unwrap();
            let part = PartitionId::step(s.clone());
            let mut d = PartitionDoc::new(p.clone(), part.clone(), RunId::new("run-1").unwrap(), t(1_764_000_000_000));
            d.start(t(1_764_000_001_000)).unwrap();
            let mut progress = Progress {
                last_processed_id: Some(format!("order-{:010}", i * 1000)),
                last_processed_at: Some(t(1_764_000_002_000)),
                batch_number: Some(i as u64),
                add_records: 123_456,
                add_bytes: 98_765_432,
                add_processing_ms: 4_321,
                errors: vec![
                    format!("row {i}: invalid date '2026-13-01' in column shipped_at"),
                    format!("row {}: upstream returned 503 Service Unavailable", i + 1),
                ],
                ..Progress::default()
            };
            progress.extra.insert("source".into(), "s3://bucket/orders/2026/11/26".into());
            d.record(&progress, &w, t(1_764_000_002_000), &limits).unwrap();
            d.lease = Some(Lease {
                worker_id: w,
                epoch: 3,
                acquired_at: t(1_764_000_001_000),
                expires_at: t(1_764_000_031_000),
                released_at: None,
                last_write: 0x9e37_79b9_7f4a_7c15,
                stop_requested: None,
                ttl_ms: None,
                previous: Vec::new(),
            });
            d.stamp(t(1_764_000_002_000));
            codec::encode(&keys::partition_doc(&p, &part), &d, &limits).unwrap()
        })
        .collect();
    (pipeline_bytes, partitions)
}

/// Decode + validate + encode of every document; returns the bytes written.
pub fn decode_validate_encode(pipeline_bytes: &[u8], partitions: &[Vec<u8>]) -> usize {
    let limits = Limits::default();
    let pipeline: PipelineDoc = codec::decode("k", pipeline_bytes, &limits).unwrap();
    let docs: Vec<PartitionDoc> = partitions.iter().map(|bytes| codec::decode("k", bytes, &limits).unwrap()).collect();
    let mut out = codec::encode("k", &pipeline, &limits).unwrap().len();
    for d in &docs {
        out += codec::encode("k", d, &limits).unwrap().len();
    }
    out
}
