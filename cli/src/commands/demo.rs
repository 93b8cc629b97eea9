//! `oxiflow demo`: extract → transform → load over a generated dataset,
//! several workers on step shards, one worker crash whose partition is taken
//! over once its lease expires, then the final state. Runs on whatever store
//! is configured — by default `.oxiflow/state` on the local disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar};
use oxiflow_backends::{Next, Snapshot, StateManager};
use oxiflow_core::{Dependency, PartitionDoc, PartitionId, PipelineId, Progress, StepId, StepPlan, WorkerId};

use super::Ctx;
use crate::args::DemoArgs;
use crate::output;

const BATCH: u64 = 500;
const STEPS: [&str; 3] = ["extract", "transform", "load"];

/// The generated dataset: order ids `0..records`, sharded by range.
struct Dataset {
    records: u64,
    shards: u32,
}

impl Dataset {
    /// The id range of `part`: a shard of extract/transform, or all of load.
    fn range(&self, part: &PartitionId) -> (u64, u64) {
        match part.shard {
            Some(i) => {
                let per = self.records.div_ceil(u64::from(self.shards));
                (u64::from(i) * per, ((u64::from(i) + 1) * per).min(self.records))
            }
            None => (0, self.records),
        }
    }
}

fn order_id(n: u64) -> String {
    format!("order-{n:08}")
}

fn resume_point(doc: &PartitionDoc, start: u64) -> u64 {
    doc.last_processed_id.as_deref().and_then(|b| b.strip_prefix("order-")).and_then(|n| n.parse::<u64>().ok()).map_or(start, |n| n + 1)
}

struct Shared {
    m: StateManager,
    p: PipelineId,
    data: Dataset,
    bars: Vec<ProgressBar>,
    log: MultiProgress,
    crash_pending: AtomicBool,
}

impl Shared {
    fn say(&self, line: String) {
        self.log.suspend(|| eprintln!("{line}"));
    }
}

/// One worker: claim what the scheduler says is ready (a transform shard
/// once its extract shard completed, load once every transform shard did),
/// process it batch by batch from its bookmark, complete it. The first
/// worker to get halfway through a transform shard crashes there (once per
/// demo).
async fn worker(s: Arc<Shared>, me: WorkerId) -> anyhow::Result<()> {
    let mut snapshot = Snapshot::new(s.p.clone());
    loop {
        let claimed = match s.m.claim_next(&mut snapshot, &me).await? {
            Next::Claimed(c) => *c,
            Next::Finished(_) => return Ok(()),
            Next::Wait(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let part = claimed.doc().partition_id();
        let epoch = claimed.lease().epoch;
        if epoch > 1 && claimed.doc().attempts > 1 && claimed.doc().records_processed > 0 {
            s.say(format!(
                "{} {me} took over {part} (epoch {epoch}) and resumes after {}",
                output::warn("takeover"),
                claimed.doc().last_processed_id.as_deref().unwrap_or("the start")
            ));
        }
        let (start, end) = s.data.range(&part);
        let mut next = resume_point(claimed.doc(), start);
        let bar = &s.bars[STEPS.iter().position(|st| *st == part.step_id.as_str()).unwrap_or(0)];
        let held = s.m.keep(claimed);
        while next < end {
            let upto = (next + BATCH).min(end);
            tokio::time::sleep(Duration::from_millis(15)).await; // the "work"
            let bytes: u64 = (next..upto).map(|n| 90 + n % 40).sum();
            let batch = held.doc().await.batch_number + 1;
            let progress = Progress {
                last_processed_id: Some(order_id(upto - 1)),
                batch_number: Some(batch),
                add_records: upto - next,
                add_bytes: bytes,
                add_processing_ms: 15,
                ..Progress::default()
            };
            held.checkpoint(progress).await?;
            bar.inc(upto - next);
            next = upto;
            if part.step_id.as_str() == "transform"
                && next >= start + (end - start) / 2
                && next < end
                && s.crash_pending.swap(false, Ordering::SeqCst)
            {
                s.say(format!(
                    "{} {me} dies holding {part} at {} (no release: its lease must expire)",
                    output::warn("crash"),
                    order_id(next - 1)
                ));
                drop(held); // stops the heartbeat without releasing
                return Ok(());
            }
        }
        held.complete(Progress::default()).await?;
    }
}

pub(crate) async fn run(ctx: &mut Ctx, args: &DemoArgs) -> anyhow::Result<()> {
    // Short leases, so the takeover after the crash comes within seconds.
    let lease = &mut ctx.settings.core.lease;
    lease.ttl = Duration::from_secs(3);
    lease.heartbeat_interval = Duration::from_secs(1);
    lease.skew_allowance = Duration::from_millis(500);
    lease.safety_margin = Duration::from_millis(500);
    let m = ctx.manager()?;
    if args.shards == 0 || args.workers == 0 || args.records == 0 {
        return Err(crate::exit::usage("--shards, --workers and --records must be positive"));
    }
    let p: PipelineId = format!("demo-{}", m.now().as_millis() / 1000).parse()?;
    let (extract, transform) = (StepId::new("extract")?, StepId::new("transform")?);
    let plan = [
        StepPlan::new(extract.clone(), Some(args.shards)),
        StepPlan::new(transform.clone(), Some(args.shards)).after(Dependency::aligned(extract)),
        StepPlan::new(StepId::new("load")?, None).after(Dependency::barrier(transform)),
    ];
    m.create_pipeline(&p, &"run-1".parse()?, &plan).await?;
    let log = MultiProgress::new();
    if ctx.json {
        log.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let bars = STEPS.iter().map(|name| log.add(crate::progress::bar(args.records, name))).collect();
    let shared = Arc::new(Shared {
        m: m.clone(),
        p: p.clone(),
        data: Dataset { records: args.records, shards: args.shards },
        bars,
        log,
        crash_pending: AtomicBool::new(args.workers > 1),
    });
    shared.say(format!(
        "{} {p}: {} records, extract and transform in {} shards, then load; {} workers; state in {}",
        output::bold("demo"),
        args.records,
        args.shards,
        args.workers,
        ctx.settings.url
    ));
    let tasks: Vec<_> = (0..args.workers)
        .map(|i| {
            let me: WorkerId = format!("worker-{}", i + 1).parse().expect("valid id");
            tokio::spawn(worker(shared.clone(), me))
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    for b in &shared.bars {
        b.finish();
    }
    let view = m.view(&p).await?;
    if ctx.json {
        return output::json(&view);
    }
    println!();
    super::state::print_view(&view, m.now());
    println!("\nsee it again: oxiflow state show {p}");
    let on_path = std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("oxiflow").is_file()));
    if !on_path {
        println!("(oxiflow is not on your PATH, as after `cargo run`: install it with `cargo install --path cli`)");
    }
    Ok(())
}
