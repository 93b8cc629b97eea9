//! Operators' verbs and output that agrees with itself (issue 12): `state
//! delete`, `state restore` from history, `state cleanup --dry-run
//! --pipeline`, the times `state show` reports, and one documented JSON
//! object from `copy`, `import` and `worker start`.

// The shared helpers in tests/support are `pub` for every test file.
#![allow(unreachable_pub)]

use std::path::Path;
use std::time::Duration;

mod support;

use serde_json::Value;
use support::{fails, json, ox, run, s3_env, text};

const NOT_FOUND: i32 = 3;
const LEASE_HELD: i32 = 5;
const FENCED: i32 = 6;

fn setup(d: &Path) {
    json(d, &["state", "create", "p", "--step", "a", "--step", "b:2"]);
}

fn partition(view: &Value, step: usize, shard: usize) -> &Value {
    &view["steps"][step]["partitions"][shard]
}

#[test]
fn show_reports_the_latest_write_and_when_the_bookmark_moved() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let created = json(d, &["state", "show", "p"])["updated_at"].as_i64().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    json(d, &["claim", "p", "a", "--worker", "w"]);
    json(d, &["checkpoint", "p", "a", "--worker", "w", "--last-id", "r-1", "--add-records", "1"]);
    let view = json(d, &["state", "show", "p"]);
    let a = partition(&view, 0, 0);
    assert!(view["updated_at"].as_i64().unwrap() > created, "updated_at is the creation time: {view:#}");
    assert_eq!(view["updated_at"], a["updated_at"], "the latest write is the checkpoint's");
    assert!(a["last_processed_at"].as_i64().is_some_and(|t| t > created), "the bookmark moved: {a:#}");
    let list = json(d, &["state", "list"]);
    assert_eq!(list[0]["updated_at"], view["updated_at"], "state list and state show agree");
}

#[test]
fn delete_removes_every_document_and_refuses_over_a_live_lease() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join(".oxiflow")).unwrap();
    std::fs::write(d.join(".oxiflow/config.yaml"), "state:\n  history: { keep_last: 3 }\n").unwrap();
    setup(d);
    json(d, &["state", "create", "other", "--step", "x"]);
    json(d, &["claim", "p", "a", "--worker", "w"]);
    json(d, &["checkpoint", "p", "a", "--worker", "w", "--add-records", "2"]);
    assert!(fails(d, &["state", "delete", "p"], LEASE_HELD).contains("held by w"));
    assert_eq!(json(d, &["state", "show", "p"])["records_processed"], 2, "a refused delete changes nothing");
    let deleted = json(d, &["state", "delete", "p", "--force"]);
    // The pipeline, 3 partitions and the history copies of a's 2 writes.
    assert_eq!(deleted["deleted"], 6, "{deleted:#}");
    fails(d, &["state", "show", "p"], NOT_FOUND);
    fails(d, &["checkpoint", "p", "a", "--worker", "w", "--add-records", "1"], NOT_FOUND);
    assert!(!d.join(".oxiflow/state/pipelines/p").exists() || files(&d.join(".oxiflow/state/pipelines/p")) == 0);
    assert_eq!(json(d, &["state", "list"]).as_array().unwrap().len(), 1, "other is left alone");
    fails(d, &["state", "delete", "p"], NOT_FOUND);
}

fn files(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).map(|p| if p.is_dir() { files(&p) } else { 1 }).sum()
}

fn restore_from_history(d: &Path, env: &[(&'static str, String)]) {
    let oxj = |args: &[&str]| -> Value {
        let o = ox(d).envs(env.iter().map(|(k, v)| (*k, v.as_str()))).args(args).arg("--json").output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let code = |args: &[&str]| ox(d).envs(env.iter().map(|(k, v)| (*k, v.as_str()))).args(args).output().unwrap();
    oxj(&["state", "create", "p", "--step", "a", "--step", "b:2"]);
    oxj(&["claim", "p", "a", "--worker", "w1"]);
    for (n, id) in [(10, "r-10"), (5, "r-15"), (7, "r-22")] {
        oxj(&["checkpoint", "p", "a", "--worker", "w1", "--add-records", &n.to_string(), "--last-id", id]);
    }
    let history = oxj(&["state", "history", "p", "--step", "a"]);
    let at_15 = history.as_array().unwrap().iter().find(|h| h["last_processed_id"] == "r-15").expect("kept").clone();
    let version = at_15["version"].as_u64().unwrap().to_string();
    let o = code(&["state", "restore", "p", "a", "--version", &version]);
    assert_eq!(o.status.code(), Some(LEASE_HELD), "refused over a live lease: {}", text(&o));
    let restored = oxj(&["state", "restore", "p", "a", "--version", &version, "--force"]);
    assert_eq!(restored["discarded_records"], 7, "{restored:#}");
    let o = code(&["checkpoint", "p", "a", "--worker", "w1", "--add-records", "1"]);
    assert_eq!(o.status.code(), Some(FENCED), "the holder is fenced: {}", text(&o));
    let a = oxj(&["state", "show", "p"])["steps"][0]["partitions"][0].clone();
    assert_eq!((a["records_processed"].as_u64(), a["last_processed_id"].as_str()), (Some(15), Some("r-15")), "{a:#}");
    // The default: the newest copy older than the stored document.
    oxj(&["claim", "p", "a", "--worker", "w2"]);
    oxj(&["checkpoint", "p", "a", "--worker", "w2", "--add-records", "100", "--last-id", "bad"]);
    oxj(&["release", "p", "a", "--worker", "w2"]);
    let back = oxj(&["state", "restore", "p", "a"]);
    assert!(back["epoch"].as_u64().unwrap() > 2, "epochs continue above both: {back:#}");
    let a = oxj(&["state", "show", "p"])["steps"][0]["partitions"][0].clone();
    assert_eq!(a["last_processed_id"], "bad", "the copy before the release (which only let go) has the same bookmark: {a:#}");
    let o = code(&["state", "restore", "p", "a", "--version", "999"]);
    assert_eq!(o.status.code(), Some(NOT_FOUND), "{}", text(&o));
    // A rewind: batches 1-3 ran; go back to the copy written at batch 1.
    oxj(&["claim", "p", "b@0", "--worker", "w3", "--force"]);
    for batch in 1..=3 {
        let (n, id) = (batch.to_string(), format!("b-{batch}"));
        oxj(&["checkpoint", "p", "b@0", "--worker", "w3", "--batch", &n, "--add-records", "10", "--last-id", &id]);
    }
    oxj(&["release", "p", "b@0", "--worker", "w3"]);
    let rewound = oxj(&["state", "restore", "p", "b@0", "--to-batch", "1"]);
    assert_eq!(rewound["discarded_records"], 20, "{rewound:#}");
    let b0 = oxj(&["state", "show", "p"])["steps"][1]["partitions"][0].clone();
    let got = (b0["batch_number"].as_u64(), b0["last_processed_id"].as_str(), b0["records_processed"].as_u64());
    assert_eq!(got, (Some(1), Some("b-1"), Some(10)), "{b0:#}");
    oxj(&["claim", "p", "b@0", "--worker", "w4", "--force"]);
}

#[test]
fn restore_puts_a_kept_copy_back_on_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".oxiflow")).unwrap();
    std::fs::write(dir.path().join(".oxiflow/config.yaml"), "state:\n  history: { keep_last: 10 }\n").unwrap();
    let d = dir.path();
    restore_from_history(d, &[]);
    let o = run(d, &["state", "restore", "p", "b"]);
    assert_eq!(o.status.code(), Some(2), "one partition at a time: {}", text(&o));
    // Exit 7's advice: a corrupt document is restored from its last kept copy.
    json(d, &["claim", "p", "a", "--worker", "w3"]);
    json(d, &["checkpoint", "p", "a", "--worker", "w3", "--add-records", "1", "--last-id", "good"]);
    let key = d.join(".oxiflow/state/pipelines/p/partitions/a.json");
    let bytes = std::fs::read(&key).unwrap();
    std::fs::write(&key, &bytes[..bytes.len() / 2]).unwrap();
    fails(d, &["state", "show", "p"], 7);
    let back = json(d, &["state", "restore", "p", "a"]);
    assert_eq!(back["replaced_corrupt"], true, "{back:#}");
    fails(d, &["checkpoint", "p", "a", "--worker", "w3", "--add-records", "1"], FENCED);
    let a = partition(&json(d, &["state", "show", "p"]), 0, 0).clone();
    assert_eq!((a["last_processed_id"].as_str(), a["worker_id"].as_str()), (Some("good"), Some("w3")), "{a:#}");
    json(d, &["claim", "p", "a", "--worker", "w4"]);
}

#[test]
fn restore_puts_a_kept_copy_back_on_s3() {
    let Some(mut env) = s3_env("restore") else { return };
    env.push(("OXIFLOW_HISTORY_KEEP_LAST", "10".into()));
    let dir = tempfile::tempdir().unwrap();
    restore_from_history(dir.path(), &env);
}

#[test]
fn cleanup_lists_with_dry_run_and_keeps_to_one_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let short = [("OXIFLOW_SKEW_ALLOWANCE", "50ms"), ("OXIFLOW_SAFETY_MARGIN", "50ms")];
    for p in ["p", "q"] {
        json(d, &["state", "create", p, "--step", "a"]);
        let o = ox(d).envs(short).args(["claim", p, "a", "--worker", "dead", "--ttl", "300ms"]).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    std::thread::sleep(Duration::from_millis(450));
    let cleanup = |args: &[&str]| -> Value {
        let o = ox(d).envs(short).args(["state", "cleanup", "--stale-workers", "--json"]).args(args).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let dry = cleanup(&["--dry-run"]);
    assert_eq!((dry["keys"].as_array().unwrap().len(), dry["dry_run"].as_bool()), (2, Some(true)), "{dry:#}");
    assert_eq!(cleanup(&["--dry-run"])["keys"].as_array().unwrap().len(), 2, "a dry run released nothing");
    assert_eq!(cleanup(&["--pipeline", "q"])["keys"], serde_json::json!(["pipelines/q/partitions/a.json"]));
    assert_eq!(cleanup(&["--dry-run"])["keys"], serde_json::json!(["pipelines/p/partitions/a.json"]));
    fails(d, &["state", "cleanup", "--stale-workers", "--pipeline", "nope"], NOT_FOUND);
}

#[test]
fn import_copy_and_worker_start_print_one_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let file = d.join("p.json");
    assert!(run(d, &["state", "export", "p", "-o", file.to_str().unwrap()]).status.success());
    let other = tempfile::tempdir().unwrap();
    let b = other.path().to_str().unwrap();
    let imported = json(d, &["--backend", b, "state", "import", "p", "--from", file.to_str().unwrap()]);
    assert_eq!((imported["partitions"].as_u64(), imported["replaced"].as_bool()), (Some(3), Some(false)), "{imported:#}");
    let copied = json(d, &["state", "copy", "--to", b, "--replace"]);
    assert_eq!((copied["pipelines"].clone(), copied["discarded_records"].as_u64()), (serde_json::json!(["p"]), Some(0)), "{copied:#}");
    let exec = "echo '{\"records\": 4, \"done\": true}'";
    let o = ox(d).args(["worker", "start", "--pipeline", "p", "--worker-id", "wk", "--exec", exec, "--json", "-v"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", text(&o)));
    let got = (report["completed"].as_u64(), report["records"].as_u64(), report["ended"].as_str(), report["status"].as_str());
    assert_eq!(got, (Some(3), Some(12), Some("finished"), Some("completed")), "{report:#}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("checkpointed p/a: +4 records"), "-v logs each checkpoint: {}", text(&o));
}
