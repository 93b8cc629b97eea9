//! The CLI under the attacks and careless days of the hardening issue:
//! workers that must give up, and damaged documents that must not hide the
//! rest. Each scenario is listed in RELIABILITY.md.

#![allow(unreachable_pub)]

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use serde_json::Value;
use support::{fails, json, ox, run, text};

const NOT_FOUND: i32 = 3;
const CORRUPT: i32 = 7;

fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    path.display().to_string()
}

/// The child's output once it exits; fails the test (killing it) if it
/// has not exited within `bound`: a worker that never gives up.
fn exits_within(mut child: Child, bound: Duration) -> Output {
    let deadline = Instant::now() + bound;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {bound:?}: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn worker(dir: &Path, pipeline: &str, exec: &str) -> Child {
    ox(dir)
        .args(["worker", "start", "--pipeline", pipeline, "--worker-id", "wk", "--exec", exec])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Flips a byte in the middle of a stored document: its checksum fails.
fn damage(dir: &Path, key: &str) {
    let path = dir.join(".oxiflow/state").join(key);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn a_worker_on_a_pipeline_that_does_not_exist_exits_3_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    json(d, &["state", "create", "orders", "--step", "extract"]);
    let out = exits_within(worker(d, "nope", "true"), Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(NOT_FOUND), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pipeline nope does not exist") && stderr.contains("oxiflow state create nope"), "{stderr}");
    assert!(!stderr.contains("trying again"), "{stderr}");
}

#[test]
fn a_worker_whose_pipeline_is_deleted_under_it_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    json(d, &["state", "create", "orders", "--step", "extract", "--step", "load", "--after", "load=extract"]);
    // Someone else holds load: once extract is done, the worker waits for it.
    json(d, &["claim", "orders", "load", "--worker", "other", "--ttl", "60s", "--force"]);
    let exec = script(d, "done.sh", "#!/bin/sh\necho '{\"records\": 1, \"done\": true}'\n");
    let child = worker(d, "orders", &exec);
    let deadline = Instant::now() + Duration::from_secs(30);
    while json(d, &["state", "show", "orders"])["steps"][0]["partitions"][0]["readiness"]["state"] != "completed" {
        assert!(Instant::now() < deadline, "the worker never completed extract");
        std::thread::sleep(Duration::from_millis(20));
    }
    // As a FLUSHDB or a careless `rm -r` would: every document gone at once.
    std::fs::remove_dir_all(d.join(".oxiflow/state/pipelines/orders")).unwrap();
    let out = exits_within(child, deadline.saturating_duration_since(Instant::now()));
    assert_eq!(out.status.code(), Some(NOT_FOUND), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"), "{}", text(&out));
}

#[test]
fn a_worker_skips_a_damaged_document_and_gives_up_when_nothing_else_can_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    json(d, &["state", "create", "orders", "--step", "extract:2", "--step", "load", "--after", "load=extract"]);
    damage(d, "pipelines/orders/partitions/extract@1.json");
    let exec = script(d, "done.sh", "#!/bin/sh\necho '{\"records\": 3, \"done\": true}'\n");
    let out = exits_within(worker(d, "orders", &exec), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(CORRUPT), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("skipping a damaged document").count(), 1, "reported once: {stderr}");
    assert!(stderr.contains("pipelines/orders/partitions/extract@1.json") && stderr.contains("state restore"), "{stderr}");
    // The healthy partition was worked on; the damaged one was never overwritten.
    let o = run(d, &["state", "show", "orders", "--json"]);
    assert_eq!(o.status.code(), Some(CORRUPT), "{}", text(&o));
    let view: Value = serde_json::from_slice(&o.stdout).unwrap();
    let extract = &view["steps"][0];
    assert_eq!(extract["partitions"][0]["readiness"]["state"], "completed", "{view:#}");
    assert_eq!(extract["partitions"][0]["records_processed"], 3, "{view:#}");
    assert_eq!(view["damaged"][0]["key"], "pipelines/orders/partitions/extract@1.json", "{view:#}");
}

#[test]
fn damaged_documents_never_hide_the_other_pipelines_or_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for p in ["p1", "p2", "p3"] {
        json(d, &["state", "create", p, "--step", "extract:2"]);
    }
    damage(d, "pipelines/p2/partitions/extract@0.json");
    damage(d, "pipelines/p3/pipeline.json");

    let o = run(d, &["state", "list", "--json"]);
    assert_eq!(o.status.code(), Some(CORRUPT), "{}", text(&o));
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|p| p["pipeline_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["p1", "p2", "p3"], "{list:#}");
    assert!(list[0].get("damaged").is_none() && list[0]["status"] == "pending", "{list:#}");
    assert_eq!(
        (list[1]["status"].as_str(), list[1]["damaged"][0]["key"].as_str()),
        (Some("pending"), Some("pipelines/p2/partitions/extract@0.json"))
    );
    assert_eq!((list[2].get("status"), list[2]["damaged"][0]["key"].as_str()), (None, Some("pipelines/p3/pipeline.json")));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("2 damaged document(s) left out") && stderr.contains("state restore"), "{stderr}");

    // The table too: every pipeline has its row.
    let o = run(d, &["state", "list"]);
    assert_eq!(o.status.code(), Some(CORRUPT), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(["p1", "p2", "p3", "damaged"].iter().all(|w| table.contains(w)), "{table}");

    // The pipeline view shows the healthy partition and names the damaged one.
    let o = run(d, &["state", "show", "p2"]);
    assert_eq!(o.status.code(), Some(CORRUPT), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(shown.contains("extract@1") && shown.contains("damaged:") && shown.contains("extract@0.json"), "{shown}");
    // A damaged pipeline document has nothing to show: exit 7, naming it.
    let stderr = fails(d, &["state", "show", "p3"], CORRUPT);
    assert!(stderr.contains("pipelines/p3/pipeline.json"), "{stderr}");
}

#[test]
fn leases_and_counters_past_their_limits_are_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    json(d, &["state", "create", "orders", "--step", "extract"]);
    let stderr = fails(d, &["claim", "orders", "extract", "--worker", "w1", "--ttl", "9999999999d"], 2);
    assert!(stderr.contains("at most 24h"), "{stderr}");
    json(d, &["claim", "orders", "extract", "--worker", "w1"]);
    let over = (1u64 << 53).to_string();
    let stderr = fails(d, &["checkpoint", "orders", "extract", "--worker", "w1", "--add-records", &over], 2);
    assert!(stderr.contains("records_processed would pass 9007199254740991"), "{stderr}");
    let max = ((1u64 << 53) - 1).to_string();
    json(d, &["checkpoint", "orders", "extract", "--worker", "w1", "--add-records", &max]);
    let view = json(d, &["state", "show", "orders"]);
    assert_eq!(view["steps"][0]["partitions"][0]["records_processed"].as_u64(), Some((1 << 53) - 1), "{view:#}");
}
