//! The shared test-vector runner. A vector is a JSON object that scripts one
//! operation against one partition document: the operation, the document
//! the driver starts from, and the exchanges — each the action the driver
//! must take and the store's answer — then the outcome. Core's tests run the
//! folder `core/vectors/`, and the wasm package runs the same files in Node
//! and in a browser.
//!
//! Documents in a vector are written as the fields that differ from the
//! file's `base` document (a shallow merge: `{...base, ...doc}`). Expected
//! documents match when every field they list equals the actual field.
//!
//! ```json
//! { "name": "claim of a pending step",
//!   "operation": { "claim": { "worker_id": "w1", "write_id": 11 } },
//!   "exchanges": [
//!     { "now": 5000, "expect": { "get": {} }, "respond": { "object": { "doc": {}, "e_tag": "\"a\"" } } },
//!     { "expect": { "put_if_match": { "e_tag": "\"a\"", "doc": { "attempts": 1 } } },
//!       "respond": { "written": { "e_tag": "\"b\"" } } } ],
//!   "outcome": { "ok": { "wrote": true, "requests": 2, "doc": { "version": 2 } } } }
//! ```
//!
//! A file's `kind` says what its vectors script (absent: `"update"`, the
//! format above):
//!
//! - `"schedule"`: the scheduler. Each vector lists partition documents
//!   (merged over `base`), the pipeline document (the file's `pipeline`, with
//!   the vector's `pipeline` fields merged over it), `now`, the asking
//!   `worker` and `random`; `expect` lists fields of the serialized
//!   [`crate::Schedule`] that must be equal (`status`, `current_step`,
//!   `frontier`, `claimable` in order), and `readiness` (partition → its
//!   exact serialized [`crate::Readiness`]), `steps` (step → fields of its
//!   [`crate::StepReadiness`]), `claimable_any_order` and `finished`.
//! - `"session"`: a holder [`crate::Session`], started from a landed claim
//!   (`start.claimed`) or a fresh read (`start.resume`, perhaps refused), then
//!   `calls`: each `begin`s a write (`progress`, `finish`, `write_id`) at
//!   `now`, plays its exchanges like an update vector, and expects its
//!   `outcome` (`ok`: `landed`, `stop`, `requests`; or `error`) — or, with
//!   `abandon` (its last request sent, never answered), drops the write
//!   mid-flight — then checks the session `after`
//!   it: `unresolved`, `released`, `doc`, `e_tag`, `trusts` at given times,
//!   `heartbeat_due`.
//!
//! ```json
//! { "kind": "session", "key": "…", "base": { … },
//!   "vectors": [ { "name": "checkpoint: one PUT",
//!     "start": { "claimed": { "now": 5000, "e_tag": "\"b\"", "doc": { … } } },
//!     "calls": [ { "begin": { "write_id": 12, "progress": { "add_records": 5 } }, "now": 6000,
//!       "exchanges": [ { "expect": { "put_if_match": { "e_tag": "\"b\"", "doc": {} } }, "respond": { "written": { "e_tag": "\"c\"" } } } ],
//!       "outcome": { "ok": { "landed": true, "stop": null, "requests": 1 } },
//!       "after": { "unresolved": false, "e_tag": "\"c\"" } } ] } ] }
//! ```

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::codec;
use crate::doc::{PartitionDoc, PipelineDoc};
use crate::id::WorkerId;
use crate::ops::{Claim, Create, Operator, RequestStop, Write};
use crate::protocol::{Action, Committed, Config, Drive, Mutation, Object, Request, Response, Update, Version};
use crate::schedule::schedule;
use crate::session::{Session, Written};
use crate::step::{Finish, Progress};
use crate::time::Timestamp;

/// A file of vectors sharing one base document and config.
#[derive(Debug, Deserialize)]
pub struct VectorFile {
    /// The document every vector's documents are merged over.
    pub base: Map<String, Value>,
    /// Settings for every vector that does not bring its own.
    #[serde(default)]
    pub config: Config,
    /// The store key the operations write.
    pub key: String,
    /// The scripted operations.
    pub vectors: Vec<Vector>,
}

/// One scripted operation: what it is, what it exchanges, how it ends.
#[derive(Debug, Deserialize)]
pub struct Vector {
    /// Names the vector in failures.
    pub name: String,
    /// The mutation to drive.
    pub operation: Operation,
    /// The document and e_tag the driver starts from; without it, it reads first.
    #[serde(default)]
    pub cached: Option<StoredDoc>,
    /// Replaces the file's config for this vector.
    #[serde(default)]
    pub config: Option<Config>,
    /// When the operation starts, if not at its first exchange (one that
    /// is decided before any request has none).
    #[serde(default)]
    pub now: Option<i64>,
    /// Each request the driver must make, and the store's answer, in order.
    pub exchanges: Vec<Exchange>,
    /// How the operation must end.
    pub outcome: Outcome,
}

/// The mutation a vector drives.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// [`Create`] of this document, merged over `base`.
    Create(Map<String, Value>),
    /// A [`Claim`].
    Claim(Claim<PartitionDoc>),
    /// A holder's [`Write`].
    Write(Write<PartitionDoc>),
    /// A [`RequestStop`].
    RequestStop(RequestStop<PartitionDoc>),
    /// An [`Operator`] change.
    Operator(Operator),
}

/// A document as stored, with its ETag.
#[derive(Debug, Deserialize)]
pub struct StoredDoc {
    /// Fields merged over the file's `base`.
    pub doc: Map<String, Value>,
    /// Its version in the store.
    pub e_tag: String,
}

/// One step of the driver: the action it must take, and the answer.
#[derive(Debug, Deserialize)]
pub struct Exchange {
    /// Defaults to the previous exchange's `now` (the first: 0).
    #[serde(default)]
    pub now: Option<i64>,
    /// The randomness passed with the answer (retry jitter).
    #[serde(default)]
    pub random: u64,
    /// The action the driver must take.
    pub expect: Expect,
    /// The store's answer; absent after a sleep.
    #[serde(default)]
    pub respond: Option<Respond>,
}

/// The action a driver must take; a document matches on the fields listed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// A read of the key.
    Get {},
    /// A create-only write.
    PutIfAbsent {
        /// Fields the written document must have.
        doc: Map<String, Value>,
    },
    /// A conditional replace.
    PutIfMatch {
        /// The version it must be conditioned on.
        e_tag: String,
        /// Fields the written document must have.
        doc: Map<String, Value>,
    },
    /// A backoff sleep.
    Sleep {
        /// Its exact length.
        ms: u64,
    },
}

/// The store's scripted answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Respond {
    /// The object read, or null when absent.
    Object(Option<StoredDoc>),
    /// Raw bytes as a string, for corrupt objects.
    Raw(String),
    /// The write landed.
    Written {
        /// The new version.
        e_tag: String,
    },
    /// A create found an object there.
    AlreadyExists {},
    /// A conditional replace found the object changed.
    Precondition {},
    /// A transient failure.
    Unavailable {
        /// The store's error.
        reason: String,
    },
}

/// How a vector's operation must end.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Committed.
    Ok {
        /// Whether it wrote ([`Committed::wrote`]).
        wrote: bool,
        /// Requests sent.
        requests: u32,
        /// Fields the stored document must have.
        doc: Map<String, Value>,
    },
    /// Fields of the serialized [`crate::Error`], `error` naming the variant.
    Error(Map<String, Value>),
}

/// Runs every vector of a file, of any `kind`; the error names the vector
/// and what differed.
pub fn run_file(json: &str) -> Result<usize, String> {
    let value: Value = serde_json::from_str(json).map_err(|e| alloc::format!("vector file does not parse: {e}"))?;
    let kind = match value.get("kind") {
        None => String::from("update"),
        Some(Value::String(kind)) => kind.clone(),
        Some(other) => return Err(alloc::format!("vector file kind must be a string, found {other}")),
    };
    let parse = |e: serde_json::Error| alloc::format!("{kind} vector file does not parse: {e}");
    match kind.as_str() {
        "update" => {
            let file: VectorFile = serde_json::from_value(value).map_err(parse)?;
            for v in &file.vectors {
                run(&file, v).map_err(|e| alloc::format!("vector {:?}: {e}", v.name))?;
            }
            Ok(file.vectors.len())
        }
        "schedule" => {
            let file: ScheduleFile = serde_json::from_value(value).map_err(parse)?;
            for v in &file.vectors {
                run_schedule(&file, v).map_err(|e| alloc::format!("schedule vector {:?}: {e}", v.name))?;
            }
            Ok(file.vectors.len())
        }
        "session" => {
            let file: SessionFile = serde_json::from_value(value).map_err(parse)?;
            for v in &file.vectors {
                run_session(&file, v).map_err(|e| alloc::format!("session vector {:?}: {e}", v.name))?;
            }
            Ok(file.vectors.len())
        }
        other => Err(alloc::format!("unknown vector file kind {other:?}: expected update, schedule or session")),
    }
}

fn run(file: &VectorFile, v: &Vector) -> Result<(), String> {
    let config = v.config.unwrap_or(file.config);
    match &v.operation {
        Operation::Create(doc) => drive(file, v, Create(merge(&file.base, doc)?), config),
        Operation::Claim(m) => drive(file, v, m.clone(), config),
        Operation::Write(m) => drive(file, v, m.clone(), config),
        Operation::RequestStop(m) => drive(file, v, m.clone(), config),
        Operation::Operator(m) => drive(file, v, m.clone(), config),
    }
}

fn merge(base: &Map<String, Value>, doc: &Map<String, Value>) -> Result<PartitionDoc, String> {
    let mut full = base.clone();
    full.extend(doc.iter().map(|(k, v)| (k.clone(), v.clone())));
    serde_json::from_value(Value::Object(full)).map_err(|e| alloc::format!("document in vector does not parse: {e}"))
}

fn etag(e_tag: &str) -> Version {
    Version { e_tag: Some(e_tag.into()), version: None }
}

fn drive<M: Mutation<Doc = PartitionDoc>>(file: &VectorFile, v: &Vector, mutation: M, config: Config) -> Result<(), String> {
    let mut op = match &v.cached {
        Some(c) => Update::from_cached(&file.key, mutation, config, merge(&file.base, &c.doc)?, etag(&c.e_tag)),
        None => Update::new(&file.key, mutation, config),
    };
    let mut now = v.now.or_else(|| v.exchanges.first().and_then(|x| x.now)).unwrap_or(0);
    let mut action = op.start(Timestamp::from_millis(now));
    for (i, x) in v.exchanges.iter().enumerate() {
        let at = |e: String| alloc::format!("exchange {i}: {e}");
        check_action(&file.key, &action, &x.expect, &config).map_err(at)?;
        now = x.now.unwrap_or(now);
        let t = Timestamp::from_millis(now);
        action = match (&action, &x.respond) {
            (Action::Sleep(_), None) => op.wake(t),
            (Action::Send(_), Some(r)) => op.handle(response(file, r, &config).map_err(at)?, t, x.random),
            _ => return Err(at("a request needs `respond`, a sleep must not have one".into())),
        };
    }
    let Action::Done(result) = action else {
        return Err(alloc::format!("driver is not done after the exchanges; it wants {action:?}"));
    };
    check_outcome(result, &v.outcome)
}

fn response(file: &VectorFile, r: &Respond, config: &Config) -> Result<Response, String> {
    respond(&file.key, &file.base, r, config)
}

fn respond(key: &str, base: &Map<String, Value>, r: &Respond, config: &Config) -> Result<Response, String> {
    Ok(match r {
        Respond::Object(None) => Response::Object(None),
        Respond::Object(Some(stored)) => {
            let body = codec::encode(key, &merge(base, &stored.doc)?, &config.limits).map_err(|e| e.to_string())?;
            Response::Object(Some(Object { body, version: etag(&stored.e_tag) }))
        }
        Respond::Raw(text) => Response::Object(Some(Object { body: text.as_bytes().to_vec(), version: etag("\"raw\"") })),
        Respond::Written { e_tag } => Response::Written(etag(e_tag)),
        Respond::AlreadyExists {} => Response::AlreadyExists,
        Respond::Precondition {} => Response::Precondition,
        Respond::Unavailable { reason } => Response::Unavailable { reason: reason.clone() },
    })
}

fn check_action<T: core::fmt::Debug>(key: &str, action: &Action<T>, expect: &Expect, config: &Config) -> Result<(), String> {
    let body_doc = |body: &[u8]| -> Result<Value, String> {
        let doc: PartitionDoc =
            codec::decode(key, body, &config.limits).map_err(|e| alloc::format!("driver wrote an undecodable body: {e}"))?;
        serde_json::to_value(doc).map_err(|e| e.to_string())
    };
    match (action, expect) {
        (Action::Send(Request::Get { key: k }), Expect::Get {}) if k == key => Ok(()),
        (Action::Send(Request::PutIfAbsent { key: k, body }), Expect::PutIfAbsent { doc }) if k == key => subset(doc, &body_doc(body)?),
        (Action::Send(Request::PutIfMatch { key: k, body, version }), Expect::PutIfMatch { e_tag, doc }) if k == key => {
            if version.e_tag.as_deref() != Some(e_tag.as_str()) {
                return Err(alloc::format!("put_if_match with e_tag {:?}, expected {e_tag:?}", version.e_tag));
            }
            subset(doc, &body_doc(body)?)
        }
        (Action::Sleep(d), Expect::Sleep { ms }) if d.as_millis() == u128::from(*ms) => Ok(()),
        (action, expect) => Err(alloc::format!("driver wants {}, vector expects {expect:?}", describe(action))),
    }
}

fn describe<T: core::fmt::Debug>(action: &Action<T>) -> String {
    match action {
        Action::Send(Request::Get { key }) => alloc::format!("get {key}"),
        Action::Send(Request::PutIfAbsent { key, .. }) => alloc::format!("put_if_absent {key}"),
        Action::Send(Request::PutIfMatch { key, version, .. }) => alloc::format!("put_if_match {key} {:?}", version.e_tag),
        Action::Sleep(d) => alloc::format!("sleep {}ms", d.as_millis()),
        Action::Done(r) => alloc::format!("done: {r:?}"),
    }
}

fn subset(expected: &Map<String, Value>, actual: &Value) -> Result<(), String> {
    for (k, want) in expected {
        let got = actual.get(k).unwrap_or(&Value::Null);
        if got != want {
            return Err(alloc::format!("field {k:?} is {got}, expected {want}"));
        }
    }
    Ok(())
}

fn check_outcome(result: Result<Committed<PartitionDoc>, crate::Error>, outcome: &Outcome) -> Result<(), String> {
    match (result, outcome) {
        (Ok(c), Outcome::Ok { wrote, requests, doc }) => {
            if c.wrote != *wrote || c.requests != *requests {
                return Err(alloc::format!(
                    "outcome wrote={} requests={}, expected wrote={wrote} requests={requests}",
                    c.wrote,
                    c.requests
                ));
            }
            subset(doc, &serde_json::to_value(&c.doc).map_err(|e| e.to_string())?)
        }
        (Err(e), Outcome::Error(fields)) => {
            subset(fields, &serde_json::to_value(&e).map_err(|e| e.to_string())?).map_err(|m| alloc::format!("error {e}: {m}"))
        }
        (result, outcome) => Err(alloc::format!("outcome {result:?}, expected {outcome:?}")),
    }
}

// ------------------------------------------------------------- schedule ----

/// A file of scheduler vectors (`kind: "schedule"`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    /// Always `"schedule"`.
    pub kind: String,
    /// What the file covers, for readers.
    #[serde(default)]
    pub about: Option<String>,
    /// Fields every partition document shares.
    pub base: Map<String, Value>,
    /// The pipeline document; a vector's `pipeline` fields are merged over it.
    pub pipeline: Map<String, Value>,
    /// Settings for every vector that does not bring its own.
    #[serde(default)]
    pub config: Config,
    /// The scheduler cases.
    pub vectors: Vec<ScheduleVector>,
}

/// One scheduler case: the documents, the moment, the expected schedule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleVector {
    /// Names the vector in failures.
    pub name: String,
    /// Fields merged over the file's pipeline document.
    #[serde(default)]
    pub pipeline: Map<String, Value>,
    /// Replaces the file's config for this vector.
    #[serde(default)]
    pub config: Option<Config>,
    /// Each merged over the file's `base`.
    pub partitions: Vec<Map<String, Value>>,
    /// When the scheduler runs, in ms.
    pub now: i64,
    /// Who asks; its own live leases are claimable again.
    #[serde(default)]
    pub worker: Option<WorkerId>,
    /// Spreads the claimable list.
    #[serde(default)]
    pub random: u64,
    /// Fields of the serialized schedule, plus `readiness`, `steps`,
    /// `claimable_any_order` and `finished` (see the module docs).
    pub expect: Map<String, Value>,
}

fn run_schedule(file: &ScheduleFile, v: &ScheduleVector) -> Result<(), String> {
    let config = v.config.unwrap_or(file.config);
    let mut pipeline = file.pipeline.clone();
    pipeline.extend(v.pipeline.iter().map(|(k, v)| (k.clone(), v.clone())));
    let pipeline: PipelineDoc =
        serde_json::from_value(Value::Object(pipeline)).map_err(|e| alloc::format!("pipeline document does not parse: {e}"))?;
    let partitions = v.partitions.iter().map(|p| merge(&file.base, p)).collect::<Result<Vec<_>, _>>()?;
    let plan =
        schedule(&pipeline, &partitions, Timestamp::from_millis(v.now), v.worker.as_ref(), &config.lease, &config.schedule, v.random);
    let actual = serde_json::to_value(&plan).map_err(|e| e.to_string())?;
    let by_name = |list: &str, field: &str, name: &str| -> Option<Value> {
        actual.get(list)?.as_array()?.iter().find(|x| x.get(field).and_then(Value::as_str) == Some(name)).cloned()
    };
    for (key, want) in &v.expect {
        match key.as_str() {
            "readiness" => {
                for (partition, want) in object(want, "readiness")? {
                    let got = actual["steps"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s["partitions"].as_array())
                        .flatten()
                        .find(|p| p["partition"].as_str() == Some(partition.as_str()))
                        .map(|p| &p["readiness"])
                        .ok_or_else(|| alloc::format!("{partition} is not in the schedule"))?;
                    if got != want {
                        return Err(alloc::format!("readiness of {partition} is {got}, expected {want}"));
                    }
                }
            }
            "steps" => {
                for (step, want) in object(want, "steps")? {
                    let got = by_name("steps", "step_id", step).ok_or_else(|| alloc::format!("step {step} is not in the schedule"))?;
                    subset(object(want, "a step")?, &got).map_err(|e| alloc::format!("step {step}: {e}"))?;
                }
            }
            "claimable_any_order" => {
                let sorted = |v: &Value| {
                    let mut names: Vec<String> = v.as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect();
                    names.sort();
                    names
                };
                if sorted(&actual["claimable"]) != sorted(want) {
                    return Err(alloc::format!("claimable is {}, expected {want} in any order", actual["claimable"]));
                }
            }
            "finished" => {
                if Value::Bool(plan.is_finished()) != *want {
                    return Err(alloc::format!("finished is {}, expected {want}", plan.is_finished()));
                }
            }
            field => {
                let got = actual.get(field).ok_or_else(|| alloc::format!("the schedule has no field {field:?}"))?;
                if got != want {
                    return Err(alloc::format!("{field} is {got}, expected {want}"));
                }
            }
        }
    }
    Ok(())
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    value.as_object().ok_or_else(|| alloc::format!("{what} must be an object, found {value}"))
}

// -------------------------------------------------------------- session ----

/// A file of holder-session vectors (`kind: "session"`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    /// Always `"session"`.
    pub kind: String,
    /// What the file covers, for readers.
    #[serde(default)]
    pub about: Option<String>,
    /// The held partition's store key.
    pub key: String,
    /// The document every vector's documents are merged over.
    pub base: Map<String, Value>,
    /// Settings for every vector that does not bring its own.
    #[serde(default)]
    pub config: Config,
    /// The session cases.
    pub vectors: Vec<SessionVector>,
}

/// One session case: how it starts, then its writes in order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionVector {
    /// Names the vector in failures.
    pub name: String,
    /// Replaces the file's config for this vector.
    #[serde(default)]
    pub config: Option<Config>,
    /// How the session begins.
    pub start: SessionStart,
    /// The writes, in order.
    #[serde(default)]
    pub calls: Vec<SessionCall>,
}

/// How the session begins.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SessionStart {
    /// A claim landed, storing `doc` as `e_tag` at `now`.
    Claimed {
        /// The claimed document's fields, merged over `base`.
        doc: Map<String, Value>,
        /// Its version in the store.
        e_tag: String,
        /// When the claim landed, in ms.
        now: i64,
    },
    /// `worker_id` resumes from a fresh read ([`Session::resume`]); `error`:
    /// the fields of the refusal expected.
    Resume {
        /// The document read, its fields merged over `base`.
        doc: Map<String, Value>,
        /// Its version in the store.
        e_tag: String,
        /// Who resumes.
        worker_id: WorkerId,
        /// When, in ms.
        now: i64,
        /// The refusal expected, if any.
        #[serde(default)]
        error: Option<Map<String, Value>>,
    },
}

/// One holder write through the session, and what must follow.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionCall {
    /// What the write asks for.
    pub begin: Begin,
    /// When the write begins; the exchanges' `now` default to it.
    pub now: i64,
    /// The write's requests and the store's answers, in order.
    #[serde(default)]
    pub exchanges: Vec<Exchange>,
    /// Absent only with `abandon`.
    #[serde(default)]
    pub outcome: Option<SessionOutcome>,
    /// The driver is dropped after the exchanges, the write unfinished.
    #[serde(default)]
    pub abandon: bool,
    /// The session's state to check after the call.
    #[serde(default)]
    pub after: Option<SessionAfter>,
}

/// The arguments of [`Session::begin`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Begin {
    /// Progress to record; none makes it a heartbeat.
    #[serde(default)]
    pub progress: Progress,
    /// Ends the work with this write.
    #[serde(default)]
    pub finish: Option<Finish>,
    /// Identifies the write in the stored lease ([`crate::Lease::last_write`]).
    pub write_id: u64,
}

/// How a session call must end.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionOutcome {
    /// A [`Written`].
    Ok {
        /// [`Written::landed`].
        landed: bool,
        /// The stop request honoured, or null.
        #[serde(default)]
        stop: Value,
        /// Requests sent.
        requests: u32,
    },
    /// Fields of the serialized [`crate::Error`].
    Error(Map<String, Value>),
}

/// What the session knows after a call; only the fields listed are checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionAfter {
    /// [`Session::is_unresolved`].
    #[serde(default)]
    pub unresolved: Option<bool>,
    /// [`Session::is_released`].
    #[serde(default)]
    pub released: Option<bool>,
    /// Fields of the document as last known stored.
    #[serde(default)]
    pub doc: Option<Map<String, Value>>,
    /// The version the next write is conditioned on.
    #[serde(default)]
    pub e_tag: Option<String>,
    /// `[now, trusted]` pairs for [`Session::trusts`].
    #[serde(default)]
    pub trusts: Vec<(i64, bool)>,
    /// [`Session::heartbeat_due`], in ms.
    #[serde(default)]
    pub heartbeat_due: Option<i64>,
}

fn run_session(file: &SessionFile, v: &SessionVector) -> Result<(), String> {
    let config = v.config.unwrap_or(file.config);
    let mut session = match &v.start {
        SessionStart::Claimed { doc, e_tag, now } => {
            let claim = Committed { doc: merge(&file.base, doc)?, version: etag(e_tag), wrote: true, requests: 2 };
            Session::claimed(&file.key, claim, config, Timestamp::from_millis(*now))
        }
        SessionStart::Resume { doc, e_tag, worker_id, now, error } => {
            let resumed = Session::resume(&file.key, merge(&file.base, doc)?, etag(e_tag), worker_id, config, Timestamp::from_millis(*now));
            match (resumed, error) {
                (Ok(session), None) => session,
                (Err(e), Some(fields)) => {
                    subset(fields, &serde_json::to_value(&e).map_err(|e| e.to_string())?)
                        .map_err(|m| alloc::format!("resume: {e}: {m}"))?;
                    return if v.calls.is_empty() { Ok(()) } else { Err("calls after a refused resume".into()) };
                }
                (Ok(_), Some(_)) => return Err("resume succeeded, expected a refusal".into()),
                (Err(e), None) => return Err(alloc::format!("resume refused: {e}")),
            }
        }
    };
    for (i, call) in v.calls.iter().enumerate() {
        session_call(&file.key, &file.base, &mut session, call, &config).map_err(|e| alloc::format!("call {i}: {e}"))?;
    }
    Ok(())
}

fn session_call(key: &str, base: &Map<String, Value>, session: &mut Session, call: &SessionCall, config: &Config) -> Result<(), String> {
    let mut now = call.now;
    let b = &call.begin;
    let mut action = session.begin(b.progress.clone(), b.finish.clone(), b.write_id, Timestamp::from_millis(now));
    for (i, x) in call.exchanges.iter().enumerate() {
        let at = |e: String| alloc::format!("exchange {i}: {e}");
        check_action(key, &action, &x.expect, config).map_err(at)?;
        now = x.now.unwrap_or(now);
        let t = Timestamp::from_millis(now);
        action = match (&action, &x.respond) {
            (Action::Sleep(_), None) => session.wake(t),
            (Action::Send(_), Some(r)) => session.handle(respond(key, base, r, config).map_err(at)?, t, x.random),
            // The request is sent and never answered: the driver is dropped.
            (Action::Send(_), None) if call.abandon && i + 1 == call.exchanges.len() => break,
            _ => return Err(at("a request needs `respond` (but the last one of an abandoned call), a sleep must not have one".into())),
        };
    }
    match (action, &call.outcome, call.abandon) {
        (Action::Done(result), Some(outcome), false) => check_written(result, outcome)?,
        (Action::Send(_) | Action::Sleep(_), None, true) => {}
        (action, _, true) => {
            return Err(alloc::format!("an abandoned write must be unfinished, and have no outcome; it is {}", describe(&action)))
        }
        (Action::Done(result), None, false) => return Err(alloc::format!("the call needs an outcome; it ended in {result:?}")),
        (action, _, false) => return Err(alloc::format!("the session is not done after the exchanges; it wants {}", describe(&action))),
    }
    if let Some(after) = &call.after {
        check_after(session, after).map_err(|e| alloc::format!("after: {e}"))?;
    }
    Ok(())
}

fn check_written(result: Result<Written, crate::Error>, outcome: &SessionOutcome) -> Result<(), String> {
    match (result, outcome) {
        (Ok(w), SessionOutcome::Ok { landed, stop, requests }) => {
            let got_stop = serde_json::to_value(&w.stop).map_err(|e| e.to_string())?;
            if w.landed != *landed || got_stop != *stop || w.requests != *requests {
                return Err(alloc::format!(
                    "outcome landed={} stop={got_stop} requests={}, expected landed={landed} stop={stop} requests={requests}",
                    w.landed,
                    w.requests
                ));
            }
            Ok(())
        }
        (Err(e), SessionOutcome::Error(fields)) => {
            subset(fields, &serde_json::to_value(&e).map_err(|e| e.to_string())?).map_err(|m| alloc::format!("error {e}: {m}"))
        }
        (result, outcome) => Err(alloc::format!("outcome {result:?}, expected {outcome:?}")),
    }
}

fn check_after(session: &Session, after: &SessionAfter) -> Result<(), String> {
    let same = |what: &str, got: bool, want: Option<bool>| match want {
        Some(want) if want != got => Err(alloc::format!("{what} is {got}, expected {want}")),
        _ => Ok(()),
    };
    same("unresolved", session.is_unresolved(), after.unresolved)?;
    same("released", session.is_released(), after.released)?;
    if let Some(doc) = &after.doc {
        subset(doc, &serde_json::to_value(session.doc()).map_err(|e| e.to_string())?).map_err(|e| alloc::format!("doc: {e}"))?;
    }
    if let Some(e_tag) = &after.e_tag {
        if session.version().e_tag.as_deref() != Some(e_tag.as_str()) {
            return Err(alloc::format!("e_tag is {:?}, expected {e_tag:?}", session.version().e_tag));
        }
    }
    for &(now, want) in &after.trusts {
        same(&alloc::format!("trusts at {now}"), session.trusts(Timestamp::from_millis(now)), Some(want))?;
    }
    if let Some(due) = after.heartbeat_due {
        if session.heartbeat_due() != Timestamp::from_millis(due) {
            return Err(alloc::format!("heartbeat due at {}, expected {due}", session.heartbeat_due().as_millis()));
        }
    }
    Ok(())
}
