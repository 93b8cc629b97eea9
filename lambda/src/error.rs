//! The runner's errors: the invocation fails (Lambda retries it), nothing
//! is left half-written.

use oxiflow_core::ErrorKind;

/// Why an invocation failed. Each keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store or the core refused or failed: unavailable, corrupt,
    /// fenced, a bad id in the event…
    #[error(transparent)]
    State(#[from] oxiflow_backends::Error),
    /// The state is stored, but the next invocations could not be started;
    /// the retry of this invocation sends them again.
    #[error("the state is stored but the hand-off failed")]
    Handoff(#[source] crate::BatchError),
    /// The configuration (`OXIFLOW_*`, `.oxiflow/config.yaml`) is wrong.
    #[error(transparent)]
    Config(#[from] oxiflow_backends::config::ConfigError),
}

impl Error {
    /// The kind of failure, as the CLI's exit codes classify it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::State(e) => e.kind(),
            Error::Handoff(_) => ErrorKind::Unavailable,
            Error::Config(e) => e.kind(),
        }
    }
}

impl From<oxiflow_core::Error> for Error {
    fn from(e: oxiflow_core::Error) -> Self {
        Error::State(e.into())
    }
}

/// The function's error response: `errorType` is the kind (`unavailable`,
/// `fenced`, …), `errorMessage` the message with its causes.
impl From<Error> for lambda_runtime::Diagnostic {
    fn from(e: Error) -> Self {
        let message = oxiflow_backends::chain(&e);
        let kind = serde_json::to_value(e.kind()).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        lambda_runtime::Diagnostic { error_type: kind, error_message: message }
    }
}
