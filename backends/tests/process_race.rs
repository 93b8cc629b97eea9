//! Real OS processes racing on one partition: each process claims, adds 1
//! in each of a few checkpoints and releases, over and over, until it has
//! made its 200 checkpoints. The stored count must equal the number of
//! checkpoints the processes saw succeed — no lost update, no double count.
//! Runs on the local directory, on S3 (moto) and on Redis.
//!
//! The test binary re-runs itself as the worker processes
//! (`OXIFLOW_RACE_ROLE=worker`).

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use oxiflow_backends::{ConditionalStore, Error, LocalDirStore, ObjectStoreBackend, RedisStore, StateManager, StepPlan};
use oxiflow_core::{Config, PartitionId, Progress};

const PROCESSES: usize = 8;
const CHECKPOINTS_EACH: u64 = 200;
/// Checkpoints per claim: a holder works a while before letting go.
const PER_CLAIM: u64 = 10;

fn open(url: &str) -> Arc<dyn ConditionalStore> {
    if url.starts_with("redis://") {
        return Arc::new(RedisStore::open(url).unwrap());
    }
    match url.strip_prefix("file://") {
        Some(dir) => Arc::new(LocalDirStore::open(dir).unwrap()),
        None => {
            let (_, options) = support::s3_options().expect("S3 options");
            Arc::new(ObjectStoreBackend::open(url, &options).unwrap())
        }
    }
}

/// The worker process: claim (waiting while another holds it), checkpoint
/// +1, release; prints how many checkpoints succeeded.
#[tokio::test]
async fn race_worker() {
    let Ok(url) = std::env::var("OXIFLOW_RACE_URL") else { return };
    let worker = std::env::var("OXIFLOW_RACE_WORKER").unwrap().parse().unwrap();
    let m = StateManager::new(open(&url), Config::default());
    let (p, part) = ("race".parse().unwrap(), PartitionId::step("count".parse().unwrap()));
    let (mut succeeded, mut waits) = (0, 0);
    while succeeded < CHECKPOINTS_EACH {
        let mut claimed = match m.claim(&p, &part, &worker).await {
            Ok(c) => c,
            Err(Error::Core(oxiflow_core::Error::LeaseHeld { .. } | oxiflow_core::Error::Conflict { .. })) => {
                // Someone else holds it: wait a little, jittered, and retry.
                waits += 1;
                tokio::time::sleep(Duration::from_millis(5 + rand::random::<u64>() % 20)).await;
                continue;
            }
            Err(e) => panic!("claim: {e}"),
        };
        for _ in 0..PER_CLAIM {
            m.checkpoint(&mut claimed, Progress { add_records: 1, ..Progress::default() }).await.unwrap();
            succeeded += 1;
        }
        m.release(&mut claimed, Progress::default()).await.unwrap();
    }
    println!("RACE-RESULT {succeeded} {waits}");
}

async fn race(url: String, label: &str) {
    let m = StateManager::new(open(&url), Config::default());
    let p = "race".parse().unwrap();
    m.create_pipeline(&p, &"r".parse().unwrap(), &[StepPlan::new("count".parse().unwrap(), None)]).await.unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            tokio::process::Command::new(&exe)
                .args(["race_worker", "--exact", "--nocapture", "--test-threads=1"])
                .env("OXIFLOW_RACE_URL", &url)
                .env("OXIFLOW_RACE_WORKER", format!("proc-{i}"))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut reported, mut waits) = (0, 0);
    for child in children {
        let out = child.wait_with_output().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "a worker process failed: {text}");
        let line = text.lines().find_map(|l| l.split("RACE-RESULT ").nth(1)).unwrap_or_else(|| panic!("no result from a worker: {text}"));
        let mut numbers = line.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        reported += numbers.next().unwrap();
        waits += numbers.next().unwrap();
    }
    let view = m.view(&p).await.unwrap();
    let stored = view.records_processed;
    println!("{label}: {PROCESSES} processes, {reported} successful checkpoints, stored count {stored}, {waits} claims refused while another held the lease");
    assert_eq!(reported, PROCESSES as u64 * CHECKPOINTS_EACH);
    assert_eq!(stored, reported, "{label}: lost or doubled updates");
    assert_eq!(view.steps[0].partitions[0].attempts as u64, reported / PER_CLAIM, "{label}: one claim per {PER_CLAIM} checkpoints");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_racing_on_a_local_directory_count_exactly() {
    if std::env::var_os("OXIFLOW_RACE_URL").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    race(format!("file://{}", dir.path().display()), "local directory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_racing_on_s3_count_exactly() {
    if std::env::var_os("OXIFLOW_RACE_URL").is_some() {
        return;
    }
    let Some((url, _)) = support::s3_options() else {
        assert!(std::env::var_os("CI").is_none(), "moto must run in CI");
        eprintln!("SKIPPED S3 process race: OXIFLOW_TEST_S3_ENDPOINT is not set");
        return;
    };
    race(url, "S3 on moto").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_racing_on_redis_count_exactly() {
    if std::env::var_os("OXIFLOW_RACE_URL").is_some() {
        return;
    }
    let Some(url) = support::redis_url() else {
        assert!(std::env::var_os("CI").is_none(), "redis-server must run in CI");
        eprintln!("SKIPPED Redis process race: OXIFLOW_TEST_REDIS_URL is not set");
        return;
    };
    race(url, "Redis").await;
}
