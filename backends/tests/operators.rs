//! Operators acting while workers work, with exact accounting. Four worker
//! tasks claim, checkpoint and release (or complete, or die holding the
//! lease) on a real store, while an operator task resets a step, resets
//! everything, starts new runs, exports and later imports the export back
//! over the pipeline, asks workers to stop and cleans up dead leases, at
//! random.
//!
//! The store is wrapped so that every write that lands is recorded in the
//! store's own order. Checked there: no progress lands on a partition
//! behind its step's generation (progress acknowledged after a reset would
//! be hidden by it), and epochs never go down. Checked at the end: what
//! every reader sees of each partition equals the checkpoints acknowledged
//! under its current generation, exactly.
//!
//! Runs on the local directory (1,200 lease cycles) and on S3 (moto, 300, in
//! a bucket of its own: moto lists by walking the whole bucket). A soak:
//! `OXIFLOW_SOAK_CYCLES=10000 cargo test --release -p oxiflow-backends --test operators -- --nocapture`.

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use oxiflow_backends::{ConditionalStore, Error, Export, Listed, Next, Snapshot, StateManager};
use oxiflow_core::{
    codec, keys, Config, LeaseConfig, Limits, Object, PartitionDoc, PartitionId, PipelineDoc, PipelineId, Progress, ResetScope, StepId,
    Version, WorkerId,
};

const WORKERS: usize = 4;

fn config() -> Config {
    let lease = LeaseConfig {
        ttl: Duration::from_millis(400),
        heartbeat_interval: Duration::from_millis(150),
        skew_allowance: Duration::from_millis(50),
        safety_margin: Duration::from_millis(50),
    };
    Config { lease, ..Config::default() }
}

/// Lease cycles per run: `OXIFLOW_SOAK_CYCLES`, else `default`.
fn cycles(default: u64) -> u64 {
    std::env::var("OXIFLOW_SOAK_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A checkpoint acknowledged to its caller, and the generation it was
/// written under; or one whose outcome stayed unknown.
#[derive(Debug)]
struct Ack {
    part: PartitionId,
    records: u64,
    generation: u64,
    known: bool,
}

/// Records every write that lands, in the store's order, and checks the
/// rules that order must keep.
struct Recording {
    inner: Arc<dyn ConditionalStore>,
    order: tokio::sync::Mutex<Order>,
}

#[derive(Default)]
struct Order {
    pipeline: Option<PipelineDoc>,
    partitions: BTreeMap<String, PartitionDoc>,
    writes: u64,
    violations: Vec<String>,
}

impl Order {
    fn landed(&mut self, key: &str, body: &[u8]) {
        self.writes += 1;
        match keys::parse(key) {
            Ok(keys::DocKey::Pipeline(_)) => self.pipeline = Some(codec::decode(key, body, &Limits::default()).unwrap()),
            Ok(keys::DocKey::Partition(..)) => {
                let doc: PartitionDoc = codec::decode(key, body, &Limits::default()).unwrap();
                let current = self.pipeline.as_ref().map_or(0, |p| p.generation_of(&doc.step_id));
                if let Some(before) = self.partitions.get(key) {
                    let progress = doc.generation == before.generation && doc.records_processed > before.records_processed;
                    if progress && doc.generation < current {
                        self.violations
                            .push(format!("{key}: progress landed at generation {} after generation {current} committed", doc.generation));
                    }
                    let epoch = |d: &PartitionDoc| d.lease.as_ref().map_or(0, |l| l.epoch);
                    if epoch(&doc) < epoch(before) {
                        self.violations.push(format!("{key}: epoch went from {} down to {}", epoch(before), epoch(&doc)));
                    }
                }
                self.partitions.insert(key.to_string(), doc);
            }
            Err(_) => {}
        }
    }
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recording")
    }
}

#[async_trait]
impl ConditionalStore for Recording {
    fn describe(&self) -> &str {
        self.inner.describe()
    }
    async fn get(&self, key: &str, max: usize) -> oxiflow_backends::Result<Option<Object>> {
        self.inner.get(key, max).await
    }
    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> oxiflow_backends::Result<Version> {
        let mut order = self.order.lock().await;
        let version = self.inner.put_if_absent(key, body.clone()).await?;
        order.landed(key, &body);
        Ok(version)
    }
    async fn put_if_match(&self, key: &str, body: Vec<u8>, version: &Version) -> oxiflow_backends::Result<Version> {
        let mut order = self.order.lock().await;
        let version = self.inner.put_if_match(key, body.clone(), version).await?;
        order.landed(key, &body);
        Ok(version)
    }
    async fn delete(&self, key: &str) -> oxiflow_backends::Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> oxiflow_backends::Result<Vec<Listed>> {
        self.inner.list(prefix).await
    }
}

#[derive(Default)]
struct Tally {
    cycles: AtomicU64,
    died: AtomicU64,
    acks: AtomicU64,
    fenced: AtomicU64,
    stopped: AtomicU64,
    resets: AtomicU64,
    imports: AtomicU64,
    refused: AtomicU64,
    stops_asked: AtomicU64,
    cleaned: AtomicU64,
}

struct Harness {
    m: StateManager,
    pipeline: PipelineId,
    acks: Mutex<Vec<Ack>>,
    /// Records an import restored, per partition and the generation it
    /// restored at (a reset's generations start from zero).
    restored: Mutex<BTreeMap<(PartitionId, u64), u64>>,
    tally: Tally,
    done: AtomicBool,
}

fn id<T: std::str::FromStr<Err = oxiflow_core::Error>>(s: &str) -> T {
    s.parse().unwrap()
}

fn pause(min_ms: u64, spread_ms: u64) -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_millis(min_ms + rand::random::<u64>() % spread_ms))
}

async fn worker(h: Arc<Harness>, me: WorkerId) {
    let mut snapshot = Snapshot::new(h.pipeline.clone());
    while !h.done.load(Relaxed) {
        let mut c = match h.m.claim_next(&mut snapshot, &me).await {
            Ok(Next::Claimed(c)) => *c,
            // Nothing ready: look again soon, but do not spin (every look is a LIST).
            Ok(Next::Wait(_) | Next::Finished(_)) => {
                pause(20, 40).await;
                continue;
            }
            Err(Error::Core(
                oxiflow_core::Error::NotReady { .. } | oxiflow_core::Error::LeaseHeld { .. } | oxiflow_core::Error::Conflict { .. },
            )) => {
                pause(2, 10).await;
                continue;
            }
            Err(e) => panic!("{me}: claim: {e}"),
        };
        h.tally.cycles.fetch_add(1, Relaxed);
        let part = c.doc().partition_id();
        let mut holding = true;
        for _ in 0..1 + rand::random::<u32>() % 3 {
            let records = 1 + rand::random::<u64>() % 5;
            let generation = c.doc().generation;
            match h.m.checkpoint(&mut c, Progress { add_records: records, ..Progress::default() }).await {
                Ok(w) => {
                    assert!(w.landed, "{me}: a checkpoint that was not a replay landed");
                    h.acks.lock().unwrap().push(Ack { part: part.clone(), records, generation, known: true });
                    h.tally.acks.fetch_add(1, Relaxed);
                    if w.stop.is_some() {
                        h.tally.stopped.fetch_add(1, Relaxed);
                        holding = false;
                        break;
                    }
                }
                Err(Error::Core(oxiflow_core::Error::Fenced { .. } | oxiflow_core::Error::Expired { .. })) => {
                    h.tally.fenced.fetch_add(1, Relaxed);
                    holding = false;
                    break;
                }
                Err(Error::Unavailable { .. } | Error::Core(oxiflow_core::Error::Unavailable { .. })) => {
                    h.acks.lock().unwrap().push(Ack { part: part.clone(), records, generation, known: false });
                    break;
                }
                Err(e) => panic!("{me}: checkpoint: {e}"),
            }
        }
        if !holding {
            continue;
        }
        let outcome = match rand::random::<u32>() % 10 {
            0..=1 => {
                // Dies holding the lease: it expires, someone takes over.
                h.tally.died.fetch_add(1, Relaxed);
                continue;
            }
            2..=3 => h.m.complete(&mut c, Progress::default()).await,
            _ => h.m.release(&mut c, Progress::default()).await,
        };
        match outcome {
            Ok(_) | Err(Error::Core(oxiflow_core::Error::Fenced { .. } | oxiflow_core::Error::Expired { .. })) => {}
            Err(Error::Unavailable { .. } | Error::Core(oxiflow_core::Error::Unavailable { .. })) => {}
            Err(e) => panic!("{me}: release: {e}"),
        }
        pause(0, 5).await;
    }
}

async fn operator(h: Arc<Harness>, workers: Vec<WorkerId>) {
    let by: WorkerId = id("operator");
    let mut runs = 1;
    let mut saved: Option<Export> = None;
    while !h.done.load(Relaxed) {
        pause(20, 60).await;
        let scope = match rand::random::<u32>() % 10 {
            8 => {
                saved = Some(h.m.export(&h.pipeline).await.unwrap_or_else(|e| panic!("export: {e}")));
                None
            }
            9 => {
                let Some(export) = &saved else { continue };
                match h.m.import(export, true, false).await {
                    Ok(_) => {
                        let (doc, _) = h.m.load(&h.pipeline).await.unwrap();
                        let now = h.m.now();
                        let mut restored = h.restored.lock().unwrap();
                        for p in &export.partitions {
                            restored.insert(
                                (p.partition_id(), doc.generation_of(&p.step_id)),
                                p.as_of(&export.pipeline, now).records_processed,
                            );
                        }
                        h.tally.imports.fetch_add(1, Relaxed);
                    }
                    Err(Error::Core(oxiflow_core::Error::LeaseHeld { .. } | oxiflow_core::Error::Conflict { .. })) => {
                        h.tally.refused.fetch_add(1, Relaxed);
                    }
                    Err(e) => panic!("import: {e}"),
                }
                None
            }
            0..=2 => Some(ResetScope::Step { step_id: id(if rand::random::<bool>() { "a" } else { "b" }) }),
            3 => Some(ResetScope::Pipeline),
            4 => {
                runs += 1;
                Some(ResetScope::NewRun { run_id: id(&format!("run-{runs}")) })
            }
            5 => {
                let who = &workers[(rand::random::<u32>() as usize) % workers.len()];
                let asked = h.m.request_stop(who, &by).await.unwrap_or_else(|e| panic!("stop: {e}"));
                h.tally.stops_asked.fetch_add(asked.len() as u64, Relaxed);
                None
            }
            _ => {
                let cleaned = h.m.cleanup_stale_leases().await.unwrap_or_else(|e| panic!("cleanup: {e}"));
                h.tally.cleaned.fetch_add(cleaned.len() as u64, Relaxed);
                None
            }
        };
        let Some(scope) = scope else { continue };
        match h.m.reset_scope(&h.pipeline, scope, &by).await {
            Ok(_) => {
                h.tally.resets.fetch_add(1, Relaxed);
            }
            Err(Error::Core(oxiflow_core::Error::LeaseHeld { .. } | oxiflow_core::Error::Conflict { .. })) => {
                h.tally.refused.fetch_add(1, Relaxed);
            }
            Err(e) => panic!("reset: {e}"),
        }
    }
}

async fn run(store: Arc<dyn ConditionalStore>, name: &str, target: u64) {
    let recording = Arc::new(Recording { inner: store, order: Default::default() });
    let m = StateManager::new(recording.clone(), config());
    let pipeline: PipelineId = id(&format!("ops-{:08x}", rand::random::<u32>()));
    let plan = oxiflow_core::plan::chain([(id::<StepId>("a"), Some(3)), (id("b"), Some(2))]);
    m.create_pipeline(&pipeline, &id("run-1"), &plan).await.unwrap();
    let h = Arc::new(Harness {
        m,
        pipeline,
        acks: Mutex::new(Vec::new()),
        restored: Mutex::new(BTreeMap::new()),
        tally: Tally::default(),
        done: AtomicBool::new(false),
    });

    let names: Vec<WorkerId> = (0..WORKERS).map(|i| id(&format!("w{i}"))).collect();
    let tasks: Vec<_> = names.iter().map(|w| tokio::spawn(worker(h.clone(), w.clone()))).collect();
    let op = tokio::spawn(operator(h.clone(), names));
    while h.tally.cycles.load(Relaxed) < target {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.done.store(true, Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    op.await.unwrap();

    let order = recording.order.lock().await;
    assert!(order.violations.is_empty(), "{name}: in the store's order: {:#?}", order.violations);

    // What every reader sees now, against what was acknowledged under each
    // partition's current generation, on top of what an import restored at
    // it (a reset's generation starts from zero).
    let (doc, partitions) = h.m.load(&h.pipeline).await.unwrap();
    let now = h.m.now();
    let acks = h.acks.lock().unwrap();
    let restored = h.restored.lock().unwrap();
    for seen in partitions.iter().map(|p| p.as_of(&doc, now)) {
        let part = seen.partition_id();
        let current = doc.generation_of(&part.step_id);
        let under_current = |known: bool| -> u64 {
            acks.iter().filter(|a| a.part == part && a.generation == current && a.known == known).map(|a| a.records).sum()
        };
        let base = restored.get(&(part.clone(), current)).copied().unwrap_or(0);
        let (certain, unknown) = (base + under_current(true), under_current(false));
        let stored = seen.records_processed;
        assert!(
            certain <= stored && stored <= certain + unknown,
            "{name}: {part}: readers see {stored} records; acknowledged under generation {current}: {certain} (+ up to {unknown} unknown)"
        );
    }
    let t = &h.tally;
    let unknown = acks.iter().filter(|a| !a.known).count();
    println!(
        "{name}: {} lease cycles ({} died holding), {} checkpoints acknowledged, {unknown} unknown, {} fenced or expired, {} stopped; \
         {} resets/new runs and {} imports committed, {} refused; {} stop requests, {} dead leases cleaned; {} writes checked in store order; generation {}",
        t.cycles.load(Relaxed),
        t.died.load(Relaxed),
        t.acks.load(Relaxed),
        t.fenced.load(Relaxed),
        t.stopped.load(Relaxed),
        t.resets.load(Relaxed),
        t.imports.load(Relaxed),
        t.refused.load(Relaxed),
        t.stops_asked.load(Relaxed),
        t.cleaned.load(Relaxed),
        order.writes,
        doc.generation,
    );
    assert!(t.resets.load(Relaxed) > 0, "{name}: no reset committed: the harness checked nothing about resets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_and_workers_on_a_local_directory_account_exactly() {
    let dir = tempfile::tempdir().unwrap();
    run(support::local_dir(dir.path()), "local directory", cycles(1_200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_and_workers_on_s3_account_exactly() {
    let Some(store) = support::s3_own_bucket().await else { return };
    run(store, "S3 (moto)", cycles(300)).await;
}
