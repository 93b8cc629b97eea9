//! # oxiflow-wasm
//!
//! The very same core for browsers and Node.js. Everything crosses the
//! boundary as JSON text (documents, views, schedules, actions, responses)
//! or bytes (stored objects), typed for TypeScript by `src/types.d.ts`
//! (appended to the generated `oxiflow_wasm.d.ts`); errors are thrown as
//! JSON text `{"error": "<kind>", …}` (the core's error, serialized:
//! `CoreError`). The JSON is the core's own types serialized; only the
//! action envelope is this crate's (request bodies travel as bytes beside
//! it, not inside the JSON).
//!
//! - `decodePartition(bytes)`, `decodePipeline(bytes)`: checksum, format and
//!   invariants checked, like every other reader.
//! - `aggregate(pipelineJson, partitionsJson, nowMs)`: the dashboard view.
//! - `schedule(pipelineJson, partitionsJson, nowMs, worker, random)`: what
//!   may be claimed now, best first, and why every other partition waits.
//! - `Operation`: the sans-I/O drivers (create, claim, write, stop request)
//!   for JavaScript to drive with its own I/O (fetch, or the AWS SDK in a
//!   Lambda).
//! - `HolderSession`: the core's holder session (every write of a held
//!   partition: unresolved writes replayed first, stop requests honoured),
//!   driven the same way.
//!
//! - `judgeDeadline`, `deadlineConfig`, `Pace`, `handoff`, `takeoverAt`:
//!   holders with a hard deadline (a Lambda invocation): the core's rule
//!   for trusting a reported deadline, the lease capped there, another
//!   batch only while the longest fits, what a completion made ready.
//!
//!   These are feature `holder`: in the Node build and the npm package's
//!   browser build, not in the dashboard's bundle (it only reads).
//! - `runVectors(json)`, `benchCodec(n)`: the shared test vectors and the
//!   codec bench loop, run inside wasm (feature `testing`: in the Node build,
//!   not in the browser bundle).

use oxiflow_core::{
    aggregate as core_aggregate, codec, keys, schedule as core_schedule, Config, Error, LeaseConfig, PartitionDoc, PartitionId,
    PipelineDoc, StepPlan, Timestamp, WorkerId,
};
use serde::Deserialize;
use wasm_bindgen::prelude::*;

/// The JSON types (`types.d.ts`), appended to the generated `oxiflow_wasm.d.ts`.
#[wasm_bindgen(typescript_custom_section)]
const TYPES: &str = include_str!("types.d.ts");

fn js_error(e: impl serde::Serialize + std::fmt::Display) -> JsValue {
    JsValue::from_str(&serde_json::to_string(&e).unwrap_or_else(|_| e.to_string()))
}

fn json_error(what: &str, e: serde_json::Error) -> JsValue {
    js_error(Error::InvalidInput { reason: format!("{what}: {e}") })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, JsValue> {
    serde_json::to_string(value).map_err(|e| json_error("cannot serialize", e))
}

fn from_json<'a, T: Deserialize<'a>>(what: &str, text: &'a str) -> Result<T, JsValue> {
    serde_json::from_str(text).map_err(|e| json_error(what, e))
}

fn config(json: Option<String>) -> Result<Config, JsValue> {
    match json {
        Some(text) if !text.is_empty() => from_json("config", &text),
        _ => Ok(Config::default()),
    }
}

fn at(ms: f64) -> Timestamp {
    Timestamp::from_millis(ms as i64)
}

/// Decodes a stored partition document; returns a `PartitionDoc` as JSON.
#[wasm_bindgen(js_name = decodePartition)]
pub fn decode_partition(key: &str, bytes: &[u8]) -> Result<String, JsValue> {
    let doc: PartitionDoc = codec::decode(key, bytes, &Config::default().limits).map_err(js_error)?;
    to_json(&doc)
}

/// Decodes a stored pipeline document; returns a `PipelineDoc` as JSON.
#[wasm_bindgen(js_name = decodePipeline)]
pub fn decode_pipeline(key: &str, bytes: &[u8]) -> Result<String, JsValue> {
    let doc: PipelineDoc = codec::decode(key, bytes, &Config::default().limits).map_err(js_error)?;
    to_json(&doc)
}

/// The pipeline document and its partitions from JSON.
fn documents(pipeline_json: &str, partitions_json: &str) -> Result<(PipelineDoc, Vec<PartitionDoc>), JsValue> {
    Ok((from_json("pipeline document", pipeline_json)?, from_json("partition documents", partitions_json)?))
}

/// The aggregated view (`PipelineState` JSON) of a pipeline at `now_ms`, from documents already
/// decoded (and so checked) by `decodePipeline` / `decodePartition`:
/// `pipeline_json` one document, `partitions_json` an array of them.
#[wasm_bindgen]
pub fn aggregate(pipeline_json: &str, partitions_json: &str, now_ms: f64, config_json: Option<String>) -> Result<String, JsValue> {
    let config = config(config_json)?;
    let (doc, parts) = documents(pipeline_json, partitions_json)?;
    to_json(&core_aggregate(&doc, &parts, at(now_ms), &config).map_err(js_error)?)
}

/// The scheduler (`Schedule` JSON): which partitions `worker` may claim at
/// `now_ms`, best first, and the readiness of every partition. `worker`:
/// who asks (its own live leases are claimable again), or null; `random`
/// spreads workers over equally good partitions.
#[wasm_bindgen]
pub fn schedule(
    pipeline_json: &str,
    partitions_json: &str,
    now_ms: f64,
    worker: Option<String>,
    random: f64,
    config_json: Option<String>,
) -> Result<String, JsValue> {
    let config = config(config_json)?;
    let (doc, parts) = documents(pipeline_json, partitions_json)?;
    let worker = worker.map(WorkerId::new).transpose().map_err(js_error)?;
    to_json(&core_schedule(&doc, &parts, at(now_ms), worker.as_ref(), &config.lease, &config.schedule, random as u64))
}

/// A new `PipelineDoc` (JSON) with its plan (`StepPlan[]` JSON), refused
/// like the CLI refuses it (unknown steps, cycles, mismatched aligned
/// shards). Version 0: not stored yet.
#[wasm_bindgen(js_name = newPipeline)]
pub fn new_pipeline(pipeline: &str, run_id: &str, steps_json: &str, now_ms: f64) -> Result<String, JsValue> {
    let steps: Vec<StepPlan> = from_json("steps", steps_json)?;
    let doc =
        PipelineDoc::new(pipeline.parse().map_err(js_error)?, run_id.parse().map_err(js_error)?, steps, at(now_ms)).map_err(js_error)?;
    to_json(&doc)
}

/// A new, pending `PartitionDoc` (JSON) for a `create` operation.
#[wasm_bindgen(js_name = newPartition)]
pub fn new_partition(pipeline: &str, partition: &str, run_id: &str, now_ms: f64) -> Result<String, JsValue> {
    let doc = PartitionDoc::new(
        pipeline.parse().map_err(js_error)?,
        PartitionId::parse(partition).map_err(js_error)?,
        run_id.parse().map_err(js_error)?,
        at(now_ms),
    );
    to_json(&doc)
}

/// The storage key of a partition document.
#[wasm_bindgen(js_name = partitionKey)]
pub fn partition_key(pipeline: &str, partition: &str) -> Result<String, JsValue> {
    Ok(keys::partition_doc(&pipeline.parse().map_err(js_error)?, &PartitionId::parse(partition).map_err(js_error)?))
}

/// The storage key of a pipeline document.
#[wasm_bindgen(js_name = pipelineKey)]
pub fn pipeline_key(pipeline: &str) -> Result<String, JsValue> {
    Ok(keys::pipeline_doc(&pipeline.parse().map_err(js_error)?))
}

/// Where every pipeline's documents live (the listing prefix).
#[wasm_bindgen(js_name = pipelinesPrefix)]
pub fn pipelines_prefix() -> String {
    keys::PIPELINES_PREFIX.to_string()
}

/// What a stored key is, by the core's key layout: `{"pipeline": id}` for a
/// pipeline document, `{"pipeline": id, "partition": "step@shard"}` for a
/// partition document, `null` for anything else (history copies, foreign
/// objects).
#[wasm_bindgen(js_name = parseKey)]
pub fn parse_key(key: &str) -> Option<String> {
    #[derive(serde::Serialize)]
    struct Parsed {
        pipeline: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        partition: Option<String>,
    }
    let parsed = match keys::parse(key).ok()? {
        keys::DocKey::Pipeline(p) => Parsed { pipeline: p.to_string(), partition: None },
        keys::DocKey::Partition(p, part) => Parsed { pipeline: p.to_string(), partition: Some(part.to_string()) },
    };
    to_json(&parsed).ok()
}

/// How a `Lease` (JSON) looks to others at `now_ms`: `LeaseStatus` JSON.
#[wasm_bindgen(js_name = leaseStatus)]
pub fn lease_status(lease_json: &str, now_ms: f64, config_json: Option<String>) -> Result<String, JsValue> {
    let lease: oxiflow_core::Lease = from_json("lease", lease_json)?;
    let config: LeaseConfig = config(config_json)?.lease;
    to_json(&oxiflow_core::LeaseStatus::of(Some(&lease), at(now_ms), &config))
}

/// The codec bench's work (`oxiflow_core::fixture`), `iterations`
/// times, for timing from JavaScript against the same loop native
/// (`scripts/bench-wasm.sh`). Returns the bytes encoded, so nothing is
/// optimised away.
#[cfg(feature = "testing")]
#[wasm_bindgen(js_name = benchCodec)]
pub fn bench_codec(iterations: u32) -> f64 {
    use oxiflow_core::fixture;
    let (pipeline, partitions) = fixture::fixture();
    (0..iterations).map(|_| fixture::decode_validate_encode(&pipeline, &partitions) as f64).sum()
}

/// Runs a file of shared test vectors inside wasm; returns how many passed.
#[cfg(feature = "testing")]
#[wasm_bindgen(js_name = runVectors)]
pub fn run_vectors(json: &str) -> Result<u32, JsValue> {
    oxiflow_core::vectors::run_file(json).map(|n| n as u32).map_err(|e| JsValue::from_str(&e))
}

#[cfg(feature = "holder")]
mod deadline;
#[cfg(feature = "holder")]
mod holder;
#[cfg(feature = "holder")]
pub use deadline::{deadline_config, handoff, judge_deadline, takeover_at, JsPace};
#[cfg(feature = "holder")]
pub use holder::{adoption, check_claim_js, HolderSession, Operation};
