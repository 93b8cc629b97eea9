//! `claim`, `checkpoint`, `release`, `lock status`, `worker list|stop`:
//! short processes for scripts. Each checkpoint is one read + one CAS.

use std::collections::BTreeMap;

use oxiflow_backends::{Next, Snapshot, StateManager};
use oxiflow_core::{keys, LeaseStatus, PartitionDoc, PipelineId, Progress, Schedule, Written};
use serde::Serialize;

use super::{partition_id, pipeline_id, worker_id, Ctx, PartitionReport};
use crate::args::{CheckpointArgs, ClaimArgs, HolderArgs};
use crate::exit::{self, Status};
use crate::output::{self, Table};

/// Prints a partition after a lease command, with the manager that ran it.
fn report(ctx: &Ctx, m: &StateManager, doc: &PartitionDoc) -> anyhow::Result<()> {
    let r = PartitionReport::of(doc, m.now(), &m.config().lease);
    if ctx.json {
        output::json(&r)
    } else {
        println!("{}", r.line(m.now()));
        Ok(())
    }
}

pub(crate) async fn claim(ctx: &mut Ctx, args: &ClaimArgs) -> anyhow::Result<()> {
    if let Some(ttl) = args.ttl {
        ctx.settings.core.lease = lease_for(ttl, &ctx.settings.core.lease)?;
    }
    let m = ctx.manager()?;
    let (p, me) = (pipeline_id(&args.pipeline)?, worker_id(&args.worker)?);
    let claimed = match (&args.step, args.next, args.force) {
        (Some(step), _, force) => {
            let part = partition_id(step)?;
            let claimed = if force { m.claim(&p, &part, &me).await } else { m.claim_in_order(&p, &part, &me).await };
            match claimed {
                Ok(c) => c,
                Err(e) if e.kind() == oxiflow_core::ErrorKind::NotFound => return Err(not_found(&m, &p, step, e).await),
                Err(e) => return Err(e.into()),
            }
        }
        (None, _, _) => match m.claim_next(&mut Snapshot::new(p.clone()), &me).await? {
            Next::Claimed(c) => *c,
            Next::Wait(schedule) => return nothing_claimed(ctx, &m, &schedule, exit::NOT_READY, format!("nothing in {p} is ready yet")),
            Next::Finished(schedule) => {
                let state = schedule.status;
                return nothing_claimed(ctx, &m, &schedule, exit::FINISHED, format!("nothing left to claim in {p} ({state})"));
            }
        },
    };
    report(ctx, &m, claimed.doc())
}

/// A claim of something the pipeline does not have: say what it has (a
/// sharded step's shards, the steps), not the storage key.
async fn not_found(m: &StateManager, p: &PipelineId, spec: &str, e: oxiflow_backends::Error) -> anyhow::Error {
    let Ok(doc) = super::state::pipeline_doc(m, p).await else { return e.into() };
    match super::partitions_of(&doc, spec) {
        Err(named) => named,
        Ok(parts) if parts.len() > 1 => {
            let step = &parts[0].step_id;
            exit::Missing(format!(
                "{step} has {} shards: {}; claim one of them, or use --next",
                parts.len(),
                super::shard_range(step, parts.len() as u32)
            ))
            .into()
        }
        Ok(_) => e.into(),
    }
}

/// The lease settings for a claim with its own ttl (the core's
/// `LeaseConfig::with_ttl`: the heartbeat scales, the safety margin stays),
/// or a usage error naming the limit.
fn lease_for(ttl: std::time::Duration, configured: &oxiflow_core::LeaseConfig) -> anyhow::Result<oxiflow_core::LeaseConfig> {
    let Some(lease) = configured.with_ttl(ttl) else {
        let margin = humantime::format_duration(configured.safety_margin);
        return Err(exit::usage(format!(
            "--ttl {} is too short: a lease is trusted until it expires minus the safety margin ({margin}), so the ttl must be longer than {margin} (or lower state.safety_margin)",
            humantime::format_duration(ttl),
        )));
    };
    lease.validate().map_err(|e| exit::usage(format!("--ttl {}: {e}", humantime::format_duration(ttl))))?;
    Ok(lease)
}

/// `claim --next` found nothing: the schedule (why each partition waits) on
/// stdout with `--json`, and its own exit code.
fn nothing_claimed(ctx: &Ctx, m: &StateManager, schedule: &Schedule, code: u8, note: String) -> anyhow::Result<()> {
    if ctx.json {
        output::json(schedule)?;
    } else {
        for step in &schedule.steps {
            for p in step.partitions.iter().filter(|p| !p.readiness.is_ready()) {
                println!("{}  {}", p.partition, output::readiness(&p.readiness, m.now()));
            }
        }
    }
    Err(Status { code, note }.into())
}

/// A write that saved its progress and found a stop request: exit 11.
fn stopped(written: &Written, key: &str) -> anyhow::Result<()> {
    match &written.stop {
        Some(stop) => Err(Status {
            code: exit::STOPPED,
            note: format!(
                "{key}: {}stop requested by {}: the lease is released; stop working on this step",
                if written.landed { "saved; " } else { "" },
                stop.requested_by
            ),
        }
        .into()),
        None => Ok(()),
    }
}

fn progress(args: &CheckpointArgs) -> anyhow::Result<Progress> {
    let mut extra = BTreeMap::new();
    for kv in &args.extra {
        let (k, v) = kv.split_once('=').ok_or_else(|| exit::usage(format!("--extra {kv:?} must be key=value")))?;
        extra.insert(k.to_string(), v.to_string());
    }
    Ok(Progress {
        last_processed_id: args.last_id.clone(),
        batch_number: args.batch,
        add_records: args.add_records,
        add_failed: args.add_failed,
        add_bytes: args.add_bytes,
        extra,
        ..Progress::default()
    })
}

pub(crate) async fn checkpoint(ctx: &Ctx, args: &CheckpointArgs) -> anyhow::Result<()> {
    let h = &args.holder;
    let m = ctx.manager()?;
    let progress = progress(args)?;
    let mut held = m.adopt(&pipeline_id(&h.pipeline)?, &partition_id(&h.step)?, &worker_id(&h.worker)?).await?;
    let written = if args.complete {
        m.complete(&mut held, progress).await?
    } else if let Some(message) = &args.fail {
        m.fail(&mut held, progress, message.clone(), args.retryable).await?
    } else {
        m.checkpoint(&mut held, progress).await?
    };
    report(ctx, &m, held.doc())?;
    if args.complete || args.fail.is_some() {
        return Ok(()); // the step ended as asked; a stop request changes nothing
    }
    stopped(&written, held.key())
}

pub(crate) async fn release(ctx: &Ctx, h: &HolderArgs) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let mut held = m.adopt(&pipeline_id(&h.pipeline)?, &partition_id(&h.step)?, &worker_id(&h.worker)?).await?;
    m.release(&mut held, Progress::default()).await?;
    report(ctx, &m, held.doc())
}

/// Every partition of `pipelines` with a live (unreleased) lease.
async fn leases(m: &StateManager, pipelines: Vec<PipelineId>) -> anyhow::Result<Vec<PartitionReport>> {
    let mut out = Vec::new();
    for p in pipelines {
        let (_, parts) = m.load(&p).await?;
        for doc in parts {
            if doc.lease.as_ref().is_some_and(|l| l.released_at.is_none()) {
                out.push(PartitionReport::of(&doc, m.now(), &m.config().lease));
            }
        }
    }
    Ok(out)
}

fn print_leases(ctx: &Ctx, m: &StateManager, reports: &[PartitionReport]) -> anyhow::Result<()> {
    if ctx.json {
        return output::json(&reports);
    }
    if reports.is_empty() {
        println!("no leases held");
        return Ok(());
    }
    let now = m.now();
    let mut t = Table::new(&["PIPELINE", "STEP", "WORKER", "EPOCH", "EXPIRES", "STATUS", "RECORDS"]);
    for r in reports {
        let expires = r.expires_at.map(|e| output::relative(e, now)).unwrap_or_default();
        let expires =
            if matches!(r.lease, Some(LeaseStatus::Expired { .. })) { output::warn(&format!("{expires} (stale)")) } else { expires };
        t.row(vec![
            r.pipeline_id.to_string(),
            r.partition.clone(),
            r.worker_id.as_ref().map(ToString::to_string).unwrap_or_default(),
            r.epoch.unwrap_or(0).to_string(),
            expires,
            output::status(r.status.kind()),
            r.records_processed.to_string(),
        ]);
    }
    t.print();
    Ok(())
}

pub(crate) async fn lock_status(ctx: &Ctx, pipeline: &str) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let reports = leases(&m, vec![pipeline_id(pipeline)?]).await?;
    print_leases(ctx, &m, &reports)
}

pub(crate) async fn worker_list(ctx: &Ctx, pipeline: Option<&str>) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let pipelines = match pipeline {
        Some(p) => vec![pipeline_id(p)?],
        None => m.list_pipelines().await?,
    };
    let reports = leases(&m, pipelines).await?;
    print_leases(ctx, &m, &reports)
}

#[derive(Serialize)]
struct StopReport {
    worker_id: String,
    asked: Vec<String>,
}

pub(crate) async fn worker_stop(ctx: &Ctx, worker: &str) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let by = worker_id(&format!("oxiflow-cli-{}", std::process::id()))?;
    let asked = m.request_stop(&worker_id(worker)?, &by).await?;
    if ctx.json {
        return output::json(&StopReport { worker_id: worker.into(), asked });
    }
    match asked.len() {
        0 => println!("{worker} holds no leases"),
        n => {
            println!("asked {worker} to stop; it releases {n} lease(s) at its next write:");
            for key in asked {
                if let Ok(keys::DocKey::Partition(p, part)) = keys::parse(&key) {
                    println!("  {p}/{part}");
                }
            }
        }
    }
    Ok(())
}
