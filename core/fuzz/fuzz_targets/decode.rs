//! Feeds arbitrary bytes to the codec: it must never panic, and anything it
//! accepts must survive encode → decode unchanged. (Byte-exact re-encoding is
//! not required: a body with a forged checksum may order fields differently.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxiflow_core::{codec, Limits, PartitionDoc, PipelineDoc};

const KEY: &str = "pipelines/fuzz/partitions/s.json";

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(doc) = codec::decode::<PartitionDoc>(KEY, data, &limits) {
        let again = codec::encode(KEY, &doc, &limits).unwrap();
        assert_eq!(codec::decode::<PartitionDoc>(KEY, &again, &limits).unwrap(), doc);
    }
    if let Ok(doc) = codec::decode::<PipelineDoc>(KEY, data, &limits) {
        let again = codec::encode(KEY, &doc, &limits).unwrap();
        assert_eq!(codec::decode::<PipelineDoc>(KEY, &again, &limits).unwrap(), doc);
    }
});
