//! Faults of a real redis-server of this test's own: a holder stalled
//! past its lease by `CLIENT PAUSE` is fenced after a takeover, and a
//! `kill -9` loses nothing acknowledged (`appendfsync always`). The CLI's
//! version of the kill, with worker processes and exit codes, is in
//! `cli/tests/redis.rs`.

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use oxiflow_backends::{ConditionalStore, Error, RedisStore, StateManager, StepPlan};
use oxiflow_core::{Config, ErrorKind, LeaseConfig, PartitionId, Progress, RetryPolicy};
use support::redis_server::RedisServer;

fn id<T: std::str::FromStr<Err = oxiflow_core::Error>>(s: &str) -> T {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `done` until it holds (30 s at most).
async fn wait_for(what: &str, done: &dyn Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn short_leases() -> Config {
    let lease = LeaseConfig {
        ttl: Duration::from_millis(1000),
        heartbeat_interval: Duration::from_millis(300),
        skew_allowance: Duration::from_millis(200),
        safety_margin: Duration::from_millis(200),
    };
    Config { lease, retry: RetryPolicy { max_transient_failures: 1, ..RetryPolicy::default() }, ..Config::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_paused_past_its_lease_is_fenced_after_a_takeover() {
    let Some(server) = RedisServer::start(&[]) else { return };
    let config = short_leases();
    let holder_store = Arc::new(RedisStore::open(&format!("{}?timeout_ms=250", server.url())).unwrap());
    let holder = StateManager::new(holder_store.clone(), config);
    let taker = StateManager::new(Arc::new(RedisStore::open(&server.url()).unwrap()), config);
    let (p, part) = (id("orders"), PartitionId::step(id("load")));
    holder.create_pipeline(&p, &id("r"), &[StepPlan::new(id("load"), None)]).await.unwrap();
    let mut held = holder.claim(&p, &part, &id("w1")).await.unwrap();
    holder.checkpoint(&mut held, Progress { add_records: 1, ..Progress::default() }).await.unwrap();

    // Every write waits for 2.5 s, longer than the lease and its skew allowance.
    let paused_at = Instant::now();
    assert_eq!(server.command("CLIENT PAUSE 2500 WRITE").as_deref(), Some("+OK\r\n"));
    let err = holder.checkpoint(&mut held, Progress { add_records: 10, ..Progress::default() }).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "a write with no reply is an unknown outcome: {err:?}");
    assert!(paused_at.elapsed() < Duration::from_millis(2500), "the holder gave up while the pause lasted");

    // The taker's claim waits out the pause, then takes the expired lease over.
    let mut taken = taker.claim(&p, &part, &id("w2")).await.unwrap_or_else(|e| panic!("takeover after the pause: {e}"));
    assert!(paused_at.elapsed() >= Duration::from_millis(2500));
    assert_eq!(taken.lease().epoch, held.lease().epoch + 1, "the takeover bumps the epoch");
    // The +10 ran when the pause ended, before the takeover, or was refused.
    let before = taken.doc().records_processed;
    assert!(before == 1 || before == 11, "{before}");

    // The holder wakes up: the store refuses its version, the manager says fenced.
    let stale = holder_store.put_if_match(&oxiflow_core::keys::partition_doc(&p, &part), b"{}".to_vec(), held.version()).await;
    assert!(matches!(stale, Err(Error::Precondition { .. })), "{stale:?}");
    let err = holder.checkpoint(&mut held, Progress { add_records: 100, ..Progress::default() }).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fenced, "{err:?}");
    taker.checkpoint(&mut taken, Progress { add_records: 5, ..Progress::default() }).await.unwrap();
    let view = taker.view(&p).await.unwrap();
    let load = &view.steps[0].partitions[0];
    assert_eq!((load.records_processed, load.worker_id.clone()), (before + 5, Some(id("w2"))), "nothing of the fenced holder counts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_loses_nothing_acknowledged() {
    let Some(mut server) = RedisServer::start(&[]) else { return };
    let config = Config { retry: RetryPolicy { max_transient_failures: 0, ..RetryPolicy::default() }, ..Config::default() };
    let m = StateManager::new(Arc::new(RedisStore::open(&format!("{}?timeout_ms=1000", server.url())).unwrap()), config);
    let p: oxiflow_core::PipelineId = id("orders");
    let steps: Vec<StepPlan> = (0..4).map(|i| StepPlan::new(id(&format!("s{i}")), None)).collect();
    m.create_pipeline(&p, &id("r"), &steps).await.unwrap();
    let acked = Arc::new(std::sync::Mutex::new([0u64; 4]));
    let failed = Arc::new(std::sync::Mutex::new([0u64; 4]));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (m, p, acked, failed, stop) = (m.clone(), p.clone(), acked.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                let part = PartitionId::step(id(&format!("s{i}")));
                let mut held = m.claim(&p, &part, &id(&format!("w{i}"))).await.unwrap();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match m.checkpoint(&mut held, Progress { add_records: 1, ..Progress::default() }).await {
                        Ok(_) => acked.lock().unwrap()[i] += 1,
                        Err(e) => {
                            assert_eq!(e.kind(), ErrorKind::Unavailable, "worker {i}: {e}");
                            failed.lock().unwrap()[i] += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect();
    wait_for("50 checkpoints each", &|| acked.lock().unwrap().iter().all(|n| *n >= 50)).await;
    server.kill9();
    let acked_at_kill = *acked.lock().unwrap();
    wait_for("every worker to see the store down", &|| failed.lock().unwrap().iter().all(|n| *n >= 1)).await;
    server.restart();
    wait_for("50 more checkpoints each", &|| acked.lock().unwrap().iter().zip(acked_at_kill).all(|(n, k)| *n >= k + 50)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let (acked, failed) = (*acked.lock().unwrap(), *failed.lock().unwrap());
    let view = m.view(&p).await.unwrap();
    for (i, step) in view.steps.iter().enumerate() {
        let stored = step.partitions[0].records_processed;
        // Each failed checkpoint may or may not have landed; each acknowledged one did.
        assert!(
            stored >= acked[i] && stored <= acked[i] + failed[i],
            "s{i}: stored {stored}, acknowledged {}, failed {}",
            acked[i],
            failed[i]
        );
    }
    println!("kill -9 of redis-server: acknowledged {acked:?}, failed (unknown outcome) {failed:?}, all acknowledged checkpoints stored");
}
