//! The example pipeline under the real Lambda runtime API (`cargo lambda
//! watch --only-lambda-apis`), state in S3 on moto. The test plays the
//! platform: it sends the first events, accepts hand-offs and continuations
//! as asynchronous invokes, delivers ~20 % of events twice at once, kills
//! invocations that pass their 2.5 s deadline and ~10 % at random moments
//! (SIGKILL), and redelivers killed invocations as Lambda's retries would.
//!
//! Each slot is one emulator with one function process, so the test knows
//! which process runs which invocation. The emulator's deadline is a
//! constant 600000 (a duration): the runner does not trust it and holds
//! each lease one configured ttl (2.5 s, the deadline) from its start.
#![allow(unreachable_pub, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oxiflow_backends::{ObjectStoreBackend, ObjectStoreOptions, StateManager};
use oxiflow_core::{Config, Dependency, PipelineId, RunId, StepPlan};
use rand::Rng;
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const RECORDS: u64 = 6_000;
const DEADLINE: Duration = Duration::from_millis(2_500);
const SKEW: Duration = Duration::from_millis(500);
const SLOTS: usize = 4;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The release CLI beside this test binary (target/<profile>/oxiflow).
fn oxiflow_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("oxiflow");
    assert!(bin.exists(), "{} is missing: build it first (cargo build -p oxiflow, same profile)", bin.display());
    bin
}

struct S3 {
    endpoint: String,
    url: String,
}

fn s3() -> Option<S3> {
    let Ok(endpoint) = std::env::var("OXIFLOW_TEST_S3_ENDPOINT") else {
        assert!(std::env::var_os("CI").is_none(), "S3 (moto) must run in CI: run the tests through scripts/test.sh");
        eprintln!("SKIPPED: OXIFLOW_TEST_S3_ENDPOINT is not set (scripts/test.sh starts moto)");
        return None;
    };
    let bucket = std::env::var("OXIFLOW_TEST_S3_BUCKET").unwrap_or_else(|_| "oxiflow-test".into());
    Some(S3 { endpoint, url: format!("s3://{bucket}/lambda-steps-{:016x}", rand::random::<u64>()) })
}

/// What every function process and the CLI are configured with.
fn state_env(s3: &S3) -> Vec<(&'static str, String)> {
    vec![
        ("OXIFLOW_BACKEND", s3.url.clone()),
        ("OXIFLOW_ENDPOINT", s3.endpoint.clone()),
        ("OXIFLOW_ALLOW_HTTP", "true".into()),
        ("OXIFLOW_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("OXIFLOW_LEASE_TTL", format!("{}ms", DEADLINE.as_millis())),
        ("OXIFLOW_HEARTBEAT_INTERVAL", "1s".into()),
        ("OXIFLOW_SKEW_ALLOWANCE", format!("{}ms", SKEW.as_millis())),
        ("OXIFLOW_SAFETY_MARGIN", "200ms".into()),
    ]
}

/// One emulator with one function process: invocations sent to its port
/// run in that process.
struct Slot {
    _emulator: Child,
    function: Child,
    port: u16,
}

struct Rig {
    s3: S3,
    manifest: PathBuf,
    log: PathBuf,
    handoff_url: String,
}

impl Rig {
    async fn slot(&self) -> Slot {
        let port = free_port();
        let emulator = Command::new("cargo")
            .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", &port.to_string(), "--manifest-path"])
            .arg(&self.manifest)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("cargo lambda (pip install cargo-lambda; scripts/test.sh installs it into target/venv)");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "cargo lambda watch did not listen on {port} within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Slot { function: self.function(port), _emulator: emulator, port }
    }

    fn function(&self, port: u16) -> Child {
        Command::new(env!("CARGO_BIN_EXE_lambda-steps"))
            .envs(state_env(&self.s3))
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}/.rt"))
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("LAMBDA_STEPS_RECORDS", RECORDS.to_string())
            .env("LAMBDA_STEPS_BATCH", "25")
            .env("LAMBDA_STEPS_WORK_MS", "60")
            .env("LAMBDA_STEPS_LOG", &self.log)
            .env("OXIFLOW_HANDOFF_URL", &self.handoff_url)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }
}

/// An event to deliver, and whether it retries a killed invocation.
#[derive(Debug, Clone)]
struct Delivery {
    event: Value,
    retry: bool,
    not_before_ms: i64,
}

/// A killed invocation: which partition, when, in which process.
#[derive(Debug, Clone)]
struct Death {
    partition: String,
    at_ms: i64,
    pid: u32,
    by_deadline: bool,
}

#[derive(Default)]
struct Tally {
    invocations: usize,
    duplicates: usize,
    outcomes: BTreeMap<String, usize>,
    deaths: Vec<Death>,
}

enum Ended {
    Answered(Value),
    Failed(String),
    Killed { by_deadline: bool },
}

/// Invokes `event` in `slot`, killing the process at `kill_at` or at the
/// deadline, whichever comes first.
async fn invoke(slot: &mut Slot, event: &Value, kill_at: Option<Duration>) -> Ended {
    let url = format!("http://127.0.0.1:{}/2015-03-31/functions/_/invocations", slot.port);
    let request =
        reqwest::Client::new().post(url).header("content-type", "application/json").body(serde_json::to_vec(event).unwrap()).send();
    let limit = kill_at.unwrap_or(DEADLINE).min(DEADLINE);
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(response)) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            match (status.is_success(), serde_json::from_str::<Value>(&body)) {
                (true, Ok(v)) => Ended::Answered(v),
                _ => Ended::Failed(format!("{status}: {body}")),
            }
        }
        Ok(Err(e)) => Ended::Failed(e.to_string()),
        Err(_) => {
            slot.function.kill().await.unwrap();
            Ended::Killed { by_deadline: kill_at.is_none_or(|k| k >= DEADLINE) }
        }
    }
}

/// Accepts hand-offs and continuations as asynchronous invokes (202).
async fn serve_handoffs(tx: mpsc::UnboundedSender<Delivery>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/2015-03-31/functions/_/invocations", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/2015-03-31/functions/_/invocations",
        axum::routing::post(move |axum::Json(event): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Delivery { event, retry: false, not_before_ms: 0 });
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn read_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_completes_exactly_under_duplicates_deadlines_and_kills() {
    let Some(s3) = s3() else { return };
    let dir = std::env::temp_dir().join(format!("lambda-steps-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let options = ObjectStoreOptions {
        endpoint: Some(s3.endpoint.clone()),
        allow_http: true,
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        region: Some("us-east-1".into()),
        ..ObjectStoreOptions::default()
    };
    let manager = StateManager::new(Arc::new(ObjectStoreBackend::open(&s3.url, &options).unwrap()), Config::default());
    let pipeline: PipelineId = "orders".parse().unwrap();
    let plan = vec![
        StepPlan::new("extract".parse().unwrap(), Some(4)),
        StepPlan::new("transform".parse().unwrap(), Some(4)).after(Dependency::aligned("extract".parse().unwrap())),
        StepPlan::new("load".parse().unwrap(), None).after(Dependency::barrier("transform".parse().unwrap())),
    ];
    manager.create_pipeline(&pipeline, &RunId::new("run-1").unwrap(), &plan).await.unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
    let handoff_url = serve_handoffs(tx.clone()).await;
    let rig = Arc::new(Rig {
        s3,
        manifest: Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
        log: dir.join("batches.jsonl"),
        handoff_url,
    });
    for shard in 0..4 {
        let event = serde_json::json!({ "pipeline": "orders", "partition": format!("extract@{shard}") });
        tx.send(Delivery { event, retry: false, not_before_ms: 0 }).unwrap();
    }

    let (slot_tx, mut slot_rx) = mpsc::unbounded_channel::<Slot>();
    for _ in 0..SLOTS {
        slot_tx.send(rig.slot().await).unwrap();
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the pipeline did not complete in 240 s: {:?}",
            tally.lock().unwrap().outcomes
        );
        let delivery = match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            Ok(Some(d)) => d,
            _ => {
                let view = manager.view(&pipeline).await.unwrap();
                let done =
                    view.steps.iter().flat_map(|s| &s.partitions).all(|p| matches!(p.status, oxiflow_core::StepStatus::Completed { .. }));
                if done && in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    break;
                }
                continue;
            }
        };
        let wait = delivery.not_before_ms - now_ms();
        if wait > 0 {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                let _ = tx.send(Delivery { not_before_ms: 0, ..delivery });
            });
            continue;
        }
        let copies = if rand::rng().random_bool(0.2) { 2 } else { 1 };
        for copy in 0..copies {
            let mut slot = slot_rx.recv().await.unwrap();
            let (rig, tx, slot_tx, tally, in_flight) = (rig.clone(), tx.clone(), slot_tx.clone(), tally.clone(), in_flight.clone());
            let delivery = delivery.clone();
            in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let kill_at = rand::rng().random_bool(0.1).then(|| Duration::from_millis(rand::rng().random_range(50..2_400)));
                let pid = slot.function.id().unwrap();
                let ended = invoke(&mut slot, &delivery.event, kill_at).await;
                let partition = delivery.event["partition"].as_str().unwrap_or_default().to_string();
                {
                    let mut t = tally.lock().unwrap();
                    t.invocations += 1;
                    t.duplicates += usize::from(copy > 0);
                }
                match ended {
                    Ended::Answered(outcome) => {
                        let name = outcome["outcome"].as_str().unwrap_or("?").to_string();
                        *tally.lock().unwrap().outcomes.entry(name.clone()).or_default() += 1;
                        // A retry of a killed invocation that finds the lease still held
                        // tries again when the lease can be taken over.
                        if name == "already_running" && delivery.retry {
                            let at = outcome["retry_at"].as_i64().unwrap();
                            let _ = tx.send(Delivery { not_before_ms: at + 1, ..delivery });
                        }
                    }
                    Ended::Failed(why) => {
                        eprintln!("invocation failed ({why}); redelivered");
                        *tally.lock().unwrap().outcomes.entry("error".into()).or_default() += 1;
                        let _ = tx.send(Delivery { retry: true, not_before_ms: now_ms() + 200, ..delivery });
                    }
                    Ended::Killed { by_deadline } => {
                        tally.lock().unwrap().deaths.push(Death { partition, at_ms: now_ms(), pid, by_deadline });
                        slot.function = rig.function(slot.port);
                        let _ = tx.send(Delivery { retry: true, not_before_ms: 0, ..delivery });
                    }
                }
                in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                let _ = slot_tx.send(slot);
            });
        }
    }
    let wall = started.elapsed();

    // Exact counts, from the store and from the CLI.
    let view = manager.view(&pipeline).await.unwrap();
    let counts: BTreeMap<String, u64> =
        view.steps.iter().flat_map(|s| &s.partitions).map(|p| (p.partition.clone(), p.records_processed)).collect();
    let per_shard = RECORDS / 4;
    let expected: BTreeMap<String, u64> = (0..4)
        .flat_map(|i| [(format!("extract@{i}"), per_shard), (format!("transform@{i}"), per_shard)])
        .chain([("load".to_string(), RECORDS)])
        .collect();
    assert_eq!(counts, expected, "exactly once: every order counted once per step");
    let cli =
        std::process::Command::new(oxiflow_bin()).args(["state", "show", "orders", "--json"]).envs(state_env(&rig.s3)).output().unwrap();
    assert!(cli.status.success(), "oxiflow state show: {}", String::from_utf8_lossy(&cli.stderr));
    let shown: Value = serde_json::from_slice(&cli.stdout).unwrap();
    let shown_counts: BTreeMap<String, u64> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["partitions"].as_array().unwrap())
        .map(|p| (p["partition"].as_str().unwrap().to_string(), p["records_processed"].as_u64().unwrap()))
        .collect();
    assert_eq!(shown_counts, expected, "oxiflow state show --json agrees");
    assert_eq!(shown["status"], "completed");

    // No downstream batch began before its upstream completed.
    let completed_at: BTreeMap<String, i64> = view
        .steps
        .iter()
        .flat_map(|s| &s.partitions)
        .map(|p| match p.status {
            oxiflow_core::StepStatus::Completed { completed_at } => (p.partition.clone(), completed_at.as_millis()),
            ref other => panic!("{} is {other:?}", p.partition),
        })
        .collect();
    let batches = read_log(&rig.log);
    for b in &batches {
        let (partition, at) = (b["partition"].as_str().unwrap(), b["at"].as_i64().unwrap());
        let upstream: Vec<String> = match partition.split_once('@') {
            Some(("transform", shard)) => vec![format!("extract@{shard}")],
            None if partition == "load" => (0..4).map(|i| format!("transform@{i}")).collect(),
            _ => vec![],
        };
        for up in upstream {
            assert!(at >= completed_at[&up], "{partition} began a batch at {at} before {up} completed at {}", completed_at[&up]);
        }
    }

    // Every partition killed while its invocation held it was taken up again
    // within deadline + skew + 1 s of the death.
    let tally = tally.lock().unwrap();
    let bound = (DEADLINE + SKEW + Duration::from_secs(1)).as_millis() as i64;
    let mut takeovers = Vec::new();
    for death in &tally.deaths {
        let held = batches.iter().any(|b| b["pid"] == death.pid && b["partition"] == death.partition.as_str());
        let completed_before = completed_at.get(&death.partition).is_some_and(|c| *c <= death.at_ms);
        if !held || completed_before {
            continue;
        }
        let resumed = batches
            .iter()
            .filter(|b| b["partition"] == death.partition.as_str() && b["pid"] != death.pid && b["at"].as_i64().unwrap() > death.at_ms)
            .map(|b| b["at"].as_i64().unwrap())
            .min();
        let Some(resumed) = resumed else { panic!("{} was never resumed after its holder died: {death:?}", death.partition) };
        let latency = resumed - death.at_ms;
        assert!(latency <= bound, "{} resumed {latency} ms after its holder died (bound {bound} ms): {death:?}", death.partition);
        takeovers.push(latency);
    }
    takeovers.sort_unstable();
    let median = takeovers.get(takeovers.len() / 2).copied();
    eprintln!(
        "RAN lambda-steps under cargo lambda watch on moto: {} records, {} invocations ({} duplicate deliveries), {} killed ({} at the deadline), outcomes {:?}; wall {:.1} s; takeover after a kill of a held partition: n={} median {:?} ms max {:?} ms (bound {bound} ms)",
        RECORDS,
        tally.invocations,
        tally.duplicates,
        tally.deaths.len(),
        tally.deaths.iter().filter(|d| d.by_deadline).count(),
        tally.outcomes,
        wall.as_secs_f64(),
        takeovers.len(),
        median,
        takeovers.last(),
    );
    drop(tally);
    let _ = std::fs::remove_dir_all(&dir);
}
