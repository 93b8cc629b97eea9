//! The scale simulation (issue 13): about 1,000 real Lambda-like
//! invocations of one step runner, each its own process, on S3 (moto).
//!
//! The test binary re-executes itself as the child for each invocation
//! (`scale_child`, which returns at once unless `OXIFLOW_SCALE_CHILD` holds
//! its orders). A child builds a [`StateManager`] over S3 wrapped in the
//! fault store (lost responses: writes that land but whose answer is lost;
//! requests that fail before landing), runs ONE [`Runner::invoke`] with a
//! real, trusted deadline 2 s after the parent started it, logs each batch's
//! work (its pid, partition, epoch, range, start and end) to a shared file,
//! prints its outcome and exits.
//!
//! The parent plays the platform for `extract:S → transform:S (aligned) →
//! load (barrier)`: it delivers the first events, the continuations and
//! hand-offs read from the outcomes; delivers ~20 % of events twice at
//! once; SIGKILLs ~10 % of invocations at a random moment (and any still
//! running at its deadline), and redelivers them as retries (half keep the
//! dead attempt's request id, as Lambda's own retries do; the others get a
//! new one); a retry told `already_running` is redelivered at its
//! `retry_at`; at most 8 children run at once.
//!
//! Asserted: the pipeline completes; every partition counted exactly its
//! range (exactly once); no two processes' batch work on one partition
//! overlapped in time (zero double holders: a killed process's last batch
//! lasts until its kill); each partition's holders' epochs only grow and
//! one epoch is one process; a partition whose holder was killed is taken
//! over by `deadline + skew` plus the time to get a slot and claim (6 s
//! allowed: a slot frees within 2 s; the retry itself may meet an injected
//! failure and be retried).
//!
//! `OXIFLOW_SCALE_INVOCATIONS` sizes it (default 1,000; the count is
//! approximate), `OXIFLOW_SCALE_SLOTS` the concurrency (default 8),
//! `OXIFLOW_SCALE_SEED` the randomness (printed).
#![allow(unreachable_pub, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use oxiflow_backends::{ConditionalStore, Faults, FaultyStore, Listed, ObjectStoreBackend, ObjectStoreOptions, StateManager};
use oxiflow_core::{Config, Dependency, LeaseConfig, Object, PartitionDoc, PartitionId, PipelineId, RunId, StepPlan, Timestamp, Version};
use oxiflow_lambda::{Batch, BatchError, BatchInput, Invocation, Runner, Step, StepEvent, StepOutcome};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

const CHILD_ENV: &str = "OXIFLOW_SCALE_CHILD";
const REPORT: &str = "SCALE-CHILD-REPORT ";
const DEADLINE: Duration = Duration::from_secs(2);
const SKEW: Duration = Duration::from_millis(500);
/// Simulated work per batch, and records per batch of an extract or
/// transform shard.
const WORK: Duration = Duration::from_millis(100);
const BATCH: u64 = 10;
/// Batches of load, which reads every shard's records.
const LOAD_BATCHES: u64 = 20;
const DUPLICATES: f64 = 0.2;
/// Invocations given a kill moment, uniform in [0, 1.6 s): about half of
/// them have ended by then, so ~10 % of all invocations are killed.
const KILLS: f64 = 0.2;
const FAULTS: Faults = Faults { lose_response: 0.03, fail_before: 0.002, latency: 0.0, max_latency: Duration::ZERO };

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

fn lease() -> LeaseConfig {
    LeaseConfig {
        ttl: DEADLINE,
        heartbeat_interval: Duration::from_millis(600),
        skew_allowance: SKEW,
        safety_margin: Duration::from_millis(200),
    }
}

fn s3_options(endpoint: &str) -> ObjectStoreOptions {
    ObjectStoreOptions {
        endpoint: Some(endpoint.into()),
        allow_http: true,
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        region: Some("us-east-1".into()),
        ..ObjectStoreOptions::default()
    }
}

/// A small deterministic generator (splitmix64): the runs repeat by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The shape of the pipeline, shared by parent and children.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Shape {
    shards: u32,
    /// Records per extract or transform shard.
    per_shard: u64,
}

impl Shape {
    /// Sized so that about `invocations` happen in all: each extract and
    /// transform shard needs about `invocations / 1.45 / (2 × shards)` work
    /// invocations of ~9 batches (a work invocation is duplicated 20 %
    /// of the time, killed 10 %, and a kill or a failure costs a retry or
    /// two; measured: ~1.5 invocations per work invocation).
    fn for_invocations(invocations: u64) -> Shape {
        let shards = (invocations / 25).clamp(4, 40) as u32;
        let work = invocations as f64 / 1.5 / (2.0 * f64::from(shards));
        let batches = ((work - 0.5).max(0.5) * 9.0).round() as u64;
        Shape { shards, per_shard: batches.max(2) * BATCH }
    }

    /// The records `[start, end)` of a partition, and its batch size.
    fn range(&self, partition: &PartitionId) -> (u64, u64, u64) {
        match partition.shard {
            Some(i) => (u64::from(i) * self.per_shard, (u64::from(i) + 1) * self.per_shard, BATCH),
            None => {
                let total = u64::from(self.shards) * self.per_shard;
                (0, total, total.div_ceil(LOAD_BATCHES))
            }
        }
    }

    fn partitions(&self) -> Vec<String> {
        (0..self.shards).flat_map(|i| [format!("extract@{i}"), format!("transform@{i}")]).chain(["load".to_string()]).collect()
    }
}

// ---------------------------------------------------------------- the child

/// What the parent tells a child.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Orders {
    endpoint: String,
    url: String,
    event: StepEvent,
    request_id: String,
    deadline_ms: i64,
    seed: u64,
    log: PathBuf,
    shape: Shape,
}

/// Sees every partition document this process writes or reads, and keeps
/// the epoch of the lease it holds (its worker id on it).
#[derive(Debug)]
struct Watch {
    inner: Arc<dyn ConditionalStore>,
    worker: String,
    epoch: Arc<AtomicU64>,
}

impl Watch {
    fn see(&self, body: &[u8]) {
        let Ok(doc) = serde_json::from_slice::<Value>(body) else { return };
        let lease = &doc["lease"];
        if lease["worker_id"].as_str() == Some(self.worker.as_str()) {
            if let Some(epoch) = lease["epoch"].as_u64() {
                self.epoch.fetch_max(epoch, Ordering::SeqCst);
            }
        }
    }
}

#[async_trait]
impl ConditionalStore for Watch {
    fn describe(&self) -> &str {
        self.inner.describe()
    }
    async fn get(&self, key: &str, max_bytes: usize) -> oxiflow_backends::Result<Option<Object>> {
        let got = self.inner.get(key, max_bytes).await?;
        if let Some(o) = &got {
            self.see(&o.body);
        }
        Ok(got)
    }
    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> oxiflow_backends::Result<Version> {
        self.inner.put_if_absent(key, body).await
    }
    async fn put_if_match(&self, key: &str, body: Vec<u8>, version: &Version) -> oxiflow_backends::Result<Version> {
        let written = self.inner.put_if_match(key, body.clone(), version).await?;
        self.see(&body);
        Ok(written)
    }
    async fn delete(&self, key: &str) -> oxiflow_backends::Result<()> {
        self.inner.delete(key).await
    }
    async fn written_at(&self, key: &str) -> oxiflow_backends::Result<Option<Timestamp>> {
        self.inner.written_at(key).await
    }
    async fn list(&self, prefix: &str) -> oxiflow_backends::Result<Vec<Listed>> {
        self.inner.list(prefix).await
    }
}

/// The step: batches of simulated work over the partition's range, each
/// logged when it begins and when it ends.
struct Work {
    shape: Shape,
    log: PathBuf,
    epoch: Arc<AtomicU64>,
}

impl Work {
    fn log(&self, line: Value) -> Result<(), BatchError> {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        file.write_all(format!("{line}\n").as_bytes())?; // one write: lines do not interleave
        Ok(())
    }
}

#[async_trait]
impl Step for Work {
    async fn batch(&self, input: BatchInput) -> Result<Batch, BatchError> {
        let (start, end, size) = self.shape.range(&input.partition);
        let next = match input.bookmark.as_deref() {
            Some(b) => b.parse::<u64>()?,
            None => start,
        };
        if next >= end {
            return Ok(Batch::done());
        }
        let upto = (next + size).min(end);
        let (pid, partition, epoch) = (std::process::id(), input.partition.to_string(), self.epoch.load(Ordering::SeqCst));
        self.log(json!({ "pid": pid, "partition": partition, "epoch": epoch, "from": next, "to": upto, "start": now_us() }))?;
        tokio::time::sleep(WORK).await; // … read, transform, write the records [next, upto) …
        self.log(json!({ "pid": pid, "partition": partition, "epoch": epoch, "from": next, "to": upto, "end": now_us() }))?;
        let batch = Batch::new(upto.to_string(), upto - next);
        Ok(if upto == end { batch.last() } else { batch })
    }
}

async fn child(orders: Orders) -> Value {
    let inner: Arc<dyn ConditionalStore> = Arc::new(ObjectStoreBackend::open(&orders.url, &s3_options(&orders.endpoint)).unwrap());
    let faulty = Arc::new(FaultyStore::new(inner, FAULTS, orders.seed));
    let invocation = Invocation { request_id: orders.request_id.clone(), deadline: Some(Timestamp::from_millis(orders.deadline_ms)) };
    let epoch = Arc::new(AtomicU64::new(0));
    let watch = Watch { inner: faulty.clone(), worker: invocation.worker().unwrap().to_string(), epoch: epoch.clone() };
    let manager = StateManager::new(Arc::new(watch), Config { lease: lease(), ..Config::default() });
    let runner = Runner::new(manager, Work { shape: orders.shape, log: orders.log.clone(), epoch });
    let (outcome, error) = match runner.invoke(orders.event, &invocation).await {
        Ok(outcome) => (serde_json::to_value(outcome).unwrap(), Value::Null),
        Err(e) => (Value::Null, Value::String(e.to_string())),
    };
    json!({ "outcome": outcome, "error": error, "faults": faulty.injected() })
}

/// One invocation, when the parent runs this binary as a child; nothing
/// otherwise.
#[test]
fn scale_child() {
    let Ok(orders) = std::env::var(CHILD_ENV) else { return };
    let orders: Orders = serde_json::from_str(&orders).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let report = runtime.block_on(child(orders));
    println!("{REPORT}{report}");
    std::io::stdout().flush().unwrap();
}

// ---------------------------------------------------------------- the parent

/// An event to deliver; `retry` when it redelivers a killed or failed
/// invocation (a retry told `already_running` comes back at `retry_at`).
/// Half the retries keep the request id of the attempt they retry, as
/// Lambda's own retries do (the runner then holds the lease under the same
/// worker id, and takes it back at once); the others get a fresh one, as a
/// redelivery through a queue or an emulator does.
#[derive(Debug, Clone)]
struct Delivery {
    event: StepEvent,
    retry: bool,
    not_before_ms: i64,
    request_id: Option<String>,
}

/// An invocation that ended without an answer: killed, or failed.
#[derive(Debug, Clone)]
struct Death {
    pid: u32,
    partition: String,
    at_us: i64,
    deadline_ms: i64,
    killed: bool,
    by_deadline: bool,
    /// Its retry keeps its request id.
    same_id: bool,
}

#[derive(Debug, Default)]
struct Tally {
    invocations: usize,
    duplicates: usize,
    outcomes: BTreeMap<String, usize>,
    deaths: Vec<Death>,
    lost_responses: u64,
    failed_before: u64,
    errors: Vec<String>,
    no_report: usize,
}

enum Ended {
    Report(Value),
    Killed { by_deadline: bool, at_us: i64 },
    NoReport(String),
}

struct Platform {
    endpoint: String,
    url: String,
    log: PathBuf,
    shape: Shape,
    seed: u64,
    exe: PathBuf,
    tx: mpsc::UnboundedSender<Delivery>,
    outstanding: AtomicUsize,
    tally: Mutex<Tally>,
    counter: AtomicU64,
    rng: Mutex<Rng>,
}

impl Platform {
    /// Queues a delivery; counted until it is handled.
    fn deliver(&self, d: Delivery) {
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        self.tx.send(d).unwrap();
    }

    /// Runs one invocation of `event` in a new process, killing it at
    /// `kill_after` or at its deadline, whichever comes first.
    async fn invoke(&self, event: &StepEvent, request_id: Option<&str>, kill_after: Option<Duration>) -> (u32, i64, String, Ended) {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let deadline_ms = now_ms() + DEADLINE.as_millis() as i64;
        let orders = Orders {
            endpoint: self.endpoint.clone(),
            url: self.url.clone(),
            event: event.clone(),
            request_id: request_id.map_or_else(|| format!("req-{n:05}"), String::from),
            deadline_ms,
            seed: self.seed ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D),
            log: self.log.clone(),
            shape: self.shape,
        };
        let mut child = tokio::process::Command::new(&self.exe)
            .args(["--exact", "scale_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, serde_json::to_string(&orders).unwrap())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let limit = kill_after.unwrap_or(DEADLINE).min(DEADLINE);
        let read = async {
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut out).await.map(|_| out)
        };
        let ended = match tokio::time::timeout_at((started + limit).into(), read).await {
            Ok(out) => {
                let _ = child.wait().await;
                let out = String::from_utf8_lossy(&out.unwrap_or_default()).into_owned();
                match out.lines().find_map(|l| l.split_once(REPORT).map(|(_, report)| report)) {
                    Some(report) => Ended::Report(serde_json::from_str(report).unwrap()),
                    None => Ended::NoReport(out),
                }
            }
            Err(_) => {
                child.start_kill().unwrap();
                let at_us = now_us(); // its last batch ended by now at the latest
                let _ = child.wait().await;
                Ended::Killed { by_deadline: kill_after.is_none_or(|k| k >= DEADLINE), at_us }
            }
        };
        (pid, deadline_ms, orders.request_id, ended)
    }

    /// One copy of a delivery, start to end: invoke, read the outcome, send
    /// what comes next.
    async fn run(&self, delivery: Delivery, duplicate: bool, kill_after: Option<Duration>) {
        let (pid, deadline_ms, request_id, ended) = self.invoke(&delivery.event, delivery.request_id.as_deref(), kill_after).await;
        let same_id = self.rng.lock().unwrap().chance(0.5);
        let retry_id = same_id.then_some(request_id);
        let partition = delivery.event.partition.as_ref().map(|p| p.to_string()).unwrap_or_default();
        let mut t = self.tally.lock().unwrap();
        t.invocations += 1;
        t.duplicates += usize::from(duplicate);
        match ended {
            Ended::Report(report) => {
                t.lost_responses += report["faults"]["lost_responses"].as_u64().unwrap();
                t.failed_before += report["faults"]["failed_before"].as_u64().unwrap();
                if let Some(error) = report["error"].as_str() {
                    // The invocation failed: the platform retries it.
                    *t.outcomes.entry("error".into()).or_default() += 1;
                    t.errors.push(error.to_string());
                    t.deaths.push(Death { pid, partition, at_us: now_us(), deadline_ms, killed: false, by_deadline: false, same_id });
                    drop(t);
                    self.deliver(Delivery { retry: true, not_before_ms: now_ms() + 100, request_id: retry_id, ..delivery });
                } else {
                    let outcome: StepOutcome = serde_json::from_value(report["outcome"].clone()).unwrap();
                    let name = report["outcome"]["outcome"].as_str().unwrap().to_string();
                    *t.outcomes.entry(name).or_default() += 1;
                    drop(t);
                    match outcome {
                        StepOutcome::Completed { handed_off, .. } | StepOutcome::AlreadyDone { handed_off, .. } => {
                            for event in handed_off {
                                self.deliver(Delivery { event, retry: false, not_before_ms: 0, request_id: None });
                            }
                        }
                        StepOutcome::Continue { next, .. } => {
                            self.deliver(Delivery { event: next, retry: false, not_before_ms: 0, request_id: None })
                        }
                        // A retry of a killed invocation waits until the lease can be taken over.
                        StepOutcome::AlreadyRunning { retry_at, .. } if delivery.retry => {
                            self.deliver(Delivery { not_before_ms: retry_at.as_millis() + 1, ..delivery })
                        }
                        _ => {}
                    }
                }
            }
            Ended::Killed { by_deadline, at_us } => {
                t.deaths.push(Death { pid, partition, at_us, deadline_ms, killed: true, by_deadline, same_id });
                drop(t);
                self.deliver(Delivery { retry: true, not_before_ms: 0, request_id: retry_id, ..delivery });
            }
            Ended::NoReport(out) => {
                t.no_report += 1;
                eprintln!("a child ended without a report: {out}");
            }
        }
    }
}

/// S3 on moto in a bucket of its own (moto walks the whole bucket for a
/// listing; nothing here lists, but the bucket stays small).
fn moto() -> Option<(String, String)> {
    let Ok(endpoint) = std::env::var("OXIFLOW_TEST_S3_ENDPOINT") else {
        assert!(std::env::var_os("CI").is_none(), "S3 (moto) must run in CI: run the tests through scripts/test.sh");
        eprintln!("SKIPPED: OXIFLOW_TEST_S3_ENDPOINT is not set (scripts/test.sh starts moto)");
        return None;
    };
    let bucket = format!("oxiflow-scale-{:016x}", now_us() as u64 ^ u64::from(std::process::id()));
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/').to_string();
    let mut stream = std::net::TcpStream::connect(&host).expect("moto answers");
    write!(stream, "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "creating bucket {bucket} on moto: {answer}");
    eprintln!("RAN against S3 on moto: s3://{bucket} at {endpoint}");
    Some((endpoint, format!("s3://{bucket}/scale")))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

/// One batch's work as the log tells it.
#[derive(Debug, Clone, Copy)]
struct Span {
    pid: u32,
    epoch: u64,
    from: u64,
    start: i64,
    end: i64,
}

/// The batches of each partition, each from its start to its end (or to
/// its process's kill when it never ended).
fn batches(log: &Path, deaths: &[Death]) -> BTreeMap<String, Vec<Span>> {
    let killed_at: BTreeMap<u32, i64> = deaths.iter().filter(|d| d.killed).map(|d| (d.pid, d.at_us)).collect();
    let mut open: BTreeMap<(String, u32, u64), Span> = BTreeMap::new();
    let mut done: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let b: Value = serde_json::from_str(line).unwrap();
        let (partition, pid, from) =
            (b["partition"].as_str().unwrap().to_string(), b["pid"].as_u64().unwrap() as u32, b["from"].as_u64().unwrap());
        let epoch = b["epoch"].as_u64().unwrap();
        if let Some(start) = b["start"].as_i64() {
            let previous = open.insert((partition, pid, from), Span { pid, epoch, from, start, end: i64::MAX });
            assert!(previous.is_none(), "one process began the batch at {from} twice");
        } else {
            let mut w = open.remove(&(partition.clone(), pid, from)).expect("a batch ended that never began");
            w.end = b["end"].as_i64().unwrap();
            done.entry(partition).or_default().push(w);
        }
    }
    for ((partition, pid, from), mut w) in open {
        // Begun, never ended: its process must have been killed meanwhile.
        w.end = *killed_at
            .get(&pid)
            .unwrap_or_else(|| panic!("{partition}: pid {pid} began the batch at {from}, never ended it and was not killed"));
        done.entry(partition).or_default().push(w);
    }
    for works in done.values_mut() {
        works.sort_by_key(|w| w.start);
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_invocations_count_exactly_once_with_never_two_holders() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return; // a child runs scale_child only; this is for the harness filter's sake
    }
    let Some((endpoint, url)) = moto() else { return };
    let target = env_u64("OXIFLOW_SCALE_INVOCATIONS", 1_000);
    let slots = env_u64("OXIFLOW_SCALE_SLOTS", 8) as usize;
    let seed = env_u64("OXIFLOW_SCALE_SEED", now_us() as u64);
    let shape = Shape::for_invocations(target);
    let dir = std::env::temp_dir().join(format!("oxiflow-scale-{seed:016x}"));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("batches.jsonl");

    let store: Arc<dyn ConditionalStore> = Arc::new(ObjectStoreBackend::open(&url, &s3_options(&endpoint)).unwrap());
    let manager = StateManager::new(store, Config { lease: lease(), ..Config::default() });
    let pipeline: PipelineId = "orders".parse().unwrap();
    let plan = vec![
        StepPlan::new("extract".parse().unwrap(), Some(shape.shards)),
        StepPlan::new("transform".parse().unwrap(), Some(shape.shards)).after(Dependency::aligned("extract".parse().unwrap())),
        StepPlan::new("load".parse().unwrap(), None).after(Dependency::barrier("transform".parse().unwrap())),
    ];
    manager.create_pipeline(&pipeline, &RunId::new("run-1").unwrap(), &plan).await.unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
    let platform = Arc::new(Platform {
        endpoint,
        url,
        log: log.clone(),
        shape,
        seed,
        exe: std::env::current_exe().unwrap(),
        tx,
        outstanding: AtomicUsize::new(0),
        tally: Mutex::default(),
        counter: AtomicU64::new(0),
        rng: Mutex::new(Rng(seed ^ 0x5851_F42D_4C95_7F2D)),
    });
    for shard in 0..shape.shards {
        let event = StepEvent::start(pipeline.clone(), PartitionId::parse(&format!("extract@{shard}")).unwrap());
        platform.deliver(Delivery { event, retry: false, not_before_ms: 0, request_id: None });
    }

    // Due deliveries wait here for a slot: retries of killed or failed
    // invocations and the second copy of a duplicate first (a platform
    // retries promptly; a duplicate runs at the same time as its twin).
    let semaphore = Arc::new(Semaphore::new(slots));
    let mut queue: std::collections::VecDeque<(Delivery, bool, Option<Duration>)> = Default::default();
    let mut rng = Rng(seed);
    let limit = Duration::from_secs(60 + target / 4);
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < limit, "the pipeline did not complete in {limit:?}: {:?}", platform.tally.lock().unwrap());
        let mut take = |delivery: Delivery, queue: &mut std::collections::VecDeque<_>| {
            let wait = delivery.not_before_ms - now_ms();
            if wait > 0 {
                let platform = platform.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                    platform.deliver(Delivery { not_before_ms: 0, ..delivery });
                    platform.outstanding.fetch_sub(1, Ordering::SeqCst);
                });
                return;
            }
            // Killed at a random moment of its life (the work ends by ~1.5 s).
            let kill = |rng: &mut Rng| rng.chance(KILLS).then(|| Duration::from_millis(rng.below(1_600)));
            let mut copies = vec![(delivery.clone(), false, kill(&mut rng))];
            if rng.chance(DUPLICATES) {
                platform.outstanding.fetch_add(1, Ordering::SeqCst);
                // A duplicate is another invocation: its own request id.
                copies.push((Delivery { request_id: None, ..delivery.clone() }, true, kill(&mut rng)));
            }
            // The copies of a duplicate are started one after the other.
            if delivery.retry {
                copies.into_iter().rev().for_each(|c| queue.push_front(c));
            } else {
                queue.extend(copies);
            }
        };
        while let Ok(delivery) = rx.try_recv() {
            take(delivery, &mut queue);
        }
        if queue.is_empty() {
            match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                Ok(Some(delivery)) => take(delivery, &mut queue),
                _ if platform.outstanding.load(Ordering::SeqCst) == 0 => break,
                _ => {}
            }
            continue;
        }
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        while let Ok(delivery) = rx.try_recv() {
            take(delivery, &mut queue);
        }
        let (delivery, duplicate, kill_after) = queue.pop_front().unwrap();
        let platform = platform.clone();
        tokio::spawn(async move {
            platform.run(delivery, duplicate, kill_after).await;
            platform.outstanding.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
        });
    }
    let wall = started.elapsed();
    let tally = std::mem::take(&mut *platform.tally.lock().unwrap());

    // The pipeline completed, every partition counted exactly its range.
    let mut completed_at = BTreeMap::new();
    let mut last_epoch = BTreeMap::new();
    for name in shape.partitions() {
        let partition = PartitionId::parse(&name).unwrap();
        let key = oxiflow_core::keys::partition_doc(&pipeline, &partition);
        let (doc, _) = manager.read::<PartitionDoc>(&key).await.unwrap().unwrap();
        let (start, end, _) = shape.range(&partition);
        let oxiflow_core::StepStatus::Completed { completed_at: at } = doc.status else {
            panic!("{name} is {:?} after the platform ran out of events: {tally:?}", doc.status)
        };
        assert_eq!(doc.records_processed, end - start, "{name}: exactly once");
        assert_eq!(doc.last_processed_id, Some(end.to_string()), "{name}: the bookmark is its end");
        completed_at.insert(name.clone(), at.as_millis() * 1_000);
        last_epoch.insert(name, doc.lease.map_or(0, |l| l.epoch));
    }
    assert_eq!(tally.no_report, 0, "every child that was not killed reported");
    assert!(!tally.outcomes.contains_key("failed"), "the step never fails: {:?}", tally.outcomes);

    // Zero double holders: on each partition, no two processes' batch work
    // overlapped in time; epochs only grow, and one epoch is one process.
    let works = batches(&log, &tally.deaths);
    let mut overlaps_checked = 0u64;
    for (partition, list) in &works {
        let mut owner: BTreeMap<u64, u32> = BTreeMap::new();
        for (i, w) in list.iter().enumerate() {
            assert!(w.epoch > 0, "{partition}: pid {} worked without a lease it could see", w.pid);
            let pid = *owner.entry(w.epoch).or_insert(w.pid);
            assert_eq!(pid, w.pid, "{partition}: epoch {} held by two processes", w.epoch);
            assert!(w.epoch <= last_epoch[partition], "{partition}: epoch {} beyond the stored {}", w.epoch, last_epoch[partition]);
            for later in &list[i + 1..] {
                assert!(later.epoch >= w.epoch, "{partition}: epoch went back from {} to {}", w.epoch, later.epoch);
                if later.pid != w.pid {
                    overlaps_checked += 1;
                    assert!(
                        later.start >= w.end,
                        "{partition}: pid {} began the batch at {} (epoch {}) at {} µs while pid {} worked on the batch at {} (epoch {}) from {} to {} µs",
                        later.pid,
                        later.from,
                        later.epoch,
                        later.start,
                        w.pid,
                        w.from,
                        w.epoch,
                        w.start,
                        w.end
                    );
                }
            }
        }
        if let Some(done) = completed_at.get(partition) {
            let last_end = list.iter().map(|w| w.end).max().unwrap_or(0);
            assert!(last_end <= *done + 1_000, "{partition}: work at {last_end} after it completed at {done}");
        }
    }
    assert_eq!(works.len(), shape.partitions().len(), "every partition did work");

    // Takeover after a kill: the next batch by another process, against
    // the bound — the dead invocation's deadline + skew, plus the time a
    // redelivery needs to get a slot and claim.
    // (A retry that keeps the dead attempt's request id holds the lease
    // under the same worker id: it takes it back at once.)
    let mut takeovers: Vec<i64> = Vec::new();
    let mut after_lease: Vec<i64> = Vec::new();
    let mut same_id: Vec<i64> = Vec::new();
    let held = |d: &Death| works.get(&d.partition).is_some_and(|list| list.iter().any(|w| w.pid == d.pid));
    for death in tally.deaths.iter().filter(|d| d.killed && held(d)) {
        let list = &works[&death.partition];
        if completed_at.get(&death.partition).is_some_and(|c| *c <= death.at_us) {
            continue; // it had completed the partition
        }
        let Some(resumed) = list.iter().filter(|w| w.pid != death.pid && w.start > death.at_us).map(|w| w.start).min() else {
            panic!("{} was never resumed after its holder died: {death:?}", death.partition)
        };
        let again = |d: &&Death| d.partition == death.partition && d.pid != death.pid && d.at_us > death.at_us && d.at_us < resumed;
        if tally.deaths.iter().filter(|d| held(d)).any(|d| again(&d)) {
            continue; // the next holder died too: its own takeover is measured
        }
        let lease_end = (death.deadline_ms + SKEW.as_millis() as i64) * 1_000;
        assert!(
            resumed <= lease_end + 6_000_000,
            "{}: taken over {} ms after its lease ended",
            death.partition,
            (resumed - lease_end) / 1_000
        );
        if death.same_id {
            same_id.push((resumed - death.at_us) / 1_000);
        } else {
            takeovers.push((resumed - death.at_us) / 1_000);
            after_lease.push((resumed - lease_end) / 1_000);
        }
    }
    takeovers.sort_unstable();
    after_lease.sort_unstable();
    same_id.sort_unstable();
    let median = |v: &[i64]| v.get(v.len() / 2).copied().unwrap_or(0);
    eprintln!(
        "RAN scale on moto ({slots} slots, seed {seed}): {} invocations ({} duplicate deliveries), {} killed ({} at the deadline), \
         faults injected {} lost responses + {} failed requests (in children that answered), outcomes {:?}; \
         {} partitions ({} shards, {} records per shard), {} batches, {} cross-process batch pairs checked; wall {:.1} s; \
         takeover after a kill of a holder, retried with a new request id: n={} median {} ms max {} ms from the kill \
         (bound deadline {} ms + skew {} ms), {} / {} ms after the lease became claimable; \
         retried with the same request id: n={} median {} ms max {} ms from the kill",
        tally.invocations,
        tally.duplicates,
        tally.deaths.iter().filter(|d| d.killed).count(),
        tally.deaths.iter().filter(|d| d.by_deadline).count(),
        tally.lost_responses,
        tally.failed_before,
        tally.outcomes,
        works.len(),
        shape.shards,
        shape.per_shard,
        works.values().map(Vec::len).sum::<usize>(),
        overlaps_checked,
        wall.as_secs_f64(),
        takeovers.len(),
        median(&takeovers),
        takeovers.last().copied().unwrap_or(0),
        DEADLINE.as_millis(),
        SKEW.as_millis(),
        median(&after_lease),
        after_lease.last().copied().unwrap_or(0),
        same_id.len(),
        median(&same_id),
        same_id.last().copied().unwrap_or(0),
    );
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &tally.errors {
        *errors.entry(e.split(':').next().unwrap_or_default()).or_default() += 1;
    }
    if !errors.is_empty() {
        eprintln!("invocations that failed (and were retried), by error: {errors:?}; first: {}", tally.errors[0]);
    }
    assert!(tally.lost_responses > 0, "lost responses were injected");
    let _ = std::fs::remove_dir_all(&dir);
}
