//! Exit codes, one per thing a caller can act on. Documented in README.md.

use std::process::ExitCode;

use oxiflow_backends::Error as StoreError;
use oxiflow_core::ErrorKind;

/// 0 ok; these for failures.
pub const FAILURE: u8 = 1;
pub const INVALID: u8 = 2;
pub const NOT_FOUND: u8 = 3;
pub const CONFLICT: u8 = 4;
pub const LEASE_HELD: u8 = 5;
pub const FENCED: u8 = 6;
pub const CORRUPT: u8 = 7;
pub const UNAVAILABLE: u8 = 8;
/// The pipeline's order forbids it now: upstream unfinished (`claim`), or
/// nothing ready yet (`claim --next`). Wait and try again.
pub const NOT_READY: u8 = 9;
/// `claim --next`: nothing is left to claim in this run (completed, or
/// failed with nothing else able to run).
pub const FINISHED: u8 = 10;
/// A write was saved, and a stop was requested: the lease is released; stop
/// working on that step.
pub const STOPPED: u8 = 11;

/// A command that did its part but must end with a code other than 0 (its
/// output is already printed): nothing ready yet, nothing left, stopped.
#[derive(Debug, thiserror::Error)]
#[error("{note}")]
pub struct Status {
    pub code: u8,
    pub note: String,
}

/// The exit code for an error from anywhere in the program.
pub fn code(error: &anyhow::Error) -> u8 {
    if let Some(s) = error.downcast_ref::<Status>() {
        return s.code;
    }
    let kind = if let Some(e) = error.downcast_ref::<StoreError>() {
        e.kind()
    } else if let Some(e) = error.downcast_ref::<oxiflow_core::Error>() {
        e.kind()
    } else if error.downcast_ref::<crate::config::ConfigError>().is_some() {
        ErrorKind::Invalid
    } else {
        return FAILURE;
    };
    match kind {
        ErrorKind::Conflict => CONFLICT,
        ErrorKind::Fenced => FENCED,
        ErrorKind::LeaseHeld => LEASE_HELD,
        ErrorKind::Invalid => INVALID,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Corrupt => CORRUPT,
        ErrorKind::Unavailable => UNAVAILABLE,
        ErrorKind::NotReady => NOT_READY,
        _ => FAILURE,
    }
}

/// A short name for the code, for `--json` errors.
pub fn name(code: u8) -> &'static str {
    match code {
        INVALID => "invalid",
        NOT_FOUND => "not_found",
        CONFLICT => "conflict",
        LEASE_HELD => "lease_held",
        FENCED => "fenced",
        CORRUPT => "corrupt",
        UNAVAILABLE => "unavailable",
        NOT_READY => "not_ready",
        FINISHED => "finished",
        STOPPED => "stopped",
        _ => "failure",
    }
}

pub fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}
