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
    probe: oxiflow_backends::ProbeReport,
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let m = ctx.manager()?;
    let probe = m.probe().await?;
    let l = &ctx.settings.core.lease;
    let report = Doctor {
        store: ctx.settings.url.clone(),
        config_file: ctx.settings.config_file.as_ref().map(|p| p.display().to_string()),
        lease_ttl_ms: l.ttl.as_millis(),
        heartbeat_interval_ms: l.heartbeat_interval.as_millis(),
        skew_allowance_ms: l.skew_allowance.as_millis(),
        probe,
    };
    if ctx.json {
        return output::json(&report);
    }
    println!("store        {}", report.store);
    println!("config       {}", report.config_file.as_deref().unwrap_or("(none: built-in defaults)"));
    println!("lease        ttl {:?}, heartbeat every {:?}, skew allowance {:?}", l.ttl, l.heartbeat_interval, l.skew_allowance);
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
