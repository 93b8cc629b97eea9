//! The bad-input corpus (`tests/corpus/`): every damaged object gives its
//! typed error and exit code, and its bytes are unchanged afterwards.

// The shared helpers in tests/support are `pub` for every test file.
#![allow(unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Output;

mod support;

fn ox(dir: &Path, args: &[&str]) -> Output {
    support::ox(dir).args(args).output().unwrap()
}

fn corpus(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A store with pipeline `orders` whose `extract` document is `bytes`.
fn planted(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    assert!(ox(dir.path(), &["state", "create", "orders", "--step", "extract"]).status.success());
    let key = dir.path().join(".oxiflow/state/pipelines/orders/partitions/extract.json");
    std::fs::write(&key, bytes).unwrap();
    (dir, key)
}

#[test]
fn the_valid_sample_reads() {
    let (dir, _) = planted(&corpus("valid.json"));
    let o = ox(dir.path(), &["state", "show", "orders", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["steps"][0]["partitions"][0]["last_processed_id"], "order-42");
}

#[test]
fn every_damaged_object_is_refused_and_left_untouched() {
    let cases = [
        ("truncated.json", "truncated"),
        ("corrupt-byte.json", "checksum mismatch"),
        ("wrong-checksum.json", "checksum mismatch"),
        ("future-format.json", "upgrade oxiflow"),
        ("unknown-field.json", "unknown field"),
        ("hostile-id-in-body.json", "must not contain '/'"),
        ("not-json.json", "does not start with"),
        ("empty.json", "empty object"),
    ];
    for (file, reason) in cases {
        let bytes = corpus(file);
        let (dir, key) = planted(&bytes);
        for args in [
            &["state", "show", "orders"][..],
            &["claim", "orders", "extract", "--worker", "w1"],
            &["state", "reset", "orders", "--step", "extract"],
            &["state", "export", "orders"],
        ] {
            let o = ox(dir.path(), args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(7), "{file} {args:?}: {err}");
            assert!(err.contains(reason) && err.contains("partitions/extract.json"), "{file} {args:?}: {err}");
        }
        assert_eq!(std::fs::read(&key).unwrap(), bytes, "{file}: the stored bytes must be unchanged");
    }
}

#[test]
fn a_100_mb_object_is_refused_before_it_is_read() {
    let (dir, key) = planted(b"");
    let big = vec![b'{'; 100 << 20];
    std::fs::write(&key, &big).unwrap();
    let o = ox(dir.path(), &["claim", "orders", "extract", "--worker", "w1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("104857600 bytes, over the 1048576-byte limit"), "{err}");
    assert_eq!(std::fs::metadata(&key).unwrap().len(), 100 << 20, "unchanged");
}

#[test]
fn hostile_ids_are_refused_naming_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(10 * 1024);
    let cases: [(&str, &str); 10] = [
        ("../etc", "must not contain '/'"),
        ("a\\b", "must not contain '\\'"),
        ("..", "must not contain '..'"),
        (".hidden", "must not start with"),
        ("-rf", "must not start with"),
        ("step@1", "only ASCII letters"),
        ("a b", "only ASCII letters"),
        ("ехtract", "only ASCII letters"),    // Cyrillic lookalikes
        ("a\u{200b}b", "only ASCII letters"), // zero-width space
        (&long, "at most 128 bytes"),
    ];
    for (id, rule) in cases {
        let step_flag = format!("--step={id}");
        for args in [vec!["state", "create", "--step", "s", "--", id], vec!["state", "create", "p", step_flag.as_str()]] {
            let o = ox(dir.path(), &args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{id:?}: {err}");
            assert!(err.contains(rule) && err.len() < 600, "{id:?}: {err}");
        }
    }
    assert!(
        !dir.path().join(".oxiflow/state/pipelines").exists()
            || std::fs::read_dir(dir.path().join(".oxiflow/state/pipelines")).unwrap().count() == 0,
        "nothing was created"
    );
}
