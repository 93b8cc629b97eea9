//! Feeds arbitrary bytes to the codec. Anything that decodes must re-encode
//! to exactly the same bytes (the format is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxiflow_core::{codec, Limits, PartitionDoc, PipelineDoc};

const KEY: &str = "pipelines/fuzz/partitions/s.json";

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(doc) = codec::decode::<PartitionDoc>(KEY, data, &limits) {
        assert_eq!(codec::encode(KEY, &doc, &limits).unwrap(), data);
    }
    if let Ok(doc) = codec::decode::<PipelineDoc>(KEY, data, &limits) {
        assert_eq!(codec::encode(KEY, &doc, &limits).unwrap(), data);
    }
});
