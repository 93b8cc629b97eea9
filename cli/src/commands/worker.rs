//! `oxiflow worker start`: a real worker loop. It claims what the core's
//! scheduler says is ready (upstream steps completed, free or expired
//! lease, retry backoff over), runs `--exec CMD` per batch with the checkpoint
//! in its environment, checkpoints the JSON progress lines CMD prints, keeps
//! the lease alive in between, honours `worker stop`, and on SIGINT/SIGTERM
//! stops the batch, releases its lease and exits 0.
//!
//! CMD's protocol: it reads `OXIFLOW_LAST_PROCESSED_ID`, `OXIFLOW_BATCH_NUMBER`
//! and friends, and prints one JSON object per line:
//! `{"records": 100, "bytes": 5120, "failed": 0, "last_id": "order-100", "batch": 3, "error": "…", "done": true}`
//! (every field optional). Each line is checkpointed. Exit 0 with `done` (or
//! with no output at all) completes the step; exit 0 otherwise runs another
//! batch; a non-zero exit fails the step as retryable (retried after the
//! scheduler's backoff, failed for good after `max_attempts`); a line with
//! `"fail": "why"` (and `"retryable": false` to make it final) fails it.

use std::process::Stdio;
use std::time::Duration;

use oxiflow_backends::{Error as StoreError, Held, Next, Snapshot};
use oxiflow_core::{PipelineId, Progress, WorkerId};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::watch;

use super::{pipeline_id, worker_id, Ctx};

/// A log line on stderr. A worker keeps working (and releases its leases)
/// when nobody reads its output any more: a failed write is dropped.
macro_rules! say {
    ($($arg:tt)*) => {{
        super::live::line(&format!($($arg)*));
    }};
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgressLine {
    #[serde(default)]
    records: u64,
    #[serde(default)]
    failed: u64,
    #[serde(default)]
    bytes: u64,
    last_id: Option<String>,
    batch: Option<u64>,
    error: Option<String>,
    #[serde(default)]
    done: bool,
    /// Fail the step with this message (after saving this line's progress).
    fail: Option<String>,
    /// With `fail`: whether a later attempt may retry it (default true).
    retryable: Option<bool>,
}

/// How one partition's work ended.
enum Ended {
    Completed,
    Failed,
    /// Someone asked us to stop, or a signal came: leave.
    Stop,
    /// We lost the lease: try another partition.
    Lost,
}

fn signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("signal received: finishing the batch, then releasing");
        let _ = tx.send(true);
    });
    rx
}

/// `worker start --json`: what the worker did, printed once when it ends.
#[derive(Debug, Default, serde::Serialize)]
struct Report {
    worker_id: String,
    pipeline_id: String,
    /// Partitions claimed, and how each ended.
    claimed: u64,
    completed: u64,
    failed: u64,
    /// Lost (fenced, taken over) or dropped after an error.
    dropped: u64,
    /// Records this worker checkpointed.
    records: u64,
    /// `finished` (nothing left; `status` says how the pipeline ended) or
    /// `stopped` (a stop request or a signal).
    ended: &'static str,
    status: Option<oxiflow_core::StatusKind>,
}

pub(crate) async fn start(ctx: &Ctx, pipeline: &str, worker: Option<&str>, exec: &str) -> anyhow::Result<()> {
    let mut report = Report::default();
    super::live::start(ctx.json);
    let result = run(ctx, pipeline, worker, exec, &mut report).await;
    super::live::finish();
    if ctx.json && result.is_ok() {
        // A closed stdout must not stop a worker from ending cleanly.
        let _ = crate::output::json(&report);
    }
    result
}

async fn run(ctx: &Ctx, pipeline: &str, worker: Option<&str>, exec: &str, report: &mut Report) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let p = pipeline_id(pipeline)?;
    let me = match worker {
        Some(w) => worker_id(w)?,
        None => worker_id(&format!("worker-{}-{:04x}", std::process::id(), rand::random::<u16>()))?,
    };
    let stop = signals();
    (report.worker_id, report.pipeline_id, report.ended) = (me.to_string(), p.to_string(), "stopped");
    say!("{me}: working on {p} in {}", ctx.settings.url);
    // The pipeline's documents as last read: each poll is one LIST plus a
    // GET of what changed.
    let mut snapshot = Snapshot::new(p.clone()).keeping_damaged();
    let mut reported = std::collections::BTreeSet::new();
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let next = match m.claim_next(&mut snapshot, &me).await {
            Ok(next) => next,
            // Deleted, or never created (a typo): waiting would be forever.
            Err(e) if e.kind() == oxiflow_core::ErrorKind::NotFound => {
                return Err(crate::exit::Missing(format!(
                    "pipeline {p} does not exist in {} (deleted, or never created): create it with `oxiflow state create {p} …`, or check --pipeline",
                    ctx.settings.url
                ))
                .into());
            }
            // The store is down or slow: wait and ask again; the worker lives on.
            Err(e) if !ends_claiming(&e) => {
                say!("{me}: {e}; trying again");
                let mut stop = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let claimed = match next {
            Next::Claimed(c) => *c,
            Next::Finished(schedule) => {
                say!("{me}: nothing left to do in {p} ({})", schedule.status);
                (report.ended, report.status) = ("finished", Some(schedule.status));
                return Ok(());
            }
            Next::Wait(schedule) => {
                // A damaged document is reported once and skipped (the
                // scheduler sees it as missing); if nothing else can move,
                // waiting would be forever.
                let damaged = snapshot.damaged();
                for d in damaged.iter().filter(|d| reported.insert(d.key.clone())) {
                    say!("{me}: skipping a damaged document: {}", d.error);
                }
                if !damaged.is_empty() && schedule.is_stalled() {
                    let keys: Vec<_> = damaged.iter().map(|d| d.key.as_str()).collect();
                    return Err(oxiflow_core::Error::Corrupt {
                        key: keys.join(", "),
                        reason: format!(
                            "nothing else in {p} can run until it is repaired: restore it (`oxiflow state restore {p} STEP`) or import an export (`oxiflow state import --replace`)"
                        ),
                    }
                    .into());
                }
                super::live::status(format!("{p}: nothing ready yet; waiting"));
                // Upstream unfinished, leases held, or retries backing off:
                // wait for a change.
                let mut stop = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        let part = claimed.doc().partition_id();
        say!("{me}: claimed {p}/{part} (epoch {})", claimed.lease().epoch);
        report.claimed += 1;
        match work(&p, &me, m.keep(claimed), exec, stop.clone(), &mut report.records).await {
            Ok(Ended::Completed) => report.completed += 1,
            Ok(Ended::Failed) => report.failed += 1,
            Ok(Ended::Lost) => report.dropped += 1,
            Ok(Ended::Stop) => return Ok(()),
            // One partition's trouble (refused write, store hiccup, a batch
            // command that cannot start) drops that partition; the worker
            // goes on. Only a store it cannot use at all ends it.
            Err(e) if !e.downcast_ref::<StoreError>().is_some_and(ends_worker) => {
                report.dropped += 1;
                say!("{me}: {p}/{part}: {e:#}; dropping it and moving on");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Errors no other partition would escape: the store refuses us altogether.
fn ends_worker(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::AccessDenied { .. } | StoreError::MissingBucket { .. } | StoreError::InvalidUrl { .. } | StoreError::UnsafeStore { .. }
    )
}

/// A claim's refusals that no retry mends: those of [`ends_worker`], and a
/// damaged or refused pipeline document (a damaged partition document is
/// skipped by the snapshot instead).
fn ends_claiming(e: &StoreError) -> bool {
    ends_worker(e) || matches!(e.kind(), oxiflow_core::ErrorKind::Corrupt | oxiflow_core::ErrorKind::Invalid)
}

/// Runs batches on one held partition until it completes, fails, or we stop.
async fn work(
    p: &PipelineId,
    me: &WorkerId,
    held: Held,
    exec: &str,
    mut stop: watch::Receiver<bool>,
    records: &mut u64,
) -> anyhow::Result<Ended> {
    let mut live = super::live::Partition::new(format!("{p}/{}", held.doc().await.partition_id()));
    loop {
        let doc = held.doc().await;
        let part = doc.partition_id();
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(exec)
            .env("OXIFLOW_PIPELINE", p.as_str())
            .env("OXIFLOW_STEP", doc.step_id.as_str())
            .env("OXIFLOW_SHARD", doc.shard.map(|s| s.to_string()).unwrap_or_default())
            .env("OXIFLOW_PARTITION", part.to_string())
            .env("OXIFLOW_WORKER_ID", me.as_str())
            .env("OXIFLOW_LAST_PROCESSED_ID", doc.last_processed_id.clone().unwrap_or_default())
            .env("OXIFLOW_BATCH_NUMBER", doc.batch_number.to_string())
            .env("OXIFLOW_RECORDS_PROCESSED", doc.records_processed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run {exec:?}: {e}"))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut stderr = child.stderr.take().expect("piped");
        let (mut done, mut saw_output) = (false, false);
        loop {
            let line = tokio::select! {
                line = lines.next_line() => line?,
                _ = stop.changed() => {
                    // A signal: stop the batch (its unsaved part is redone by
                    // whoever claims next, from the bookmark) and release.
                    child.kill().await?;
                    held.release(Progress::default()).await?;
                    say!("{me}: released {p}/{part}; exiting");
                    return Ok(Ended::Stop);
                }
            };
            let Some(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            saw_output = true;
            let parsed: ProgressLine = match serde_json::from_str(&line) {
                Ok(l) => l,
                // Meant as progress but not understood: say so.
                Err(e) if line.trim_start().starts_with('{') => {
                    tracing::warn!("{p}/{part}: ignoring a line that is not progress JSON ({e}): {line}");
                    continue;
                }
                // The script's own output: shown with -vv.
                Err(_) => {
                    tracing::debug!("{p}/{part}: {line}");
                    continue;
                }
            };
            done |= parsed.done;
            let progress = Progress {
                last_processed_id: parsed.last_id,
                batch_number: parsed.batch,
                add_records: parsed.records,
                add_failed: parsed.failed,
                add_bytes: parsed.bytes,
                errors: parsed.error.into_iter().collect(),
                ..Progress::default()
            };
            if let Some(message) = parsed.fail {
                // The script gives up on the step: save this line's progress
                // and fail it in one write.
                child.kill().await?;
                let retryable = parsed.retryable.unwrap_or(true);
                say!("{me}: {p}/{part} failed ({}): {message}", if retryable { "retryable" } else { "for good" });
                held.fail(progress, message, retryable).await?;
                return Ok(Ended::Failed);
            }
            let added = progress.add_records;
            let written = held.checkpoint(progress).await;
            if written.is_ok() {
                live.checkpointed(added, held.doc().await.lease.map(|l| l.expires_at.as_millis()));
            }
            match written {
                Ok(oxiflow_core::Written { stop: Some(stop), .. }) => {
                    say!("{me}: stop requested by {}; released {p}/{part}", stop.requested_by);
                    return Ok(Ended::Stop);
                }
                Ok(_) => {
                    *records += added;
                    tracing::info!("{me}: checkpointed {p}/{part}: +{added} records");
                }
                Err(StoreError::Core(e @ (oxiflow_core::Error::Fenced { .. } | oxiflow_core::Error::Expired { .. }))) => {
                    say!("{me}: {e}");
                    return Ok(Ended::Lost);
                }
                // Unknown whether it landed: the session replays it before
                // the next write; keep going.
                Err(e @ StoreError::Unavailable { .. }) => say!("{me}: {p}/{part}: {e}; the next write settles it"),
                // The script reported something the step cannot take (a
                // batch number going backwards, an oversized bookmark): fail
                // the step for good, with the reason.
                Err(StoreError::Core(e)) if e.kind() == oxiflow_core::ErrorKind::Invalid => {
                    child.kill().await?;
                    let message = format!("{exec:?} reported progress the step refused: {e}");
                    say!("{me}: {p}/{part} failed: {message}");
                    held.fail(Progress::default(), message, false).await?;
                    return Ok(Ended::Failed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let status = child.wait().await?;
        let mut err_text = String::new();
        stderr.read_to_string(&mut err_text).await?;
        if !status.success() {
            let last = err_text.lines().last().unwrap_or("").to_string();
            let message = format!("{exec:?} exited with {status}: {last}");
            say!("{me}: {p}/{part} failed: {message}");
            held.fail(Progress::default(), message, true).await?;
            return Ok(Ended::Failed);
        }
        if done || !saw_output {
            let doc = held.complete(Progress::default()).await?;
            say!("{me}: completed {p}/{part} ({} records)", doc.records_processed);
            return Ok(Ended::Completed);
        }
    }
}
