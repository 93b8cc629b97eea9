//! Runs every shared test vector in `core/vectors/`, and checks that the
//! runner notices when a vector's expectation is wrong.

use std::collections::BTreeMap;
use std::path::Path;

use oxiflow_core::vectors::run_file;
use serde_json::{json, Value};

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors").join(name)).unwrap()
}

#[test]
fn shared_vectors_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors");
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let json = std::fs::read_to_string(&path).unwrap();
            let kind = serde_json::from_str::<Value>(&json).unwrap()["kind"].as_str().unwrap_or("update").to_string();
            let n = run_file(&json).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            *by_kind.entry(kind).or_default() += n;
            files += 1;
        }
    }
    let count = |kind: &str| by_kind.get(kind).copied().unwrap_or(0);
    assert!(count("update") >= 20 && count("schedule") >= 15 && count("session") >= 12, "found {by_kind:?} in {files} files");
    println!("{} vectors in {files} files passed: {by_kind:?}", by_kind.values().sum::<usize>());
}

/// Changes the value at `pointer` in the file and expects the runner to
/// refuse it, naming the vector.
fn refused(file: &Value, pointer: &str, value: Value) -> String {
    let mut changed = file.clone();
    *changed.pointer_mut(pointer).unwrap_or_else(|| panic!("no {pointer}")) = value;
    let name = changed.pointer(&format!("/vectors/{}/name", pointer.split('/').nth(2).unwrap())).cloned().unwrap_or(Value::Null);
    let err = run_file(&changed.to_string()).expect_err(&format!("a wrong {pointer} must fail"));
    assert!(name.is_null() || err.contains(name.as_str().unwrap()), "the error names the vector: {err}");
    err
}

fn index_of(file: &Value, name_start: &str) -> usize {
    file["vectors"].as_array().unwrap().iter().position(|v| v["name"].as_str().unwrap().starts_with(name_start)).unwrap()
}

#[test]
fn the_runner_notices_a_wrong_schedule_expectation() {
    let file: Value = serde_json::from_str(&read("schedule.json")).unwrap();
    let fresh = index_of(&file, "a fresh pipeline");
    let e = refused(&file, &format!("/vectors/{fresh}/expect/claimable"), json!(["extract@0", "extract@1", "extract@2"]));
    assert!(e.contains("claimable is"), "{e}");
    refused(&file, &format!("/vectors/{fresh}/expect/claimable_any_order"), json!(["extract@0", "extract@1"]));
    refused(&file, &format!("/vectors/{fresh}/expect/status"), json!("running"));
    refused(&file, &format!("/vectors/{fresh}/expect/current_step"), json!("load"));
    refused(&file, &format!("/vectors/{fresh}/expect/finished"), json!(true));
    let e = refused(&file, &format!("/vectors/{fresh}/expect/readiness/index/count"), json!(2));
    assert!(e.contains("readiness of index"), "{e}");
    let e = refused(&file, &format!("/vectors/{fresh}/expect/steps/extract/ready"), json!(2));
    assert!(e.contains("step extract"), "{e}");
    refused(&file, &format!("/vectors/{fresh}/random"), json!(99));
    let done = json!({ "step_id": "extract", "shard": 0, "status": { "completed": { "completed_at": 5 } } });
    refused(&file, &format!("/vectors/{fresh}/partitions/0"), done);

    let held = index_of(&file, "a live lease is held");
    refused(&file, &format!("/vectors/{held}/worker"), json!("w2"));
    refused(&file, &format!("/vectors/{held}/now"), json!(102_001));
    let backoff = index_of(&file, "a retryable failure waits");
    refused(&file, &format!("/vectors/{backoff}/now"), json!(101_000));

    let mut typo = file.clone();
    typo["vectors"][0]["expect"]["claimabel"] = json!([]);
    assert!(run_file(&typo.to_string()).unwrap_err().contains("no field \"claimabel\""));
    let mut typo = file.clone();
    typo["vectors"][0]["wroker"] = json!("w1");
    assert!(run_file(&typo.to_string()).unwrap_err().contains("unknown field"));
}

#[test]
fn the_runner_notices_a_wrong_session_expectation() {
    let file: Value = serde_json::from_str(&read("session.json")).unwrap();
    let first = index_of(&file, "a checkpoint is one conditional PUT");
    refused(&file, &format!("/vectors/{first}/calls/0/outcome/ok/landed"), json!(false));
    refused(&file, &format!("/vectors/{first}/calls/0/outcome/ok/requests"), json!(2));
    refused(&file, &format!("/vectors/{first}/calls/0/outcome/ok/stop"), json!({ "requested_by": "ops", "requested_at": 1 }));
    refused(&file, &format!("/vectors/{first}/calls/0/after/unresolved"), json!(true));
    refused(&file, &format!("/vectors/{first}/calls/0/after/released"), json!(true));
    refused(&file, &format!("/vectors/{first}/calls/0/after/e_tag"), json!("\"b\""));
    refused(&file, &format!("/vectors/{first}/calls/0/after/trusts/1/1"), json!(true));
    refused(&file, &format!("/vectors/{first}/calls/0/after/heartbeat_due"), json!(15_000));
    refused(&file, &format!("/vectors/{first}/calls/0/after/doc/records_processed"), json!(999));
    let e = refused(&file, &format!("/vectors/{first}/calls/0/exchanges/0/expect/put_if_match/doc/version"), json!(4));
    assert!(e.contains("call 0: exchange 0"), "{e}");

    let replay = index_of(&file, "an unresolved write that had landed");
    refused(&file, &format!("/vectors/{replay}/calls/1/outcome/ok/requests"), json!(1));
    refused(&file, &format!("/vectors/{replay}/calls/0/after/unresolved"), json!(false));
    let e = refused(&file, &format!("/vectors/{replay}/calls/1/exchanges/0/respond/object/doc/lease/last_write"), json!(11));
    assert!(e.contains("put_if_match") || e.contains("field"), "the replay writes again when its write did not land: {e}");

    let stop = index_of(&file, "our write landed just before the stop request");
    refused(&file, &format!("/vectors/{stop}/calls/0/outcome/ok/stop"), Value::Null);
    refused(&file, &format!("/vectors/{stop}/calls/0/exchanges/3/expect/put_if_match/doc/lease/last_write"), json!(13));

    let taken = index_of(&file, "a release whose response was lost");
    refused(&file, &format!("/vectors/{taken}/calls/1/exchanges/0/respond/object/doc/lease/previous/0/last_write"), json!(11));

    let abandoned = index_of(&file, "a write whose driver was dropped");
    let e = refused(&file, &format!("/vectors/{abandoned}/calls/0/abandon"), json!(false));
    assert!(e.contains("call 0"), "{e}");

    let resume = index_of(&file, "resuming a lease taken over from us");
    refused(&file, &format!("/vectors/{resume}/start/resume/error/holder"), json!("w3"));
    refused(&file, &format!("/vectors/{resume}/start/resume/worker_id"), json!("w2"));
}

#[test]
fn the_runner_refuses_files_it_cannot_read() {
    assert!(run_file(r#"{ "kind": "clock", "vectors": [] }"#).unwrap_err().contains("unknown vector file kind \"clock\""));
    assert!(run_file(r#"{ "kind": 3 }"#).unwrap_err().contains("kind must be a string"));
    assert!(run_file("[").unwrap_err().contains("does not parse"));
    assert!(run_file(r#"{ "kind": "session", "key": "k", "base": {}, "vectors": [ { "name": "x" } ] }"#)
        .unwrap_err()
        .contains("session vector file does not parse"));
}
