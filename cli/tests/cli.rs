//! End-to-end tests of the `oxiflow` binary: every command, `--json`
//! schemas, exit codes and bad input, on temp directories and on the S3
//! server process (moto) when `scripts/test.sh` started one.

// The shared helpers in tests/support are `pub` for every test file.
#![allow(unreachable_pub)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod support;

use serde_json::Value;
use support::{ox, s3_env};

const INVALID: i32 = 2;
const NOT_FOUND: i32 = 3;
const CONFLICT: i32 = 4;
const LEASE_HELD: i32 = 5;
const FENCED: i32 = 6;
const CORRUPT: i32 = 7;
const UNAVAILABLE: i32 = 8;
const NOT_READY: i32 = 9;
const FINISHED: i32 = 10;
const STOPPED: i32 = 11;

fn run(dir: &Path, args: &[&str]) -> Output {
    ox(dir).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("stdout: {}\nstderr: {}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs and expects exit 0; returns stdout as JSON.
fn json(dir: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let o = run(dir, &all);
    assert!(o.status.success(), "{args:?} failed: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", text(&o)))
}

/// Runs and expects exit `code`; returns stderr.
fn fails(dir: &Path, args: &[&str], code: i32) -> String {
    let o = run(dir, args);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    json(dir.path(), &["state", "create", "orders", "--step", "extract", "--step", "load:2"]);
    dir
}

#[test]
fn demo_runs_on_the_embedded_default_and_ends_completed() {
    let dir = tempfile::tempdir().unwrap();
    let view = json(dir.path(), &["demo", "--records", "2000", "--shards", "2", "--workers", "3"]);
    assert_eq!(view["status"], "completed", "{view:#}");
    assert_eq!(view["records_processed"], 6000, "each of 3 steps saw every record once: {view:#}");
    let transform = &view["steps"][1];
    let attempts: u64 = transform["partitions"].as_array().unwrap().iter().map(|p| p["attempts"].as_u64().unwrap()).sum();
    assert_eq!(attempts, 3, "one transform shard was taken over after the crash: {transform:#}");
    assert!(dir.path().join(".oxiflow/state/pipelines").is_dir(), "state lives in .oxiflow/state");
}

#[test]
fn claim_checkpoint_release_with_exit_codes() {
    let dir = setup();
    let d = dir.path();
    let claimed = json(d, &["claim", "orders", "extract", "--worker", "w1"]);
    assert_eq!((claimed["worker_id"].as_str(), claimed["epoch"].as_u64()), (Some("w1"), Some(1)), "{claimed:#}");
    assert!(fails(d, &["claim", "orders", "extract", "--worker", "w2"], LEASE_HELD).contains("held by w1"));
    let after = json(
        d,
        &[
            "checkpoint",
            "orders",
            "extract",
            "--worker",
            "w1",
            "--add-records",
            "10",
            "--add-bytes",
            "99",
            "--last-id",
            "o-10",
            "--batch",
            "1",
            "--extra",
            "src=a",
        ],
    );
    assert_eq!((after["records_processed"].as_u64(), after["last_processed_id"].as_str()), (Some(10), Some("o-10")), "{after:#}");
    assert!(fails(d, &["checkpoint", "orders", "extract", "--worker", "w2", "--add-records", "1"], FENCED).contains("held by w1"));
    assert!(fails(d, &["checkpoint", "orders", "extract", "--worker", "w1", "--batch", "0"], INVALID)
        .contains("batch_number would go backwards"));
    let released = json(d, &["release", "orders", "extract", "--worker", "w1"]);
    assert_eq!((released["status"].as_str(), released["worker_id"].as_str()), (Some("pending"), None), "{released:#}");
    assert!(fails(d, &["checkpoint", "orders", "extract", "--worker", "w1"], FENCED).contains("no longer holds"));
    // load waits for all of extract: refused by name, unless forced.
    let refused = fails(d, &["claim", "orders", "load@1", "--worker", "w1"], NOT_READY);
    assert!(refused.contains("waits on extract") && refused.contains("--force"), "{refused}");
    json(d, &["claim", "orders", "load@1", "--worker", "w1", "--force"]);
    let done = json(d, &["checkpoint", "orders", "load@1", "--worker", "w1", "--add-records", "5", "--complete"]);
    assert!(done["status"]["completed"].is_object(), "{done:#}");
    assert!(fails(d, &["claim", "orders", "load@1", "--worker", "w1"], INVALID).contains("start a new run"));
    json(d, &["claim", "orders", "load@0", "--worker", "w1", "--force"]);
    let failed = json(d, &["checkpoint", "orders", "load@0", "--worker", "w1", "--fail", "upstream 503", "--retryable"]);
    assert_eq!(failed["status"]["failed"]["retryable"], true, "{failed:#}");
    fails(d, &["claim", "orders", "nope", "--worker", "w1"], NOT_FOUND);
    fails(d, &["claim", "nope", "extract", "--worker", "w1"], NOT_FOUND);
}

#[test]
fn claim_next_follows_the_plan_and_says_why_nothing_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    json(d, &["state", "create", "p", "--step", "a:2", "--step", "b:2", "--step", "c", "--after", "b=a:aligned"]);
    let first = json(d, &["claim", "p", "--next", "--worker", "w1"]);
    let second = json(d, &["claim", "p", "--next", "--worker", "w2"]);
    let mut got = [first["partition"].as_str().unwrap().to_string(), second["partition"].as_str().unwrap().to_string()];
    got.sort();
    assert_eq!(got, ["a@0", "a@1"], "only the roots are ready");
    // Nothing ready: exit 9 with the schedule saying why.
    let o = run(d, &["claim", "p", "--next", "--worker", "w3", "--json"]);
    assert_eq!(o.status.code(), Some(NOT_READY), "{}", text(&o));
    let schedule: Value = serde_json::from_slice(&o.stdout).unwrap();
    let b0 = &schedule["steps"][1]["partitions"][0];
    assert_eq!((b0["partition"].as_str(), b0["readiness"]["state"].as_str()), (Some("b@0"), Some("waiting")), "{schedule:#}");
    assert_eq!(b0["readiness"]["on"], serde_json::json!(["a@0"]), "aligned: b@0 waits for a@0 only");
    assert_eq!(schedule["steps"][2]["partitions"][0]["readiness"]["on"], serde_json::json!(["b@0", "b@1"]), "c waits for all of b");
    // a@0 done → b@0 ready, b@1 still waits for a@1.
    let a0 = first["partition"].as_str().unwrap();
    let holder0 = if a0 == "a@0" { "w1" } else { "w2" };
    json(d, &["checkpoint", "p", "a@0", "--worker", holder0, "--add-records", "3", "--complete"]);
    assert!(fails(d, &["claim", "p", "b@1", "--worker", "w3"], NOT_READY).contains("waits on a@1"));
    assert_eq!(json(d, &["claim", "p", "--next", "--worker", "w3"])["partition"], "b@0");
    let show = json(d, &["state", "show", "p"]);
    assert_eq!((show["current_step"].as_str(), show["frontier"].clone()), (Some("a"), serde_json::json!(["a", "b"])), "{show:#}");
    // Finish everything: then exit 10, nothing left.
    let holder1 = if holder0 == "w1" { "w2" } else { "w1" };
    json(d, &["checkpoint", "p", "a@1", "--worker", holder1, "--complete"]);
    json(d, &["checkpoint", "p", "b@0", "--worker", "w3", "--complete"]);
    json(d, &["claim", "p", "b@1", "--worker", "w3"]);
    json(d, &["checkpoint", "p", "b@1", "--worker", "w3", "--complete"]);
    json(d, &["claim", "p", "--next", "--worker", "w3"]);
    json(d, &["checkpoint", "p", "c", "--worker", "w3", "--add-records", "2", "--complete"]);
    let o = run(d, &["claim", "p", "--next", "--worker", "w3"]);
    assert_eq!(o.status.code(), Some(FINISHED), "{}", text(&o));
    let show = json(d, &["state", "show", "p"]);
    assert_eq!(
        (show["status"].as_str(), show["current_step"].as_str(), show["records_processed"].as_u64()),
        (Some("completed"), Some("c"), Some(5))
    );
}

#[test]
fn bad_plans_are_refused_by_name_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: &[(&[&str], &str)] = &[
        (&["--step", "a", "--step", "b", "--after", "a=b"], "cycle: a -> b -> a"),
        (&["--step", "a", "--after", "nope=a"], "not one of the --step steps"),
        (&["--step", "a", "--step", "b", "--after", "b=nope"], "nope, which is not a step"),
        (&["--step", "a", "--after", "a=a"], "a depends on itself"),
        (&["--step", "a:4", "--step", "b:3", "--after", "b=a:aligned"], "b (3 shards) cannot be aligned with a (4 shards)"),
        (&["--step", "a", "--step", "a:2"], "a is listed twice"),
        // A step of another pipeline cannot be named: ids have no '/'.
        (&["--step", "a", "--step", "b", "--after", "b=other/a"], "must not contain '/'"),
    ];
    for (flags, says) in cases {
        let mut args = vec!["state", "create", "p"];
        args.extend_from_slice(flags);
        let err = fails(d, &args, INVALID);
        assert!(err.contains(says), "{flags:?}: {err}");
    }
    assert!(!d.join(".oxiflow/state/pipelines/p").exists(), "nothing was written");
    std::fs::write(d.join("pipeline.yaml"), "steps:\n  - name: a\n  - name: b\n    after: [a\n").unwrap();
    let err = fails(d, &["state", "create", "p", "--from", "pipeline.yaml"], INVALID);
    assert!(err.contains("pipeline.yaml:"), "a YAML syntax error names the file and line: {err}");
    std::fs::write(d.join("pipeline.yaml"), "steps:\n  - name: a\n    shards: 2\n  - name: b\n    shards: 2\n    after: [a:aligned]\n")
        .unwrap();
    let view = json(d, &["state", "create", "p", "--from", "pipeline.yaml"]);
    assert_eq!(view["steps"][1]["after"], serde_json::json!(["a (aligned)"]), "{view:#}");
    json(d, &["state", "create", "p", "--from", "pipeline.yaml"]);
    let err = fails(d, &["state", "create", "p", "--step", "a:2", "--step", "b:2"], INVALID);
    assert!(err.contains("exists with another plan") && err.contains("b:2 after a aligned"), "{err}");
}

#[test]
fn a_stop_request_with_a_saved_checkpoint_exits_11_and_keeps_the_progress() {
    let dir = setup();
    let d = dir.path();
    json(d, &["claim", "orders", "extract", "--worker", "w1"]);
    json(d, &["checkpoint", "orders", "extract", "--worker", "w1", "--add-records", "5"]);
    json(d, &["worker", "stop", "--worker-id", "w1"]);
    let o = run(d, &["checkpoint", "orders", "extract", "--worker", "w1", "--add-records", "7", "--json"]);
    assert_eq!(o.status.code(), Some(STOPPED), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("saved; stop requested"), "{}", text(&o));
    let show = json(d, &["state", "show", "orders"]);
    assert_eq!(show["steps"][0]["partitions"][0]["records_processed"], 12, "both checkpoints landed, and exit 11 said so");
    // Nothing more is written, and exit 6 says that.
    fails(d, &["checkpoint", "orders", "extract", "--worker", "w1", "--add-records", "1"], FENCED);
    assert_eq!(json(d, &["state", "show", "orders"])["steps"][0]["partitions"][0]["records_processed"], 12);
}

#[test]
fn state_commands_and_json_schemas() {
    let dir = setup();
    let d = dir.path();
    json(d, &["claim", "orders", "extract", "--worker", "w1"]);
    json(d, &["checkpoint", "orders", "extract", "--worker", "w1", "--add-records", "7"]);
    let list = json(d, &["state", "list"]);
    let row = &list.as_array().unwrap()[0];
    for field in ["pipeline_id", "run_id", "status", "steps", "records_processed", "total_errors", "leases_held", "updated_at"] {
        assert!(row.get(field).is_some(), "state list lacks {field}: {row:#}");
    }
    assert_eq!((row["records_processed"].as_u64(), row["leases_held"].as_u64()), (Some(7), Some(1)));
    assert_eq!(json(d, &["state", "list", "--active"]).as_array().unwrap().len(), 1);
    let show = json(d, &["state", "show", "orders"]);
    for field in ["pipeline_id", "run_id", "status", "steps", "recent_errors", "records_processed", "total_errors"] {
        assert!(show.get(field).is_some(), "state show lacks {field}");
    }
    let part = &show["steps"][0]["partitions"][0];
    assert_eq!((part["lease"]["worker_id"].as_str(), part["lease"]["status"]["state"].as_str()), (Some("w1"), Some("held")), "{part:#}");
    let locks = json(d, &["lock", "status", "orders"]);
    assert_eq!(locks.as_array().unwrap().len(), 1);
    assert_eq!(json(d, &["worker", "list"]), locks);
    let human = run(d, &["state", "show", "orders"]);
    let out = String::from_utf8_lossy(&human.stdout);
    assert!(
        out.contains("extract") && out.contains("w1 e1 expires in") && !out.contains('\u{1b}'),
        "human output, no colour off a TTY:\n{out}"
    );

    // export → import into another directory; import refuses to clobber
    let file = d.join("orders.json");
    assert!(run(d, &["state", "export", "orders", "-o", file.to_str().unwrap()]).status.success());
    let other = tempfile::tempdir().unwrap();
    let backend = format!("file://{}", other.path().display());
    assert!(run(d, &["--backend", &backend, "state", "import", "orders", "--from", file.to_str().unwrap()]).status.success());
    assert_eq!(json(d, &["--backend", &backend, "state", "show", "orders"])["records_processed"], 7);
    fails(d, &["--backend", &backend, "state", "import", "orders", "--from", file.to_str().unwrap()], CONFLICT);
    assert!(run(d, &["--backend", &backend, "state", "import", "orders", "--from", file.to_str().unwrap(), "--replace"]).status.success());
    assert!(fails(d, &["state", "import", "other", "--from", file.to_str().unwrap()], INVALID).contains("holds pipeline orders"));

    // restoring over live work: refused (exit 5) and nothing changes; with
    // --force it reports what it discards, and the holder is fenced
    let b = backend.as_str();
    json(d, &["--backend", b, "claim", "orders", "extract", "--worker", "w1"]);
    json(d, &["--backend", b, "checkpoint", "orders", "extract", "--worker", "w1", "--add-records", "50"]);
    let from = file.to_str().unwrap();
    assert!(fails(d, &["--backend", b, "state", "import", "orders", "--from", from, "--replace"], LEASE_HELD).contains("held by w1"));
    assert_eq!(json(d, &["--backend", b, "state", "show", "orders"])["records_processed"], 57, "a refused restore changes nothing");
    let forced = json(d, &["--backend", b, "state", "import", "orders", "--from", from, "--replace", "--force"]);
    assert_eq!((forced["replaced"].as_bool(), forced["discarded_records"].as_u64()), (Some(true), Some(50)), "{forced:#}");
    fails(d, &["--backend", b, "checkpoint", "orders", "extract", "--worker", "w1", "--add-records", "1"], FENCED);
    let restored = json(d, &["--backend", b, "state", "show", "orders"]);
    assert_eq!(restored["records_processed"], 7);
    assert!(restored["steps"][0]["partitions"][0]["lease"]["epoch"].as_u64().unwrap() > 1, "the epoch went up, not back: {restored:#}");

    // copy to a third store
    let third = tempfile::tempdir().unwrap();
    let to = format!("file://{}", third.path().display());
    assert_eq!(json(d, &["state", "copy", "--to", &to])["keys"], serde_json::json!(["orders"]));
    assert_eq!(json(d, &["--backend", &to, "state", "show", "orders"])["records_processed"], 7);

    // reset and new run refuse while held, changing no byte; then each is
    // one write to the pipeline document, and every reader sees it
    let before = stored_bytes(&d.join(".oxiflow/state"));
    fails(d, &["state", "reset", "orders", "--step", "extract"], LEASE_HELD);
    fails(d, &["state", "reset", "orders", "--new-run"], LEASE_HELD);
    assert!(before == stored_bytes(&d.join(".oxiflow/state")), "a refused reset changes nothing");
    json(d, &["checkpoint", "orders", "extract", "--worker", "w1", "--last-id", "o-7"]);
    json(d, &["release", "orders", "extract", "--worker", "w1"]);
    let reset = json(d, &["state", "reset", "orders", "--step", "extract"]);
    assert_eq!(
        (reset["partitions"].as_u64(), reset["discarded_records"].as_u64(), reset["generation"].as_u64()),
        (Some(1), Some(7), Some(1)),
        "{reset:#}"
    );
    let view = json(d, &["state", "show", "orders"]);
    assert_eq!(
        (view["records_processed"].as_u64(), view["steps"][0]["partitions"][0]["status"].as_str()),
        (Some(0), Some("pending")),
        "{view:#}"
    );
    let new_run = json(d, &["state", "reset", "orders", "--new-run"]);
    assert_eq!(new_run["generation"], 2, "{new_run:#}");
    let view = json(d, &["state", "show", "orders"]);
    assert!(view["run_id"].as_str().unwrap().starts_with("run-") && view["run_id"] != "run-1", "{view:#}");
    assert_eq!(view["steps"][0]["partitions"][0]["last_processed_id"], "o-7");
    // The next claim stores the partition in the new run, one epoch up.
    let claimed = json(d, &["claim", "orders", "extract", "--worker", "w2"]);
    let got = (claimed["epoch"].as_u64(), claimed["records_processed"].as_u64(), claimed["last_processed_id"].as_str());
    assert_eq!(got, (Some(2), Some(0), Some("o-7")), "{claimed:#}");

    // doctor
    let doctor = json(d, &["doctor"]);
    assert_eq!((doctor["probe"]["create_if_absent"].as_bool(), doctor["probe"]["update_if_match"].as_bool()), (Some(true), Some(true)));
}

/// Every stored file under `dir` and its bytes.
fn stored_bytes(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            match entry.file_type().unwrap().is_dir() {
                true => todo.push(entry.path()),
                false => drop(files.insert(entry.path(), std::fs::read(entry.path()).unwrap())),
            }
        }
    }
    assert!(!files.is_empty(), "no state under {}", dir.display());
    files
}

#[test]
fn history_is_kept_when_configured() {
    let dir = setup();
    let d = dir.path();
    std::fs::write(d.join(".oxiflow/config.yaml"), "state:\n  history: { keep_last: 2 }\n").unwrap();
    json(d, &["claim", "orders", "extract", "--worker", "w1"]);
    for n in 1..=3 {
        json(d, &["checkpoint", "orders", "extract", "--worker", "w1", "--add-records", &n.to_string()]);
    }
    let history = json(d, &["state", "history", "orders", "--step", "extract"]);
    let records: Vec<u64> = history.as_array().unwrap().iter().map(|h| h["records_processed"].as_u64().unwrap()).collect();
    assert_eq!(records, [3, 6], "the last two versions");
}

#[test]
fn cleanup_releases_dead_workers_leases() {
    let dir = setup();
    let d = dir.path();
    let short = [("OXIFLOW_SKEW_ALLOWANCE", "50ms"), ("OXIFLOW_SAFETY_MARGIN", "50ms"), ("OXIFLOW_HEARTBEAT_INTERVAL", "100ms")];
    let o = ox(d).envs(short).args(["claim", "orders", "extract", "--worker", "dead", "--ttl", "300ms"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let cleanup = || -> Value {
        serde_json::from_slice(&ox(d).envs(short).args(["state", "cleanup", "--stale-workers", "--json"]).output().unwrap().stdout).unwrap()
    };
    assert_eq!(cleanup()["keys"].as_array().unwrap().len(), 0, "a live lease is left alone");
    std::thread::sleep(Duration::from_millis(400)); // let the 300 ms lease expire (+50 ms skew)
    assert_eq!(cleanup()["keys"].as_array().unwrap().len(), 1, "the dead worker's lease is released");
    json(d, &["claim", "orders", "extract", "--worker", "alive"]);
}

#[test]
fn bad_input_gets_an_actionable_message_and_changes_nothing() {
    let dir = setup();
    let d = dir.path();
    assert!(fails(d, &["claim", "../etc", "x", "--worker", "w"], INVALID).contains("must not contain '/'"));
    let long = "w".repeat(200);
    assert!(fails(d, &["claim", "orders", "extract", "--worker", &long], INVALID).contains("at most 128 bytes"));
    assert!(fails(d, &["claim", "orders", "extract", "--worker", "wоrker"], INVALID).contains("only ASCII"), "a Cyrillic lookalike");
    assert!(fails(d, &["state", "create", "p", "--step", "a:0"], INVALID).contains("positive"));
    assert!(fails(d, &["--backend", "ftp://x/y", "state", "list"], INVALID).contains("unknown scheme"));
    // an endpoint nothing listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let o = ox(d)
        .args(["--backend", "s3://bucket/p", "state", "show", "orders"])
        .env("OXIFLOW_ENDPOINT", &endpoint)
        .env("OXIFLOW_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "AKID")
        .env("AWS_SECRET_ACCESS_KEY", "super-secret-value-123")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(UNAVAILABLE), "{}", text(&o));
    assert!(err.contains(&endpoint) && !err.contains("super-secret-value-123"), "{err}");
    // a config syntax error names file, line and column
    std::fs::write(d.join(".oxiflow/config.yaml"), "state:\n  url: [oops\n").unwrap();
    let err = fails(d, &["state", "list"], INVALID);
    assert!(err.contains(".oxiflow/config.yaml:") && err.contains("line") || err.contains("config.yaml:3:"), "{err}");
    std::fs::remove_file(d.join(".oxiflow/config.yaml")).unwrap();
    // a corrupted state object: typed error naming the key, bytes untouched
    let key = d.join(".oxiflow/state/pipelines/orders/partitions/extract.json");
    let mut bytes = std::fs::read(&key).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&key, &bytes).unwrap();
    let err = fails(d, &["claim", "orders", "extract", "--worker", "w1"], CORRUPT);
    assert!(err.contains("pipelines/orders/partitions/extract.json") && err.contains("nothing was overwritten"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), bytes, "the damaged object is left exactly as it was");
    let err = json_err(d, &["state", "show", "orders"]);
    assert_eq!((err["error"]["kind"].as_str(), err["error"]["exit_code"].as_u64()), (Some("corrupt"), Some(7)));
}

/// `--json` errors: one JSON object on stderr.
fn json_err(dir: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let o = run(dir, &all);
    assert!(!o.status.success());
    serde_json::from_slice(&o.stderr).unwrap_or_else(|e| panic!("error is not JSON ({e}): {}", text(&o)))
}

const BATCHES: &str = r#"#!/bin/sh
b=${OXIFLOW_BATCH_NUMBER:-0}
if [ "$b" -ge 3 ]; then echo '{"done": true}'; exit 0; fi
n=$((b+1))
echo "{\"records\": 10, \"bytes\": 100, \"last_id\": \"$OXIFLOW_PARTITION-$n\", \"batch\": $n}"
"#;

/// Prints a progress line every 50 ms, forever.
const SLOW: &str = r#"#!/bin/sh
i=0
while true; do i=$((i+1)); echo "{\"records\": 1, \"last_id\": \"r-$i\"}"; sleep 0.05; done
"#;

fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    path.display().to_string()
}

#[test]
fn worker_start_runs_batches_to_completion() {
    let dir = setup();
    let d = dir.path();
    let exec = script(d, "batches.sh", BATCHES);
    let o = run(d, &["worker", "start", "--pipeline", "orders", "--worker-id", "wk", "--exec", &exec]);
    assert!(o.status.success(), "{}", text(&o));
    let view = json(d, &["state", "show", "orders"]);
    assert_eq!((view["status"].as_str(), view["records_processed"].as_u64()), (Some("completed"), Some(90)), "{view:#}");
    assert_eq!(view["steps"][1]["partitions"][1]["last_processed_id"], "load@1-3");
}

#[test]
fn a_failing_batch_is_retried_with_backoff_not_in_a_hot_loop() {
    let dir = setup();
    let d = dir.path();
    let tries = d.join("tries");
    // Reports progress, then exits 3: every attempt fails, retryably.
    let exec = script(d, "fails.sh", &format!("#!/bin/sh\necho x >> {}\necho '{{\"records\": 5}}'\nexit 3\n", tries.display()));
    let mut child = ox(d)
        .args(["worker", "start", "--pipeline", "orders", "--worker-id", "wk", "--exec", &exec])
        .env("OXIFLOW_RETRY_BASE", "1s")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) for the 3rd failure to be recorded: after the 1 s and
    // 2 s backoffs (the script's line alone would race the worker's write).
    let deadline = Instant::now() + Duration::from_secs(30);
    while json(d, &["state", "show", "orders"])["steps"][0]["partitions"][0]["failures"].as_u64().unwrap_or(0) < 3 {
        assert!(Instant::now() < deadline, "the retries never came");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let view = json(d, &["state", "show", "orders"]);
    let extract = &view["steps"][0]["partitions"][0];
    let attempts = extract["attempts"].as_u64().unwrap();
    let tried = std::fs::read_to_string(&tries).unwrap().lines().count() as u64;
    assert_eq!(tried, attempts, "one run of the script per claim");
    assert!((3..=4).contains(&attempts), "backoff 1 s, 2 s, 4 s …: not a hot loop ({attempts} attempts)");
    assert_eq!(extract["readiness"]["state"], "backoff", "{extract:#}");
}

#[test]
fn a_script_can_fail_a_step_for_good_and_its_downstream_is_blocked() {
    let dir = setup();
    let d = dir.path();
    let exec = script(
        d,
        "gives-up.sh",
        "#!/bin/sh\necho '{\"records\": 2}'\necho '{\"fail\": \"input file is corrupt\", \"retryable\": false}'\nsleep 30\n",
    );
    let o = run(d, &["worker", "start", "--pipeline", "orders", "--worker-id", "wk", "--exec", &exec]);
    assert!(o.status.success(), "the worker ends: nothing is left it may run: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing left to do in orders (failed)"), "{}", text(&o));
    let view = json(d, &["state", "show", "orders"]);
    assert_eq!(view["status"], "failed", "{view:#}");
    let extract = &view["steps"][0]["partitions"][0];
    assert_eq!((extract["records_processed"].as_u64(), extract["readiness"]["state"].as_str()), (Some(2), Some("failed")));
    let load0 = &view["steps"][1]["partitions"][0];
    assert_eq!((load0["readiness"]["state"].as_str(), load0["readiness"]["by"][0].as_str()), (Some("blocked"), Some("extract")));
    fails(d, &["claim", "orders", "--next", "--worker", "w2"], FINISHED);
}

#[test]
fn a_closed_pipe_ends_a_command_quietly_and_a_worker_keeps_working() {
    use std::os::unix::process::ExitStatusExt;
    let dir = setup();
    let d = dir.path();
    // `oxiflow state show orders | true`: a reader that is already gone.
    for args in [&["state", "show", "orders"][..], &["--json", "state", "show", "orders"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = ox(d).args(args).stdout(writer).output().unwrap();
        assert_eq!(o.status.signal(), Some(13), "{args:?}: ended by SIGPIPE, like other Unix tools: {}", text(&o));
        assert!(o.stderr.is_empty(), "{args:?}: quietly, no panic, no error: {}", text(&o));
    }
    // A worker whose log goes nowhere still does its work and lets go of its leases.
    let exec = script(d, "batches.sh", BATCHES);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = ox(d).args(["worker", "start", "--pipeline", "orders", "--worker-id", "wk", "--exec", &exec]).stderr(writer).output().unwrap();
    assert!(o.status.success(), "{:?}", o.status);
    let view = json(d, &["state", "show", "orders"]);
    assert_eq!((view["status"].as_str(), view["records_processed"].as_u64()), (Some("completed"), Some(90)), "{view:#}");
    assert!(json(d, &["lock", "status", "orders"]).as_array().unwrap().is_empty(), "no lease left held");
}

/// Starts a worker on SLOW and waits until it holds a lease.
fn start_slow_worker(d: &Path) -> std::process::Child {
    let exec = script(d, "slow.sh", SLOW);
    let child = ox(d).args(["worker", "start", "--pipeline", "orders", "--worker-id", "wk", "--exec", &exec]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while json(d, &["lock", "status", "orders"]).as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the worker never claimed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn worker_stop_makes_a_running_worker_release_and_exit() {
    let dir = setup();
    let d = dir.path();
    let mut child = start_slow_worker(d);
    let asked = json(d, &["worker", "stop", "--worker-id", "wk"]);
    assert_eq!(asked["asked"].as_array().unwrap().len(), 1, "{asked:#}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(json(d, &["lock", "status", "orders"]).as_array().unwrap().is_empty(), "the lease was released");
    assert!(json(d, &["state", "show", "orders"])["records_processed"].as_u64().unwrap() >= 1, "progress before the stop was saved");
}

#[test]
fn sigterm_makes_a_worker_release_and_exit() {
    let dir = setup();
    let d = dir.path();
    let mut child = start_slow_worker(d);
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(json(d, &["lock", "status", "orders"]).as_array().unwrap().is_empty(), "the lease was released");
}

/// 8 processes × 25 rounds of claim → checkpoint +1 → release on one
/// partition: the stored count equals the checkpoints that exited 0.
fn checkpoint_race(d: &Path, env: &[(&'static str, String)]) {
    let oxe = |args: &[&str]| {
        let mut c = ox(d);
        c.envs(env.iter().map(|(k, v)| (*k, v.as_str()))).args(args);
        c.output().unwrap()
    };
    assert!(oxe(&["state", "create", "race", "--step", "count"]).status.success());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (d, env) = (d.to_path_buf(), env.to_vec());
            std::thread::spawn(move || {
                let oxe = |args: &[&str]| {
                    let mut c = ox(&d);
                    c.envs(env.iter().map(|(k, v)| (*k, v.as_str()))).args(args);
                    c.output().unwrap()
                };
                let w = format!("w{i}");
                let (mut ok, mut unknown) = (0, 0);
                for _ in 0..25 {
                    loop {
                        match oxe(&["claim", "race", "count", "--worker", &w]).status.code() {
                            Some(0) => break,
                            Some(LEASE_HELD | CONFLICT) => std::thread::sleep(Duration::from_millis(2 + rand_ms())),
                            other => panic!("claim exited {other:?}"),
                        }
                    }
                    let o = oxe(&["checkpoint", "race", "count", "--worker", &w, "--add-records", "1"]);
                    match o.status.code() {
                        Some(0) => ok += 1,
                        // The store failed transiently past the retries: the
                        // outcome is unknown (exit 8 says exactly that).
                        Some(UNAVAILABLE) => unknown += 1,
                        other => panic!("a holder's checkpoint exited {other:?}: {}", text(&o)),
                    }
                    let _ = oxe(&["release", "race", "count", "--worker", &w]);
                }
                (ok, unknown)
            })
        })
        .collect();
    let (ok, unknown) = threads.into_iter().map(|t| t.join().unwrap()).fold((0u64, 0u64), |a, b| (a.0 + b.0, a.1 + b.1));
    let o = oxe(&["state", "show", "race", "--json"]);
    let view: Value = serde_json::from_slice(&o.stdout).unwrap();
    let stored = view["records_processed"].as_u64().unwrap();
    println!("checkpoint race: {ok} exit-0 checkpoints, {unknown} exit-8 (unknown outcome), stored {stored}");
    assert_eq!(ok + unknown, 200);
    assert!(
        ok <= stored && stored <= ok + unknown,
        "stored {stored} must count every exit-0 checkpoint once, plus at most the unknown ones"
    );
    if unknown == 0 {
        assert_eq!(stored, ok, "stored count must equal the exit-0 checkpoints");
    }
}

fn rand_ms() -> u64 {
    u64::from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() % 8)
}

#[test]
fn eight_cli_processes_race_on_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint_race(dir.path(), &[]);
}

#[test]
fn eight_cli_processes_race_on_s3() {
    let Some(env) = s3_env("CLI") else { return };
    let dir = tempfile::tempdir().unwrap();
    checkpoint_race(dir.path(), &env);
}

#[test]
fn commands_work_on_s3_and_a_missing_bucket_says_so() {
    let Some(env) = s3_env("CLI") else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let oxe = |args: &[&str]| ox(d).envs(env.iter().map(|(k, v)| (*k, v.as_str()))).args(args).output().unwrap();
    assert!(oxe(&["state", "create", "orders", "--step", "extract"]).status.success());
    assert!(oxe(&["claim", "orders", "extract", "--worker", "w1"]).status.success());
    assert!(oxe(&["checkpoint", "orders", "extract", "--worker", "w1", "--add-records", "3"]).status.success());
    let o = oxe(&["state", "show", "orders", "--json"]);
    assert_eq!(serde_json::from_slice::<Value>(&o.stdout).unwrap()["records_processed"], 3, "{}", text(&o));
    let o = oxe(&["doctor", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = ox(d)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["--backend", "s3://no-such-bucket-x/p", "state", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(INVALID), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"), "{}", text(&o));
}

#[test]
fn wrong_credentials_are_refused_by_name_without_echoing_the_key() {
    let Ok(endpoint) = std::env::var("OXIFLOW_TEST_AZURE_ENDPOINT") else {
        assert!(std::env::var_os("CI").is_none(), "azurite must run in CI (scripts/test.sh starts it)");
        eprintln!("SKIPPED CLI wrong credentials: OXIFLOW_TEST_AZURE_ENDPOINT is not set");
        return;
    };
    let container = std::env::var("OXIFLOW_TEST_AZURE_CONTAINER").unwrap_or_else(|_| "oxiflow-test".into());
    let wrong_key = "d3Jvbmcta2V5LXRoYXQtbXVzdC1uZXZlci1wcmludA==";
    let dir = tempfile::tempdir().unwrap();
    let o = ox(dir.path())
        .envs([
            ("OXIFLOW_BACKEND", format!("az://{container}/cli-{}", std::process::id())),
            ("OXIFLOW_ENDPOINT", endpoint),
            ("OXIFLOW_ALLOW_HTTP", "true".into()),
            ("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1".into()),
            ("AZURE_STORAGE_ACCOUNT_KEY", wrong_key.into()),
        ])
        .args(["state", "create", "orders", "--step", "extract"])
        .output()
        .unwrap();
    let err = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("access denied") && err.contains("check the credentials"), "{err}");
    assert!(!err.contains(wrong_key), "the key leaked: {err}");
}
