//! The core in a real browser: headless Chromium, driven by
//! wasm-bindgen-test-runner through chromedriver (see scripts/test.sh).
//! The same shared vectors the native tests and the Node package run.
#![cfg(target_arch = "wasm32")]

use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn shared_vectors_pass_in_the_browser() {
    let passed = oxiflow_core::vectors::run_file(include_str!("../../core/vectors/partition.json")).unwrap();
    assert!(passed >= 26, "only {passed} vectors ran");
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
