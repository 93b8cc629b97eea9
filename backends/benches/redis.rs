//! The Redis store on real redis-server processes started here (the binary
//! from `OXIFLOW_TEST_REDIS_SERVER`; `scripts/bench.sh redis` sets it).
//! Prints markdown:
//! - requests per operation: store calls (`CountingStore`) and the commands
//!   the server ran (`INFO commandstats`), which are the round trips: no
//!   operation here pipelines;
//! - checkpoint latency ÷ a raw `SET` of the same bytes on the same server,
//!   with `appendfsync always` and without an append-only file;
//! - 8 workers on 8 steps vs 1 worker, each worker its own connection (as
//!   processes would be), against the same for raw `SET`.

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

#[allow(dead_code)]
#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use oxiflow_backends::{ConditionalStore, CountingStore, RedisStore, Snapshot, StateManager, StepPlan};
use oxiflow_core::{codec, Config, PartitionId, PipelineId, Progress};
use redis_server::RedisServer;

fn id<T: std::str::FromStr<Err = oxiflow_core::Error>>(s: &str) -> T {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
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

fn store(server: &RedisServer) -> Arc<dyn ConditionalStore> {
    Arc::new(RedisStore::open(&format!("{}?prefix=bench:{:016x}", server.url(), rand::random::<u64>())).unwrap())
}

async fn raw(server: &RedisServer) -> redis::aio::ConnectionManager {
    redis::aio::ConnectionManager::new(redis::Client::open(server.url()).unwrap()).await.unwrap()
}

/// The commands clients send, read from `MONITOR`, which marks the ones
/// scripts run (`[0 lua]`): those are not round trips and are left out.
struct Monitor {
    lines: std::sync::mpsc::Receiver<String>,
    port: u16,
    stream: std::net::TcpStream,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl Monitor {
    fn start(server: &RedisServer) -> Monitor {
        use std::io::{BufRead, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        stream.write_all(b"MONITOR\r\n").unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(reader).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        assert_eq!(lines.recv().unwrap(), "+OK");
        Monitor { lines, port: server.port, stream }
    }

    /// Commands sent by clients since the last call, by name.
    fn take(&self) -> std::collections::BTreeMap<String, u64> {
        use std::io::Write;
        let marker = format!("marker-{:016x}", rand::random::<u64>());
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.write_all(format!("ECHO {marker}\r\n").as_bytes()).unwrap();
        let mut counts = std::collections::BTreeMap::new();
        loop {
            let line = self.lines.recv().unwrap();
            if line.contains(&marker) {
                return counts;
            }
            if line.contains(" lua] ") {
                continue;
            }
            if let Some(name) = line.split(" \"").nth(1).map(|n| n.trim_end_matches('"').to_uppercase()) {
                *counts.entry(name).or_insert(0) += 1;
            }
        }
    }
}

async fn request_counts(server: &RedisServer) {
    let counting = Arc::new(CountingStore::new(store(server)));
    let m = StateManager::new(counting.clone(), Config::default());
    let monitor = Monitor::start(server);
    let p: PipelineId = id("counts");
    let steps: Vec<StepPlan> = (0..8).map(|i| StepPlan::new(id(&format!("s{i}")), None)).collect();
    m.create_pipeline(&p, &id("r"), &steps).await.unwrap();
    let part = PartitionId::step(id("s0"));
    println!("\n## Redis: requests per operation (uncontended)\n");
    println!("| operation | store calls | round trips (commands clients sent, from MONITOR) | of which |\n|---|---|---|---|");
    let mut snapshot = Snapshot::new(p.clone());
    m.refresh(&mut snapshot).await.unwrap();
    // Load the scripts once: the first call of each costs EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA.
    let warm = m.claim(&p, &PartitionId::step(id("s1")), &id("w")).await.unwrap();
    drop(warm);
    monitor.take();
    let mut c = None;
    for (name, n) in [
        ("claim", 1u64),
        ("checkpoint (×100)", 100),
        ("heartbeat (explicit)", 1),
        ("release", 1),
        ("snapshot refresh, 8 partitions, unchanged", 1),
    ] {
        let calls = counting.counts();
        for i in 0..n {
            match name {
                "claim" => c = Some(m.claim(&p, &part, &id("w")).await.unwrap()),
                "release" => {
                    m.release(c.as_mut().unwrap(), Progress::default()).await.unwrap();
                }
                "heartbeat (explicit)" => {
                    m.heartbeat(c.as_mut().unwrap()).await.unwrap();
                }
                "checkpoint (×100)" => {
                    m.checkpoint(c.as_mut().unwrap(), progress(i)).await.unwrap();
                }
                _ => {
                    m.refresh(&mut snapshot).await.unwrap();
                }
            }
        }
        let ran = monitor.take();
        let total: u64 = ran.values().sum();
        let of_which = ran.iter().map(|(k, d)| format!("{:.0} {k}", *d as f64 / n as f64)).collect::<Vec<_>>();
        let calls = counting.counts().since(&calls).total();
        println!("| {name} | {:.1} | {:.1} | {} |", calls as f64 / n as f64, total as f64 / n as f64, of_which.join(", "));
    }
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

/// Interleaved rounds: a raw SET of the checkpoint's bytes, the store's
/// compare-and-swap of the same bytes alone (the script), and a checkpoint.
async fn checkpoint_vs_set(server: &RedisServer, rounds: usize, label: &str) {
    let store = store(server);
    let m = StateManager::new(store.clone(), Config::default());
    let p: PipelineId = id("latency");
    m.create_pipeline(&p, &id("r"), &[StepPlan::new(id("s"), None)]).await.unwrap();
    let mut c = m.claim(&p, &PartitionId::step(id("s")), &id("w")).await.unwrap();
    m.checkpoint(&mut c, progress(0)).await.unwrap();
    let body = codec::encode("k", c.doc(), &Config::default().limits).unwrap();
    let mut conn = raw(server).await;
    let cas_key = "pipelines/other/partitions/s.json";
    let mut v = store.put_if_absent(cas_key, body.clone()).await.unwrap();
    let (mut set, mut cas, mut cp) = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..=rounds as u64 {
        let t = Instant::now();
        let _: () = redis::cmd("SET").arg("bench:raw").arg(&body).query_async(&mut conn).await.unwrap();
        set.push(t.elapsed());
        let t = Instant::now();
        v = store.put_if_match(cas_key, body.clone(), &v).await.unwrap();
        cas.push(t.elapsed());
        let t = Instant::now();
        m.checkpoint(&mut c, progress(i)).await.unwrap();
        cp.push(t.elapsed());
    }
    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    // The server's own time per command (its event loop, not the network).
    let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.unwrap();
    let usec = |name: &str| -> String {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:")))
            .and_then(|l| l.split("usec_per_call=").nth(1))
            .map_or("?".into(), |v| v.split(',').next().unwrap_or("?").to_string())
    };
    let p50 = |v: &Vec<Duration>| percentile(v.clone(), 0.5);
    let p90 = |v: &Vec<Duration>| percentile(v.clone(), 0.9);
    println!(
        "| {label} | {} | {} | {} | {} | **{:.2}** | {:.2} | {} | {} | {:.2} | {} µs / {} µs |",
        body.len(),
        ms(p50(&set)),
        ms(p50(&cas)),
        ms(p50(&cp)),
        ratio(p50(&cp), p50(&set)),
        ratio(p50(&cas), p50(&set)),
        ms(p90(&set)),
        ms(p90(&cp)),
        ratio(p90(&cp), p90(&set)),
        usec("set"),
        usec("evalsha")
    );
}

/// `workers` workers, each with its own connection and step, `n` checkpoints each.
async fn parallel_steps(server: &RedisServer, workers: usize, n: u64) -> f64 {
    let p: PipelineId = id(&format!("steps-{workers}-{:08x}", rand::random::<u32>()));
    let first = store(server);
    let steps: Vec<StepPlan> = (0..workers).map(|i| StepPlan::new(id(&format!("s{i}")), None)).collect();
    StateManager::new(first.clone(), Config::default()).create_pipeline(&p, &id("r"), &steps).await.unwrap();
    let prefix = first.describe().split("prefix=").nth(1).unwrap().to_string();
    let mut ms = Vec::new();
    for _ in 0..workers {
        ms.push(StateManager::new(Arc::new(RedisStore::open(&format!("{}?prefix={prefix}", server.url())).unwrap()), Config::default()));
    }
    let start = Instant::now();
    let tasks: Vec<_> = ms
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let p = p.clone();
            tokio::spawn(async move {
                let mut c = m.claim(&p, &PartitionId::step(id(&format!("s{i}"))), &id(&format!("w{i}"))).await.unwrap();
                for j in 0..n {
                    m.checkpoint(&mut c, progress(j)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (workers as u64 * n) as f64 / start.elapsed().as_secs_f64()
}

/// `clients` connections each doing `n` raw SETs of `body`.
async fn parallel_sets(server: &RedisServer, clients: usize, n: u64, body: Vec<u8>) -> f64 {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(raw(server).await);
    }
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let body = body.clone();
            tokio::spawn(async move {
                for _ in 0..n {
                    let _: () = redis::cmd("SET").arg(format!("bench:ceiling:{i}")).arg(&body).query_async(&mut conn).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (clients as u64 * n) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 8)]
async fn main() {
    let rounds: usize = std::env::var("OXIFLOW_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let durable = RedisServer::start(&[]).expect("run through scripts/bench.sh redis (needs OXIFLOW_TEST_REDIS_SERVER)");
    let volatile = RedisServer::start(&["--appendonly", "no"]).unwrap();
    let version = durable.command("INFO server").unwrap_or_default();
    let version = version.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").trim().to_string();
    println!(
        "# oxiflow-backends on redis-server {version} (loopback, {} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    request_counts(&durable).await;

    println!("\n## Redis: checkpoint latency vs a raw SET of the same bytes ({rounds} interleaved rounds)\n");
    println!("Each round: a raw `SET` of the checkpoint's bytes, the store's compare-and-swap of those bytes alone (the Lua script, no core), then a checkpoint.\n");
    println!("| server | bytes | SET p50 | CAS script p50 | checkpoint p50 | checkpoint ÷ SET p50 (goal ≤ 1.2) | CAS ÷ SET p50 | SET p90 | checkpoint p90 | checkpoint ÷ SET p90 | server time per SET / EVALSHA |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    checkpoint_vs_set(&durable, rounds, "appendonly yes, appendfsync always").await;
    checkpoint_vs_set(&volatile, rounds, "appendonly no").await;

    let n = (rounds * 2) as u64;
    println!("\n## Redis: 8 workers on 8 steps vs 1 worker ({n} checkpoints each, a connection each)\n");
    println!("| server | oxiflow 1 worker | oxiflow 8 workers | speed-up (goal ≥ 7×) | raw SET 1 client | raw SET 8 clients | speed-up (the machine's ceiling) |");
    println!("|---|---|---|---|---|---|---|");
    for (label, server) in [("appendfsync always", &durable), ("appendonly no", &volatile)] {
        let (one, eight) = (parallel_steps(server, 1, n).await, parallel_steps(server, 8, n).await);
        let body = vec![b'x'; 600];
        let (s1, s8) = (parallel_sets(server, 1, n, body.clone()).await, parallel_sets(server, 8, n, body).await);
        println!("| {label} | {one:.0}/s | {eight:.0}/s | {:.2}× | {s1:.0}/s | {s8:.0}/s | {:.2}× |", eight / one, s8 / s1);
    }
}
