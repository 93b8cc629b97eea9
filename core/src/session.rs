//! The holder's session: everything a worker must remember between writes
//! to a partition it holds, and the rules that keep it safe. Every runtime
//! (tokio, JavaScript, Python, Lambda) drives the same [`Session`]; drivers
//! only move bytes, sleep and read the clock.
//!
//! The rules:
//!
//! - **One write at a time.** A session has at most one write in flight. A
//!   write is *unresolved* from the moment it is begun until its outcome is
//!   known, so a write whose driver was dropped half-way (a cancelled
//!   heartbeat) is not forgotten.
//! - **Replay before writing again.** An unresolved write (response lost,
//!   store unavailable, driver dropped) is driven again, with the same write
//!   id and from a fresh read, before the next write: it lands at most once,
//!   and the session learns the stored document.
//! - **A release that landed is a release.** A finishing write whose
//!   response was lost, followed by other claims, is recognised from the
//!   lease's `previous` holders (the last eight) and reported as done; a
//!   checkpoint that landed before a takeover is reported landed, and the
//!   session is then over (the next write is fenced).
//! - **A stop request releases.** When a landed write finds a stop request,
//!   the lease is released (by that write, or by one more) and the outcome
//!   says so: [`Written::stop`]. The write's progress is stored all the same:
//!   an outcome never calls a landed write fenced.
//!
//! ```text
//!   begin(intent) ── unresolved? ──yes──▶ replay it ──▶ write intent ──▶ stop seen? ──yes──▶ release
//!                        └───────no────────────────────────▲                  └──no──▶ done
//! ```

use alloc::string::String;

use crate::doc::PartitionDoc;
use crate::error::Error;
use crate::id::WorkerId;
use crate::lease::{Holder, Lease, StopRequest};
use crate::ops::{Work, Write};
use crate::protocol::{Action, Committed, Config, Drive, Response, Update, Version};
use crate::step::Finish;
use crate::time::Timestamp;

/// How a holder's write ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Written {
    /// The write is stored. False only when nothing was left to write (the
    /// lease was already released by an earlier write of ours).
    pub landed: bool,
    /// A stop was requested: the lease is released now (or its release is
    /// unresolved and replayed by the next call); stop working here.
    pub stop: Option<StopRequest>,
    /// Requests sent, for measuring.
    pub requests: u32,
}

/// What the holder asks for: progress, and perhaps the end of its work.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Intent<D: Work> {
    progress: D::Progress,
    finish: Option<Finish>,
    write_id: u64,
}

#[derive(Debug, Clone)]
enum Phase<D: Work> {
    /// Settling an unresolved write before the intent; `both_finish`: the
    /// unresolved write and the intent each end the work.
    Replay { intent: Intent<D>, both_finish: bool },
    /// The intent itself.
    Write,
    /// The release that honours a stop request after a landed write.
    StopRelease { stop: StopRequest },
}

#[derive(Debug, Clone)]
struct InFlight<D: Work> {
    phase: Phase<D>,
    update: Update<Write<D>>,
    requests: u32,
}

/// A partition (or any [`Work`] document) this process holds: the document
/// as last stored, its version, the unresolved write if any, and the write
/// in flight if any.
#[derive(Debug, Clone)]
pub struct Session<D: Work = PartitionDoc> {
    key: String,
    doc: D,
    version: Version,
    config: Config,
    /// A write begun whose outcome is unknown; it may have landed.
    unresolved: Option<Write<D>>,
    in_flight: Option<InFlight<D>>,
    /// When the last write of ours was known to be stored (claim included).
    last_stored_at: Timestamp,
    /// The lease passed to someone else (we were fenced, or our last write
    /// landed just before a takeover): nothing more may be written.
    taken: bool,
    /// A hard deadline no write extends the lease past ([`crate::deadline`]).
    deadline: Option<Timestamp>,
}

impl<D: Work> Session<D> {
    /// The session a landed claim starts.
    pub fn claimed(key: impl Into<String>, claim: Committed<D>, config: Config, now: Timestamp) -> Self {
        Self::held(key.into(), claim.doc, claim.version, config, now)
    }

    /// A holder's session on `doc` as stored at `version`, nothing in flight.
    fn held(key: String, doc: D, version: Version, config: Config, now: Timestamp) -> Self {
        Session { key, doc, version, config, unresolved: None, in_flight: None, last_stored_at: now, taken: false, deadline: None }
    }

    /// The same session for a holder that must be done by `deadline` (a
    /// Lambda invocation): no write extends the lease past it. Pair with a
    /// claim made [`crate::Claim::with_deadline`].
    pub fn with_deadline(self, deadline: Timestamp) -> Self {
        Session { deadline: Some(deadline), ..self }
    }

    /// The hard deadline writes are capped at, if any.
    pub fn deadline(&self) -> Option<Timestamp> {
        self.deadline
    }

    /// Resumes the session of `worker` from a fresh read, for short-lived
    /// processes (one CLI call per checkpoint). Refused with
    /// [`Error::Fenced`] unless `worker` holds the lease unreleased.
    pub fn resume(
        key: impl Into<String>,
        doc: D,
        version: Version,
        worker: &WorkerId,
        config: Config,
        now: Timestamp,
    ) -> Result<Self, Error> {
        let key = key.into();
        match doc.lease() {
            Some(l) if &l.worker_id == worker && l.is_open() => Ok(Self::held(key, doc, version, config, now)),
            other => {
                let holder = other.filter(|l| l.is_open()).map(|l| l.worker_id.clone());
                let held_once = other.is_some_and(|l| &l.worker_id == worker || l.previous.iter().any(|h| &h.worker_id == worker));
                match held_once {
                    true => {
                        Err(Error::Fenced { key, worker_id: worker.clone(), epoch: other.map_or(0, |l| l.epoch), holder, landed: false })
                    }
                    false => Err(Error::NotHolder { key, worker_id: worker.clone(), holder }),
                }
            }
        }
    }

    /// The document's store key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The document as last known to be stored.
    pub fn doc(&self) -> &D {
        &self.doc
    }

    /// The store's version of [`Session::doc`]: the next write's condition.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The lease as last known to be stored.
    pub fn lease(&self) -> &Lease {
        self.doc.lease().expect("a held document has a lease")
    }

    /// True while a write's outcome is unknown (it is replayed first).
    pub fn is_unresolved(&self) -> bool {
        self.unresolved.is_some()
    }

    /// True once the lease is no longer ours: let go (released, completed,
    /// failed, or released for a stop request) or taken by someone else.
    /// Nothing more may be written.
    pub fn is_released(&self) -> bool {
        self.taken || self.lease().released_at.is_some()
    }

    /// May the holder act outside the store (emit output, call an API) at
    /// `now`? Only until `expires_at - safety_margin` of its own lease, and
    /// not once it began to let go: a release, completion or failure in
    /// flight or unresolved may have landed, and someone else may hold the
    /// partition already.
    pub fn trusts(&self, now: Timestamp) -> bool {
        let letting_go = self.unresolved.as_ref().is_some_and(|w| w.finish.is_some());
        !letting_go && !self.taken && Holder::trusts(self.lease(), now, &self.config.lease)
    }

    /// When a heartbeat is due: `heartbeat_interval` after the last stored
    /// write. A holder that checkpoints more often never sends one.
    pub fn heartbeat_due(&self) -> Timestamp {
        self.last_stored_at.plus(self.config.lease.heartbeat_interval)
    }

    /// Begins a holder write: progress (none: a heartbeat) and perhaps the
    /// end of the work. `write_id` is a fresh random number. Drive the
    /// returned action like any other ([`Drive`]); [`Session::write`] wraps
    /// this for drivers that take a [`Drive`] value.
    pub fn begin(&mut self, progress: D::Progress, finish: Option<Finish>, write_id: u64, now: Timestamp) -> Action<Written> {
        // A write left in flight by a dropped driver is unresolved already.
        self.in_flight = None;
        let finishing = finish.is_some();
        let intent = Intent { progress, finish, write_id };
        match self.unresolved.clone() {
            Some(pending) => {
                let both_finish = finishing && pending.finish.is_some();
                let update = Update::new(&self.key, pending, self.config);
                self.launch(Phase::Replay { intent, both_finish }, update, now, 0)
            }
            None => self.write_intent(intent, now, 0),
        }
    }

    /// Wraps [`Session::begin`] as a [`Drive`] value.
    pub fn write(&mut self, progress: D::Progress, finish: Option<Finish>, write_id: u64) -> SessionWrite<'_, D> {
        SessionWrite { session: self, intent: Some((progress, finish, write_id)) }
    }

    fn write_intent(&mut self, intent: Intent<D>, now: Timestamp, requests: u32) -> Action<Written> {
        let finishing = intent.finish.is_some();
        if self.taken {
            return self.fenced();
        }
        if self.is_released() {
            // Already let go by us, earlier: a finish is done, anything else
            // may not be written.
            return if finishing { Action::Done(Ok(Written { landed: false, stop: None, requests })) } else { self.fenced() };
        }
        let write = Write {
            holder: Holder::of(self.lease()),
            write_id: intent.write_id,
            progress: intent.progress,
            finish: intent.finish,
            deadline: self.deadline,
        };
        self.unresolved = Some(write.clone());
        let update = Update::from_cached(&self.key, write, self.config, self.doc.clone(), self.version.clone());
        self.launch(Phase::Write, update, now, requests)
    }

    fn launch(&mut self, phase: Phase<D>, mut update: Update<Write<D>>, now: Timestamp, requests: u32) -> Action<Written> {
        let action = update.start(now);
        self.in_flight = Some(InFlight { phase, update, requests });
        self.step(action, now)
    }

    /// Passes the update's I/O on; settles its outcome.
    fn step(&mut self, action: Action<Committed<D>>, now: Timestamp) -> Action<Written> {
        match action {
            Action::Send(request) => {
                if let Some(f) = self.in_flight.as_mut() {
                    f.requests += 1;
                }
                Action::Send(request)
            }
            Action::Sleep(d) => Action::Sleep(d),
            Action::Done(outcome) => match self.in_flight.take() {
                Some(f) => self.settle(f.phase, f.requests, outcome, now),
                None => Action::Done(Err(misuse("an outcome with no write in flight"))),
            },
        }
    }

    fn settle(&mut self, phase: Phase<D>, requests: u32, outcome: Result<Committed<D>, Error>, now: Timestamp) -> Action<Written> {
        // Only a transient failure leaves the outcome unknown: every other
        // error follows a read that showed the write not stored (a conflict
        // re-reads, and finds an earlier attempt of ours that landed).
        let unknown = matches!(outcome, Err(Error::Unavailable { .. }));
        if !unknown {
            self.unresolved = None;
        }
        let landed_then_taken = matches!(outcome, Err(Error::Fenced { landed: true, .. }));
        self.taken |= matches!(outcome, Err(Error::Fenced { .. } | Error::Expired { .. }));
        if let Ok(c) = outcome.as_ref() {
            self.doc = c.doc.clone();
            self.version = c.version.clone();
            self.last_stored_at = now;
        }
        match phase {
            Phase::Replay { intent, both_finish } => match outcome {
                // The earlier finish landed before someone else claimed:
                // the work ended as asked.
                Err(_) if landed_then_taken && both_finish => Action::Done(Ok(Written { landed: false, stop: None, requests })),
                // Nothing of this call was written.
                Err(Error::Fenced { key, worker_id, epoch, holder, .. }) => {
                    Action::Done(Err(Error::Fenced { key, worker_id, epoch, holder, landed: false }))
                }
                Err(e) => Action::Done(Err(e)),
                Ok(_) => self.write_intent(intent, now, requests),
            },
            Phase::Write => match outcome {
                // Stored, and then someone else claimed: the write is not
                // fenced; the next one will be.
                Err(_) if landed_then_taken => Action::Done(Ok(Written { landed: true, stop: None, requests })),
                Err(e) => Action::Done(Err(e)),
                Ok(_) => {
                    let lease = self.lease().clone();
                    match lease.stop_requested.clone() {
                        Some(stop) if lease.is_open() => {
                            // Our write landed just before the request: release now.
                            let release = Write::release(Holder::of(&lease), derived_write_id(lease.last_write), D::Progress::default());
                            self.unresolved = Some(release.clone());
                            let update = Update::from_cached(&self.key, release, self.config, self.doc.clone(), self.version.clone());
                            self.launch(Phase::StopRelease { stop }, update, now, requests)
                        }
                        stop => Action::Done(Ok(Written { landed: true, stop, requests })),
                    }
                }
            },
            // The write before it landed: whatever happens to the release,
            // the outcome is that write's, with the stop. An unresolved
            // release is replayed by the next call.
            Phase::StopRelease { stop } => Action::Done(Ok(Written { landed: true, stop: Some(stop), requests })),
        }
    }

    /// Nothing of this call was written: the lease is not ours any more.
    fn fenced(&self) -> Action<Written> {
        let lease = self.lease();
        Action::Done(Err(Error::Fenced {
            key: self.key.clone(),
            worker_id: lease.worker_id.clone(),
            epoch: lease.epoch,
            holder: None,
            landed: false,
        }))
    }

    /// Feeds the store's answer to the write in flight.
    pub fn handle(&mut self, response: Response, now: Timestamp, random: u64) -> Action<Written> {
        match self.in_flight.as_mut() {
            Some(f) => {
                let action = f.update.handle(response, now, random);
                self.step(action, now)
            }
            None => Action::Done(Err(misuse("a response with no write in flight"))),
        }
    }

    /// Continues the write in flight after an [`Action::Sleep`].
    pub fn wake(&mut self, now: Timestamp) -> Action<Written> {
        match self.in_flight.as_mut() {
            Some(f) => {
                let action = f.update.wake(now);
                self.step(action, now)
            }
            None => Action::Done(Err(misuse("wake with no write in flight"))),
        }
    }
}

/// The write id of the release that follows a landed write because of a
/// stop request: derived, so the session needs no second random number, and
/// distinct from the write before it.
fn derived_write_id(write_id: u64) -> u64 {
    let z = write_id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn misuse(reason: &str) -> Error {
    Error::Protocol { reason: reason.into() }
}

/// [`Session::begin`] as a [`Drive`] value, borrowing the session.
#[must_use = "a session write does nothing until driven: call `start`, then answer its actions"]
pub struct SessionWrite<'a, D: Work> {
    session: &'a mut Session<D>,
    intent: Option<(D::Progress, Option<Finish>, u64)>,
}

impl<D: Work> Drive for SessionWrite<'_, D> {
    type Output = Written;
    fn start(&mut self, now: Timestamp) -> Action<Written> {
        match self.intent.take() {
            Some((progress, finish, write_id)) => self.session.begin(progress, finish, write_id, now),
            None => Action::Done(Err(misuse("start called twice"))),
        }
    }
    fn handle(&mut self, response: Response, now: Timestamp, random: u64) -> Action<Written> {
        self.session.handle(response, now, random)
    }
    fn wake(&mut self, now: Timestamp) -> Action<Written> {
        self.session.wake(now)
    }
}
