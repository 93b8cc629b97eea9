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

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::codec;
use crate::doc::PartitionDoc;
use crate::ops::{Claim, Create, Operator, RequestStop, Write};
use crate::protocol::{Action, Committed, Config, Drive, Mutation, Object, Request, Response, Update, Version};
use crate::time::Timestamp;

/// A file of vectors sharing one base document and config.
#[derive(Debug, Deserialize)]
pub struct VectorFile {
    pub base: Map<String, Value>,
    #[serde(default)]
    pub config: Config,
    pub key: String,
    pub vectors: Vec<Vector>,
}

#[derive(Debug, Deserialize)]
pub struct Vector {
    pub name: String,
    pub operation: Operation,
    /// The document and e_tag the driver starts from; without it, it reads first.
    #[serde(default)]
    pub cached: Option<StoredDoc>,
    #[serde(default)]
    pub config: Option<Config>,
    pub exchanges: Vec<Exchange>,
    pub outcome: Outcome,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Create(Map<String, Value>),
    Claim(Claim<PartitionDoc>),
    Write(Write<PartitionDoc>),
    RequestStop(RequestStop<PartitionDoc>),
    Operator(Operator),
}

#[derive(Debug, Deserialize)]
pub struct StoredDoc {
    pub doc: Map<String, Value>,
    pub e_tag: String,
}

#[derive(Debug, Deserialize)]
pub struct Exchange {
    /// Defaults to the previous exchange's `now` (the first: 0).
    #[serde(default)]
    pub now: Option<i64>,
    #[serde(default)]
    pub random: u64,
    pub expect: Expect,
    /// The store's answer; absent after a sleep.
    #[serde(default)]
    pub respond: Option<Respond>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Get {},
    PutIfAbsent { doc: Map<String, Value> },
    PutIfMatch { e_tag: String, doc: Map<String, Value> },
    Sleep { ms: u64 },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Respond {
    Object(Option<StoredDoc>),
    /// Raw bytes as a string, for corrupt objects.
    Raw(String),
    Written {
        e_tag: String,
    },
    AlreadyExists {},
    Precondition {},
    Unavailable {
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok {
        wrote: bool,
        requests: u32,
        doc: Map<String, Value>,
    },
    /// Fields of the serialized [`crate::Error`], `error` naming the variant.
    Error(Map<String, Value>),
}

/// Runs every vector of a file; the error names the vector and what differed.
pub fn run_file(json: &str) -> Result<usize, String> {
    let file: VectorFile = serde_json::from_str(json).map_err(|e| alloc::format!("vector file does not parse: {e}"))?;
    for v in &file.vectors {
        run(&file, v).map_err(|e| alloc::format!("vector {:?}: {e}", v.name))?;
    }
    Ok(file.vectors.len())
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
    let mut now = v.exchanges.first().and_then(|x| x.now).unwrap_or(0);
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
    Ok(match r {
        Respond::Object(None) => Response::Object(None),
        Respond::Object(Some(stored)) => {
            let body = codec::encode(&file.key, &merge(&file.base, &stored.doc)?, &config.limits).map_err(|e| e.to_string())?;
            Response::Object(Some(Object { body, version: etag(&stored.e_tag) }))
        }
        Respond::Raw(text) => Response::Object(Some(Object { body: text.as_bytes().to_vec(), version: etag("\"raw\"") })),
        Respond::Written { e_tag } => Response::Written(etag(e_tag)),
        Respond::AlreadyExists {} => Response::AlreadyExists,
        Respond::Precondition {} => Response::Precondition,
        Respond::Unavailable { reason } => Response::Unavailable { reason: reason.clone() },
    })
}

fn check_action(key: &str, action: &Action<Committed<PartitionDoc>>, expect: &Expect, config: &Config) -> Result<(), String> {
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

fn describe(action: &Action<Committed<PartitionDoc>>) -> String {
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
