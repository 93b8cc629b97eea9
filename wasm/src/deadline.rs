//! Holders with a hard deadline (a Lambda invocation), for JavaScript: the
//! core's `Deadline` (`judgeDeadline`, `deadlineConfig`), `Pace` and
//! `handoff`, and when a held lease may be taken over (`takeoverAt`).
//! Feature `holder`, like the rest of the write side.

use core::time::Duration;

use oxiflow_core::{handoff as core_handoff, schedule as core_schedule, Deadline, Lease, LeaseConfig, Pace as CorePace, PartitionId};
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::{at, config, documents, from_json, js_error, to_json};

fn ms(d: Duration) -> f64 {
    d.as_millis() as f64
}

fn duration(ms: f64) -> Duration {
    Duration::from_millis(if ms.is_finite() && ms > 0.0 { ms as u64 } else { 0 })
}

/// Judges the deadline a platform reported (`reported_ms`, a Unix time in
/// ms, or null) at `now_ms`: `{"ends_at", "distrust"?, "message"?}`. Trusted
/// when ahead of now by at most 15 minutes; otherwise `ends_at` is one
/// configured lease (`config.lease.ttl_ms`) from now, `distrust` says why
/// (`{"reason": "missing" | "past" | "too_far", …}`) and `message` says it
/// in words, for the log.
#[wasm_bindgen(js_name = judgeDeadline)]
pub fn judge_deadline(reported_ms: Option<f64>, now_ms: f64, config_json: Option<String>) -> Result<String, JsValue> {
    #[derive(Serialize)]
    struct Judged {
        #[serde(flatten)]
        deadline: Deadline,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    }
    let config = config(config_json)?;
    let reported = reported_ms.filter(|m| m.is_finite()).map(at);
    let deadline = Deadline::judge(reported, at(now_ms), config.lease.ttl);
    to_json(&Judged { message: deadline.distrust.map(|d| d.to_string()), deadline })
}

/// The config (`CoreConfig` JSON) for a holder that must be done by
/// `ends_at_ms`, claiming at `now_ms`: its lease ttl is at least the whole
/// time to the deadline (no heartbeats needed), as
/// `StateManager::with_deadline` does. Pair with a claim carrying
/// `deadline: ends_at_ms` and a `HolderSession` given the same deadline:
/// they cap the lease at it.
#[wasm_bindgen(js_name = deadlineConfig)]
pub fn deadline_config(config_json: Option<String>, ends_at_ms: f64, now_ms: f64) -> Result<String, JsValue> {
    let mut config = config(config_json)?;
    let deadline = Deadline { ends_at: at(ends_at_ms), distrust: None };
    config.lease.ttl = config.lease.ttl.max(deadline.lease_ttl(at(now_ms)));
    to_json(&config)
}

/// When others may take over `lease_json` (a `Lease`): the first
/// millisecond past `expires_at + skew_allowance`, or null when it is
/// released (claimable now).
#[wasm_bindgen(js_name = takeoverAt)]
pub fn takeover_at(lease_json: &str, config_json: Option<String>) -> Result<Option<f64>, JsValue> {
    let lease: Lease = from_json("lease", lease_json)?;
    let config: LeaseConfig = config(config_json)?.lease;
    if lease.released_at.is_some() {
        return Ok(None);
    }
    Ok(Some(lease.expires_at.plus(config.skew_allowance).as_millis() as f64 + 1.0))
}

/// What to start once `completed` (`step` or `step@shard`) is done, as a
/// JSON array of partitions: those downstream of it that the scheduler,
/// run on the documents as read after the completion was stored, finds
/// ready now.
#[wasm_bindgen]
pub fn handoff(
    pipeline_json: &str,
    partitions_json: &str,
    now_ms: f64,
    completed: &str,
    config_json: Option<String>,
) -> Result<String, JsValue> {
    let config = config(config_json)?;
    let (doc, parts) = documents(pipeline_json, partitions_json)?;
    let completed = PartitionId::parse(completed).map_err(js_error)?;
    let schedule = core_schedule(&doc, &parts, at(now_ms), None, &config.lease, &config.schedule, 0);
    let ready: Vec<String> = core_handoff(&doc, &schedule, &completed).iter().map(|p| p.to_string()).collect();
    to_json(&ready)
}

/// The core's `Pace` for one holder with a deadline: record each batch's
/// duration (its work and its checkpoint); `anotherBatch(now)` says whether
/// one more is expected to end, leaving `margin_ms` for the release, before
/// the holder stops trusting its lease (`ends_at − safety_margin`).
#[wasm_bindgen(js_name = Pace)]
pub struct JsPace {
    pace: CorePace,
    deadline: Deadline,
    lease: LeaseConfig,
    margin: Duration,
}

#[wasm_bindgen(js_class = Pace)]
impl JsPace {
    /// `ends_at_ms`: the judged deadline's `ends_at`; `margin_ms`: the time
    /// one write (the release) takes.
    #[wasm_bindgen(constructor)]
    pub fn new(ends_at_ms: f64, margin_ms: f64, config_json: Option<String>) -> Result<JsPace, JsValue> {
        let lease = config(config_json)?.lease;
        Ok(JsPace {
            pace: CorePace::default(),
            deadline: Deadline { ends_at: at(ends_at_ms), distrust: None },
            lease,
            margin: duration(margin_ms),
        })
    }

    /// Records a batch that took `took_ms`.
    pub fn record(&mut self, took_ms: f64) {
        self.pace.record(duration(took_ms));
    }

    /// Whether another batch begun at `now_ms` is expected to end in time.
    #[wasm_bindgen(js_name = anotherBatch)]
    pub fn another_batch(&self, now_ms: f64) -> bool {
        self.pace.another_batch(&self.deadline, at(now_ms), &self.lease, self.margin)
    }

    /// The time (ms) a batch begun at `now_ms` may take; 0 when none is left.
    pub fn budget(&self, now_ms: f64) -> f64 {
        ms(self.pace.budget(&self.deadline, at(now_ms), &self.lease, self.margin))
    }

    /// The last moment (ms) a write may begin and still land while trusted.
    #[wasm_bindgen(js_name = lastWriteAt)]
    pub fn last_write_at(&self) -> f64 {
        self.deadline.last_write_at(&self.lease, self.margin).as_millis() as f64
    }

    /// What was measured: `{"longest_ms", "batches"}`.
    pub fn measured(&self) -> Result<String, JsValue> {
        to_json(&self.pace)
    }
}
