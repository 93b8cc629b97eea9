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
    Conflict { key: String, reason: String },

    /// You no longer hold the lease (it was taken over or released): stop
    /// working on this partition. Its stored bookmark is authoritative.
    /// `landed`: this operation's write did land before the lease passed on
    /// (a release whose response was lost is then done).
    #[error("fenced on {key}: worker {worker_id} at epoch {epoch} no longer holds the lease{}{}", current_holder_suffix(.holder), if *.landed { "; this write landed before that" } else { "" })]
    Fenced { key: String, worker_id: WorkerId, epoch: u64, holder: Option<WorkerId>, landed: bool },

    /// The holder's lease passed its trusted time before this write; nothing
    /// was written. Claim again; a longer ttl or more frequent heartbeats
    /// keep a lease.
    #[error("the lease of worker {worker_id} on {key} (epoch {epoch}) was trusted only until {trusted_until}; nothing was written: claim it again (a longer ttl or more frequent heartbeats keep a lease)")]
    Expired { key: String, worker_id: WorkerId, epoch: u64, trusted_until: Timestamp },

    /// Someone else holds a valid lease; try again after `expires_at` plus
    /// the skew allowance, or ask them to stop.
    #[error("lease on {key} is held by {holder} (epoch {epoch}) until {expires_at}")]
    LeaseHeld { key: String, holder: WorkerId, epoch: u64, expires_at: Timestamp },

    /// The step state machine forbids this; the hint says what would allow it.
    #[error("cannot {action} a step that is {from}: {hint}")]
    InvalidTransition { from: StatusKind, action: StepAction, hint: &'static str },

    /// A counter or bookmark would go backwards.
    #[error("{field} would go backwards from {current} to {proposed}")]
    CounterRegression { field: &'static str, current: i128, proposed: i128 },

    /// An id broke a rule; fix the id.
    #[error("invalid {kind} \"{value}\": {rule}")]
    InvalidId { kind: IdKind, value: String, rule: IdRule },

    /// Some other input was unacceptable; fix the input.
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },

    /// The partition's upstream is not done (or failed for good): the
    /// pipeline's order forbids claiming it now. The reason names what it
    /// waits on.
    #[error("{key} is not ready: {reason}")]
    NotReady { key: String, reason: String },

    /// No document at this key.
    #[error("not found: {key}")]
    NotFound { key: String },

    /// The stored bytes are damaged; nothing was overwritten.
    #[error("corrupt document at {key}: {reason}; nothing was overwritten")]
    Corrupt { key: String, reason: String },

    /// Written by a newer oxiflow; upgrade before touching it.
    #[error("{key} has format_version {found}, this build reads up to {supported}; upgrade oxiflow")]
    UnsupportedFormat { key: String, found: u64, supported: u64 },

    /// The object is bigger than the configured limit.
    #[error("{key} is {size} bytes, over the {limit}-byte limit")]
    TooLarge { key: String, size: usize, limit: usize },

    /// The store kept failing with transient errors; retry later.
    #[error("store unavailable for {key} after {attempts} attempts: {reason}")]
    Unavailable { key: String, attempts: u32, reason: String },

    /// A driver was fed a response that does not answer its request: a bug
    /// in the code driving it.
    #[error("protocol misuse: {reason}")]
    Protocol { reason: String },
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
    Conflict,
    Fenced,
    LeaseHeld,
    Invalid,
    NotFound,
    /// The pipeline's order does not allow it yet: wait, or force it.
    NotReady,
    Corrupt,
    Unavailable,
    Bug,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::Fenced { .. } | Error::Expired { .. } => ErrorKind::Fenced,
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
