//! The write side, for JavaScript holders (the Node build; the browser
//! dashboard only reads): the action envelope, `Operation` and
//! `HolderSession`. Feature `holder`.

use oxiflow_core::{
    check_claim, Action, Claim, Committed, Config, Create, Drive, Error, Finish, PartitionDoc, PartitionId, PipelineDoc, Progress, Request,
    RequestStop, Response, Session, Update, Version, WorkerId, Write,
};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::{at, config, from_json, js_error, to_json};

// ---------- the action envelope ----------

/// A [`Request`] as JSON, without its body: the body of a put is read
/// with `body()` as bytes.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum WireRequest<'a> {
    Get { key: &'a str },
    PutIfAbsent { key: &'a str },
    PutIfMatch { key: &'a str, version: &'a Version },
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum WireOutcome<T> {
    Ok(T),
    Error(Error),
}

/// An [`Action`] as JSON: `{"send": …}`, `{"sleep_ms": n}` or `{"done": {"ok" | "error": …}}`.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum WireAction<'a, T> {
    Send(WireRequest<'a>),
    SleepMs(u64),
    Done(WireOutcome<T>),
}

/// Serializes `action`, keeping the body of a put in `body`.
fn action_json<T: Serialize>(action: Action<T>, body: &mut Vec<u8>) -> String {
    let (request, outcome);
    let wire = match action {
        Action::Send(r) => {
            request = r;
            WireAction::Send(match &request {
                Request::Get { key } => WireRequest::Get { key },
                Request::PutIfAbsent { key, body: b } => {
                    body.clone_from(b);
                    WireRequest::PutIfAbsent { key }
                }
                Request::PutIfMatch { key, body: b, version } => {
                    body.clone_from(b);
                    WireRequest::PutIfMatch { key, version }
                }
            })
        }
        Action::Sleep(d) => WireAction::SleepMs(d.as_millis() as u64),
        Action::Done(result) => {
            outcome = match result {
                Ok(t) => WireOutcome::Ok(t),
                Err(e) => WireOutcome::Error(e),
            };
            WireAction::Done(outcome)
        }
    };
    serde_json::to_string(&wire).unwrap_or_else(|e| format!(r#"{{"done":{{"error":{{"error":"protocol","reason":"{e}"}}}}}}"#))
}

/// A [`Response`] as JSON (the core's own serde form: `{"object":
/// {"version"}}` or `{"object": null}`, `{"written": version}`,
/// `"already_exists"`, `"precondition"`, `{"unavailable": {"reason"}}`); the
/// bytes of an object travel beside it.
fn response(json: &str, body: Option<Vec<u8>>) -> Result<Response, JsValue> {
    let mut response: Response = from_json("response", json)?;
    if let Response::Object(Some(object)) = &mut response {
        object.body = body.unwrap_or_default();
    }
    Ok(response)
}

// ---------- Operation ----------

/// Which operation an [`Operation`] drives, as JSON:
/// `{"create": <partition document>}` (see `newPartition`),
/// `{"claim": {"worker_id", "write_id", "adopt"?, "deadline"?}}` (`deadline`: ms, the lease ends there at the latest),
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

impl Driver {
    fn drive(&mut self) -> &mut dyn Drive<Output = Committed<PartitionDoc>> {
        match self {
            Driver::Create(u) => u.as_mut(),
            Driver::Claim(u) => u.as_mut(),
            Driver::Write(u) => u.as_mut(),
            Driver::RequestStop(u) => u.as_mut(),
        }
    }
}

/// A sans-I/O operation on one partition document, driven from JavaScript:
///
/// ```js
/// const op = new Operation(key, JSON.stringify({claim: {worker_id: "w1", write_id: 7}}));
/// let action = JSON.parse(op.start(Date.now()));
/// while (!("done" in action)) {
///   if ("sleep_ms" in action) { await sleep(action.sleep_ms); action = JSON.parse(op.wake(Date.now())); continue; }
///   const [response, bytes] = await perform(action.send, op.body());   // get / put_if_absent / put_if_match
///   action = JSON.parse(op.handle(JSON.stringify(response), bytes, Date.now(), Math.random() * 2 ** 32));
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
        let spec: OperationSpec = from_json("operation", operation_json)?;
        let cached = match (cached_doc_json, cached_version_json) {
            (Some(d), Some(v)) => Some((from_json::<PartitionDoc>("cached document", &d)?, from_json::<Version>("cached version", &v)?)),
            _ => None,
        };
        fn make<M: oxiflow_core::Mutation<Doc = PartitionDoc>>(
            key: &str,
            m: M,
            config: Config,
            cached: Option<(PartitionDoc, Version)>,
        ) -> Box<Update<M>> {
            Box::new(match cached {
                Some((doc, version)) => Update::from_cached(key, m, config, doc, version),
                None => Update::new(key, m, config),
            })
        }
        let driver = match spec {
            OperationSpec::Create(doc) => Driver::Create(make(key, Create(*doc), config, cached)),
            OperationSpec::Claim(m) => Driver::Claim(make(key, m, config, cached)),
            OperationSpec::Write(m) => Driver::Write(make(key, m, config, cached)),
            OperationSpec::RequestStop(m) => Driver::RequestStop(make(key, m, config, cached)),
        };
        Ok(Operation { driver, body: Vec::new() })
    }

    /// The body of the last `put_*` action.
    pub fn body(&self) -> Vec<u8> {
        self.body.clone()
    }

    /// The first action (JSON).
    pub fn start(&mut self, now_ms: f64) -> String {
        let action = self.driver.drive().start(at(now_ms));
        action_json(action, &mut self.body)
    }

    /// Feeds the store's answer; `object_body` carries the bytes of an
    /// `object` response.
    pub fn handle(&mut self, response_json: &str, object_body: Option<Vec<u8>>, now_ms: f64, random: f64) -> Result<String, JsValue> {
        let response = response(response_json, object_body)?;
        let action = self.driver.drive().handle(response, at(now_ms), random as u64);
        Ok(action_json(action, &mut self.body))
    }

    /// The next action after a `sleep_ms` (JSON).
    pub fn wake(&mut self, now_ms: f64) -> String {
        let action = self.driver.drive().wake(at(now_ms));
        action_json(action, &mut self.body)
    }
}

// ---------- HolderSession ----------

/// The claim's outcome (`done.ok` of a claim `Operation`), as JSON.
#[derive(Deserialize)]
struct ClaimedJson {
    doc: PartitionDoc,
    version: Version,
    #[serde(default)]
    wrote: bool,
    #[serde(default)]
    requests: u32,
}

/// A partition this process holds: the core's holder session. Every write
/// goes through it, so an unresolved write (response lost, store
/// unavailable) is replayed with its own write id before the next one, a
/// release whose response was lost is recognised, and a stop request
/// releases the lease (the outcome's `stop`). Driven like an `Operation`:
///
/// ```js
/// const held = HolderSession.claimed(key, JSON.stringify(claim.done.ok), null, Date.now());
/// let action = JSON.parse(held.write(JSON.stringify({add_records: 100}), null, writeId, Date.now()));
/// while (!("done" in action)) { … held.handle(…) / held.wake(…) … }
/// // action.done.ok: {landed, stop, requests}; held.doc(), held.version() as now stored
/// ```
#[wasm_bindgen]
pub struct HolderSession {
    session: Session<PartitionDoc>,
    body: Vec<u8>,
}

#[wasm_bindgen]
impl HolderSession {
    /// The session a landed claim starts: `claimed_json` is the claim
    /// operation's `done.ok` (`{"doc", "version", …}`). `deadline_ms`: the
    /// holder's hard deadline (a Lambda invocation's, as judged by
    /// `judgeDeadline`): no write extends the lease past it. Pair with a
    /// claim that carried the same `deadline`.
    pub fn claimed(
        key: &str,
        claimed_json: &str,
        config_json: Option<String>,
        now_ms: f64,
        deadline_ms: Option<f64>,
    ) -> Result<HolderSession, JsValue> {
        let config = config(config_json)?;
        let c: ClaimedJson = from_json("claimed", claimed_json)?;
        if c.doc.lease.is_none() {
            return Err(js_error(Error::InvalidInput { reason: format!("{key}: the document holds no lease to start a session from") }));
        }
        let committed = Committed { doc: c.doc, version: c.version, wrote: c.wrote, requests: c.requests };
        Ok(HolderSession { session: bounded(Session::claimed(key, committed, config, at(now_ms)), deadline_ms), body: Vec::new() })
    }

    /// Resumes `worker_id`'s session from a fresh read (`doc_json` as
    /// decoded, `version_json` the object's version), for short-lived
    /// processes. Throws `fenced` unless `worker_id` holds the lease.
    /// `deadline_ms` as for `claimed`.
    pub fn resume(
        key: &str,
        doc_json: &str,
        version_json: &str,
        worker_id: &str,
        config_json: Option<String>,
        now_ms: f64,
        deadline_ms: Option<f64>,
    ) -> Result<HolderSession, JsValue> {
        let config = config(config_json)?;
        let doc: PartitionDoc = from_json("document", doc_json)?;
        let version: Version = from_json("version", version_json)?;
        let worker = WorkerId::new(worker_id).map_err(js_error)?;
        let session = Session::resume(key, doc, version, &worker, config, at(now_ms)).map_err(js_error)?;
        Ok(HolderSession { session: bounded(session, deadline_ms), body: Vec::new() })
    }

    /// Begins a write: `progress_json` a `Progress` (`{}` or null: a
    /// heartbeat), `finish_json` null or a `Finish` (`"complete"`,
    /// `"release"`, `{"fail": {…}}`), `write_id` a fresh random number.
    /// Returns the first action.
    pub fn write(
        &mut self,
        progress_json: Option<String>,
        finish_json: Option<String>,
        write_id: f64,
        now_ms: f64,
    ) -> Result<String, JsValue> {
        let progress: Progress = match progress_json.as_deref() {
            None | Some("") | Some("null") => Progress::default(),
            Some(text) => from_json("progress", text)?,
        };
        let finish: Option<Finish> = match finish_json.as_deref() {
            None | Some("") => None,
            Some(text) => from_json("finish", text)?,
        };
        let action = self.session.begin(progress, finish, write_id as u64, at(now_ms));
        Ok(action_json(action, &mut self.body))
    }

    /// The body of the last `put_*` action.
    pub fn body(&self) -> Vec<u8> {
        self.body.clone()
    }

    /// Feeds the store's answer to the write in flight.
    pub fn handle(&mut self, response_json: &str, object_body: Option<Vec<u8>>, now_ms: f64, random: f64) -> Result<String, JsValue> {
        let response = response(response_json, object_body)?;
        let action = self.session.handle(response, at(now_ms), random as u64);
        Ok(action_json(action, &mut self.body))
    }

    /// Continues the write in flight after a `sleep_ms`.
    pub fn wake(&mut self, now_ms: f64) -> String {
        let action = self.session.wake(at(now_ms));
        action_json(action, &mut self.body)
    }

    /// The key of the held document.
    pub fn key(&self) -> String {
        self.session.key().to_string()
    }

    /// The document as last known to be stored (`PartitionDoc` JSON).
    pub fn doc(&self) -> Result<String, JsValue> {
        to_json(self.session.doc())
    }

    /// Its store version (`StoreVersion` JSON).
    pub fn version(&self) -> Result<String, JsValue> {
        to_json(self.session.version())
    }

    /// True once the lease is no longer ours (let go, or taken): write no more.
    #[wasm_bindgen(js_name = isReleased)]
    pub fn is_released(&self) -> bool {
        self.session.is_released()
    }

    /// True while a write's outcome is unknown; the next write replays it first.
    #[wasm_bindgen(js_name = isUnresolved)]
    pub fn is_unresolved(&self) -> bool {
        self.session.is_unresolved()
    }

    /// May the holder act outside the store (emit output) at `now_ms`?
    pub fn trusts(&self, now_ms: f64) -> bool {
        self.session.trusts(at(now_ms))
    }

    /// The hard deadline (ms) no write extends the lease past, or null.
    pub fn deadline(&self) -> Option<f64> {
        self.session.deadline().map(|d| d.as_millis() as f64)
    }

    /// When a heartbeat is due (ms): `heartbeat_interval` after the last stored write.
    #[wasm_bindgen(js_name = heartbeatDue)]
    pub fn heartbeat_due(&self) -> f64 {
        self.session.heartbeat_due().as_millis() as f64
    }
}

/// The session under a hard deadline, when one is given.
fn bounded(session: Session<PartitionDoc>, deadline_ms: Option<f64>) -> Session<PartitionDoc> {
    match deadline_ms.filter(|d| d.is_finite()) {
        Some(d) => session.with_deadline(at(d)),
        None => session,
    }
}

// ---------- resets: what a claim must check ----------

/// After a claim landed, read the pipeline document and ask this
/// (`ClaimCheck` JSON): `"current"` — keep working; `{"stale": adoption}` —
/// a reset committed: claim again with `adopt: adoption`; `{"locked":
/// {worker_id, until}}` — an operator is resetting: release and retry later.
#[wasm_bindgen(js_name = checkClaim)]
pub fn check_claim_js(pipeline_json: &str, claimed_doc_json: &str, now_ms: f64, config_json: Option<String>) -> Result<String, JsValue> {
    let config = config(config_json)?;
    let pipeline: PipelineDoc = from_json("pipeline document", pipeline_json)?;
    let claimed: PartitionDoc = from_json("claimed document", claimed_doc_json)?;
    to_json(&check_claim(&pipeline, &claimed, at(now_ms), &config.lease))
}

/// What a claim of `partition` adopts (`Adoption` JSON: `{run_id,
/// generation}`), for the `adopt` field of a claim made from a pipeline
/// document already read: a partition behind a reset is reset by the claim.
#[wasm_bindgen]
pub fn adoption(pipeline_json: &str, partition: &str) -> Result<String, JsValue> {
    let pipeline: PipelineDoc = from_json("pipeline document", pipeline_json)?;
    to_json(&pipeline.adoption(&PartitionId::parse(partition).map_err(js_error)?.step_id))
}
