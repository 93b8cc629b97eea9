//! What the CLI test binaries share.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::process::Command;

/// `oxiflow` in `dir`, with no inherited OXIFLOW_* settings.
pub fn ox(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oxiflow"));
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("OXIFLOW_") {
            c.env_remove(k);
        }
    }
    c
}

/// The environment that points `oxiflow` at the S3 server `scripts/test.sh`
/// starts (moto), under a fresh prefix per call: a pid alone comes back, and
/// with it an earlier run's state on the same server. `None` (the test is
/// skipped, saying so) outside CI when no server runs; under CI a missing
/// server fails the test.
pub fn s3_env(what: &str) -> Option<Vec<(&'static str, String)>> {
    let Ok(endpoint) = std::env::var("OXIFLOW_TEST_S3_ENDPOINT") else {
        assert!(std::env::var_os("CI").is_none(), "moto must run in CI (scripts/test.sh starts it)");
        eprintln!("SKIPPED {what} on S3: OXIFLOW_TEST_S3_ENDPOINT is not set");
        return None;
    };
    let bucket = std::env::var("OXIFLOW_TEST_S3_BUCKET").unwrap_or_else(|_| "oxiflow-test".into());
    let nanos = std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos();
    Some(vec![
        ("OXIFLOW_BACKEND", format!("s3://{bucket}/{}-{}-{nanos}", what.to_lowercase(), std::process::id())),
        ("OXIFLOW_ENDPOINT", endpoint),
        ("OXIFLOW_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ])
}

/// Runs `oxiflow ARGS` in `dir`.
pub fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    ox(dir).args(args).output().unwrap()
}

/// stdout and stderr, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!("stdout: {}\nstderr: {}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs with `--json` and expects exit 0; returns stdout as JSON.
pub fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let o = run(dir, &all);
    assert!(o.status.success(), "{args:?} failed: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", text(&o)))
}

/// Runs and expects exit `code`; returns stderr.
pub fn fails(dir: &Path, args: &[&str], code: i32) -> String {
    let o = run(dir, args);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stderr).into_owned()
}
