//! Request budgets, counted (not timed): uncontended, a claim is 3 requests
//! (GET, PUT, and a read of the pipeline document that checks no reset
//! raced it), a checkpoint 1, a release 1, and the background heartbeat
//! sends nothing while checkpoints come more often than its interval. A
//! worker that keeps a snapshot claims its next partition with a LIST, one
//! PUT and that check.

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use oxiflow_backends::{CountingStore, Next, RequestCounts, Snapshot, StateManager, StepPlan};
use oxiflow_core::{Config, LeaseConfig, PartitionId, Progress, Timestamp};

fn ids() -> (oxiflow_core::PipelineId, oxiflow_core::StepId, oxiflow_core::WorkerId) {
    ("orders".parse().unwrap(), "extract".parse().unwrap(), "w1".parse().unwrap())
}

#[tokio::test]
async fn claim_checkpoint_release_cost_3_1_1_requests() {
    let counting = Arc::new(CountingStore::new(support::memory()));
    let m = StateManager::new(counting.clone(), Config::default());
    let (p, s, w) = ids();
    m.create_pipeline(&p, &"r1".parse().unwrap(), &[StepPlan::new(s.clone(), None)]).await.unwrap();
    let part = PartitionId::step(s);

    let before = counting.counts();
    let mut c = m.claim(&p, &part, &w).await.unwrap();
    let claim = counting.counts().since(&before);
    assert_eq!(claim, RequestCounts { get: 2, put_if_match: 1, ..RequestCounts::default() });

    let before = counting.counts();
    for i in 0..10 {
        m.checkpoint(&mut c, Progress { add_records: 1, batch_number: Some(i), ..Progress::default() }).await.unwrap();
    }
    let checkpoints = counting.counts().since(&before);
    assert_eq!(checkpoints, RequestCounts { put_if_match: 10, ..RequestCounts::default() }, "one PUT per checkpoint");

    let before = counting.counts();
    m.release(&mut c, Progress::default()).await.unwrap();
    assert_eq!(counting.counts().since(&before), RequestCounts { put_if_match: 1, ..RequestCounts::default() });
    println!("requests: claim {}, checkpoint {}, release 1", claim.total(), checkpoints.total() / 10);
}

#[tokio::test]
async fn claim_next_from_a_kept_snapshot_is_a_listing_one_put_and_the_check() {
    let counting = Arc::new(CountingStore::new(support::memory()));
    let m = StateManager::new(counting.clone(), Config::default());
    let (p, s, w) = ids();
    let plan = oxiflow_core::plan::chain([(s, Some(4)), ("load".parse().unwrap(), None)]);
    m.create_pipeline(&p, &"r1".parse().unwrap(), &plan).await.unwrap();
    let mut snapshot = Snapshot::new(p.clone());
    m.refresh(&mut snapshot).await.unwrap(); // the first read: every document

    let before = counting.counts();
    let Next::Claimed(mut c) = m.claim_next(&mut snapshot, &w).await.unwrap() else { panic!("a root shard is ready") };
    assert_eq!(counting.counts().since(&before), RequestCounts { list: 1, put_if_match: 1, get: 1, ..RequestCounts::default() });
    assert_eq!(c.doc().step_id.as_str(), "extract");
    m.complete(&mut c, Progress::default()).await.unwrap();

    // The next claim re-reads only the document that changed.
    let before = counting.counts();
    let Next::Claimed(_) = m.claim_next(&mut snapshot, &"w2".parse().unwrap()).await.unwrap() else { panic!("three shards are ready") };
    assert_eq!(counting.counts().since(&before), RequestCounts { list: 1, get: 2, put_if_match: 1, ..RequestCounts::default() });
}

/// Virtual time (tokio's paused clock, given to the manager as its clock):
/// the heartbeat task wakes on schedule, with no real waiting.
#[tokio::test(start_paused = true)]
async fn heartbeat_writes_only_when_checkpoints_stop() {
    let counting = Arc::new(CountingStore::new(support::memory()));
    let lease = LeaseConfig { ttl: Duration::from_secs(30), heartbeat_interval: Duration::from_secs(10), ..LeaseConfig::default() };
    let start = tokio::time::Instant::now();
    let clock: oxiflow_backends::Clock = Arc::new(move || Timestamp::from_millis(1_764_000_000_000 + start.elapsed().as_millis() as i64));
    let m = StateManager::new(counting.clone(), Config { lease, ..Config::default() }).with_clock(clock);
    let (p, s, w) = ids();
    m.create_pipeline(&p, &"r1".parse().unwrap(), &[StepPlan::new(s.clone(), None)]).await.unwrap();
    let held = m.keep(m.claim(&p, &PartitionId::step(s), &w).await.unwrap());

    // A checkpoint every 3 s (under ttl/3) for a minute: no heartbeat.
    let before = counting.counts();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        held.checkpoint(Progress { add_records: 1, ..Progress::default() }).await.unwrap();
    }
    assert_eq!(counting.counts().since(&before), RequestCounts { put_if_match: 20, ..RequestCounts::default() }, "checkpoints only");

    // Then idle for 35 s: heartbeats at 10, 20 and 30 s keep the lease.
    let before = counting.counts();
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(counting.counts().since(&before), RequestCounts { put_if_match: 3, ..RequestCounts::default() }, "three heartbeats");
    let doc = held.doc().await;
    assert_eq!(doc.records_processed, 20);
    held.release(Progress::default()).await.unwrap();
}
