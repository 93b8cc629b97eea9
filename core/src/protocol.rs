//! The sans-I/O driver. One [`Update`] performs one compare-and-swap
//! operation on one document: it yields [`Request`]s as plain data, consumes
//! [`Response`]s, asks for sleeps, and ends in an outcome. It never touches a
//! socket, a clock or a random number generator: the caller passes `now` and
//! `random` in. The backends crate drives it with tokio, the wasm package
//! from JavaScript.
//!
//! Every [`Mutation`] is idempotent with respect to its own write, so a
//! response lost after the write landed is resolved the same way as any
//! other conflict: re-read, re-apply, find the work already done.

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::doc::{Document, Limits};
use crate::error::Error;
use crate::lease::LeaseConfig;
use crate::schedule::SchedulePolicy;
use crate::time::{duration_ms, Timestamp};

/// What the store says identifies the stored bytes. Mirrors object_store's
/// `UpdateVersion`: S3, MinIO and Azure compare `e_tag`; GCS compares the
/// generation in `version`. Drivers echo it back unchanged; never recompute it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Version {
    /// The ETag, compared by S3, MinIO and Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
    /// The object generation, compared by GCS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The next I/O step, for the driver to perform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Read `key`. Answer [`Response::Object`] (`None` when absent).
    Get {
        /// The object to read.
        key: String,
    },
    /// Create `key` only if absent (`If-None-Match: *`). Answer
    /// [`Response::Written`] or [`Response::AlreadyExists`].
    PutIfAbsent {
        /// The object to create.
        key: String,
        /// The encoded document.
        body: Vec<u8>,
    },
    /// Replace `key` only if its version still matches (`If-Match`). Answer
    /// [`Response::Written`], or [`Response::Precondition`] when stale or missing.
    PutIfMatch {
        /// The object to replace.
        key: String,
        /// The encoded document.
        body: Vec<u8>,
        /// The version it must still have.
        version: Version,
    },
}

impl Request {
    /// The object the request is about.
    pub fn key(&self) -> &str {
        match self {
            Request::Get { key } | Request::PutIfAbsent { key, .. } | Request::PutIfMatch { key, .. } => key,
        }
    }
}

/// A stored object as read. As JSON (a [`Response`] from JavaScript) it is
/// only its version: the bytes travel beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// The stored bytes.
    #[serde(skip)]
    pub body: Vec<u8>,
    /// What the store says identifies them.
    pub version: Version,
}

/// The store's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Answers [`Request::Get`]: the object, or `None` when absent.
    Object(Option<Object>),
    /// A conditional PUT landed; the new object's version.
    Written(Version),
    /// [`Request::PutIfAbsent`] found an object already there.
    AlreadyExists,
    /// [`Request::PutIfMatch`] found the object changed or gone.
    Precondition,
    /// A transient failure: timeout, connection reset, 5xx, 503 SlowDown, 409
    /// ConditionalRequestConflict. A write may or may not have landed.
    Unavailable {
        /// The store's error, for messages.
        reason: String,
    },
}

/// How hard to try. Conflicts re-read at once; transient failures back off
/// with jitter (the randomness is the caller's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Transient failures tolerated in one operation before giving up.
    pub max_transient_failures: u32,
    /// Re-reads after a lost race before reporting [`Error::Conflict`].
    pub max_conflicts: u32,
    /// The first retry's backoff step; each further retry doubles it.
    #[serde(with = "duration_ms", rename = "base_delay_ms")]
    pub base_delay: Duration,
    /// Cap on the backoff step.
    #[serde(with = "duration_ms", rename = "max_delay_ms")]
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_transient_failures: 6,
            max_conflicts: 32,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `attempt` (1-based): "equal jitter", half
    /// the capped exponential step plus a random part of the other half, so
    /// contending workers spread out yet every retry waits.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let step = self.base_delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(self.max_delay);
        let half = u64::try_from(step.as_millis() / 2).unwrap_or(u64::MAX);
        Duration::from_millis(half + random % (half + 1))
    }
}

/// Everything an operation needs to know besides its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Lease timing.
    pub lease: LeaseConfig,
    /// Bounds on document size and content.
    pub limits: Limits,
    /// Retries on conflicts and transient failures.
    pub retry: RetryPolicy,
    /// Retry backoff of failed partitions, for the scheduler.
    pub schedule: SchedulePolicy,
}

/// The moment and settings a mutation is applied under.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The caller's clock at this attempt.
    pub now: Timestamp,
    /// The operation's settings.
    pub config: &'a Config,
}

/// One change to one document, expressed so it can be re-applied to a fresher
/// copy after a lost race.
pub trait Mutation {
    /// The kind of document it changes.
    type Doc: Document;

    /// The document to create when none is stored; `None` means the
    /// operation needs an existing document (outcome: [`Error::NotFound`]).
    fn create(&self, _ctx: &Context) -> Result<Option<Self::Doc>, Error> {
        Ok(None)
    }

    /// Applies the change to a copy of the stored document. `Ok(false)`: it
    /// is already in effect (for instance our own earlier write landed), so
    /// nothing is written.
    fn apply(&self, key: &str, doc: &mut Self::Doc, ctx: &Context) -> Result<bool, Error>;
}

/// A finished operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Committed<D> {
    /// The document as now stored.
    pub doc: D,
    /// Its version: cache it with the document for the next write.
    pub version: Version,
    /// False when the change was already in effect and nothing was written.
    pub wrote: bool,
    /// Requests sent, for measuring.
    pub requests: u32,
}

/// What the caller must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "an action is the next I/O step: perform it and feed the answer back"]
pub enum Action<T> {
    /// Perform this request, then call [`Drive::handle`] with the answer.
    Send(Request),
    /// Sleep this long, then call [`Drive::wake`].
    Sleep(Duration),
    /// Finished; the driver must not be called again.
    Done(Result<T, Error>),
}

/// A sans-I/O operation: [`Update`] on one document, or a holder's write
/// through its [`Session`](crate::Session). The calling rules: `start`
/// once, then after each [`Action::Send`] perform the request and call
/// `handle` with the answer, after each [`Action::Sleep`] sleep and call
/// `wake`, until [`Action::Done`]. Time and randomness are arguments.
pub trait Drive {
    /// What a successful [`Action::Done`] carries.
    type Output;
    /// The first action.
    fn start(&mut self, now: Timestamp) -> Action<Self::Output>;
    /// Feeds the store's answer to the last [`Action::Send`].
    fn handle(&mut self, response: Response, now: Timestamp, random: u64) -> Action<Self::Output>;
    /// Continues after an [`Action::Sleep`].
    fn wake(&mut self, now: Timestamp) -> Action<Self::Output>;
}

#[derive(Debug, Clone)]
enum Stored<D> {
    Unknown,
    Absent,
    Present(D, Version),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Start,
    Get,
    Put,
    Wake,
    Nothing,
}

/// Drives one [`Mutation`] to completion over the store primitives.
#[derive(Debug, Clone)]
#[must_use = "an update does nothing until driven: call `start`, then answer its actions"]
pub struct Update<M: Mutation> {
    key: String,
    mutation: M,
    config: Config,
    stored: Stored<M::Doc>,
    pending: Option<M::Doc>,
    awaiting: Awaiting,
    transient_failures: u32,
    conflicts: u32,
    requests: u32,
}

impl<M: Mutation> Update<M> {
    /// An operation that starts by reading the document.
    pub fn new(key: impl Into<String>, mutation: M, config: Config) -> Self {
        Update {
            key: key.into(),
            mutation,
            config,
            stored: Stored::Unknown,
            pending: None,
            awaiting: Awaiting::Start,
            transient_failures: 0,
            conflicts: 0,
            requests: 0,
        }
    }

    /// An operation that starts from a cached document and its version, so
    /// the uncontended case is a single conditional PUT.
    pub fn from_cached(key: impl Into<String>, mutation: M, config: Config, doc: M::Doc, version: Version) -> Self {
        Update { stored: Stored::Present(doc, version), ..Update::new(key, mutation, config) }
    }

    /// The document's store key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The change being driven; after an [`Error::Unavailable`] or
    /// [`Error::Conflict`] outcome, drive it again (same write id) to learn
    /// whether it landed.
    pub fn mutation(&self) -> &M {
        &self.mutation
    }

    fn proceed(&mut self, now: Timestamp) -> Action<Committed<M::Doc>> {
        let ctx = Context { now, config: &self.config };
        let (doc, request) = match &self.stored {
            Stored::Unknown => {
                self.awaiting = Awaiting::Get;
                return self.send(Request::Get { key: self.key.clone() });
            }
            Stored::Absent => match self.mutation.create(&ctx) {
                Ok(Some(mut doc)) => {
                    doc.stamp(now);
                    match codec::encode(&self.key, &doc, &self.config.limits) {
                        Ok(body) => (doc, Request::PutIfAbsent { key: self.key.clone(), body }),
                        Err(e) => return self.finish(Err(e)),
                    }
                }
                Ok(None) => return self.finish(Err(Error::NotFound { key: self.key.clone() })),
                Err(e) => return self.finish(Err(e)),
            },
            Stored::Present(current, version) => {
                let mut doc = current.clone();
                match self.mutation.apply(&self.key, &mut doc, &ctx) {
                    Ok(true) => {}
                    Ok(false) => {
                        let (doc, version) = (current.clone(), version.clone());
                        return self.finish(Ok((doc, version, false)));
                    }
                    Err(e) => return self.finish(Err(e)),
                }
                doc.stamp(now);
                match codec::encode(&self.key, &doc, &self.config.limits) {
                    Ok(body) => (doc, Request::PutIfMatch { key: self.key.clone(), body, version: version.clone() }),
                    Err(e) => return self.finish(Err(e)),
                }
            }
        };
        self.pending = Some(doc);
        self.awaiting = Awaiting::Put;
        self.send(request)
    }

    fn send(&mut self, request: Request) -> Action<Committed<M::Doc>> {
        self.requests += 1;
        Action::Send(request)
    }

    fn finish(&mut self, result: Result<(M::Doc, Version, bool), Error>) -> Action<Committed<M::Doc>> {
        self.awaiting = Awaiting::Nothing;
        let requests = self.requests;
        Action::Done(result.map(|(doc, version, wrote)| Committed { doc, version, wrote, requests }))
    }

    fn misuse(&mut self, reason: &str) -> Action<Committed<M::Doc>> {
        self.finish(Err(Error::Protocol { reason: alloc::format!("{} on {}: {reason}", core::any::type_name::<M>(), self.key) }))
    }
}

impl<M: Mutation> Drive for Update<M> {
    type Output = Committed<M::Doc>;

    /// The first action.
    fn start(&mut self, now: Timestamp) -> Action<Committed<M::Doc>> {
        if self.awaiting != Awaiting::Start {
            return self.misuse("start called twice");
        }
        self.proceed(now)
    }

    /// Feeds the store's answer to the last [`Action::Send`].
    fn handle(&mut self, response: Response, now: Timestamp, random: u64) -> Action<Committed<M::Doc>> {
        match (self.awaiting, response) {
            (Awaiting::Get, Response::Object(Some(object))) => {
                match codec::decode::<M::Doc>(&self.key, &object.body, &self.config.limits) {
                    Ok(doc) => {
                        self.stored = Stored::Present(doc, object.version);
                        self.proceed(now)
                    }
                    Err(e) => self.finish(Err(e)),
                }
            }
            (Awaiting::Get, Response::Object(None)) => {
                self.stored = Stored::Absent;
                self.proceed(now)
            }
            (Awaiting::Put, Response::Written(version)) => match self.pending.take() {
                Some(doc) => self.finish(Ok((doc, version, true))),
                None => self.misuse("no write in flight"),
            },
            (Awaiting::Put, Response::Precondition | Response::AlreadyExists) => {
                self.conflicts += 1;
                if self.conflicts > self.config.retry.max_conflicts {
                    let reason = alloc::format!("the document changed {} times while we tried to write it", self.conflicts);
                    return self.finish(Err(Error::Conflict { key: self.key.clone(), reason }));
                }
                self.stored = Stored::Unknown;
                self.proceed(now)
            }
            (awaiting @ (Awaiting::Get | Awaiting::Put), Response::Unavailable { reason }) => {
                self.transient_failures += 1;
                if self.transient_failures > self.config.retry.max_transient_failures {
                    return self.finish(Err(Error::Unavailable { key: self.key.clone(), attempts: self.transient_failures, reason }));
                }
                if awaiting == Awaiting::Put {
                    // The write may have landed: read before deciding
                    // anything again (a rule applied to the old copy could
                    // refuse, say as expired, a write that is stored).
                    self.stored = Stored::Unknown;
                    self.pending = None;
                }
                self.awaiting = Awaiting::Wake;
                Action::Sleep(self.config.retry.delay(self.transient_failures, random))
            }
            (awaiting, response) => self.misuse(&alloc::format!("{response:?} does not answer {awaiting:?}")),
        }
    }

    /// Continues after an [`Action::Sleep`]. After a write whose outcome is
    /// unknown, the document is read again first, so a write that landed is
    /// found and not applied twice.
    fn wake(&mut self, now: Timestamp) -> Action<Committed<M::Doc>> {
        if self.awaiting != Awaiting::Wake {
            return self.misuse("wake without a sleep");
        }
        self.proceed(now)
    }
}
