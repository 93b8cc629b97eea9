//! The CLI as a demanding user meets it (issue 12): typos are refused with
//! the right exit code and a message naming what would be right, read-only
//! commands leave nothing behind, configuration errors blame their source,
//! completions and help exist, `serve` says where it is.

// The shared helpers in tests/support are `pub` for every test file.
#![allow(unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod support;

use support::{fails, json, ox, run, s3_env, text};

const INVALID: i32 = 2;
const NOT_FOUND: i32 = 3;
const UNAVAILABLE: i32 = 8;

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    json(dir.path(), &["state", "create", "p", "--step", "a", "--step", "b:2"]);
    dir
}

#[test]
fn a_mistyped_backend_is_refused_and_read_only_commands_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = fails(d, &["--backend", "s3:/bad", "state", "list"], INVALID);
    assert!(err.contains("did you mean s3://") && err.contains("gs://") && err.contains("redis://"), "names the schemes: {err}");
    assert!(!d.join("s3:").exists(), "a typo is not a directory");
    assert!(fails(d, &["--backend", "foo:bar", "state", "list"], INVALID).contains("./foo:bar"));
    // A path nobody wrote to yet: read-only commands see nothing and create nothing.
    let o = run(d, &["--backend", "fresh/state", "state", "list"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("no pipelines"), "{}", text(&o));
    fails(d, &["--backend", "fresh/state", "state", "show", "p"], NOT_FOUND);
    assert!(run(d, &["state", "list", "--active"]).status.success());
    assert!(!d.join("fresh").exists() && !d.join(".oxiflow").exists(), "a read-only command created a directory");
    // An absolute path works for --to as it does for --backend.
    json(d, &["state", "create", "p", "--step", "a"]);
    let target = tempfile::tempdir().unwrap();
    let to = target.path().join("copy");
    let copied = json(d, &["state", "copy", "--to", to.to_str().unwrap()]);
    assert_eq!(copied["pipelines"], serde_json::json!(["p"]), "{copied:#}");
    assert_eq!(json(d, &["--backend", to.to_str().unwrap(), "state", "show", "p"])["pipeline_id"], "p");
}

#[test]
fn resets_and_history_name_the_pipelines_steps() {
    let dir = setup();
    let d = dir.path();
    let err = fails(d, &["state", "reset", "p", "--step", "b@0"], INVALID);
    assert!(err.contains("resets are per step") && err.contains("--step b"), "{err}");
    let err = fails(d, &["state", "reset", "p", "--step", "nope"], NOT_FOUND);
    assert!(err.contains("no step nope") && err.contains("a, b:2"), "{err}");
    assert!(fails(d, &["state", "history", "p", "--step", "nope"], NOT_FOUND).contains("a, b:2"));
    assert!(fails(d, &["state", "history", "p", "--step", "b@5"], NOT_FOUND).contains("b@0…b@1"));
    assert!(fails(d, &["state", "reset", "nope", "--step", "a"], NOT_FOUND).contains("pipelines/nope"));
    // The help says what a new run keeps: the batch number too (core/src/step.rs new_run).
    let help = String::from_utf8_lossy(&run(d, &["state", "reset", "--help"]).stdout).into_owned();
    assert!(help.contains("bookmarks and batch numbers kept"), "{help}");
    // A sharded step claimed whole: the shards, not a storage key.
    let err = fails(d, &["claim", "p", "b", "--worker", "w", "--force"], NOT_FOUND);
    assert!(err.contains("b has 2 shards: b@0…b@1") && !err.contains(".json"), "{err}");
}

#[test]
fn configuration_errors_blame_their_source_and_claim_ttl_scales() {
    let dir = setup();
    let d = dir.path();
    let o = ox(d).args(["state", "list"]).env("OXIFLOW_LEASE_TTL", "banana").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(INVALID), "{}", text(&o));
    assert!(err.contains("environment variable OXIFLOW_LEASE_TTL") && !err.contains("config"), "{err}");
    let err = fails(d, &["--config", "missing.yaml", "state", "list"], INVALID);
    assert_eq!(err.matches("No such file").count(), 1, "the reason once: {err}");
    assert!(fails(d, &["state", "import", "p", "--from", "missing.json"], INVALID).contains("cannot read missing.json"));
    assert!(fails(d, &["state", "export", "p", "-o", "no/such/dir/p.json"], INVALID).contains("cannot write no/such/dir/p.json"));
    assert!(fails(d, &["serve", "--token-file", "missing-token"], INVALID).contains("cannot read token file missing-token"));
    // A ttl of its own for one claim: the heartbeat scales; only a ttl no
    // checkpoint could be written under is refused, naming the limit.
    let claimed = json(d, &["claim", "p", "a", "--worker", "w", "--ttl", "12s"]);
    assert_eq!(claimed["worker_id"], "w", "{claimed:#}");
    json(d, &["checkpoint", "p", "a", "--worker", "w", "--add-records", "1"]);
    let err = fails(d, &["claim", "p", "b@0", "--worker", "w", "--ttl", "1s", "--force"], INVALID);
    assert!(err.contains("longer than 2s"), "{err}");
}

/// An S3 endpoint over plain http: `AWS_ALLOW_HTTP=true` (the object_store
/// convention) is honoured; without any allow_http it is a configuration
/// error in one sentence, not an unavailable store.
fn s3_over_http(env: &[(&'static str, String)], dir: &std::path::Path) -> (std::process::Output, std::process::Output) {
    let plain = || {
        let mut c = ox(dir);
        c.envs(env.iter().filter(|(k, _)| *k != "OXIFLOW_ALLOW_HTTP").map(|(k, v)| (*k, v.as_str())));
        c.env_remove("AWS_ALLOW_HTTP").args(["state", "list"]);
        c
    };
    let refused = plain().output().unwrap();
    let allowed = plain().env("AWS_ALLOW_HTTP", "true").output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(INVALID), "{}", text(&refused));
    assert!(err.contains("allow_http") && !err.contains("builder error") && err.lines().count() == 1, "{err}");
    (refused, allowed)
}

#[test]
fn aws_allow_http_is_honoured_and_its_absence_named() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = vec![
        ("OXIFLOW_BACKEND", "s3://bucket/p".to_string()),
        ("OXIFLOW_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ];
    let (_, allowed) = s3_over_http(&nowhere, dir.path());
    assert_eq!(allowed.status.code(), Some(UNAVAILABLE), "allowed, then nothing listens: {}", text(&allowed));
    let Some(env) = s3_env("usage") else { return };
    let (_, allowed) = s3_over_http(&env, dir.path());
    assert!(allowed.status.success(), "{}", text(&allowed));
}

#[test]
fn completions_and_help_for_every_argument() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for shell in ["bash", "zsh", "fish"] {
        let o = run(d, &["completions", shell]);
        let script = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && script.contains("oxiflow") && script.contains("restore"), "{shell}: {}", text(&o));
    }
    fails(d, &["completions", "tcsh"], INVALID);
    let help = String::from_utf8_lossy(&run(d, &["state", "import", "--help"]).stdout).into_owned();
    assert!(help.contains("The pipeline id") && help.contains("The export file"), "{help}");
    let help = String::from_utf8_lossy(&run(d, &["state", "cleanup", "--help"]).stdout).into_owned();
    assert!(help.contains("--dry-run") && help.contains("Release the leases of dead workers"), "{help}");
}

#[test]
fn serve_prints_its_dashboard_url_and_names_a_short_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = ox(d).args(["serve", "--listen", "127.0.0.1:0"]).env("OXIFLOW_SERVE_TOKEN", "short").output().unwrap();
    assert_eq!(o.status.code(), Some(INVALID), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("token too short (5 characters; at least 16)"), "{}", text(&o));
    let mut child = ox(d)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("OXIFLOW_SERVE_TOKEN", "0123456789abcdef")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let url = loop {
        assert!(Instant::now() < deadline, "no dashboard URL: {seen:?}");
        let line = lines.next().expect("serve ended").unwrap();
        if let Some(url) = line.strip_prefix("dashboard: ") {
            break url.to_string();
        }
        seen.push(line);
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/dashboard/") && !url.contains(":0/"), "{url}");
}

#[test]
fn a_scripts_own_lines_are_debug_output_and_v_raises_the_level() {
    let dir = setup();
    let d = dir.path();
    let exec = "echo 'hello from the script'; echo '{\"records\": 1, \"done\": true}'";
    let worker = |verbosity: Option<&str>| {
        let mut c = ox(d);
        c.args(["worker", "start", "--pipeline", "p", "--exec", exec]);
        if let Some(v) = verbosity {
            c.arg(v);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let quiet = worker(None);
    assert!(!quiet.contains("hello from the script") && !quiet.contains("WARN"), "not a warning: {quiet}");
    json(d, &["state", "reset", "p"]);
    let verbose = worker(Some("-v"));
    assert!(verbose.contains("checkpointed p/a: +1 records") && !verbose.contains("hello from the script"), "{verbose}");
    json(d, &["state", "reset", "p"]);
    let debug = worker(Some("-vv"));
    assert!(debug.contains("p/a: hello from the script") && !debug.contains('\u{1b}'), "debug, no colour off a terminal: {debug}");
}

#[test]
fn worker_start_shows_a_live_line_on_a_terminal_and_plain_lines_otherwise() {
    let dir = setup();
    let d = dir.path();
    let batches = "b=${OXIFLOW_BATCH_NUMBER:-0}; if [ $b -ge 2 ]; then echo '{\"done\": true}'; exit 0; fi; sleep 0.3; echo \"{\\\"records\\\": 10, \\\"batch\\\": $((b+1))}\"";
    std::fs::write(d.join("batches.sh"), batches).unwrap();
    let o = run(d, &["worker", "start", "--pipeline", "p", "--exec", "sh ./batches.sh"]);
    let plain = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success() && plain.contains("completed p/a (20 records)") && !plain.contains("records (") && !plain.contains('\r'),
        "{plain}"
    );
    // On a terminal (a pty from script(1)): the live line with records, rate and lease expiry.
    // (a new pipeline: a reset keeps the batch number the script counts by)
    json(d, &["state", "create", "q", "--step", "a"]);
    let command = format!("{} worker start --pipeline q --exec 'sh ./batches.sh'", env!("CARGO_BIN_EXE_oxiflow"));
    let mut script = std::process::Command::new("script");
    script.current_dir(d).args(["-qec", &command, "/dev/null"]);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OXIFLOW_")) {
        script.env_remove(k);
    }
    let Ok(o) = script.output() else {
        eprintln!("SKIPPED the live line: no script(1)");
        return;
    };
    let tty = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{tty}");
    assert!(tty.contains("q/a: 10 records (") && tty.contains("/s), lease expires in "), "{tty}");
    assert!(tty.contains("completed q/a"), "log lines still print: {tty}");
}
