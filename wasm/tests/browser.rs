//! The core in a real browser: headless Chromium, driven by
//! wasm-bindgen-test-runner through chromedriver (see scripts/test.sh).
//! The same shared vectors the native tests and the Node package run.
#![cfg(target_arch = "wasm32")]

use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn shared_vectors_pass_in_the_browser() {
    let files = [
        ("partition.json", include_str!("../../core/vectors/partition.json"), 26),
        ("schedule.json", include_str!("../../core/vectors/schedule.json"), 18),
        ("session.json", include_str!("../../core/vectors/session.json"), 15),
    ];
    for (name, json, at_least) in files {
        let passed = oxiflow_core::vectors::run_file(json).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(passed >= at_least, "{name}: only {passed} vectors ran");
    }
}

#[wasm_bindgen_test]
fn the_bindings_decode_and_refuse_like_native() {
    let key = oxiflow_wasm::partition_key("orders", "extract@1").unwrap();
    let doc = oxiflow_wasm::new_partition("orders", "extract@1", "run-1", 1_795_000_000_000.0).unwrap();
    let mut doc: oxiflow_core::PartitionDoc = serde_json::from_str(&doc).unwrap();
    doc.version = 1;
    let bytes = oxiflow_core::codec::encode(&key, &doc, &oxiflow_core::Limits::default()).unwrap();
    let decoded = oxiflow_wasm::decode_partition(&key, &bytes).unwrap();
    assert_eq!(serde_json::from_str::<oxiflow_core::PartitionDoc>(&decoded).unwrap(), doc);

    let mut damaged = bytes.clone();
    damaged[40] ^= 1;
    let error = oxiflow_wasm::decode_partition(&key, &damaged).unwrap_err().as_string().unwrap();
    let error: serde_json::Value = serde_json::from_str(&error).unwrap();
    assert_eq!(error["error"], "corrupt", "{error}");
    assert!(error["reason"].as_str().unwrap().contains("checksum mismatch"), "{error}");
}

#[wasm_bindgen_test]
fn the_scheduler_orders_a_plan_in_the_browser() {
    let now = 1_795_000_000_000.0;
    let plan =
        r#"[{"step_id": "extract", "shards": 2}, {"step_id": "load", "shards": 2, "after": [{"step_id": "extract", "kind": "aligned"}]}]"#;
    let pipeline = oxiflow_wasm::new_pipeline("orders", "run-1", plan, now).unwrap();
    let parts: Vec<String> = ["extract@0", "extract@1", "load@0", "load@1"]
        .iter()
        .map(|p| oxiflow_wasm::new_partition("orders", p, "run-1", now).unwrap())
        .collect();
    let schedule = oxiflow_wasm::schedule(&pipeline, &format!("[{}]", parts.join(",")), now, Some("w1".into()), 7.0, None).unwrap();
    let schedule: serde_json::Value = serde_json::from_str(&schedule).unwrap();
    let mut claimable: Vec<&str> = schedule["claimable"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    claimable.sort();
    assert_eq!(claimable, ["extract@0", "extract@1"]);
    let load1 = &schedule["steps"][1]["partitions"][1];
    assert_eq!(load1["partition"], "load@1");
    assert_eq!(load1["readiness"], serde_json::json!({ "state": "waiting", "on": ["extract@1"], "count": 1 }));
}
