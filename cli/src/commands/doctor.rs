//! `oxiflow doctor`: settings, and a probe of the store's conditional writes.

use serde::Serialize;

use super::Ctx;
use crate::output;

#[derive(Serialize)]
struct Doctor {
    store: String,
    config_file: Option<String>,
    lease_ttl_ms: u128,
    heartbeat_interval_ms: u128,
    skew_allowance_ms: u128,
    /// `state_manager.stale_worker_timeout`, when configured (kept, not used: docs/cli.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    stale_worker_timeout_ms: Option<u128>,
    /// `state_manager.checkpoint_interval`, when configured (kept, not used: docs/cli.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint_interval_ms: Option<u128>,
    probe: oxiflow_backends::ProbeReport,
}

pub(crate) async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let probe = m.probe().await?;
    let l = &ctx.settings.core.lease;
    let report = Doctor {
        // The store's own description: never a password from the URL.
        store: m.store().describe().to_string(),
        config_file: ctx.settings.config_file.as_ref().map(|p| p.display().to_string()),
        lease_ttl_ms: l.ttl.as_millis(),
        heartbeat_interval_ms: l.heartbeat_interval.as_millis(),
        skew_allowance_ms: l.skew_allowance.as_millis(),
        stale_worker_timeout_ms: ctx.settings.stale_worker_timeout.map(|d| d.as_millis()),
        checkpoint_interval_ms: ctx.settings.checkpoint_interval.map(|d| d.as_millis()),
        probe,
    };
    if ctx.json {
        return output::json(&report);
    }
    println!("store        {}", report.store);
    println!("config       {}", report.config_file.as_deref().unwrap_or("(none: built-in defaults)"));
    println!("lease        ttl {:?}, heartbeat every {:?}, skew allowance {:?}", l.ttl, l.heartbeat_interval, l.skew_allowance);
    if let Some(d) = ctx.settings.stale_worker_timeout {
        println!("stale        stale_worker_timeout {d:?} is kept but not used: `state cleanup --stale-workers` frees leases expired past the skew allowance");
    }
    if let Some(d) = ctx.settings.checkpoint_interval {
        println!("checkpoints  checkpoint_interval {d:?} is kept but not used: workers checkpoint when a batch reports progress");
    }
    println!("create-only  ok (a second If-None-Match: * create was refused)");
    println!("compare-swap ok (an If-Match update with a stale version was refused)");
    println!("versions     {}", if report.probe.generations { "generations" } else { "ETags" });
    match report.probe.clock_skew_ms {
        None => println!("clock        the store shares this machine's clock"),
        Some(skew) if report.probe.clock_skew_exceeds_allowance => println!(
            "clock        {}",
            output::warn(&format!(
                "the store's clock is {skew} ms {} ours, beyond the {:?} skew allowance: fix the clock (NTP) or raise state.skew_allowance",
                if skew > 0 { "ahead of" } else { "behind" },
                l.skew_allowance
            ))
        ),
        Some(skew) => println!("clock        within {skew} ms of the store's (object stores keep whole seconds)"),
    }
    Ok(())
}
