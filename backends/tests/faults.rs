//! Checkpoints through injected faults — lost responses after the write
//! applied, 500 / 503 / 409 before it, latency — on memory and on S3 (moto).
//! Every checkpoint's progress must be stored exactly once.

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use oxiflow_backends::{ConditionalStore, Error, Faults, FaultyStore, StateManager, StepPlan};
use oxiflow_core::{Config, PartitionId, Progress, RetryPolicy};

const WORKERS: usize = 8;

fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. } | Error::Core(oxiflow_core::Error::Conflict { .. } | oxiflow_core::Error::LeaseHeld { .. }))
}

/// `WORKERS` tasks × `rounds` of claim → checkpoint(+k) → release on one
/// partition through `faults`. A checkpoint that ends `Unavailable` is not
/// repeated: the next write (the release) settles it. So the stored count
/// must equal the sum of all checkpoints issued, exactly.
async fn exact_under_faults(store: Arc<dyn ConditionalStore>, rounds: u64, seed: u64) {
    let faults = Faults { lose_response: 0.15, fail_before: 0.15, latency: 0.2, max_latency: Duration::from_millis(5) };
    let faulty = Arc::new(FaultyStore::new(store, faults, seed));
    let retry = RetryPolicy {
        max_transient_failures: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
        ..RetryPolicy::default()
    };
    let m = StateManager::new(faulty.clone(), Config { retry, ..Config::default() });
    let p: oxiflow_core::PipelineId = "faults".parse().unwrap();
    let part = PartitionId::step("count".parse().unwrap());
    while let Err(e) = m.create_pipeline(&p, &"r".parse().unwrap(), &[StepPlan::new(part.step_id.clone(), None)]).await {
        assert!(is_transient(&e), "{e}");
    }
    let tasks: Vec<_> = (0..WORKERS)
        .map(|i| {
            let (m, p, part) = (m.clone(), p.clone(), part.clone());
            tokio::spawn(async move {
                let w: oxiflow_core::WorkerId = format!("w{i}").parse().unwrap();
                let (mut issued, mut unsure, mut fenced_releases) = (0u64, 0u64, 0u64);
                for round in 0..rounds {
                    let mut c = loop {
                        match m.claim(&p, &part, &w).await {
                            Ok(c) => break c,
                            Err(e) if is_transient(&e) => tokio::time::sleep(Duration::from_millis(1 + round % 3)).await,
                            Err(e) => panic!("claim: {e}"),
                        }
                    };
                    let k = 1 + (round % 3);
                    issued += k;
                    if let Err(e) = m.checkpoint(&mut c, Progress { add_records: k, ..Progress::default() }).await {
                        assert!(is_transient(&e), "checkpoint: {e}");
                        unsure += 1; // settled by the release below
                    }
                    loop {
                        match m.release(&mut c, Progress::default()).await {
                            Ok(_) => break,
                            // Taken over meanwhile (the lease expired while
                            // the store kept failing), or the release landed
                            // and the lease changed hands more often than it
                            // remembers: the release carried no progress, and
                            // the checkpoint was settled before it was sent.
                            Err(Error::Core(oxiflow_core::Error::Fenced { .. } | oxiflow_core::Error::Expired { .. })) => {
                                fenced_releases += 1;
                                break;
                            }
                            Err(e) if is_transient(&e) => {}
                            Err(e) => panic!("release: {e}"),
                        }
                    }
                }
                (issued, unsure, fenced_releases)
            })
        })
        .collect();
    let (mut issued, mut unsure, mut fenced) = (0, 0, 0);
    for t in tasks {
        let (i, u, f) = t.await.unwrap();
        issued += i;
        unsure += u;
        fenced += f;
    }
    let stored = loop {
        match m.view(&p).await {
            Ok(v) => break v.records_processed,
            Err(e) => assert!(is_transient(&e), "{e}"),
        }
    };
    let injected = faulty.injected();
    println!(
        "{}: {WORKERS}×{rounds} rounds, {} lost responses, {} failures before the store, {} delayed; {unsure} checkpoints ended unsure and were settled later; {fenced} retried releases found the lease already passed on; issued {issued}, stored {stored}",
        faulty.describe(),
        injected.lost_responses,
        injected.failed_before,
        injected.delayed
    );
    assert!(injected.lost_responses > 10 && injected.failed_before > 10, "faults were injected: {injected:?}");
    assert_eq!(stored, issued, "lost or doubled progress under faults");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_counts_exactly_under_faults() {
    for seed in 1..=3 {
        exact_under_faults(support::memory(), 40, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_counts_exactly_under_faults() {
    if let Some(store) = support::s3() {
        exact_under_faults(store, 10, 7).await;
    }
}
