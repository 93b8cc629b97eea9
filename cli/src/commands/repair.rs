//! `oxiflow state cleanup|delete|restore`: an operator's repairs.

use oxiflow_core::PartitionDoc;
use serde::Serialize;

use super::{partitions_of, pipeline_id, worker_id, Ctx};
use crate::exit::Missing;
use crate::output;

/// `state cleanup --json`.
#[derive(Serialize)]
struct Cleaned {
    /// The leases released (with --dry-run: that would be released).
    keys: Vec<String>,
    dry_run: bool,
}

pub(crate) async fn cleanup(ctx: &Ctx, pipeline: Option<&str>, dry_run: bool) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let p = pipeline.map(pipeline_id).transpose()?;
    let keys = m.stale_leases(p.as_ref(), dry_run).await?;
    if ctx.json {
        return output::json(&Cleaned { keys, dry_run });
    }
    match (keys.len(), dry_run) {
        (0, _) => println!("no stale leases"),
        (n, true) => println!("{n} stale lease(s) would be released (dry run; nothing written):"),
        (n, false) => println!("released {n} stale lease(s):"),
    }
    keys.iter().for_each(|k| println!("  {k}"));
    Ok(())
}

/// `state delete --json`.
#[derive(Serialize)]
struct Deleted {
    pipeline_id: String,
    /// Documents deleted: the pipeline's, its partitions' and their history copies.
    deleted: usize,
}

pub(crate) async fn delete(ctx: &Ctx, pipeline: &str, force: bool) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let by = worker_id(&format!("oxiflow-cli-{}", std::process::id()))?;
    let deleted = m.delete_pipeline(&pipeline_id(pipeline)?, force, &by).await?;
    if ctx.json {
        return output::json(&Deleted { pipeline_id: pipeline.into(), deleted });
    }
    println!("deleted {pipeline} ({deleted} document(s))");
    Ok(())
}

/// Which kept copy `state restore` puts back.
pub(crate) enum Pick {
    /// The newest copy older than the stored document.
    Latest,
    /// The copy at this document version.
    Version(u64),
    /// The newest copy whose batch number is at most this: a rewind.
    Batch(u64),
}

pub(crate) async fn restore(ctx: &Ctx, pipeline: &str, step: &str, pick: Pick, force: bool) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let p = pipeline_id(pipeline)?;
    let doc = super::state::pipeline_doc(&m, &p).await?;
    let part = match partitions_of(&doc, step)?.as_slice() {
        [one] => one.clone(),
        many => {
            let names: Vec<String> = many.iter().map(ToString::to_string).collect();
            return Err(crate::exit::usage(format!("restore one partition at a time: {}", names.join(", "))));
        }
    };
    let kept = m.history(&p, &part).await?;
    if kept.is_empty() {
        return Err(Missing(format!(
            "no history kept for {p}/{part}: copies are kept when state.history.keep_last is above 0 in .oxiflow/config.yaml"
        ))
        .into());
    }
    // The stored version; a corrupt document has none we can read.
    let key = oxiflow_core::keys::partition_doc(&p, &part);
    let current = match m.read::<PartitionDoc>(&key).await {
        Ok(stored) => stored.map(|(d, _)| d.version),
        Err(oxiflow_backends::Error::Core(oxiflow_core::Error::Corrupt { .. })) => None,
        Err(e) => return Err(e.into()),
    };
    let versions = || kept.iter().map(|d| d.version.to_string()).collect::<Vec<_>>().join(", ");
    let copy: &PartitionDoc = match pick {
        Pick::Version(v) => kept
            .iter()
            .find(|d| d.version == v)
            .ok_or_else(|| Missing(format!("{p}/{part} has no kept copy at version {v}; kept: {}", versions())))?,
        Pick::Batch(b) => kept.iter().rev().find(|d| d.batch_number <= b).ok_or_else(|| {
            let batches = kept.iter().map(|d| d.batch_number.to_string()).collect::<Vec<_>>().join(", ");
            Missing(format!("{p}/{part} has no kept copy at batch {b} or before; kept batches: {batches}"))
        })?,
        // The newest copy older than the stored document (the newest copy is
        // the stored document itself).
        Pick::Latest => kept
            .iter()
            .rev()
            .find(|d| current.is_none_or(|c| d.version < c))
            .ok_or_else(|| Missing(format!("{p}/{part} has no kept copy older than its stored version; kept: {}", versions())))?,
    };
    let restored = m.restore_partition(copy, &kept, force).await?;
    if ctx.json {
        return output::json(&restored);
    }
    println!(
        "restored {p}/{part} from version {}{} (now version {}, epoch {}){}",
        restored.restored_version,
        if restored.replaced_corrupt { ", over the corrupt stored document" } else { "" },
        restored.version,
        restored.epoch,
        match restored.discarded_records {
            0 => String::new(),
            n => format!("; {n} acknowledged record(s) of the stored state were discarded"),
        }
    );
    Ok(())
}
