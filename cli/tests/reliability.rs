//! Real processes misbehaving: a worker frozen past its lease (the zombie)
//! and workers killed with SIGKILL mid-checkpoint, over and over.

// The shared helpers in tests/support are `pub` for every test file.
#![allow(unreachable_pub)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

/// Short leases so takeovers come within a second.
const SHORT_LEASES: [(&str, &str); 4] = [
    ("OXIFLOW_LEASE_TTL", "1s"),
    ("OXIFLOW_HEARTBEAT_INTERVAL", "250ms"),
    ("OXIFLOW_SKEW_ALLOWANCE", "100ms"),
    ("OXIFLOW_SAFETY_MARGIN", "100ms"),
];

/// `oxiflow` in `dir` with short leases.
fn ox(dir: &Path) -> Command {
    let mut c = support::ox(dir);
    c.envs(SHORT_LEASES);
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    ox(dir).args(args).output().unwrap()
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let o = run(dir, &all);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().unwrap().success());
}

/// SIGSTOPs a worker on the local store at a moment it does not hold the
/// store's write lock: this test is about fencing a woken holder, not about
/// a writer stopped inside its compare-and-swap (which stalls every writer of
/// the directory until it runs again).
fn freeze_outside_its_lock(worker: &Child, dir: &Path) {
    use std::os::fd::AsRawFd;
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(".oxiflow/state/.lock")).unwrap();
    for _ in 0..1000 {
        signal(worker, "STOP");
        // Our own flock on a fresh descriptor succeeds only while nobody holds it.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_UN) };
            return;
        }
        signal(worker, "CONT");
        std::thread::sleep(Duration::from_millis(3));
    }
    panic!("the worker held the store's lock at each of 1,000 tries");
}

/// Polls `check` on the stored state until it holds (or 20 s pass).
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    path.display().to_string()
}

/// Every file under `dir`, as paths.
fn walk(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path.display().to_string());
        }
    }
    files
}

fn partition(dir: &Path, pipeline: &str) -> Value {
    json(dir, &["state", "show", pipeline])["steps"][0]["partitions"][0].clone()
}

#[test]
fn a_frozen_worker_is_fenced_when_it_wakes_and_lands_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    json(d, &["state", "create", "z", "--step", "s"]);
    let slow = script(
        d,
        "slow.sh",
        "#!/bin/sh\ni=0\nwhile true; do i=$((i+1)); echo \"{\\\"records\\\": 1, \\\"last_id\\\": \\\"a-$i\\\"}\"; sleep 0.02; done\n",
    );
    let zombie = ox(d)
        .args(["worker", "start", "--pipeline", "z", "--worker-id", "zombie", "--exec", &slow])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the zombie's first checkpoints", || partition(d, "z")["records_processed"].as_u64().unwrap() >= 5);

    freeze_outside_its_lock(&zombie, d);
    let frozen_at = partition(d, "z")["records_processed"].as_u64().unwrap();
    wait_for("the frozen worker's lease to expire", || partition(d, "z")["lease"]["status"]["state"] == "expired");
    let taken = json(d, &["claim", "z", "s", "--worker", "rescuer"]);
    assert_eq!(taken["epoch"], 2, "{taken:#}");
    json(d, &["checkpoint", "z", "s", "--worker", "rescuer", "--add-records", "1000", "--last-id", "r-1"]);

    signal(&zombie, "CONT");
    // The zombie reads its buffered lines, tries to checkpoint, is fenced,
    // and goes looking for other work; then we stop it.
    std::thread::sleep(Duration::from_millis(500)); // give the woken process time to try (its attempts are what we check)
    signal(&zombie, "TERM");
    let out = zombie.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Refused either by the store (fenced) or, past its trusted time, before sending.
    assert!(stderr.contains("fenced") || stderr.contains("nothing was written"), "the zombie must have been refused: {stderr}");

    let p = partition(d, "z");
    assert_eq!(p["lease"]["worker_id"], "rescuer", "{p:#}");
    assert_eq!(p["lease"]["epoch"], 2);
    assert_eq!(p["last_processed_id"], "r-1", "only the new holder's bookmark: {p:#}");
    assert_eq!(p["records_processed"].as_u64().unwrap(), frozen_at + 1000, "nothing from the zombie after the takeover: {p:#}");
}

/// One batch per run: reads the bookmark, "processes" 10 records, prints
/// progress; done after 40 batches.
const BATCHES: &str = r#"#!/bin/sh
b=${OXIFLOW_BATCH_NUMBER:-0}
if [ "$b" -ge 40 ]; then echo '{"done": true}'; exit 0; fi
n=$((b+1))
sleep 0.01
echo "{\"records\": 10, \"bytes\": 1000, \"last_id\": \"id-$n\", \"batch\": $n}"
"#;

#[test]
fn sigkill_during_checkpoints_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    json(d, &["state", "create", "k", "--step", "s"]);
    let exec = script(d, "batches.sh", BATCHES);
    let mut kills = 0;
    for round in 0..12u64 {
        let mut worker = ox(d)
            .args(["worker", "start", "--pipeline", "k", "--worker-id", &format!("w{round}"), "--exec", &exec])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(40 + (round * 37) % 90)); // kill at varied points
        if worker.try_wait().unwrap().is_none() {
            signal(&worker, "KILL");
            kills += 1;
        }
        worker.wait().unwrap();
        // Plant what a writer killed between its temp file and the rename leaves.
        std::fs::write(d.join(format!(".oxiflow/state/pipelines/k/partitions/.s.json.{round}.dead{round:012}.tmp")), b"half").unwrap();
        // Every stored object still decodes, and the count matches the bookmark.
        let p = partition(d, "k");
        let batch = p["batch_number"].as_u64().unwrap();
        assert_eq!(p["records_processed"].as_u64().unwrap(), batch * 10, "after kill {round}: {p:#}");
        if batch > 0 {
            assert_eq!(p["last_processed_id"], format!("id-{batch}"), "bookmark and counters moved together: {p:#}");
        }
    }
    // A last worker resumes from the bookmark (after the dead one's lease expires) and finishes.
    let o = ox(d).args(["worker", "start", "--pipeline", "k", "--worker-id", "finisher", "--exec", &exec]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p = partition(d, "k");
    println!("{kills} workers killed with SIGKILL; final: {} records in {} batches", p["records_processed"], p["batch_number"]);
    assert!(kills >= 6, "the test must actually kill workers mid-run ({kills})");
    assert!(p["status"]["completed"].is_object(), "{p:#}");
    let leftovers: Vec<_> = walk(&d.join(".oxiflow/state")).into_iter().filter(|f| f.ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "temp files of killed writers are removed when the store is opened: {leftovers:?}");
    assert_eq!(
        (p["records_processed"].as_u64(), p["batch_number"].as_u64()),
        (Some(400), Some(40)),
        "no lost or duplicated progress: {p:#}"
    );
}
