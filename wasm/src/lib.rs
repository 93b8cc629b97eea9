//! # oxiflow-wasm
//!
//! The very same core for browsers and Node.js. Everything crosses the
//! boundary as JSON text (documents, views, actions, responses) or bytes
//! (stored objects), typed for TypeScript by `src/types.d.ts` (appended to
//! the generated `oxiflow_wasm.d.ts`); errors are thrown as JSON text
//! `{"error": "<kind>", …}` (the core's error, serialized: `CoreError`).
//!
//! - `decodePartition(bytes)`, `decodePipeline(bytes)`: checksum, format and
//!   invariants checked, like every other reader.
//! - `aggregate(pipelineJson, partitionsJson, nowMs)`: the dashboard view.
//! - `Operation`: the sans-I/O drivers (claim, checkpoint, heartbeat,
//!   release, complete, fail, stop request) for JavaScript to drive with its
//!   own I/O (fetch, or the AWS SDK in a Lambda).
//! - `runVectors(json)`, `benchCodec(n)`: the shared test vectors and the
//!   codec bench loop, run inside wasm (feature `testing`: in the Node build,
//!   not in the browser bundle).

use oxiflow_core::{
    aggregate as core_aggregate, codec, keys, Action, Claim, Config, Create, LeaseConfig, PartitionDoc, PartitionId, PipelineDoc,
    RequestStop, Response, Timestamp, Update, Version, Write,
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
    JsValue::from_str(&serde_json::json!({ "error": "invalid_input", "reason": format!("{what}: {e}") }).to_string())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, JsValue> {
    serde_json::to_string(value).map_err(|e| json_error("cannot serialize", e))
}

fn config(json: Option<String>) -> Result<Config, JsValue> {
    match json {
        Some(text) if !text.is_empty() => serde_json::from_str(&text).map_err(|e| json_error("config", e)),
        _ => Ok(Config::default()),
    }
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

/// The aggregated view (`PipelineState` JSON) of a pipeline at `now_ms`, from documents already
/// decoded (and so checked) by `decodePipeline` / `decodePartition`:
/// `pipeline_json` one document, `partitions_json` an array of them.
#[wasm_bindgen]
pub fn aggregate(pipeline_json: &str, partitions_json: &str, now_ms: f64, config_json: Option<String>) -> Result<String, JsValue> {
    let config = config(config_json)?;
    let doc: PipelineDoc = serde_json::from_str(pipeline_json).map_err(|e| json_error("pipeline document", e))?;
    let parts: Vec<PartitionDoc> = serde_json::from_str(partitions_json).map_err(|e| json_error("partition documents", e))?;
    let view = core_aggregate(&doc, &parts, Timestamp::from_millis(now_ms as i64), &config.lease, config.limits.errors_keep_last)
        .map_err(js_error)?;
    to_json(&view)
}

/// A new, pending `PartitionDoc` (JSON) for a `create` operation.
#[wasm_bindgen(js_name = newPartition)]
pub fn new_partition(pipeline: &str, partition: &str, run_id: &str, now_ms: f64) -> Result<String, JsValue> {
    let doc = PartitionDoc::new(
        pipeline.parse().map_err(js_error)?,
        PartitionId::parse(partition).map_err(js_error)?,
        run_id.parse().map_err(js_error)?,
        Timestamp::from_millis(now_ms as i64),
    );
    to_json(&doc)
}

/// The storage key of a partition document.
#[wasm_bindgen(js_name = partitionKey)]
pub fn partition_key(pipeline: &str, partition: &str) -> Result<String, JsValue> {
    Ok(keys::partition_doc(&pipeline.parse().map_err(js_error)?, &PartitionId::parse(partition).map_err(js_error)?))
}

/// How a `Lease` (JSON) looks to others at `now_ms`: `LeaseStatus` JSON.
#[wasm_bindgen(js_name = leaseStatus)]
pub fn lease_status(lease_json: &str, now_ms: f64, config_json: Option<String>) -> Result<String, JsValue> {
    let lease: oxiflow_core::Lease = serde_json::from_str(lease_json).map_err(|e| json_error("lease", e))?;
    let config: LeaseConfig = config(config_json)?.lease;
    to_json(&oxiflow_core::LeaseStatus::of(Some(&lease), Timestamp::from_millis(now_ms as i64), &config))
}

#[cfg(feature = "testing")]
#[path = "../../core/benches/support/fixture.rs"]
mod fixture;

/// The codec bench's work (`core/benches/support/fixture.rs`), `iterations`
/// times, for timing from JavaScript against the same loop native
/// (`scripts/bench-wasm.sh`). Returns the bytes encoded, so nothing is
/// optimised away.
#[cfg(feature = "testing")]
#[wasm_bindgen(js_name = benchCodec)]
pub fn bench_codec(iterations: u32) -> f64 {
    let (pipeline, partitions) = fixture::fixture();
    (0..iterations).map(|_| fixture::decode_validate_encode(&pipeline, &partitions) as f64).sum()
}

/// Runs a file of shared test vectors inside wasm; returns how many passed.
#[cfg(feature = "testing")]
#[wasm_bindgen(js_name = runVectors)]
pub fn run_vectors(json: &str) -> Result<u32, JsValue> {
    oxiflow_core::vectors::run_file(json).map(|n| n as u32).map_err(|e| JsValue::from_str(&e))
}

/// Which operation an [`Operation`] drives, as JSON:
/// `{"create": <partition document>}` (see `newPartition`),
/// `{"claim": {"worker_id", "write_id"}}`,
/// `{"write": {"holder": {"worker_id", "epoch", "last_write"}, "write_id", "progress": {…}, "finish": "complete" | "release" | {"fail": {…}}}}`,
/// `{"request_stop": {"worker_id", "requested_by"}}`.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum OperationSpec {
    Create(Box<PartitionDoc>),
    Claim(Claim<PartitionDoc>),
    Write(Write<PartitionDoc>),
    RequestStop(RequestStop<PartitionDoc>),
}

/// Boxed: the drivers hold whole documents and differ in size.
enum Driver {
    Create(Box<Update<Create<PartitionDoc>>>),
    Claim(Box<Update<Claim<PartitionDoc>>>),
    Write(Box<Update<Write<PartitionDoc>>>),
    RequestStop(Box<Update<RequestStop<PartitionDoc>>>),
}

/// A sans-I/O operation on one partition document, driven from JavaScript:
///
/// ```js
/// const op = new Operation(key, JSON.stringify({claim: {worker_id: "w1", write_id: 7}}));
/// let action = JSON.parse(op.start(Date.now()));
/// while (!("done" in action)) {
///   if ("sleep_ms" in action) { await sleep(action.sleep_ms); action = JSON.parse(op.wake(Date.now())); continue; }
///   const response = await perform(action.send, op.body());   // get / put_if_absent / put_if_match
///   action = JSON.parse(op.handle(JSON.stringify(response), bodyOrNull, Date.now(), Math.random() * 2 ** 32));
/// }
/// ```
///
/// Actions: `{"send": {"get": {"key"}}}`, `{"send": {"put_if_absent": {"key"}}}`
/// or `{"send": {"put_if_match": {"key", "version": {"e_tag", "version"}}}}`
/// (the body to write is `op.body()`), `{"sleep_ms": n}`, `{"done": {"ok":
/// {"doc", "version", "wrote", "requests"}}}` or `{"done": {"error": {…}}}`.
/// Responses: `{"object": {"version": {…}}}` with the bytes passed beside
/// it, `{"object": null}`, `{"written": {"e_tag", "version"}}`,
/// `"already_exists"`, `"precondition"`, `{"unavailable": {"reason"}}`.
#[wasm_bindgen]
pub struct Operation {
    driver: Driver,
    body: Vec<u8>,
}

fn action_json<D: serde::Serialize>(action: Action<D>, body: &mut Vec<u8>) -> String {
    use oxiflow_core::Request;
    let value = match action {
        Action::Send(Request::Get { key }) => serde_json::json!({ "send": { "get": { "key": key } } }),
        Action::Send(Request::PutIfAbsent { key, body: b }) => {
            *body = b;
            serde_json::json!({ "send": { "put_if_absent": { "key": key } } })
        }
        Action::Send(Request::PutIfMatch { key, body: b, version }) => {
            *body = b;
            serde_json::json!({ "send": { "put_if_match": { "key": key, "version": version } } })
        }
        Action::Sleep(d) => serde_json::json!({ "sleep_ms": d.as_millis() as u64 }),
        Action::Done(Ok(c)) => {
            serde_json::json!({ "done": { "ok": { "doc": c.doc, "version": c.version, "wrote": c.wrote, "requests": c.requests } } })
        }
        Action::Done(Err(e)) => serde_json::json!({ "done": { "error": e } }),
    };
    value.to_string()
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ResponseSpec {
    Object(Option<ObjectSpec>),
    Written(Version),
    AlreadyExists,
    Precondition,
    Unavailable { reason: String },
}

#[derive(Deserialize)]
struct ObjectSpec {
    version: Version,
}

/// Runs the same call on whichever driver this operation holds.
macro_rules! each_driver {
    ($self:ident, |$u:ident| $call:expr) => {
        match &mut $self.driver {
            Driver::Create($u) => action_json($call, &mut $self.body),
            Driver::Claim($u) => action_json($call, &mut $self.body),
            Driver::Write($u) => action_json($call, &mut $self.body),
            Driver::RequestStop($u) => action_json($call, &mut $self.body),
        }
    };
}

#[wasm_bindgen]
impl Operation {
    /// `cached_doc_json` + `cached_version_json`: start from a cached
    /// document (a checkpoint is then one PUT); omit both to read first.
    #[wasm_bindgen(constructor)]
    pub fn new(
        key: &str,
        operation_json: &str,
        config_json: Option<String>,
        cached_doc_json: Option<String>,
        cached_version_json: Option<String>,
    ) -> Result<Operation, JsValue> {
        let config = config(config_json)?;
        let spec: OperationSpec = serde_json::from_str(operation_json).map_err(|e| json_error("operation", e))?;
        let cached = match (cached_doc_json, cached_version_json) {
            (Some(d), Some(v)) => Some((
                serde_json::from_str::<PartitionDoc>(&d).map_err(|e| json_error("cached document", e))?,
                serde_json::from_str::<Version>(&v).map_err(|e| json_error("cached version", e))?,
            )),
            _ => None,
        };
        fn make<M: oxiflow_core::Mutation<Doc = PartitionDoc>>(
            key: &str,
            m: M,
            config: Config,
            cached: Option<(PartitionDoc, Version)>,
        ) -> Update<M> {
            match cached {
                Some((doc, version)) => Update::from_cached(key, m, config, doc, version),
                None => Update::new(key, m, config),
            }
        }
        let driver = match spec {
            OperationSpec::Create(doc) => Driver::Create(Box::new(make(key, Create(*doc), config, cached))),
            OperationSpec::Claim(m) => Driver::Claim(Box::new(make(key, m, config, cached))),
            OperationSpec::Write(m) => Driver::Write(Box::new(make(key, m, config, cached))),
            OperationSpec::RequestStop(m) => Driver::RequestStop(Box::new(make(key, m, config, cached))),
        };
        Ok(Operation { driver, body: Vec::new() })
    }

    /// The body of the last `put_*` action.
    pub fn body(&self) -> Vec<u8> {
        self.body.clone()
    }

    pub fn start(&mut self, now_ms: f64) -> String {
        let now = Timestamp::from_millis(now_ms as i64);
        each_driver!(self, |u| u.start(now))
    }

    /// Feeds the store's answer; `object_body` carries the bytes of an
    /// `object` response.
    pub fn handle(&mut self, response_json: &str, object_body: Option<Vec<u8>>, now_ms: f64, random: f64) -> Result<String, JsValue> {
        let spec: ResponseSpec = serde_json::from_str(response_json).map_err(|e| json_error("response", e))?;
        let response = match spec {
            ResponseSpec::Object(None) => Response::Object(None),
            ResponseSpec::Object(Some(o)) => {
                Response::Object(Some(oxiflow_core::Object { body: object_body.unwrap_or_default(), version: o.version }))
            }
            ResponseSpec::Written(v) => Response::Written(v),
            ResponseSpec::AlreadyExists => Response::AlreadyExists,
            ResponseSpec::Precondition => Response::Precondition,
            ResponseSpec::Unavailable { reason } => Response::Unavailable { reason },
        };
        let (now, random) = (Timestamp::from_millis(now_ms as i64), random as u64);
        Ok(each_driver!(self, |u| u.handle(response, now, random)))
    }

    pub fn wake(&mut self, now_ms: f64) -> String {
        let now = Timestamp::from_millis(now_ms as i64);
        each_driver!(self, |u| u.wake(now))
    }
}
