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

/// The exit code for an error from anywhere in the program.
pub fn code(error: &anyhow::Error) -> u8 {
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
        _ => "failure",
    }
}

pub fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}
