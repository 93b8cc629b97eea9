//! `oxiflow state export|import|copy`: moving pipelines between stores.

use std::path::Path;

use oxiflow_backends::Export;
use serde::Serialize;

use super::{pipeline_id, Ctx};
use crate::exit::usage;
use crate::output;

pub(crate) async fn export(ctx: &Ctx, pipeline: &str, output: Option<&Path>) -> anyhow::Result<()> {
    let export = ctx.manager()?.export(&pipeline_id(pipeline)?).await?;
    let text = serde_json::to_string_pretty(&export)?;
    match output {
        Some(path) => {
            std::fs::write(path, text + "\n").map_err(|e| usage(format!("cannot write {}: {e}", path.display())))?;
            if !ctx.json {
                eprintln!("exported {} ({} partitions) to {}", pipeline, export.partitions.len(), path.display());
            }
        }
        None => println!("{text}"),
    }
    Ok(())
}

pub(crate) async fn import(ctx: &Ctx, pipeline: &str, from: &Path, replace: bool, force: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(from).map_err(|e| usage(format!("cannot read {}: {e}", from.display())))?;
    let export: Export = serde_json::from_str(&text).map_err(|e| usage(format!("{} is not an oxiflow export: {e}", from.display())))?;
    if export.pipeline.pipeline_id.as_str() != pipeline {
        return Err(usage(format!("{} holds pipeline {}, not {pipeline}", from.display(), export.pipeline.pipeline_id)));
    }
    let imported = ctx.manager()?.import(&export, replace, force).await?;
    if ctx.json {
        return output::json(&imported);
    }
    let verb = if imported.replaced { "replaced" } else { "imported" };
    eprintln!("{verb} {pipeline} ({} partitions){}", imported.partitions, discarded(imported.discarded_records));
    Ok(())
}

pub(crate) fn discarded(records: u64) -> String {
    match records {
        0 => String::new(),
        n => format!("; {n} acknowledged record(s) of the replaced state were discarded"),
    }
}

/// `state copy --json`.
#[derive(Serialize)]
struct Copied {
    /// The pipelines copied.
    pipelines: Vec<String>,
    /// The same list, under its first name (kept: fields are never renamed).
    keys: Vec<String>,
    discarded_records: u64,
}

pub(crate) async fn copy(ctx: &Ctx, to: &str, pipelines: &[String], replace: bool, force: bool) -> anyhow::Result<()> {
    let source = ctx.manager()?;
    let target = ctx.settings.at(to, &std::env::current_dir()?)?.open()?;
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
        let names: Vec<String> = all.iter().map(ToString::to_string).collect();
        return output::json(&Copied { pipelines: names.clone(), keys: names, discarded_records });
    }
    println!("copied {} pipeline(s) to {}{}", all.len(), target.store().describe(), discarded(discarded_records));
    Ok(())
}
