//! A heartbeat cancelled with its write in flight is not lost: the write
//! landed, its answer never reached the worker, and the worker's release or
//! completion that follows must still succeed (it used to fail with a
//! conflict and leave the lease held until expiry). The core's holder
//! session records the heartbeat as unresolved from the moment it begins and
//! replays it before the finishing write.

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use oxiflow_backends::{ConditionalStore, Listed, Result, StateManager, StepPlan};
use oxiflow_core::{keys, Config, LeaseConfig, Object, PartitionDoc, PartitionId, Progress, StepStatus, Version};

/// Applies every write at once; while `slow` is set, answers a write only
/// after a long pause (a response stuck on the network).
#[derive(Debug)]
struct SlowAnswers {
    inner: Arc<dyn ConditionalStore>,
    slow: AtomicBool,
    /// Writes that landed and whose answer is still on its way.
    waiting: AtomicU32,
}

impl SlowAnswers {
    async fn answer(&self, result: Result<Version>) -> Result<Version> {
        if self.slow.load(SeqCst) {
            self.waiting.fetch_add(1, SeqCst);
            tokio::time::sleep(Duration::from_secs(30)).await;
            self.waiting.fetch_sub(1, SeqCst);
        }
        result
    }
}

#[async_trait]
impl ConditionalStore for SlowAnswers {
    fn describe(&self) -> &str {
        self.inner.describe()
    }
    async fn get(&self, key: &str, max_bytes: usize) -> Result<Option<Object>> {
        self.inner.get(key, max_bytes).await
    }
    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<Version> {
        let r = self.inner.put_if_absent(key, body).await;
        self.answer(r).await
    }
    async fn put_if_match(&self, key: &str, body: Vec<u8>, version: &Version) -> Result<Version> {
        let r = self.inner.put_if_match(key, body, version).await;
        self.answer(r).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        self.inner.list(prefix).await
    }
}

#[tokio::test]
async fn completing_while_a_heartbeat_is_in_flight_completes() {
    let store = Arc::new(SlowAnswers { inner: support::memory(), slow: AtomicBool::new(false), waiting: AtomicU32::new(0) });
    let lease = LeaseConfig {
        ttl: Duration::from_secs(10),
        heartbeat_interval: Duration::from_millis(100),
        skew_allowance: Duration::from_millis(500),
        safety_margin: Duration::from_millis(500),
    };
    let m = StateManager::new(store.clone(), Config { lease, ..Config::default() });
    let (p, step, w) = ("p".parse().unwrap(), "s".parse().unwrap(), "w1".parse().unwrap());
    m.create_pipeline(&p, &"r1".parse().unwrap(), &[StepPlan::new(step, None)]).await.unwrap();
    let part = PartitionId::parse("s").unwrap();
    let claimed = m.claim(&p, &part, &w).await.unwrap();
    let claimed_version = claimed.doc().version;

    store.slow.store(true, SeqCst);
    let held = m.keep(claimed);
    // Wait (bounded) until the heartbeat's write has landed and its answer is stuck.
    for _ in 0..500 {
        if store.waiting.load(SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.waiting.load(SeqCst), 1, "a heartbeat is in flight");
    store.slow.store(false, SeqCst);

    // Completing cancels the heartbeat mid-answer; the session replays it first.
    let done = held.complete(Progress { add_records: 5, ..Progress::default() }).await.expect("the completion lands");
    assert!(matches!(done.status, StepStatus::Completed { .. }), "{:?}", done.status);

    let key = keys::partition_doc(&p, &part);
    let (stored, _) = m.read::<PartitionDoc>(&key).await.unwrap().unwrap();
    assert_eq!(stored, done, "the worker's document is the stored one");
    assert_eq!(stored.records_processed, 5);
    assert!(stored.lease.as_ref().unwrap().released_at.is_some(), "the lease is released, not left to expire");
    assert_eq!(stored.version, claimed_version + 2, "the heartbeat landed once, then the completion: nothing lost, nothing twice");
}
