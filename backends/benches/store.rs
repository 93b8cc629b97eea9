//! Request counts and latency ratios on a real S3-compatible server.
//!
//! Run with `scripts/bench.sh` (starts moto, then this). Prints:
//! - requests per operation (uncontended), counted by a wrapper store;
//! - checkpoint latency ÷ a raw conditional PUT of the same bytes;
//! - 8 workers on 8 steps vs 1 worker (aggregate checkpoint rate);
//! - 8 workers on one partition: goodput vs the server's serial CAS rate,
//!   and the lost-update check.

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use oxiflow_backends::{ConditionalStore, CountingStore, Error, ObjectStoreBackend, StateManager, StepPlan};
use oxiflow_core::{codec, Config, PartitionId, PipelineId, Progress, WorkerId};

fn store() -> Arc<dyn ConditionalStore> {
    let (url, options) = support::s3_options().expect("run through scripts/bench.sh (needs OXIFLOW_TEST_S3_ENDPOINT)");
    Arc::new(ObjectStoreBackend::open(&url, &options).unwrap())
}

fn id<T: std::str::FromStr<Err = oxiflow_core::Error>>(s: &str) -> T {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn progress(i: u64) -> Progress {
    Progress {
        last_processed_id: Some(format!("order-{i:010}")),
        batch_number: Some(i),
        add_records: 100,
        add_bytes: 4096,
        ..Progress::default()
    }
}

async fn request_counts(store: Arc<dyn ConditionalStore>) {
    let counting = Arc::new(CountingStore::new(store));
    let m = StateManager::new(counting.clone(), Config::default());
    let p: PipelineId = id("counts");
    m.create_pipeline(&p, &id("r"), &[StepPlan::new(id("s"), None)]).await.unwrap();
    let part = PartitionId::step(id("s"));
    let w: WorkerId = id("w");
    let row = |name: &str, before: oxiflow_backends::RequestCounts, n: u64| {
        let d = counting.counts().since(&before);
        println!(
            "| {name} | {:.1} | {} GET, {} PUT If-Match, {} PUT If-None-Match |",
            d.total() as f64 / n as f64,
            d.get / n,
            d.put_if_match / n,
            d.put_if_absent / n
        );
    };
    println!("\n## Requests per operation (uncontended)\n\n| operation | requests | of which |\n|---|---|---|");
    let b = counting.counts();
    let mut c = m.claim(&p, &part, &w).await.unwrap();
    row("claim", b, 1);
    let b = counting.counts();
    for i in 0..100 {
        m.checkpoint(&mut c, progress(i)).await.unwrap();
    }
    row("checkpoint (×100)", b, 100);
    let b = counting.counts();
    m.heartbeat(&mut c).await.unwrap();
    row("heartbeat (explicit)", b, 1);
    let b = counting.counts();
    m.release(&mut c, Progress::default()).await.unwrap();
    row("release", b, 1);
    println!("\nThe background heartbeat sends 0 requests while checkpoints come at least every heartbeat_interval (ttl/3): see backends/tests/budget.rs.");
}

async fn checkpoint_vs_raw_put(store: Arc<dyn ConditionalStore>, rounds: usize) {
    let m = StateManager::new(store.clone(), Config::default());
    let p: PipelineId = id("latency");
    m.create_pipeline(&p, &id("r"), &[StepPlan::new(id("s"), None)]).await.unwrap();
    let mut c = m.claim(&p, &PartitionId::step(id("s")), &id("w")).await.unwrap();
    m.checkpoint(&mut c, progress(0)).await.unwrap();
    let body = codec::encode("k", c.doc(), &Config::default().limits).unwrap();
    let raw_key = "latency/raw.json";
    let mut v = store.put_if_absent(raw_key, body.clone()).await.unwrap();
    let (mut raw, mut cp) = (Vec::new(), Vec::new());
    for i in 1..=rounds as u64 {
        let t = Instant::now();
        v = store.put_if_match(raw_key, body.clone(), &v).await.unwrap();
        raw.push(t.elapsed());
        let t = Instant::now();
        m.checkpoint(&mut c, progress(i)).await.unwrap();
        cp.push(t.elapsed());
    }
    let (raw, cp) = (median(raw), median(cp));
    println!("\n## Checkpoint latency vs a raw conditional PUT ({rounds} interleaved rounds, {} bytes)\n", body.len());
    println!("| raw PUT If-Match (median) | checkpoint (median) | ratio | goal |\n|---|---|---|---|");
    println!(
        "| {:.2} ms | {:.2} ms | {:.3} | ≤ 1.05 |",
        raw.as_secs_f64() * 1e3,
        cp.as_secs_f64() * 1e3,
        cp.as_secs_f64() / raw.as_secs_f64()
    );
}

/// `workers` workers, each on its own step, each doing `n` checkpoints.
async fn parallel_steps(store: Arc<dyn ConditionalStore>, workers: usize, n: u64) -> f64 {
    let m = StateManager::new(store, Config::default());
    let p: PipelineId = id(&format!("steps-{workers}"));
    let steps: Vec<StepPlan> = (0..workers).map(|i| StepPlan::new(id(&format!("s{i}")), None)).collect();
    m.create_pipeline(&p, &id("r"), &steps).await.unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|i| {
            let (m, p) = (m.clone(), p.clone());
            tokio::spawn(async move {
                let mut c = m.claim(&p, &PartitionId::step(id(&format!("s{i}"))), &id(&format!("w{i}"))).await.unwrap();
                for j in 0..n {
                    m.checkpoint(&mut c, progress(j)).await.unwrap();
                }
                m.release(&mut c, Progress::default()).await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (workers as u64 * n) as f64 / start.elapsed().as_secs_f64()
}

/// The server's own ceiling: `clients` clients each doing `n` raw
/// conditional PUTs on their own key, in parallel.
async fn parallel_raw_puts(store: Arc<dyn ConditionalStore>, clients: usize, n: u64, body: Vec<u8>) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (store, body) = (store.clone(), body.clone());
            tokio::spawn(async move {
                let key = format!("ceiling/{i}");
                let mut v = store.put_if_absent(&key, body.clone()).await.unwrap();
                for _ in 0..n {
                    v = store.put_if_match(&key, body.clone(), &v).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (clients as u64 * (n + 1)) as f64 / start.elapsed().as_secs_f64()
}

/// Serial compare-and-swap rate: one client, GET + PUT If-Match.
async fn serial_cas_rate(store: Arc<dyn ConditionalStore>, n: u64) -> f64 {
    let key = "contention/serial";
    store.put_if_absent(key, b"0".to_vec()).await.unwrap();
    let start = Instant::now();
    for i in 0..n {
        let o = store.get(key, 64).await.unwrap().unwrap();
        store.put_if_match(key, (i + 1).to_string().into_bytes(), &o.version).await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// `workers` workers contending for one partition for `secs`: claim,
/// `per_claim` checkpoints of +1, release, again. Returns (successful
/// checkpoints/s, successes, stored count).
async fn one_partition(store: Arc<dyn ConditionalStore>, workers: usize, secs: u64, per_claim: u64) -> (f64, u64, u64) {
    let m = StateManager::new(store, Config::default());
    let p: PipelineId = id(&format!("contended-{per_claim}"));
    let part = PartitionId::step(id("hot"));
    m.create_pipeline(&p, &id("r"), &[StepPlan::new(id("hot"), None)]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|i| {
            let (m, p, part) = (m.clone(), p.clone(), part.clone());
            tokio::spawn(async move {
                let w: WorkerId = id(&format!("w{i}"));
                let mut ok = 0u64;
                while Instant::now() < deadline {
                    let mut c = match m.claim(&p, &part, &w).await {
                        Ok(c) => c,
                        Err(Error::Core(oxiflow_core::Error::LeaseHeld { .. } | oxiflow_core::Error::Conflict { .. })) => {
                            // As a real worker would: back off, jittered, then retry.
                            tokio::time::sleep(Duration::from_millis(20 + rand::random::<u64>() % 30)).await;
                            continue;
                        }
                        Err(e) => panic!("{e}"),
                    };
                    for _ in 0..per_claim {
                        m.checkpoint(&mut c, Progress { add_records: 1, ..Progress::default() }).await.unwrap();
                        ok += 1;
                    }
                    m.release(&mut c, Progress::default()).await.unwrap();
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    let rate = ok as f64 / start.elapsed().as_secs_f64();
    let stored = m.view(&p).await.unwrap().records_processed;
    (rate, ok, stored)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 8)]
async fn main() {
    let rounds: usize = std::env::var("OXIFLOW_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    println!("# oxiflow-backends on moto ({})", std::env::var("OXIFLOW_TEST_S3_ENDPOINT").unwrap_or_default());
    request_counts(store()).await;
    checkpoint_vs_raw_put(store(), rounds).await;

    let n = (rounds / 3) as u64;
    let one = parallel_steps(store(), 1, n * 2).await;
    let eight = parallel_steps(store(), 8, n).await;
    let body = vec![b'x'; 545];
    let raw_one = parallel_raw_puts(store(), 1, n * 2, body.clone()).await;
    let raw_eight = parallel_raw_puts(store(), 8, n, body).await;
    println!("\n## 8 workers on 8 steps vs 1 worker ({n} checkpoints each)\n");
    println!("| | 1 client | 8 clients (aggregate) | speed-up |\n|---|---|---|---|");
    println!("| oxiflow checkpoints | {one:.0}/s | {eight:.0}/s | {:.2}× (goal ≥ 7.2×) |", eight / one);
    println!("| raw PUT If-Match, same server | {raw_one:.0}/s | {raw_eight:.0}/s | {:.2}× (the server's ceiling) |", raw_eight / raw_one);
    println!("\n8-worker checkpoint rate ÷ 8-client raw PUT rate: {:.2}", eight / raw_eight);

    let serial = serial_cas_rate(store(), n * 2).await;
    println!("\n## 8 workers on one partition (5 s each; claim, N checkpoints of +1, release; refused claims back off 20-50 ms)\n");
    println!("serial CAS rate of the server (1 client, GET + PUT If-Match): {serial:.0}/s\n");
    println!("| checkpoints per claim | goodput (checkpoints/s) | ÷ serial CAS rate | successful checkpoints | stored count | lost updates |\n|---|---|---|---|---|---|");
    for per_claim in [1, 10] {
        let (goodput, ok, stored) = one_partition(store(), 8, 5, per_claim).await;
        println!("| {per_claim} | {goodput:.0}/s | {:.2} | {ok} | {stored} | {} |", goodput / serial, ok as i64 - stored as i64);
        assert_eq!(ok, stored, "lost or doubled updates under contention");
    }
}
