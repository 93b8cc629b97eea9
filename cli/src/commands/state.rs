//! `oxiflow state …`: create, list, show, history, export, import, copy,
//! cleanup, reset.

use std::path::Path;

use oxiflow_backends::{Export, StepPlan};
use oxiflow_core::{PartitionId, PipelineState, RunId, StatusKind, StepId, Timestamp};
use serde::Serialize;

use super::{partition_id, pipeline_id, worker_id, Ctx};
use crate::config;
use crate::output::{self, Table};

/// Creates the pipeline; quiet on success (`--json`: the view).
pub async fn create(ctx: &Ctx, pipeline: &str, plan: &[StepPlan], run_id: &str) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let p = pipeline_id(pipeline)?;
    m.create_pipeline(&p, &run_id.parse::<RunId>()?, plan).await?;
    if ctx.json {
        return output::json(&m.view(&p).await?);
    }
    Ok(())
}

/// One line of `state list` (`--json` schema).
#[derive(Serialize)]
struct PipelineSummary {
    pipeline_id: String,
    run_id: String,
    status: StatusKind,
    steps: usize,
    records_processed: u64,
    total_errors: u64,
    leases_held: usize,
    updated_at: Timestamp,
}

fn is_active(view: &PipelineState) -> bool {
    view.status == StatusKind::Running
        || view.steps.iter().flat_map(|s| &s.partitions).any(|p| p.lease.as_ref().is_some_and(|l| !l.status.is_claimable()))
}

pub async fn list(ctx: &Ctx, active: bool) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let mut summaries = Vec::new();
    for p in m.list_pipelines().await? {
        let view = m.view(&p).await?;
        if active && !is_active(&view) {
            continue;
        }
        let leases_held =
            view.steps.iter().flat_map(|s| &s.partitions).filter(|p| p.lease.as_ref().is_some_and(|l| !l.status.is_claimable())).count();
        let updated_at =
            view.steps.iter().flat_map(|s| &s.partitions).map(|p| p.updated_at).chain([view.updated_at]).max().unwrap_or(view.updated_at);
        summaries.push(PipelineSummary {
            pipeline_id: view.pipeline_id.to_string(),
            run_id: view.run_id.to_string(),
            status: view.status,
            steps: view.steps.len(),
            records_processed: view.records_processed,
            total_errors: view.total_errors,
            leases_held,
            updated_at,
        });
    }
    if ctx.json {
        return output::json(&summaries);
    }
    if summaries.is_empty() {
        println!("no pipelines in {}", ctx.settings.url);
        return Ok(());
    }
    let now = m.now();
    let mut t = Table::new(&["PIPELINE", "RUN", "STATUS", "STEPS", "RECORDS", "ERRORS", "LEASES", "UPDATED"]);
    for s in summaries {
        t.row(vec![
            s.pipeline_id,
            s.run_id,
            output::status(s.status),
            s.steps.to_string(),
            s.records_processed.to_string(),
            s.total_errors.to_string(),
            s.leases_held.to_string(),
            output::relative(s.updated_at, now),
        ]);
    }
    t.print();
    Ok(())
}

pub async fn show(ctx: &Ctx, pipeline: &str) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let view = m.view(&pipeline_id(pipeline)?).await?;
    if ctx.json {
        return output::json(&view);
    }
    print_view(&view, m.now());
    Ok(())
}

/// The human rendering of a pipeline, shared with the demo.
pub fn print_view(view: &PipelineState, now: Timestamp) {
    println!(
        "{}  run {}  {}  {} records, {} bytes, {} errors",
        output::bold(view.pipeline_id.as_str()),
        view.run_id,
        output::status(view.status),
        view.records_processed,
        view.bytes_processed,
        view.total_errors
    );
    let plan: Vec<String> = view
        .steps
        .iter()
        .map(|s| {
            let after = if s.after.is_empty() { String::new() } else { format!(" after {}", s.after.join(", ")) };
            format!("{} {}/{}{after}", s.step_id, s.completed, s.total)
        })
        .collect();
    println!("steps: {}", plan.join("; "));
    if !view.frontier.is_empty() {
        println!("now: {}", view.frontier.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
    }
    let mut t = Table::new(&["STEP", "STATUS", "NEXT", "RECORDS", "FAILED", "BOOKMARK", "WORKER", "LEASE", "HEARTBEAT", "TRIES"]);
    for step in &view.steps {
        for p in &step.partitions {
            let next = match &p.readiness {
                oxiflow_core::Readiness::Completed | oxiflow_core::Readiness::Held { .. } => "-".into(),
                r => output::readiness(r, now),
            };
            let kind = if p.current_run { p.status.kind() } else { StatusKind::Pending };
            let lease = match &p.lease {
                Some(l) if l.status.is_claimable() && l.stale => {
                    output::warn(&format!("expired {} (stale)", output::relative(l.expires_at, now)))
                }
                Some(l) if !l.status.is_claimable() => {
                    let text = format!("{} e{} expires {}", l.worker_id, l.epoch, output::relative(l.expires_at, now));
                    if l.stale || l.stop_requested {
                        output::warn(&text)
                    } else {
                        text
                    }
                }
                _ => "-".into(),
            };
            t.row(vec![
                p.partition.clone(),
                output::status(kind),
                next,
                p.records_processed.to_string(),
                p.records_failed.to_string(),
                p.last_processed_id.clone().unwrap_or_else(|| "-".into()),
                p.worker_id.as_ref().map(ToString::to_string).unwrap_or_else(|| "-".into()),
                lease,
                p.last_heartbeat.map(|h| output::relative(h, now)).unwrap_or_else(|| "-".into()),
                p.attempts.to_string(),
            ]);
        }
    }
    t.print();
    if !view.recent_errors.is_empty() {
        println!("\nrecent errors:");
        for e in view.recent_errors.iter().take(5) {
            println!("  {} {}  {}", output::relative(e.record.at, now), e.partition, e.record.message);
        }
    }
}

pub async fn history(ctx: &Ctx, pipeline: &str, step: Option<&str>) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let p = pipeline_id(pipeline)?;
    let parts: Vec<PartitionId> = match step {
        Some(s) => vec![partition_id(s)?],
        None => m.load(&p).await?.1.iter().map(|d| d.partition_id()).collect(),
    };
    let mut docs = Vec::new();
    for part in parts {
        docs.extend(m.history(&p, &part).await?);
    }
    if ctx.json {
        return output::json(&docs);
    }
    if docs.is_empty() {
        println!("no history kept (set state.history.keep_last in .oxiflow/config.yaml)");
        return Ok(());
    }
    let now = m.now();
    let mut t = Table::new(&["STEP", "VERSION", "STATUS", "RECORDS", "BOOKMARK", "WORKER", "WRITTEN"]);
    for d in docs {
        t.row(vec![
            d.partition_id().to_string(),
            d.version.to_string(),
            output::status(d.status.kind()),
            d.records_processed.to_string(),
            d.last_processed_id.clone().unwrap_or_else(|| "-".into()),
            d.worker_id.as_ref().map(ToString::to_string).unwrap_or_else(|| "-".into()),
            output::relative(d.updated_at, now),
        ]);
    }
    t.print();
    Ok(())
}

pub async fn export(ctx: &Ctx, pipeline: &str, output: Option<&Path>) -> anyhow::Result<()> {
    let export = ctx.manager()?.export(&pipeline_id(pipeline)?).await?;
    let text = serde_json::to_string_pretty(&export)?;
    match output {
        Some(path) => {
            std::fs::write(path, text + "\n").map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            if !ctx.json {
                eprintln!("exported {} ({} partitions) to {}", pipeline, export.partitions.len(), path.display());
            }
        }
        None => println!("{text}"),
    }
    Ok(())
}

pub async fn import(ctx: &Ctx, pipeline: &str, from: &Path, replace: bool, force: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(from).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", from.display()))?;
    let export: Export = serde_json::from_str(&text)
        .map_err(|e| oxiflow_core::Error::InvalidInput { reason: format!("{} is not an oxiflow export: {e}", from.display()) })?;
    if export.pipeline.pipeline_id.as_str() != pipeline {
        return Err(oxiflow_core::Error::InvalidInput {
            reason: format!("{} holds pipeline {}, not {pipeline}", from.display(), export.pipeline.pipeline_id),
        }
        .into());
    }
    let imported = ctx.manager()?.import(&export, replace, force).await?;
    if ctx.json {
        return output::json(&imported);
    }
    let verb = if imported.replaced { "replaced" } else { "imported" };
    eprintln!("{verb} {pipeline} ({} partitions){}", imported.partitions, discarded(imported.discarded_records));
    Ok(())
}

fn discarded(records: u64) -> String {
    match records {
        0 => String::new(),
        n => format!("; {n} acknowledged record(s) of the replaced state were discarded"),
    }
}

#[derive(Serialize)]
struct Keys {
    keys: Vec<String>,
}

/// `state copy --json`.
#[derive(Serialize)]
struct Copied {
    keys: Vec<String>,
    discarded_records: u64,
}

pub async fn copy(ctx: &Ctx, to: &str, pipelines: &[String], replace: bool, force: bool) -> anyhow::Result<()> {
    let source = ctx.manager()?;
    let target_settings = config::Settings { url: to.to_string(), ..ctx.settings.clone() };
    let target = target_settings.open()?;
    let ids = pipelines.iter().map(|p| pipeline_id(p)).collect::<anyhow::Result<Vec<_>>>()?;
    let all = if ids.is_empty() { source.list_pipelines().await? } else { ids };
    let bar = (!ctx.json).then(|| crate::progress::bar(all.len() as u64, "copying"));
    let mut discarded_records = 0;
    for p in &all {
        discarded_records +=
            source.copy_to(&target, std::slice::from_ref(p), replace, force).await?.iter().map(|i| i.discarded_records).sum::<u64>();
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if ctx.json {
        return output::json(&Copied { keys: all.iter().map(ToString::to_string).collect(), discarded_records });
    }
    println!("copied {} pipeline(s) to {to}{}", all.len(), discarded(discarded_records));
    Ok(())
}

pub async fn cleanup(ctx: &Ctx) -> anyhow::Result<()> {
    let released = ctx.manager()?.cleanup_stale_leases().await?;
    if ctx.json {
        return output::json(&Keys { keys: released });
    }
    match released.len() {
        0 => println!("no stale leases"),
        n => {
            println!("released {n} stale lease(s):");
            released.iter().for_each(|k| println!("  {k}"));
        }
    }
    Ok(())
}

pub async fn reset(ctx: &Ctx, pipeline: &str, step: Option<&str>, new_run: bool) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let p = pipeline_id(pipeline)?;
    let by = worker_id(&format!("oxiflow-cli-{}", std::process::id()))?;
    let done = if new_run {
        let run: RunId = format!("run-{}", m.now().as_millis()).parse()?;
        m.new_run(&p, &run, &by).await?
    } else {
        let step: Option<StepId> = step.map(str::parse).transpose()?;
        m.reset(&p, step.as_ref(), &by).await?
    };
    if ctx.json {
        return output::json(&done);
    }
    let what = if new_run { format!("started {} for", done.run_id) } else { format!("reset {} partition(s) of", done.partitions) };
    println!("{what} {pipeline} ({} acknowledged record(s) set back to zero; bookmarks kept)", done.discarded_records);
    Ok(())
}
