//! Decode + validate + encode of a 50-step pipeline holding 100 error
//! records (the pipeline document and 50 partition documents), plus the
//! aggregation a dashboard does on top. Run: `cargo bench -p oxiflow-core`.

// criterion_main! defines an undocumented `pub fn main`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use oxiflow_core::*;

use oxiflow_core::fixture::{decode_validate_encode, fixture};

fn round_trip(c: &mut Criterion) {
    let (pipeline_bytes, partitions) = fixture();
    let limits = Limits::default();
    let total: usize = pipeline_bytes.len() + partitions.iter().map(Vec::len).sum::<usize>();
    let mut group = c.benchmark_group("pipeline_50_steps_100_errors");
    group.throughput(Throughput::Bytes(total as u64));
    group.bench_function("decode_validate_encode", |b| {
        b.iter(|| black_box(decode_validate_encode(black_box(&pipeline_bytes), &partitions)))
    });
    group.bench_function("decode_validate_aggregate", |b| {
        b.iter(|| {
            let pipeline: PipelineDoc = codec::decode("k", black_box(&pipeline_bytes), &limits).unwrap();
            let docs: Vec<PartitionDoc> = partitions.iter().map(|bytes| codec::decode("k", black_box(bytes), &limits).unwrap()).collect();
            black_box(aggregate(&pipeline, &docs, Timestamp::from_millis(1_764_000_010_000), &Config::default()).unwrap())
        })
    });
    group.finish();
    let one = &partitions[0];
    c.bench_function("one_partition_document/decode_validate_encode", |b| {
        b.iter(|| {
            let doc: PartitionDoc = codec::decode("k", black_box(one), &limits).unwrap();
            black_box(codec::encode("k", &doc, &limits).unwrap())
        })
    });
    println!("fixture: 51 documents, {total} bytes, 100 error records; one partition document is {} bytes", one.len());
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
