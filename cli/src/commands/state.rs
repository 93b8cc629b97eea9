//! `oxiflow state …`: create, list, show, history, reset (export, import
//! and copy: `transfer.rs`; cleanup, delete and restore: `repair.rs`).

use oxiflow_backends::{Damaged, StateManager, StepPlan};
use oxiflow_core::{keys, PipelineDoc, PipelineId, PipelineState, RunId, StatusKind, Timestamp};
use serde::Serialize;

use super::{partition_id, partitions_of, pipeline_id, worker_id, Ctx};
use crate::exit::usage;
use crate::output::{self, Table};

/// The pipeline document, or not found (exit 3).
pub(crate) async fn pipeline_doc(m: &StateManager, p: &PipelineId) -> anyhow::Result<PipelineDoc> {
    let key = keys::pipeline_doc(p);
    Ok(m.read::<PipelineDoc>(&key).await?.ok_or(oxiflow_core::Error::NotFound { key })?.0)
}

/// Creates the pipeline; quiet on success (`--json`: the view).
pub(crate) async fn create(ctx: &Ctx, pipeline: &str, plan: &[StepPlan], run_id: &str) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let p = pipeline_id(pipeline)?;
    m.create_pipeline(&p, &run_id.parse::<RunId>()?, plan).await?;
    if ctx.json {
        return output::json(&m.view(&p).await?);
    }
    Ok(())
}

/// One line of `state list` (`--json` schema). A pipeline whose own
/// document is damaged has only its id and `damaged`.
#[derive(Serialize)]
struct PipelineSummary {
    pipeline_id: String,
    #[serde(flatten)]
    summary: Option<Summary>,
    /// Documents that could not be read, each with its reason (omitted when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    damaged: Vec<Damaged>,
}

#[derive(Serialize)]
struct Summary {
    run_id: String,
    status: StatusKind,
    steps: usize,
    records_processed: u64,
    total_errors: u64,
    leases_held: usize,
    updated_at: Timestamp,
}

/// After the output: exit 7 naming the damaged documents, with the fix.
fn damage_found(damaged: &[Damaged]) -> anyhow::Result<()> {
    if damaged.is_empty() {
        return Ok(());
    }
    let errors: Vec<_> = damaged.iter().map(|d| d.error.as_str()).collect();
    Err(crate::exit::Status {
        code: crate::exit::CORRUPT,
        note: format!(
            "{} damaged document(s) left out ({}); restore them (`oxiflow state restore PIPELINE STEP`) or import an export (`oxiflow state import --replace`)",
            errors.len(),
            errors.join("; ")
        ),
    }
    .into())
}

fn is_active(view: &PipelineState) -> bool {
    view.status == StatusKind::Running
        || view.steps.iter().flat_map(|s| &s.partitions).any(|p| p.lease.as_ref().is_some_and(|l| !l.status.is_claimable()))
}

pub(crate) async fn list(ctx: &Ctx, active: bool) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let mut summaries = Vec::new();
    for p in m.list_pipelines().await? {
        // One damaged document names itself; it never hides the other pipelines.
        let readable = match m.view_readable(&p).await {
            Ok(readable) => readable,
            Err(e) if e.kind() == oxiflow_core::ErrorKind::Corrupt => {
                let damaged = vec![Damaged { key: keys::pipeline_doc(&p), error: e.to_string() }];
                summaries.push(PipelineSummary { pipeline_id: p.to_string(), summary: None, damaged });
                continue;
            }
            // Deleted since the listing.
            Err(e) if e.kind() == oxiflow_core::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        let view = readable.state;
        if active && !is_active(&view) {
            continue;
        }
        let leases_held =
            view.steps.iter().flat_map(|s| &s.partitions).filter(|p| p.lease.as_ref().is_some_and(|l| !l.status.is_claimable())).count();
        let summary = Summary {
            run_id: view.run_id.to_string(),
            status: view.status,
            steps: view.steps.len(),
            records_processed: view.records_processed,
            total_errors: view.total_errors,
            leases_held,
            updated_at: view.updated_at,
        };
        summaries.push(PipelineSummary { pipeline_id: view.pipeline_id.to_string(), summary: Some(summary), damaged: readable.damaged });
    }
    let damaged: Vec<Damaged> = summaries.iter().flat_map(|s| s.damaged.iter().cloned()).collect();
    if ctx.json {
        output::json(&summaries)?;
        return damage_found(&damaged);
    }
    if summaries.is_empty() {
        let what = if active { "no active pipelines" } else { "no pipelines" };
        println!("{what} in {}", ctx.settings.url);
        return Ok(());
    }
    let now = m.now();
    let mut t = Table::new(&["PIPELINE", "RUN", "STATUS", "STEPS", "RECORDS", "ERRORS", "LEASES", "UPDATED"]);
    for s in summaries {
        let row = match s.summary {
            Some(v) => vec![
                v.run_id,
                output::status(v.status),
                v.steps.to_string(),
                v.records_processed.to_string(),
                v.total_errors.to_string(),
                v.leases_held.to_string(),
                output::relative(v.updated_at, now),
            ],
            None => ["-", "damaged", "-", "-", "-", "-", "-"].map(String::from).to_vec(),
        };
        t.row([vec![s.pipeline_id], row].concat());
    }
    t.print();
    damage_found(&damaged)
}

pub(crate) async fn show(ctx: &Ctx, pipeline: &str) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let readable = m.view_readable(&pipeline_id(pipeline)?).await?;
    if ctx.json {
        output::json(&readable)?;
    } else {
        print_view(&readable.state, m.now());
        for d in &readable.damaged {
            println!("  {} {}", output::bold("damaged:"), d.error);
        }
    }
    damage_found(&readable.damaged)
}

/// The human rendering of a pipeline, shared with the demo.
pub(crate) fn print_view(view: &PipelineState, now: Timestamp) {
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
                    output::warn(&format!("{} e{} expired {} (stale)", l.worker_id, l.epoch, output::relative(l.expires_at, now)))
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

pub(crate) async fn history(ctx: &Ctx, pipeline: &str, step: Option<&str>) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let p = pipeline_id(pipeline)?;
    let (doc, stored) = m.load(&p).await?;
    let parts = match step {
        Some(s) => partitions_of(&doc, s)?,
        None => stored.iter().map(|d| d.partition_id()).collect(),
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

pub(crate) async fn reset(ctx: &Ctx, pipeline: &str, step: Option<&str>, new_run: bool) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let p = pipeline_id(pipeline)?;
    let by = worker_id(&format!("oxiflow-cli-{}", std::process::id()))?;
    let done = if new_run {
        let run: RunId = format!("run-{}", m.now().as_millis()).parse()?;
        m.new_run(&p, &run, &by).await?
    } else {
        let step = match step {
            Some(s) => Some(reset_step(&m, &p, s).await?),
            None => None,
        };
        m.reset(&p, step.as_ref(), &by).await?
    };
    if ctx.json {
        return output::json(&done);
    }
    let what = if new_run { format!("started {} for", done.run_id) } else { format!("reset {} partition(s) of", done.partitions) };
    println!("{what} {pipeline} ({} acknowledged record(s) set back to zero; bookmarks and batch numbers kept)", done.discarded_records);
    Ok(())
}

/// The step `--step` names: one of the pipeline's (else not found, naming
/// them), and a whole step: resets are per step.
async fn reset_step(m: &StateManager, p: &PipelineId, spec: &str) -> anyhow::Result<oxiflow_core::StepId> {
    let id = partition_id(spec)?;
    let doc = pipeline_doc(m, p).await?;
    partitions_of(&doc, spec)?;
    if id.shard.is_some() {
        return Err(usage(format!(
            "resets are per step: --step {} resets every shard of {} ({spec} alone cannot be reset)",
            id.step_id, id.step_id
        )));
    }
    Ok(id.step_id)
}
