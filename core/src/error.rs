//! The one error type of the core. Each variant tells the caller what to do.

use alloc::string::String;

use serde::Serialize;

use crate::doc::StatusKind;
use crate::id::{IdKind, IdRule, WorkerId};
use crate::step::StepAction;
use crate::time::Timestamp;

/// Everything that can go wrong in core. `#[non_exhaustive]`: match on the
/// variants you act on and treat the rest by [`Error::kind`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Error {
    /// The document kept changing under us; re-read and retry later.
    #[error("conflict on {key}: {reason}")]
    Conflict {
        /// Store key of the document.
        key: String,
        /// What kept changing, for the message.
        reason: String,
    },

    /// The worker asks to write as a holder but never held this lease:
    /// claim it first (or check the worker id).
    #[error("worker {worker_id} has never held the lease on {key}{}; nothing was written: claim it first, or check the worker id", current_holder_suffix(.holder))]
    NotHolder {
        /// Store key of the document.
        key: String,
        /// The worker that asked.
        worker_id: WorkerId,
        /// Who holds the lease now, if anyone.
        holder: Option<WorkerId>,
    },

    /// You no longer hold the lease (it was taken over or released): stop
    /// working on this partition. Its stored bookmark is authoritative.
    /// `landed`: this operation's write did land before the lease passed on
    /// (a release whose response was lost is then done).
    #[error("fenced on {key}: worker {worker_id} at epoch {epoch} no longer holds the lease{}{}", current_holder_suffix(.holder), if *.landed { "; this write landed before that" } else { "" })]
    Fenced {
        /// Store key of the document.
        key: String,
        /// The worker that lost the lease.
        worker_id: WorkerId,
        /// The epoch it held.
        epoch: u64,
        /// Who holds the lease now, if anyone.
        holder: Option<WorkerId>,
        /// This operation's write landed before the lease passed on.
        landed: bool,
    },

    /// The holder's lease passed its trusted time before this write; nothing
    /// was written. Claim again; a longer ttl or more frequent heartbeats
    /// keep a lease.
    #[error("the lease of worker {worker_id} on {key} (epoch {epoch}) was trusted only until {trusted_until}; nothing was written: claim it again (a longer ttl or more frequent heartbeats keep a lease)")]
    Expired {
        /// Store key of the document.
        key: String,
        /// The holder whose lease expired.
        worker_id: WorkerId,
        /// The epoch it held.
        epoch: u64,
        /// `expires_at - safety_margin`: the last instant it could write.
        trusted_until: Timestamp,
    },

    /// Someone else holds a valid lease; try again after `expires_at` plus
    /// the skew allowance, or ask them to stop.
    #[error("lease on {key} is held by {holder} (epoch {epoch}) until {expires_at}")]
    LeaseHeld {
        /// Store key of the document.
        key: String,
        /// Who holds the lease.
        holder: WorkerId,
        /// The epoch it holds.
        epoch: u64,
        /// When the lease runs out unless renewed.
        expires_at: Timestamp,
    },

    /// The step state machine forbids this; the hint says what would allow it.
    #[error("cannot {action} a step that is {from}: {hint}")]
    InvalidTransition {
        /// The step's status.
        from: StatusKind,
        /// What was attempted.
        action: StepAction,
        /// What would allow it.
        hint: &'static str,
    },

    /// A counter or bookmark would go backwards.
    #[error("{field} would go backwards from {current} to {proposed}")]
    CounterRegression {
        /// Which counter or bookmark.
        field: &'static str,
        /// The stored value.
        current: i128,
        /// The smaller value that was refused.
        proposed: i128,
    },

    /// An id broke a rule; fix the id.
    #[error("invalid {kind} \"{value}\": {rule}")]
    InvalidId {
        /// Which sort of id.
        kind: IdKind,
        /// The id as given.
        value: String,
        /// The rule it broke.
        rule: IdRule,
    },

    /// Some other input was unacceptable; fix the input.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What was wrong, for the message.
        reason: String,
    },

    /// The partition's upstream is not done (or failed for good): the
    /// pipeline's order forbids claiming it now. The reason names what it
    /// waits on.
    #[error("{key} is not ready: {reason}")]
    NotReady {
        /// Store key of the partition.
        key: String,
        /// What it waits on.
        reason: String,
    },

    /// No document at this key.
    #[error("not found: {key}")]
    NotFound {
        /// The key that had no document.
        key: String,
    },

    /// The stored bytes are damaged; nothing was overwritten.
    #[error("corrupt document at {key}: {reason}; nothing was overwritten")]
    Corrupt {
        /// Store key of the document.
        key: String,
        /// What is damaged, for the message.
        reason: String,
    },

    /// Written by a newer oxiflow; upgrade before touching it.
    #[error("{key} has format_version {found}, this build reads up to {supported}; upgrade oxiflow")]
    UnsupportedFormat {
        /// Store key of the document.
        key: String,
        /// The document's `format_version`.
        found: u64,
        /// The newest version this build reads.
        supported: u64,
    },

    /// The object is bigger than the configured limit.
    #[error("{key} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Store key of the document.
        key: String,
        /// The object's size in bytes.
        size: usize,
        /// The configured maximum in bytes.
        limit: usize,
    },

    /// The store kept failing with transient errors; retry later.
    #[error("store unavailable for {key} after {attempts} attempts: {reason}")]
    Unavailable {
        /// Store key of the document.
        key: String,
        /// Requests tried before giving up.
        attempts: u32,
        /// The last transient error, for the message.
        reason: String,
    },

    /// A driver was fed a response that does not answer its request: a bug
    /// in the code driving it.
    #[error("protocol misuse: {reason}")]
    Protocol {
        /// What was mismatched, for the message.
        reason: String,
    },
}

fn current_holder_suffix(holder: &Option<WorkerId>) -> String {
    match holder {
        Some(w) => alloc::format!(" (now held by {w})"),
        None => String::new(),
    }
}

/// What the caller should do about an [`Error`], coarsely. Exit codes and
/// HTTP statuses map from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Concurrent writes kept winning: retry later.
    Conflict,
    /// The lease is lost or expired: stop working on the partition.
    Fenced,
    /// Someone else holds the lease: wait for it, or ask them to stop.
    LeaseHeld,
    /// The input or the transition is wrong: fix it, retrying will not help.
    Invalid,
    /// No document at the key.
    NotFound,
    /// The pipeline's order does not allow it yet: wait, or force it.
    NotReady,
    /// Damaged or too new a document: nothing was overwritten.
    Corrupt,
    /// The store kept failing: retry later.
    Unavailable,
    /// A bug in the caller driving the protocol.
    Bug,
}

impl Error {
    /// What to do about this error, coarsely.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::Fenced { .. } | Error::Expired { .. } | Error::NotHolder { .. } => ErrorKind::Fenced,
            Error::LeaseHeld { .. } => ErrorKind::LeaseHeld,
            Error::InvalidTransition { .. }
            | Error::CounterRegression { .. }
            | Error::InvalidId { .. }
            | Error::InvalidInput { .. }
            | Error::TooLarge { .. } => ErrorKind::Invalid,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::NotReady { .. } => ErrorKind::NotReady,
            Error::Corrupt { .. } | Error::UnsupportedFormat { .. } => ErrorKind::Corrupt,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Protocol { .. } => ErrorKind::Bug,
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidInput { reason: reason.into() }
    }
}
