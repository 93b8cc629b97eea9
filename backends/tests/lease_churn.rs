//! Lease churn with real processes: 4 processes × 130 cycles of claim →
//! checkpoint → release on one partition with a 300 ms lease, where every
//! 10th holder "dies" (never releases) and is taken over after expiry. Each
//! process logs the interval in which it trusted the lease; afterwards the
//! log must show never two holders at once, epochs rising with time, and an
//! exact count.
//!
//! Runs on the local directory and on S3 (moto). The test binary re-runs
//! itself as the churn processes.

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

mod support;

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxiflow_backends::{ConditionalStore, Error, LocalDirStore, ObjectStoreBackend, StateManager, StepPlan};
use oxiflow_core::{Config, LeaseConfig, PartitionId, Progress};

const PROCESSES: usize = 4;
const CYCLES: u64 = 130;

fn config() -> Config {
    let lease = LeaseConfig {
        ttl: Duration::from_millis(300),
        heartbeat_interval: Duration::from_millis(100),
        skew_allowance: Duration::from_millis(50),
        safety_margin: Duration::from_millis(50),
    };
    Config { lease, ..Config::default() }
}

fn open(url: &str) -> Arc<dyn ConditionalStore> {
    match url.strip_prefix("file://") {
        Some(dir) => Arc::new(LocalDirStore::open(dir).unwrap()),
        None => Arc::new(ObjectStoreBackend::open(url, &support::s3_options().expect("S3 options").1).unwrap()),
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn churn_process() {
    let (Ok(url), Ok(logs), Ok(me)) =
        (std::env::var("OXIFLOW_CHURN_URL"), std::env::var("OXIFLOW_CHURN_LOGS"), std::env::var("OXIFLOW_CHURN_WORKER"))
    else {
        return;
    };
    let m = StateManager::new(open(&url), config());
    let (p, part) = ("churn".parse().unwrap(), PartitionId::step("hot".parse().unwrap()));
    let worker = me.parse().unwrap();
    let mut log = std::fs::File::create(format!("{logs}/log-{me}")).unwrap();
    for cycle in 0..CYCLES {
        let mut c = loop {
            match m.claim(&p, &part, &worker).await {
                Ok(c) => break c,
                Err(Error::Core(oxiflow_core::Error::LeaseHeld { .. } | oxiflow_core::Error::Conflict { .. })) => {
                    tokio::time::sleep(Duration::from_millis(2 + rand::random::<u64>() % 10)).await;
                }
                Err(e) => panic!("claim: {e}"),
            }
        };
        let start = now_ms();
        let epoch = c.lease().epoch;
        // By the rules a holder trusts its lease only until expires_at - margin.
        let trust_end = |c: &oxiflow_backends::Claimed| c.lease().expires_at.minus(config().lease.safety_margin).as_millis();
        let claimed_until = trust_end(&c);
        match m.checkpoint(&mut c, Progress { add_records: 1, ..Progress::default() }).await {
            Ok(_) => {}
            // Descheduled past its 300 ms lease (a loaded machine) and taken
            // over: the store refused the write, as fencing must.
            Err(Error::Core(oxiflow_core::Error::Fenced { landed: false, .. })) => {
                writeln!(log, "{me} {epoch} {start} {} fenced", claimed_until.min(now_ms())).unwrap();
                continue;
            }
            Err(e) => panic!("checkpoint: {e}"),
        }
        let until = trust_end(&c);
        if cycle % 10 == 9 {
            // Die: no release. We trusted the lease until expires_at - margin;
            // stay away until it is claimable, as a dead process would.
            writeln!(log, "{me} {epoch} {start} {until} died").unwrap();
            let wake = c.lease().expires_at.plus(config().lease.skew_allowance).as_millis() - now_ms();
            tokio::time::sleep(Duration::from_millis(wake.max(0) as u64 + 5)).await;
        } else {
            writeln!(log, "{me} {epoch} {start} {} released", until.min(now_ms())).unwrap();
            match m.release(&mut c, Progress::default()).await {
                // Slow again: someone took over; the release carried no progress.
                Ok(_) | Err(Error::Core(oxiflow_core::Error::Fenced { .. } | oxiflow_core::Error::Expired { .. })) => {}
                Err(e) => panic!("release: {e}"),
            }
        }
    }
}

async fn churn(url: String, label: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let m = StateManager::new(open(&url), config());
    let p = "churn".parse().unwrap();
    m.create_pipeline(&p, &"r".parse().unwrap(), &[StepPlan::new("hot".parse().unwrap(), None)]).await.unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            tokio::process::Command::new(&exe)
                .args(["churn_process", "--exact", "--test-threads=1"])
                .env("OXIFLOW_CHURN_URL", &url)
                .env("OXIFLOW_CHURN_LOGS", tmp.path())
                .env("OXIFLOW_CHURN_WORKER", format!("p{i}"))
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().await.unwrap().success(), "a churn process failed");
    }
    let mut intervals: Vec<(i64, i64, u64, String, String)> = Vec::new();
    for i in 0..PROCESSES {
        for line in std::fs::read_to_string(tmp.path().join(format!("log-p{i}"))).unwrap().lines() {
            let f: Vec<&str> = line.split(' ').collect();
            intervals.push((f[2].parse().unwrap(), f[3].parse().unwrap(), f[1].parse().unwrap(), f[0].to_string(), f[4].to_string()));
        }
    }
    intervals.sort();
    let count = |outcome: &str| intervals.iter().filter(|i| i.4 == outcome).count();
    let (deaths, fenced) = (count("died"), count("fenced"));
    assert_eq!(intervals.len() as u64, PROCESSES as u64 * CYCLES);
    for w in intervals.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert!(b.0 >= a.1, "two holders at once: {} (epoch {}) trusted until {}, {} (epoch {}) from {}", a.3, a.2, a.1, b.3, b.2, b.0);
        assert!(b.2 > a.2, "epochs must rise with time: {a:?} then {b:?}");
    }
    let view = m.view(&p).await.unwrap();
    println!(
        "lease churn on {label}: {} cycles by {PROCESSES} processes, {deaths} holders died and were taken over after expiry, \
         {fenced} too slow and fenced, 0 overlaps, count {}",
        intervals.len(),
        view.records_processed
    );
    assert_eq!(view.records_processed, (intervals.len() - fenced) as u64, "one checkpoint per unfenced cycle, exactly");
    assert!(deaths >= 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_two_holders_across_500_real_process_cycles_on_a_local_directory() {
    if std::env::var_os("OXIFLOW_CHURN_URL").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    churn(format!("file://{}", dir.path().display()), "a local directory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_two_holders_across_500_real_process_cycles_on_s3() {
    if std::env::var_os("OXIFLOW_CHURN_URL").is_some() {
        return;
    }
    let Some((url, _)) = support::s3_options() else {
        assert!(std::env::var_os("CI").is_none(), "moto must run in CI");
        eprintln!("SKIPPED S3 lease churn: OXIFLOW_TEST_S3_ENDPOINT is not set");
        return;
    };
    churn(url, "S3 (moto)").await;
}
