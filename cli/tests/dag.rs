//! Step dependencies with real processes: 4 `oxiflow worker start`
//! processes drain a DAG, on a local directory and on the S3 server process
//! (moto) when `scripts/test.sh` started one.
//!
//! ```text
//! extract:4 ──aligned──> transform:4 ──┐
//!     └──────barrier───> index ────────┴──barrier──> load
//! ```
//!
//! The batch command appends `start <partition> <batch> <ms>` before each
//! batch and `end <partition> <ms>` before it says done, one line per
//! `write` to one `O_APPEND` file, so the file's line order is the order in
//! which those writes happened. An `end` is written before the worker that
//! ran it stores the completion, and a downstream worker reads that
//! completion before it claims, so "every upstream `end` line comes before
//! each `start` line" is what the dependencies promise; no clock of any
//! process is compared (the milliseconds are for the reader).

// The shared helpers in tests/support are `pub` for every test file.
#![allow(unreachable_pub)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use serde_json::Value;

const WORKERS: usize = 4;
const SHARDS: u32 = 4;
/// Batches per partition, each with `records(step)` records.
const BATCHES: u64 = 3;
/// How long the whole pipeline may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(180);

fn records(step: &str) -> u64 {
    match step {
        "extract" => 100,
        "transform" => 50,
        "index" => 7,
        "load" => 1000,
        other => panic!("no step {other}"),
    }
}

const PLAN_YAML: &str = "steps:
  - name: extract
    shards: 4
  - name: transform
    shards: 4
    after: [extract:aligned]
  - name: index
    after: [extract]
  - name: load
    after: [transform, index]
";

const PLAN_FLAGS: [&str; 14] = [
    "--step",
    "extract:4",
    "--step",
    "transform:4",
    "--step",
    "index",
    "--step",
    "load",
    "--after",
    "transform=extract:aligned",
    "--after",
    "index=extract",
    "--after",
    "load=transform,index",
];

/// One batch per run. extract@3's first batch also waits (at most 60 s)
/// until transform@0 has logged its end: transform@0 waits on extract@0
/// only (aligned), so it must be able to run to completion while extract@3
/// is still held; were "aligned" a barrier, this would time out and say so
/// in the log.
const BATCH_SH: &str = r#"#!/bin/sh
set -eu
log=__LOG__
p=$OXIFLOW_PARTITION
b=$((${OXIFLOW_BATCH_NUMBER:-0} + 1))
printf 'start %s %s %s\n' "$p" "$b" "$(date +%s%3N)" >> "$log"
case "$OXIFLOW_STEP" in
  extract) n=100 ;;
  transform) n=50 ;;
  index) n=7 ;;
  load) n=1000 ;;
  *) echo "unknown step $OXIFLOW_STEP" >&2; exit 1 ;;
esac
if [ "$p" = extract@3 ] && [ "$b" = 1 ]; then
  i=0
  until grep -q '^end transform@0 ' "$log"; do
    i=$((i + 1))
    if [ "$i" -gt 1200 ]; then printf 'timeout extract@3 never saw transform@0 end\n' >> "$log"; break; fi
    sleep 0.05
  done
fi
if [ "$b" -ge __BATCHES__ ]; then
  printf 'end %s %s\n' "$p" "$(date +%s%3N)" >> "$log"
  echo "{\"records\": $n, \"bytes\": $((n * 10)), \"last_id\": \"$p-$b\", \"batch\": $b, \"done\": true}"
else
  echo "{\"records\": $n, \"bytes\": $((n * 10)), \"last_id\": \"$p-$b\", \"batch\": $b}"
fi
"#;

/// What each partition waits for, by the plan above.
fn upstream(partition: &str) -> Vec<String> {
    let shards = |step: &str| (0..SHARDS).map(|i| format!("{step}@{i}")).collect::<Vec<_>>();
    match partition.split_once('@') {
        Some(("extract", _)) => vec![],
        Some(("transform", i)) => vec![format!("extract@{i}")],
        None if partition == "index" => shards("extract"),
        None if partition == "load" => shards("transform").into_iter().chain(["index".to_string()]).collect(),
        _ => panic!("unexpected partition {partition}"),
    }
}

fn all_partitions() -> Vec<String> {
    let mut all: Vec<String> = ["extract", "transform"].iter().flat_map(|s| (0..SHARDS).map(move |i| format!("{s}@{i}"))).collect();
    all.extend(["index".to_string(), "load".to_string()]);
    all
}

/// `oxiflow` in `dir` with `env` (the store).
fn ox(dir: &Path, env: &[(&'static str, String)]) -> Command {
    let mut c = support::ox(dir);
    c.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    c
}

fn text(o: &Output) -> String {
    format!("stdout: {}\nstderr: {}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn json(dir: &Path, env: &[(&'static str, String)], args: &[&str]) -> Value {
    let o = ox(dir, env).arg("--json").args(args).output().unwrap();
    assert!(o.status.success(), "{args:?} failed: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", text(&o)))
}

#[derive(Debug)]
enum Line {
    Start { partition: String, batch: u64 },
    End { partition: String },
}

fn parse_log(log: &str) -> Vec<Line> {
    log.lines()
        .map(|line| match line.split(' ').collect::<Vec<_>>()[..] {
            ["start", p, b, ms] if ms.parse::<u64>().is_ok() => Line::Start { partition: p.into(), batch: b.parse().unwrap() },
            ["end", p, ms] if ms.parse::<u64>().is_ok() => Line::End { partition: p.into() },
            _ => panic!("unexpected log line {line:?} in:\n{log}"),
        })
        .collect()
}

/// The order checks; returns a one-line summary of what was checked.
fn check_order(log: &str) -> String {
    let lines = parse_log(log);
    // Where each partition's end was logged (exactly once each).
    let mut ends: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        if let Line::End { partition } = l {
            assert!(ends.insert(partition, i).is_none(), "{partition} ended twice:\n{log}");
        }
    }
    let mut starts: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut edges_checked = 0;
    for (i, l) in lines.iter().enumerate() {
        let Line::Start { partition, batch } = l else { continue };
        for up in upstream(partition) {
            let ended = ends.get(up.as_str()).copied();
            assert!(
                ended.is_some_and(|e| e < i),
                "line {}: {partition} batch {batch} started before its upstream {up} ended (end at line {:?}):\n{log}",
                i + 1,
                ended.map(|e| e + 1)
            );
            edges_checked += 1;
        }
        if let Some(&e) = ends.get(partition.as_str()) {
            assert!(i < e, "line {}: {partition} started a batch after it ended:\n{log}", i + 1);
        }
        starts.entry(partition).or_default().push(*batch);
    }
    for p in all_partitions() {
        assert_eq!(starts.get(p.as_str()), Some(&(1..=BATCHES).collect()), "{p}: each batch once, in order:\n{log}");
        assert!(ends.contains_key(p.as_str()), "{p} never ended:\n{log}");
    }
    // Aligned is not a barrier: transform@0 ran to its end while extract@3
    // was still in its first batch (extract@3 waited for it, bounded).
    let (t0, e3) = (ends["transform@0"], ends["extract@3"]);
    assert!(t0 < e3, "transform@0 (aligned on extract@0) must finish while extract@3 still runs:\n{log}");
    format!("{} log lines, {edges_checked} (batch start, upstream end) pairs in order", lines.len())
}

fn spawn_worker(dir: &Path, env: &[(&'static str, String)], i: usize, exec: &str) -> Child {
    let err = File::create(dir.join(format!("worker-{i}.err"))).unwrap();
    ox(dir, env)
        .args(["worker", "start", "--pipeline", "dag", "--worker-id", &format!("w{i}"), "--exec", exec])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap()
}

fn worker_logs(dir: &Path) -> String {
    (0..WORKERS)
        .map(|i| format!("--- worker w{i}:\n{}", std::fs::read_to_string(dir.join(format!("worker-{i}.err"))).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Creates the DAG (from flags or a pipeline.yaml), runs 4 workers until
/// they all exit, then checks the log's order and the stored counts.
fn run_dag(env: &[(&'static str, String)], from_yaml: bool, store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let created = if from_yaml {
        std::fs::write(d.join("pipeline.yaml"), PLAN_YAML).unwrap();
        json(d, env, &["state", "create", "dag", "--from", "pipeline.yaml"])
    } else {
        let mut args = vec!["state", "create", "dag"];
        args.extend(PLAN_FLAGS);
        json(d, env, &args)
    };
    assert_eq!(
        (created["status"].as_str(), created["records_processed"].as_u64()),
        (Some("pending"), Some(0)),
        "a new pipeline: {created:#}"
    );
    let after: Vec<Value> = created["steps"].as_array().unwrap().iter().map(|s| s["after"].clone()).collect();
    assert_eq!(
        after,
        [
            serde_json::json!([]),
            serde_json::json!(["extract (aligned)"]),
            serde_json::json!(["extract"]),
            serde_json::json!(["transform", "index"])
        ],
        "{created:#}"
    );

    let log_path = d.join("batches.log");
    std::fs::write(&log_path, "").unwrap();
    let script = BATCH_SH.replace("__LOG__", &format!("'{}'", log_path.display())).replace("__BATCHES__", &BATCHES.to_string());
    let exec = d.join("batch.sh");
    std::fs::write(&exec, script).unwrap();
    assert!(Command::new("chmod").arg("+x").arg(&exec).status().unwrap().success());
    let exec = exec.display().to_string();

    let started = Instant::now();
    let mut workers: Vec<Child> = (0..WORKERS).map(|i| spawn_worker(d, env, i, &exec)).collect();
    let mut exits = [None; WORKERS];
    while exits.iter().any(Option::is_none) {
        for (w, exit) in workers.iter_mut().zip(exits.iter_mut()) {
            if exit.is_none() {
                *exit = w.try_wait().unwrap();
            }
        }
        if started.elapsed() > DEADLINE {
            for w in &mut workers {
                let _ = w.kill();
                let _ = w.wait();
            }
            panic!(
                "{store}: the workers did not drain the pipeline within {DEADLINE:?}\nlog:\n{}\n{}",
                std::fs::read_to_string(&log_path).unwrap(),
                worker_logs(d)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    for (i, exit) in exits.iter().enumerate() {
        assert!(exit.unwrap().success(), "{store}: worker w{i} exited {exit:?}\n{}", worker_logs(d));
    }

    let log = std::fs::read_to_string(&log_path).unwrap();
    let summary = std::panic::catch_unwind(|| check_order(&log))
        .unwrap_or_else(|_| panic!("{store}: the order check failed (message above); the workers said:\n{}", worker_logs(d)));

    let view = json(d, env, &["state", "show", "dag"]);
    assert_eq!(view["status"], "completed", "{view:#}");
    let mut total = 0;
    for step in view["steps"].as_array().unwrap() {
        let name = step["step_id"].as_str().unwrap();
        let parts = step["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), if matches!(name, "extract" | "transform") { SHARDS as usize } else { 1 }, "{step:#}");
        for p in parts {
            let id = p["partition"].as_str().unwrap();
            assert!(p["status"]["completed"].is_object(), "{id}: {p:#}");
            assert_eq!(
                (p["records_processed"].as_u64(), p["bytes_processed"].as_u64(), p["batch_number"].as_u64(), p["attempts"].as_u64()),
                (Some(BATCHES * records(name)), Some(BATCHES * records(name) * 10), Some(BATCHES), Some(1)),
                "{id}: every batch counted once, one attempt: {p:#}"
            );
            assert_eq!(p["last_processed_id"], format!("{id}-{BATCHES}"), "{p:#}");
        }
        let expected = BATCHES * records(name) * parts.len() as u64;
        assert_eq!(step["records_processed"].as_u64(), Some(expected), "{step:#}");
        total += expected;
    }
    assert_eq!(total, 4821);
    assert_eq!(view["records_processed"].as_u64(), Some(total), "{view:#}");
    println!("{store}: {WORKERS} workers drained the DAG in {:.1} s; {summary}; {total} records stored, exact", elapsed.as_secs_f64());
}

#[test]
fn four_workers_drain_a_dag_in_dependency_order_on_a_local_directory() {
    run_dag(&[], false, "local directory");
}

#[test]
fn four_workers_drain_a_dag_in_dependency_order_on_s3() {
    let Some(env) = support::s3_env("DAG") else { return };
    run_dag(&env, true, "S3 (moto)");
}

/// A log in dependency order, as a correct run could write it.
fn ordered_log() -> Vec<String> {
    let mut lines = Vec::new();
    let mut run = |p: &str| {
        lines.extend((1..=BATCHES).map(|b| format!("start {p} {b} 1")));
        lines.push(format!("end {p} 2"));
    };
    for i in 0..3 {
        run(&format!("extract@{i}"));
    }
    run("transform@0");
    run("extract@3");
    for i in 1..SHARDS {
        run(&format!("transform@{i}"));
    }
    run("index");
    run("load");
    lines
}

#[test]
fn the_order_check_accepts_a_log_in_dependency_order() {
    check_order(&ordered_log().join("\n"));
}

#[test]
#[should_panic(expected = "load batch 1 started before its upstream index ended")]
fn the_order_check_catches_a_batch_started_before_its_upstream_ended() {
    let mut lines = ordered_log();
    let first_load = lines.iter().position(|l| l.starts_with("start load ")).unwrap();
    let line = lines.remove(first_load);
    let index_end = lines.iter().position(|l| l.starts_with("end index ")).unwrap();
    lines.insert(index_end, line); // just before index's end
    check_order(&lines.join("\n"));
}

#[test]
#[should_panic(expected = "transform@0 (aligned on extract@0) must finish while extract@3 still runs")]
fn the_order_check_catches_aligned_behaving_as_a_barrier() {
    let mut lines = ordered_log();
    let t0: Vec<String> = lines.iter().filter(|l| l.contains(" transform@0 ")).cloned().collect();
    lines.retain(|l| !l.contains(" transform@0 "));
    let after_extract = lines.iter().position(|l| l.starts_with("end extract@3 ")).unwrap() + 1;
    lines.splice(after_extract..after_extract, t0);
    check_order(&lines.join("\n"));
}
