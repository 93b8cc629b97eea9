//! The one error type of the backends crate. Store-specific failures are
//! folded into variants that say what to do; messages never carry credentials.

use oxiflow_core::ErrorKind;

/// Everything the stores and the [`StateManager`](crate::StateManager) report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A core rule: conflict, fenced, lease held, invalid input, corrupt, …
    #[error(transparent)]
    Core(#[from] oxiflow_core::Error),

    /// `put_if_absent` found the key taken.
    #[error("{key} already exists in {store}")]
    AlreadyExists {
        /// The store, as described to people.
        store: String,
        /// The key that exists.
        key: String,
    },

    /// `put_if_match` found another version (or no object).
    #[error("{key} in {store} changed since it was read")]
    Precondition {
        /// The store, as described to people.
        store: String,
        /// The key whose version moved on.
        key: String,
    },

    /// A transient failure: the server is down, slow, or said 5xx / 409.
    #[error("store {store} is unavailable: {reason}")]
    Unavailable {
        /// The store, as described to people.
        store: String,
        /// What failed, in the store's or the network's words.
        reason: String,
    },

    /// The bucket or container does not exist.
    #[error("bucket or container of {store} does not exist; create it first")]
    MissingBucket {
        /// The store, as described to people.
        store: String,
    },

    /// Credentials are missing, wrong, or lack permission.
    #[error("access denied by {store}: {reason}; check the credentials")]
    AccessDenied {
        /// The store, as described to people.
        store: String,
        /// What the store said, without any secret.
        reason: String,
    },

    /// The store silently ignores a condition it must honour; refuse it.
    #[error("store {store} is not safe for oxiflow: {reason}")]
    UnsafeStore {
        /// The store, as described to people.
        store: String,
        /// Which condition it ignores.
        reason: String,
    },

    /// The URL names no store we can open.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (a password shown as `***`).
        url: String,
        /// What is wrong with it, and the fix.
        reason: String,
    },

    /// A local file operation failed.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done: "open", "rename", ….
        operation: &'static str,
        /// The file or directory.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// Anything else the store said.
    #[error("store {store} failed: {reason}")]
    Store {
        /// The store, as described to people.
        store: String,
        /// What it said.
        reason: String,
    },
}

impl Error {
    /// What the caller should do, in the core's terms (exit codes map from it).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Core(e) => e.kind(),
            Error::AlreadyExists { .. } | Error::Precondition { .. } => ErrorKind::Conflict,
            Error::Unavailable { .. } | Error::Io { .. } => ErrorKind::Unavailable,
            // Not transient (those are `Unavailable`), not ours to fix: read the message.
            Error::Store { .. } => ErrorKind::Bug,
            Error::MissingBucket { .. } | Error::AccessDenied { .. } | Error::InvalidUrl { .. } | Error::UnsafeStore { .. } => {
                ErrorKind::Invalid
            }
        }
    }
}

/// The backends' result, with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources, joined with ": ", for a message (never to
/// decide anything by): what the CLI prints, the Python exceptions and the
/// Lambda runner's error responses say.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
