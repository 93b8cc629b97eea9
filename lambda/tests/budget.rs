//! Requests per invocation, counted by `CountingStore` (not timed), for a
//! named partition with a trusted deadline: the claim, each batch, the
//! release or completion, the hand-off reads, and the answers that write
//! nothing. Each is asserted as a budget that must not grow; the figures
//! are printed (`cargo test --release -p oxiflow-lambda --test budget --
//! --nocapture`) and in BENCHMARKS.md, *Lambda (issue 13)*.
//!
//! On S3 (moto) when `OXIFLOW_TEST_S3_ENDPOINT` is set, in memory otherwise:
//! the counts do not depend on the store.
#![allow(unreachable_pub, clippy::disallowed_methods)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use oxiflow_backends::{ConditionalStore, CountingStore, ObjectStoreBackend, ObjectStoreOptions, RequestCounts, StateManager};
use oxiflow_core::{Config, Dependency, LeaseConfig, PartitionId, PipelineId, RunId, StepPlan};
use oxiflow_lambda::{Batch, BatchError, BatchInput, Invocation, Runner, Step, StepEvent, StepOutcome};

const SHARDS: u32 = 4;

fn store() -> (Arc<dyn ConditionalStore>, String) {
    match std::env::var("OXIFLOW_TEST_S3_ENDPOINT") {
        Ok(endpoint) => {
            let bucket = std::env::var("OXIFLOW_TEST_S3_BUCKET").unwrap_or_else(|_| "oxiflow-test".into());
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
            let url = format!("s3://{bucket}/lambda-budget-{nanos:x}");
            let options = ObjectStoreOptions {
                endpoint: Some(endpoint.clone()),
                allow_http: true,
                access_key_id: Some("test".into()),
                secret_access_key: Some("test".into()),
                region: Some("us-east-1".into()),
                ..ObjectStoreOptions::default()
            };
            (Arc::new(ObjectStoreBackend::open(&url, &options).unwrap()), format!("S3 on moto ({url} at {endpoint})"))
        }
        Err(_) => (Arc::new(ObjectStoreBackend::open("memory://", &ObjectStoreOptions::default()).unwrap()), "memory".into()),
    }
}

/// Counts to `total` in batches of `size`, each taking `work`; notes the
/// requests made so far when each batch begins.
struct Counter {
    counting: Arc<CountingStore>,
    total: u64,
    size: u64,
    work: Duration,
    at_batch: Arc<Mutex<Vec<RequestCounts>>>,
}

#[async_trait]
impl Step for Counter {
    async fn batch(&self, input: BatchInput) -> Result<Batch, BatchError> {
        self.at_batch.lock().unwrap().push(self.counting.counts());
        let after: u64 = input.bookmark.as_deref().unwrap_or("0").parse()?;
        tokio::time::sleep(self.work).await;
        let end = (after + self.size).min(self.total);
        let batch = Batch::new(end.to_string(), end - after);
        Ok(if end == self.total { batch.last() } else { batch })
    }
}

struct Rig {
    counting: Arc<CountingStore>,
    manager: StateManager,
    pipeline: PipelineId,
    at_batch: Arc<Mutex<Vec<RequestCounts>>>,
    invocations: Mutex<u32>,
}

fn gets(n: u64) -> RequestCounts {
    RequestCounts { get: n, ..RequestCounts::default() }
}

fn puts(n: u64) -> RequestCounts {
    RequestCounts { put_if_match: n, ..RequestCounts::default() }
}

fn plus(a: RequestCounts, b: RequestCounts) -> RequestCounts {
    RequestCounts {
        get: a.get + b.get,
        put_if_absent: a.put_if_absent + b.put_if_absent,
        put_if_match: a.put_if_match + b.put_if_match,
        delete: a.delete + b.delete,
        list: a.list + b.list,
    }
}

/// Each kind of request at most the budget's.
fn within(what: &str, counted: RequestCounts, budget: RequestCounts) {
    let over = counted.get > budget.get
        || counted.put_if_absent > budget.put_if_absent
        || counted.put_if_match > budget.put_if_match
        || counted.delete > budget.delete
        || counted.list > budget.list;
    assert!(!over, "{what}: {counted:?} is over the budget {budget:?}");
}

fn show(c: RequestCounts) -> String {
    let mut parts = Vec::new();
    for (n, name) in
        [(c.get, "GET"), (c.put_if_match, "PUT If-Match"), (c.put_if_absent, "PUT If-None-Match"), (c.list, "LIST"), (c.delete, "DELETE")]
    {
        if n > 0 {
            parts.push(format!("{n} {name}"));
        }
    }
    format!("{} ({})", c.total(), if parts.is_empty() { "none".into() } else { parts.join(" + ") })
}

impl Rig {
    async fn new() -> Rig {
        let (inner, described) = store();
        eprintln!("RAN lambda request budget on {described}");
        let counting = Arc::new(CountingStore::new(inner));
        let lease = LeaseConfig {
            ttl: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            skew_allowance: Duration::from_millis(500),
            safety_margin: Duration::from_millis(200),
        };
        let manager = StateManager::new(counting.clone(), Config { lease, ..Config::default() });
        let pipeline: PipelineId = "orders".parse().unwrap();
        let plan = vec![
            StepPlan::new("extract".parse().unwrap(), Some(SHARDS)),
            StepPlan::new("transform".parse().unwrap(), Some(SHARDS)).after(Dependency::aligned("extract".parse().unwrap())),
            StepPlan::new("load".parse().unwrap(), None).after(Dependency::barrier("transform".parse().unwrap())),
        ];
        manager.create_pipeline(&pipeline, &RunId::new("run-1").unwrap(), &plan).await.unwrap();
        Rig { counting, manager, pipeline, at_batch: Arc::default(), invocations: Mutex::new(0) }
    }

    fn runner(&self, total: u64, work_ms: u64) -> Runner<Counter> {
        let step = Counter {
            counting: self.counting.clone(),
            total,
            size: 10,
            work: Duration::from_millis(work_ms),
            at_batch: self.at_batch.clone(),
        };
        Runner::new(self.manager.clone(), step)
    }

    fn event(&self, partition: &str) -> StepEvent {
        StepEvent::start(self.pipeline.clone(), PartitionId::parse(partition).unwrap())
    }

    /// A trusted deadline `ms` from now.
    fn invocation(&self, ms: u64) -> Invocation {
        let mut n = self.invocations.lock().unwrap();
        *n += 1;
        Invocation { request_id: format!("req-{n}"), deadline: Some(self.manager.now().plus(Duration::from_millis(ms))) }
    }

    /// Runs one invocation; returns its outcome, the requests before its
    /// first batch, between batches, and after its last batch began.
    async fn invoke(&self, runner: &Runner<Counter>, partition: &str, ms: u64) -> (StepOutcome, Invoked) {
        self.at_batch.lock().unwrap().clear();
        let before = self.counting.counts();
        let outcome = runner.invoke(self.event(partition), &self.invocation(ms)).await.unwrap();
        let after = self.counting.counts();
        let marks = self.at_batch.lock().unwrap().clone();
        let invoked = match (marks.first(), marks.last()) {
            (Some(first), Some(last)) => Invoked {
                claim: first.since(&before),
                batches: marks.windows(2).map(|w| w[1].since(&w[0])).collect(),
                after_last_batch: after.since(last),
                all: after.since(&before),
            },
            _ => Invoked {
                claim: after.since(&before),
                batches: vec![],
                after_last_batch: RequestCounts::default(),
                all: after.since(&before),
            },
        };
        (outcome, invoked)
    }
}

#[derive(Debug)]
struct Invoked {
    claim: RequestCounts,
    batches: Vec<RequestCounts>,
    after_last_batch: RequestCounts,
    all: RequestCounts,
}

#[tokio::test]
async fn an_invocation_costs_a_claim_one_put_per_batch_and_one_to_finish() {
    let rig = Rig::new().await;
    let mut table = Vec::new();

    // extract@0: claim, 4 batches, completion, hand-off of transform@0.
    let runner = rig.runner(40, 0);
    let (out, i) = rig.invoke(&runner, "extract@0", 60_000).await;
    assert!(matches!(out, StepOutcome::Completed { batches: 4, ref handed_off, .. } if handed_off.len() == 1), "{out:?}");
    // Readiness: the pipeline and the partition (a root step: no upstream);
    // the claim: one conditional PUT from the document just read; the
    // reset check: the pipeline again.
    within("named claim of a root partition", i.claim, plus(gets(3), puts(1)));
    for b in &i.batches {
        within("a batch (its checkpoint)", *b, puts(1));
    }
    // The completion, then the hand-off: the pipeline, the completed
    // partition, transform@0 and what it depends on (extract@0 again: read once).
    within("completion + hand-off across an aligned edge", i.after_last_batch, plus(puts(1), gets(3)));
    within("the whole invocation", i.all, plus(gets(6), puts(5)));
    table.push(("claim: `extract@0` (root step), named, trusted deadline", i.claim));
    table.push(("each batch before the last: its checkpoint", i.batches[0]));
    table.push(("last batch: completion + hand-off reads (aligned: transform@0)", i.after_last_batch));
    table.push(("the whole invocation (4 batches)", i.all));

    // The same partition delivered again: already done, nothing written;
    // what is still ready after it is handed off again.
    let (out, i) = rig.invoke(&runner, "extract@0", 60_000).await;
    assert!(matches!(out, StepOutcome::AlreadyDone { ref handed_off, .. } if handed_off.len() == 1), "{out:?}");
    within("already done", i.all, gets(6));
    table.push(("a late duplicate of a completed partition (`already_done`, hand-off again)", i.all));

    // transform@0 out of time: claim across the aligned edge (one upstream
    // read more), batches while the deadline allows, a release.
    let slow = rig.runner(1_000, 150);
    let (out, i) = rig.invoke(&slow, "transform@0", 1_500).await;
    assert!(matches!(out, StepOutcome::Continue { .. }), "{out:?}");
    within("named claim across an aligned edge", i.claim, plus(gets(4), puts(1)));
    within("last batch's checkpoint + release", i.after_last_batch, puts(2));
    table.push(("claim: `transform@0` (aligned on extract@0)", i.claim));
    table.push(("out of time: last batch's checkpoint + release (continuation sent, no reads)", i.after_last_batch));

    // A duplicate delivered while a holder has it: refused, nothing written.
    let held = rig.manager.claim(&rig.pipeline, &PartitionId::parse("extract@1").unwrap(), &"other".parse().unwrap()).await.unwrap();
    let (out, i) = rig.invoke(&runner, "extract@1", 60_000).await;
    assert!(matches!(out, StepOutcome::AlreadyRunning { .. }), "{out:?}");
    assert_eq!(i.all.put_if_match + i.all.put_if_absent, 0, "a duplicate writes nothing");
    within("already running", i.all, gets(2));
    table.push(("a duplicate while the partition is held (`already_running`)", i.all));
    drop(held);

    // load behind a barrier on transform:4: every transform shard is read
    // to decide readiness.
    let (out, i) = rig.invoke(&runner, "load", 60_000).await;
    assert!(matches!(out, StepOutcome::NotReady { .. }), "{out:?}");
    within("load not ready", i.all, gets(2 + u64::from(SHARDS)));
    table.push(("`load` asked too early (barrier on transform:4): `not_ready`", i.all));

    eprintln!("requests per invocation (named partition, trusted deadline):");
    for (what, counts) in &table {
        eprintln!("  {what}: {}", show(*counts));
    }
}

#[tokio::test]
async fn a_completion_across_a_barrier_reads_every_partition_it_waits_on() {
    let rig = Rig::new().await;
    let runner = rig.runner(10, 0);
    for shard in 0..SHARDS {
        let (out, _) = rig.invoke(&runner, &format!("extract@{shard}"), 60_000).await;
        assert!(matches!(out, StepOutcome::Completed { .. }), "{out:?}");
    }
    for shard in 0..SHARDS - 1 {
        rig.invoke(&runner, &format!("transform@{shard}"), 60_000).await;
    }
    // The last transform shard completes: the hand-off reads the pipeline,
    // the completed partition, load and every transform shard (load's
    // upstream), and hands off load.
    let (out, i) = rig.invoke(&runner, &format!("transform@{}", SHARDS - 1), 60_000).await;
    assert!(matches!(out, StepOutcome::Completed { ref handed_off, .. } if handed_off.len() == 1), "{out:?}");
    // And one LIST: load has no shard count in the plan (one partition),
    // which the hand-off takes for a plan migrated from format 2 that does
    // not know its shards, and lists the pipeline's partitions to find them.
    let list = RequestCounts { list: 1, ..RequestCounts::default() };
    within("completion + hand-off across a barrier", i.after_last_batch, plus(plus(puts(1), gets(2 + u64::from(SHARDS))), list));
    let (out, j) = rig.invoke(&runner, "load", 60_000).await;
    assert!(matches!(out, StepOutcome::Completed { .. }), "{out:?}");
    within("named claim behind a barrier", j.claim, plus(gets(3 + u64::from(SHARDS)), puts(1)));
    eprintln!("  last batch of transform@3: completion + hand-off reads (barrier: load after transform:4): {}", show(i.after_last_batch));
    eprintln!("  claim: `load` (barrier on transform:4): {}", show(j.claim));
}
