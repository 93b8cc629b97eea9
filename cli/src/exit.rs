//! Exit codes, one per thing a caller can act on. Documented in README.md.

use std::process::ExitCode;

use oxiflow_backends::Error as StoreError;
use oxiflow_core::ErrorKind;

/// 0 ok; these for failures.
pub(crate) const FAILURE: u8 = 1;
pub(crate) const INVALID: u8 = 2;
pub(crate) const NOT_FOUND: u8 = 3;
pub(crate) const CONFLICT: u8 = 4;
pub(crate) const LEASE_HELD: u8 = 5;
pub(crate) const FENCED: u8 = 6;
pub(crate) const CORRUPT: u8 = 7;
pub(crate) const UNAVAILABLE: u8 = 8;
/// The pipeline's order forbids it now: upstream unfinished (`claim`), or
/// nothing ready yet (`claim --next`). Wait and try again.
pub(crate) const NOT_READY: u8 = 9;
/// `claim --next`: nothing is left to claim in this run (completed, or
/// failed with nothing else able to run).
pub(crate) const FINISHED: u8 = 10;
/// A write was saved, and a stop was requested: the lease is released; stop
/// working on that step.
pub(crate) const STOPPED: u8 = 11;

/// A command that did its part but must end with a code other than 0 (its
/// output is already printed): nothing ready yet, nothing left, stopped.
#[derive(Debug, thiserror::Error)]
#[error("{note}")]
pub(crate) struct Status {
    pub code: u8,
    pub note: String,
}

/// A mistake in the command line or in a file it names (exit 2): the CLI's
/// own usage errors, kept apart from the core's and the stores' refusals.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Usage(pub String);

/// Something named on the command line does not exist (exit 3); the
/// message says what does.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Missing(pub String);

/// A [`Usage`] error.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    Usage(message.into()).into()
}

/// What each kind of error means to a caller, in one table: the exit code,
/// its name in `--json` errors, and the HTTP status of `oxiflow serve`.
const KINDS: [(ErrorKind, u8, &str, u16); 9] = [
    (ErrorKind::Invalid, INVALID, "invalid", 400),
    (ErrorKind::NotFound, NOT_FOUND, "not_found", 404),
    (ErrorKind::Conflict, CONFLICT, "conflict", 409),
    (ErrorKind::LeaseHeld, LEASE_HELD, "lease_held", 423),
    (ErrorKind::Fenced, FENCED, "fenced", 409),
    (ErrorKind::Corrupt, CORRUPT, "corrupt", 422),
    (ErrorKind::Unavailable, UNAVAILABLE, "unavailable", 503),
    (ErrorKind::NotReady, NOT_READY, "not_ready", 425),
    (ErrorKind::Bug, FAILURE, "failure", 500),
];

/// The kind of an error from anywhere in the program; `None` for a plain failure.
pub(crate) fn kind(error: &anyhow::Error) -> Option<ErrorKind> {
    if let Some(e) = error.downcast_ref::<StoreError>() {
        Some(e.kind())
    } else if let Some(e) = error.downcast_ref::<oxiflow_core::Error>() {
        Some(e.kind())
    } else if error.downcast_ref::<oxiflow_backends::config::ConfigError>().is_some() || error.downcast_ref::<Usage>().is_some() {
        Some(ErrorKind::Invalid)
    } else if error.downcast_ref::<Missing>().is_some() {
        Some(ErrorKind::NotFound)
    } else {
        None
    }
}

/// The exit code for an error from anywhere in the program.
pub(crate) fn code(error: &anyhow::Error) -> u8 {
    if let Some(s) = error.downcast_ref::<Status>() {
        return s.code;
    }
    kind(error).and_then(|k| KINDS.iter().find(|row| row.0 == k)).map_or(FAILURE, |row| row.1)
}

/// The HTTP status meaning the same as the error's exit code (500 for a plain failure).
pub(crate) fn http_status(error: &anyhow::Error) -> u16 {
    kind(error).and_then(|k| KINDS.iter().find(|row| row.0 == k)).map_or(500, |row| row.3)
}

/// A short name for the code, for `--json` errors.
pub(crate) fn name(code: u8) -> &'static str {
    match code {
        FINISHED => "finished",
        STOPPED => "stopped",
        c => KINDS.iter().find(|row| row.1 == c).map_or("failure", |row| row.2),
    }
}

pub(crate) fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}
