//! The decoder never panics and never accepts damaged bytes as a different
//! document; anything the encoder writes decodes back to the same document.

use oxiflow_core::*;
use proptest::prelude::*;

const KEY: &str = "pipelines/p/partitions/s.json";

fn arb_doc() -> impl Strategy<Value = PartitionDoc> {
    (
        "[a-z][a-z0-9_-]{0,20}",
        prop::option::of(0u32..64),
        prop::collection::vec(
            (0u64..1_000_000, 0u64..10, prop::option::of("[ -~]{0,40}"), prop::collection::vec("\\PC{0,30}", 0..3)),
            0..8,
        ),
        prop::collection::btree_map("[a-z]{1,8}", "\\PC{0,20}", 0..5),
        0u8..3,
    )
        .prop_map(|(step, shard, batches, extra, ending)| {
            let part = match shard {
                Some(n) => PartitionId::shard(StepId::new(step).unwrap(), n),
                None => PartitionId::step(StepId::new(step).unwrap()),
            };
            let mut doc = PartitionDoc::new(PipelineId::new("p").unwrap(), part, RunId::new("r").unwrap(), Timestamp::from_millis(1));
            let w = WorkerId::new("w").unwrap();
            let limits = Limits::default();
            doc.start(Timestamp::from_millis(2)).unwrap();
            for (i, (records, failed, id, errors)) in batches.into_iter().enumerate() {
                let p = Progress {
                    add_records: records,
                    add_failed: failed,
                    last_processed_id: id,
                    batch_number: Some(i as u64),
                    errors,
                    ..Progress::default()
                };
                doc.record(&p, &w, Timestamp::from_millis(10 + i as i64), &limits).unwrap();
            }
            doc.record(&Progress { extra, ..Progress::default() }, &w, Timestamp::from_millis(100), &limits).unwrap();
            match ending {
                0 => {}
                1 => doc.finish(&Finish::Complete, &w, Timestamp::from_millis(200), &limits).unwrap(),
                _ => doc
                    .finish(&Finish::Fail { error: "x\u{0}y\"z".into(), retryable: false }, &w, Timestamp::from_millis(200), &limits)
                    .unwrap(),
            }
            doc.stamp(Timestamp::from_millis(300));
            doc
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = codec::decode::<PartitionDoc>(KEY, &bytes, &Limits::default());
        let _ = codec::decode::<PipelineDoc>(KEY, &bytes, &Limits::default());
    }

    #[test]
    fn json_shaped_garbage_never_panics(tail in "[ -~]{0,300}") {
        let text = format!("{{\"format_version\":1,{tail}");
        let _ = codec::decode::<PartitionDoc>(KEY, text.as_bytes(), &Limits::default());
    }

    #[test]
    fn encoded_documents_round_trip(doc in arb_doc()) {
        let bytes = codec::encode(KEY, &doc, &Limits::default()).unwrap();
        let back: PartitionDoc = codec::decode(KEY, &bytes, &Limits::default()).unwrap();
        prop_assert_eq!(&back, &doc);
        prop_assert_eq!(codec::encode(KEY, &back, &Limits::default()).unwrap(), bytes);
    }

    #[test]
    fn damaged_documents_are_refused(doc in arb_doc(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = codec::encode(KEY, &doc, &Limits::default()).unwrap();
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let result = codec::decode::<PartitionDoc>(KEY, &bytes, &Limits::default());
        prop_assert!(result.is_err(), "a changed byte at {} was accepted", i);
    }
}

#[test]
fn checksum_digits_are_compared_exactly() {
    let doc = PartitionDoc::new(
        PipelineId::new("p").unwrap(),
        PartitionId::step(StepId::new("s").unwrap()),
        RunId::new("r").unwrap(),
        Timestamp::from_millis(1),
    );
    let mut doc = doc;
    doc.stamp(Timestamp::from_millis(2));
    let text = String::from_utf8(codec::encode(KEY, &doc, &Limits::default()).unwrap()).unwrap();
    let upper = format!("{}{}", &text[..text.len() - 10], text[text.len() - 10..].to_uppercase());
    assert_ne!(upper, text);
    let err = codec::decode::<PartitionDoc>(KEY, upper.as_bytes(), &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
}

/// Found by the fuzzer: a body with a valid checksum and a field this format
/// does not have. Accepting it would drop the field on the next write.
#[test]
fn unknown_fields_are_corrupt_not_dropped() {
    let body = r#"{"format_version":1,"pipeline_id":"fuzz","run_id":"r","steps":["s"],"curAent_step":"s","batch_number":0,"version":1,"created_at":1,"updated_at":1}"#;
    let sealed = format!("{},\"checksum\":\"{:08x}\"}}", &body[..body.len() - 1], crc32fast::hash(body.as_bytes()));
    let err = codec::decode::<PipelineDoc>(KEY, sealed.as_bytes(), &Limits::default()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }) && err.to_string().contains("unknown field `curAent_step`"), "{err}");
}

proptest! {
    /// The core's own RFC 3339 formatting agrees with chrono's everywhere.
    #[test]
    fn timestamps_format_like_chrono(ms in -62_135_596_800_000i64..253_402_300_799_999) {
        let ours = Timestamp::from_millis(ms).to_string();
        let theirs = chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        prop_assert_eq!(ours, theirs);
    }
}
