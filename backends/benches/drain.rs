//! Draining a pipeline with the scheduler, and what reading a big pipeline
//! costs.
//!
//! Run with `scripts/bench.sh` (which also starts moto for the reference
//! rows), or alone: `cargo bench -p oxiflow-backends --bench drain` (the S3
//! rows are then skipped). Prints markdown:
//! - 8 workers vs 1 draining a 32-partition pipeline, each worker looping
//!   `claim_next` → checkpoints → `complete`, on a memory store behind a
//!   fixed 20 ms round trip per request (simulating S3's), and the same on
//!   moto: drain time, aggregate throughput, claim conflicts per claimed
//!   partition, requests per partition;
//! - requests (counted by `CountingStore`) and time of a first and a
//!   repeated read of a 1,000-partition pipeline: `StateManager::load`
//!   (`oxiflow state show`), a `Snapshot` refresh (`oxiflow serve`, the
//!   worker's wait loop), and the read path before snapshots (1 GET + 1
//!   LIST + N GETs per read, reproduced from `StateManager::load` at commit
//!   dbb6328).

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use oxiflow_backends::{
    ConditionalStore, CountingStore, Listed, Next, ObjectStoreBackend, ObjectStoreOptions, RequestCounts, Result, Snapshot, StateManager,
    StepPlan,
};
use oxiflow_core::{keys, Config, Object, PartitionDoc, PartitionId, PipelineDoc, PipelineId, Progress, StatusKind, Version, WorkerId};

const PARTITIONS: u32 = 32;
/// Checkpoints per partition before it completes.
const CHECKPOINTS: u64 = 10;
const RECORDS_PER_CHECKPOINT: u64 = 100;
/// What `oxiflow worker start` waits when nothing is claimable yet.
const WAIT: Duration = Duration::from_millis(500);
/// The simulated round trip: half before the inner store acts, half after,
/// so a write applies mid-request as it does on a real server.
const ROUND_TRIP: Duration = Duration::from_millis(20);
const READ_PARTITIONS: u32 = 1000;

fn id<T: std::str::FromStr<Err = oxiflow_core::Error>>(s: &str) -> T {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn memory() -> Arc<dyn ConditionalStore> {
    Arc::new(ObjectStoreBackend::open("memory://", &ObjectStoreOptions::default()).unwrap())
}

fn moto() -> Option<Arc<dyn ConditionalStore>> {
    let (url, options) = support::s3_options()?;
    Some(Arc::new(ObjectStoreBackend::open(&url, &options).unwrap()))
}

/// A store with a round trip per request: `round_trip`, or with `jitter`
/// uniformly between `round_trip − jitter` and `round_trip + jitter`. Half
/// is spent before the inner store acts, half after, so a write applies
/// mid-request as on a real server.
#[derive(Debug)]
struct Latency {
    inner: Arc<dyn ConditionalStore>,
    half: Duration,
    half_jitter: Duration,
}

impl Latency {
    fn wrap(inner: Arc<dyn ConditionalStore>, round_trip: Duration, jitter: Duration) -> Arc<dyn ConditionalStore> {
        Arc::new(Latency { inner, half: round_trip / 2, half_jitter: jitter / 2 })
    }

    fn leg(&self) -> Duration {
        self.half - self.half_jitter + self.half_jitter.mul_f64(2.0 * rand::random::<f64>())
    }

    async fn around<T>(&self, op: impl std::future::Future<Output = T>) -> T {
        tokio::time::sleep(self.leg()).await;
        let out = op.await;
        tokio::time::sleep(self.leg()).await;
        out
    }
}

#[async_trait]
impl ConditionalStore for Latency {
    fn describe(&self) -> &str {
        self.inner.describe()
    }
    async fn get(&self, key: &str, max_bytes: usize) -> Result<Option<Object>> {
        self.around(self.inner.get(key, max_bytes)).await
    }
    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<Version> {
        self.around(self.inner.put_if_absent(key, body)).await
    }
    async fn put_if_match(&self, key: &str, body: Vec<u8>, version: &Version) -> Result<Version> {
        self.around(self.inner.put_if_match(key, body, version)).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.around(self.inner.delete(key)).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        self.around(self.inner.list(prefix)).await
    }
}

/// One worker's requests, in the order they finished, so that its
/// `claim_next` calls can be taken apart afterwards.
#[derive(Debug)]
enum Event {
    List(Vec<Listed>),
    Get { key: String, version: Option<Version> },
    PutIfMatch { key: String },
    Other,
}

#[derive(Debug)]
struct Recorder {
    inner: Arc<dyn ConditionalStore>,
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    fn push(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }
    fn len(&self) -> usize {
        self.events.lock().unwrap().len()
    }
    fn take_from(&self, mark: usize) -> Vec<Event> {
        self.events.lock().unwrap().split_off(mark)
    }
}

#[async_trait]
impl ConditionalStore for Recorder {
    fn describe(&self) -> &str {
        self.inner.describe()
    }
    async fn get(&self, key: &str, max_bytes: usize) -> Result<Option<Object>> {
        let r = self.inner.get(key, max_bytes).await;
        if let Ok(o) = &r {
            self.push(Event::Get { key: key.into(), version: o.as_ref().map(|o| o.version.clone()) });
        }
        r
    }
    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<Version> {
        self.push(Event::Other);
        self.inner.put_if_absent(key, body).await
    }
    async fn put_if_match(&self, key: &str, body: Vec<u8>, version: &Version) -> Result<Version> {
        let r = self.inner.put_if_match(key, body, version).await;
        self.push(Event::PutIfMatch { key: key.into() });
        r
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.push(Event::Other);
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let r = self.inner.list(prefix).await;
        if let Ok(listed) = &r {
            self.push(Event::List(listed.clone()));
        }
        r
    }
}

/// Takes one `claim_next` call apart: a LIST, the refresh's GETs (exactly
/// the listed keys whose version differs from what this worker's snapshot
/// holds, tracked in `mirror` by the snapshot's own rule), then the claim
/// attempts, each a GET and, when the partition looked free, a PUT If-Match
/// (refused → one re-GET, then the claim gives up), and after a claim that
/// landed, a GET of the pipeline document (not an attempt). Returns (the
/// refresh's GETs, claim attempts lost to another worker).
fn claim_attempts(mirror: &mut HashMap<String, Version>, events: &[Event], claimed: bool) -> (u64, u64) {
    let Some((Event::List(listed), rest)) = events.split_first() else { panic!("claim_next did not start with a LIST: {events:?}") };
    let mut refresh: HashSet<&str> =
        listed.iter().filter(|l| !(l.version.is_some() && mirror.get(&l.key) == l.version.as_ref())).map(|l| l.key.as_str()).collect();
    let refresh_gets = refresh.len() as u64;
    mirror.retain(|k, _| listed.iter().any(|l| &l.key == k));
    // Claim attempts: one per partition the claims touched (a claim starts
    // with a PUT from the snapshot's document, or a GET without one; a lost
    // one re-reads it), in order.
    let mut attempted: Vec<&str> = Vec::new();
    for e in rest {
        let key = match e {
            Event::Get { key, version } if refresh.remove(key.as_str()) => {
                match version {
                    Some(v) => mirror.insert(key.clone(), v.clone()),
                    None => mirror.remove(key),
                };
                continue;
            }
            // The read of the pipeline a landed claim checks against a reset.
            Event::Get { key, .. } if key.ends_with("/pipeline.json") => continue,
            Event::Get { key, .. } | Event::PutIfMatch { key, .. } => key.as_str(),
            other => panic!("unexpected request in claim_next: {other:?}"),
        };
        if attempted.last() != Some(&key) {
            attempted.push(key);
        }
    }
    assert!(refresh.is_empty(), "the refresh read every changed document");
    let attempts = attempted.len() as u64;
    assert!(attempts >= u64::from(claimed), "a claim needs an attempt");
    (refresh_gets, attempts - u64::from(claimed))
}

#[derive(Debug, Default)]
struct WorkerStats {
    claimed: u64,
    conflicts: u64,
    refresh_gets: u64,
    waits: u64,
    last_complete: Option<Instant>,
}

async fn worker(m: StateManager, rec: Arc<Recorder>, p: PipelineId, w: WorkerId) -> WorkerStats {
    let mut snapshot = Snapshot::new(p);
    let mut mirror = HashMap::new();
    let mut stats = WorkerStats::default();
    loop {
        let mark = rec.len();
        let next = m.claim_next(&mut snapshot, &w).await.unwrap();
        let (refresh_gets, conflicts) = claim_attempts(&mut mirror, &rec.take_from(mark), matches!(next, Next::Claimed(_)));
        stats.conflicts += conflicts;
        stats.refresh_gets += refresh_gets;
        match next {
            Next::Claimed(c) => {
                let mut c = *c;
                for i in 0..CHECKPOINTS {
                    let progress = Progress {
                        last_processed_id: Some(format!("r-{:06}", (i + 1) * RECORDS_PER_CHECKPOINT)),
                        batch_number: Some(i + 1),
                        add_records: RECORDS_PER_CHECKPOINT,
                        ..Progress::default()
                    };
                    m.checkpoint(&mut c, progress).await.unwrap();
                }
                m.complete(&mut c, Progress::default()).await.unwrap();
                stats.claimed += 1;
                stats.last_complete = Some(Instant::now());
            }
            Next::Wait(_) => {
                stats.waits += 1;
                tokio::time::sleep(WAIT).await;
            }
            Next::Finished(_) => return stats,
        }
    }
}

struct Drain {
    drain: Duration,
    conflicts: u64,
    refresh_gets: u64,
    waits: u64,
    requests: RequestCounts,
}

/// `workers` workers drain a fresh 32-partition pipeline on `store`.
async fn drain(store: Arc<dyn ConditionalStore>, workers: usize, name: &str) -> Drain {
    let counting = Arc::new(CountingStore::new(store));
    let admin = StateManager::new(counting.clone(), Config::default());
    let p: PipelineId = id(name);
    admin.create_pipeline(&p, &id("r"), &[StepPlan::new(id("work"), Some(PARTITIONS))]).await.unwrap();
    let before = counting.counts();
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|i| {
            let rec = Arc::new(Recorder { inner: counting.clone(), events: Mutex::default() });
            let m = StateManager::new(rec.clone(), Config::default());
            tokio::spawn(worker(m, rec, p.clone(), id(&format!("w{i}"))))
        })
        .collect();
    let mut stats = Vec::new();
    for t in tasks {
        stats.push(t.await.unwrap());
    }
    let requests = counting.counts().since(&before);
    let last = stats.iter().filter_map(|s| s.last_complete).max().expect("something completed");
    let view = admin.view(&p).await.unwrap();
    assert_eq!(view.status, StatusKind::Completed);
    assert_eq!(view.records_processed, u64::from(PARTITIONS) * CHECKPOINTS * RECORDS_PER_CHECKPOINT, "exact counts");
    assert_eq!(stats.iter().map(|s| s.claimed).sum::<u64>(), u64::from(PARTITIONS), "each partition claimed once");
    Drain {
        drain: last - start,
        conflicts: stats.iter().map(|s| s.conflicts).sum(),
        refresh_gets: stats.iter().map(|s| s.refresh_gets).sum(),
        waits: stats.iter().map(|s| s.waits).sum(),
        requests,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One worker, then `runs` runs of 8 workers, on stores from `store`.
async fn drain_table(title: &str, store: impl Fn() -> Arc<dyn ConditionalStore>, runs: usize) {
    let checkpoints = f64::from(PARTITIONS) * CHECKPOINTS as f64;
    let one = drain(store(), 1, "drain-1").await;
    let one_rate = checkpoints / one.drain.as_secs_f64();
    println!("\n## {title}\n");
    println!("{PARTITIONS} partitions × ({CHECKPOINTS} checkpoints + complete); each worker loops claim_next → checkpoints → complete.\n");
    println!(
        "| workers | run | drain time | checkpoints/s | speed-up | claim conflicts (per claimed partition) | requests per partition | PUT | LIST | GET in refreshes | GET in claims | waits (500 ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let row = |workers: usize, run: &str, d: &Drain| {
        let rate = checkpoints / d.drain.as_secs_f64();
        let per = |n: u64| n as f64 / f64::from(PARTITIONS);
        println!(
            "| {workers} | {run} | {:.2} s | {rate:.0} | {:.2}× | {} ({:.3}) | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            d.drain.as_secs_f64(),
            rate / one_rate,
            d.conflicts,
            per(d.conflicts),
            per(d.requests.total()),
            per(d.requests.put_if_match + d.requests.put_if_absent),
            per(d.requests.list),
            per(d.refresh_gets),
            per(d.requests.get - d.refresh_gets),
            d.waits,
        );
        (rate / one_rate, per(d.conflicts))
    };
    row(1, "1", &one);
    let mut speedups = Vec::new();
    let mut conflicts = Vec::new();
    for run in 0..runs {
        let d = drain(store(), 8, &format!("drain-8-{run}")).await;
        let (s, c) = row(8, &(run + 1).to_string(), &d);
        speedups.push(s);
        conflicts.push(c);
    }
    println!(
        "\nMedian of {runs} runs with 8 workers: speed-up {:.2}× (goal ≥ 7×), {:.3} claim conflicts per claimed partition (goal ≤ 0.2).",
        median(speedups),
        median(conflicts)
    );
}

/// The read path before snapshots (`StateManager::load` at dbb6328): GET
/// the pipeline document, LIST the partitions, GET each, 16 at a time.
async fn load_before_snapshots(m: &StateManager, p: &PipelineId) -> usize {
    let key = keys::pipeline_doc(p);
    m.read::<PipelineDoc>(&key).await.unwrap().expect("pipeline");
    let listed = m.store().list(&keys::partitions_prefix(p)).await.unwrap();
    let docs: Vec<PartitionDoc> = futures::stream::iter(listed)
        .map(|l| async move { m.read::<PartitionDoc>(&l.key).await })
        .buffered(16)
        .try_filter_map(|d| async move { Ok(d.map(|(doc, _)| doc)) })
        .try_collect()
        .await
        .unwrap();
    docs.len()
}

async fn reads_table(title: &str, store: Arc<dyn ConditionalStore>) {
    let counting = Arc::new(CountingStore::new(store));
    let m = StateManager::new(counting.clone(), Config::default());
    let p: PipelineId = id("big");
    m.create_pipeline(&p, &id("r"), &[StepPlan::new(id("part"), Some(READ_PARTITIONS))]).await.unwrap();
    println!("\n## {title}\n");
    println!("| read | requests | GET | LIST | time |\n|---|---|---|---|---|");
    let measure = |name: String, before: RequestCounts, t: Instant| {
        let d = counting.counts().since(&before);
        assert_eq!(d.total(), d.get + d.list, "reads only");
        println!("| {name} | {} | {} | {} | {:.0} ms |", d.total(), d.get, d.list, t.elapsed().as_secs_f64() * 1e3);
    };
    for round in ["first", "repeated"] {
        let (b, t) = (counting.counts(), Instant::now());
        assert_eq!(load_before_snapshots(&m, &p).await, READ_PARTITIONS as usize);
        measure(format!("before: `load` / `view`, {round}"), b, t);
    }
    for round in ["first", "repeated"] {
        let (b, t) = (counting.counts(), Instant::now());
        assert_eq!(m.load(&p).await.unwrap().1.len(), READ_PARTITIONS as usize);
        measure(format!("after: `load` (`state show`), {round}"), b, t);
    }
    let mut snapshot = Snapshot::new(p.clone());
    for round in ["first", "repeated, nothing changed"] {
        let (b, t) = (counting.counts(), Instant::now());
        m.refresh(&mut snapshot).await.unwrap();
        measure(format!("after: `Snapshot` refresh, {round}"), b, t);
    }
    // 10 partitions claimed by someone: 10 documents changed.
    for i in 0..10 {
        m.claim(&p, &PartitionId::shard(id("part"), i), &id("w")).await.unwrap();
    }
    let (b, t) = (counting.counts(), Instant::now());
    let r = m.refresh(&mut snapshot).await.unwrap();
    assert_eq!((r.fetched, r.kept), (10, READ_PARTITIONS as usize - 9));
    measure("after: `Snapshot` refresh, repeated, 10 partitions changed".into(), b, t);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 8)]
async fn main() {
    let runs: usize = std::env::var("OXIFLOW_BENCH_DRAIN_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let rt = ROUND_TRIP.as_millis();
    println!("# Draining with claim_next; reading a big pipeline");
    drain_table(
        &format!("8 workers vs 1, memory store behind a fixed {rt} ms round trip per request (simulating S3)"),
        || Latency::wrap(memory(), ROUND_TRIP, Duration::ZERO),
        runs,
    )
    .await;
    drain_table(
        &format!("The same with the round trip spread uniformly over {}–{} ms", rt - 10, rt + 10),
        || Latency::wrap(memory(), ROUND_TRIP, Duration::from_millis(10)),
        runs,
    )
    .await;
    if std::env::var_os("OXIFLOW_TEST_S3_ENDPOINT").is_some() {
        drain_table("8 workers vs 1 on moto (reference: one Python process, one request at a time)", || moto().unwrap(), runs).await;
    } else {
        println!("\n(moto rows skipped: OXIFLOW_TEST_S3_ENDPOINT is not set; scripts/bench.sh starts moto)");
    }
    let latency = Latency::wrap(memory(), ROUND_TRIP, Duration::ZERO);
    reads_table(&format!("Reading a {READ_PARTITIONS}-partition pipeline, {rt} ms per request"), latency).await;
    if let Some(store) = moto() {
        reads_table(&format!("Reading a {READ_PARTITIONS}-partition pipeline on moto"), store).await;
    }
}
