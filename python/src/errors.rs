//! Errors cross into Python as the exceptions of `oxiflow/_errors.py`, one
//! per exit code of the `oxiflow` command, with the same message text.

use oxiflow_core::ErrorKind;
use pyo3::prelude::*;

/// An error on its way to Python: the exception class and the message.
#[derive(Debug)]
pub(crate) struct Failure {
    class: &'static str,
    message: String,
    /// `claim()` found nothing: the scheduler's answer, as JSON, for the
    /// exception's `schedule` attribute.
    schedule: Option<String>,
}

impl Failure {
    pub(crate) fn new(class: &'static str, message: impl Into<String>) -> Self {
        Failure { class, message: message.into(), schedule: None }
    }

    /// Attaches the scheduler's answer (why each partition waits).
    pub(crate) fn with_schedule(mut self, schedule: &oxiflow_core::Schedule) -> Self {
        self.schedule = serde_json::to_string(schedule).ok();
        self
    }

    /// A mistake in the arguments (exit 2).
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Failure::new("InvalidInput", message)
    }

    /// Something that should not happen (exit 1).
    pub(crate) fn bug(message: impl Into<String>) -> Self {
        Failure::new("Error", message)
    }

    fn of_kind(kind: ErrorKind, message: String) -> Self {
        let class = match kind {
            ErrorKind::Invalid => "InvalidInput",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::LeaseHeld => "LeaseHeld",
            ErrorKind::Fenced => "Fenced",
            ErrorKind::Corrupt => "Corrupt",
            ErrorKind::Unavailable => "Unavailable",
            ErrorKind::NotReady => "NotReady",
            ErrorKind::Bug => "Error",
        };
        Failure::new(class, message)
    }
}

impl From<oxiflow_backends::Error> for Failure {
    fn from(e: oxiflow_backends::Error) -> Self {
        Failure::of_kind(e.kind(), oxiflow_backends::chain(&e))
    }
}

impl From<oxiflow_core::Error> for Failure {
    fn from(e: oxiflow_core::Error) -> Self {
        Failure::of_kind(e.kind(), oxiflow_backends::chain(&e))
    }
}

impl From<oxiflow_backends::config::ConfigError> for Failure {
    fn from(e: oxiflow_backends::config::ConfigError) -> Self {
        Failure::new("ConfigError", oxiflow_backends::chain(&e))
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> PyErr {
        Python::with_gil(|py| {
            let made = py.import("oxiflow._errors").and_then(|m| m.getattr(f.class)).and_then(|class| class.call1((f.message,)));
            let made = match (made, f.schedule) {
                (Ok(e), Some(schedule)) => {
                    py.import("json").and_then(|j| j.call_method1("loads", (schedule,))).and_then(|s| e.setattr("schedule", s)).map(|()| e)
                }
                (made, _) => made,
            };
            match made {
                Ok(exception) => PyErr::from_value(exception),
                Err(e) => e,
            }
        })
    }
}

/// A signal handler raised (`raised`: Ctrl-C's KeyboardInterrupt) while a
/// lease's write was in flight. The write was not abandoned, so the
/// exception carries its outcome: a KeyboardInterrupt becomes
/// `oxiflow.Interrupted` (a KeyboardInterrupt) with `saved` (True, False, or
/// None when the store's answer never came) and `told` as its message, the
/// write's own error, if any, as its cause. Any other exception a handler
/// raised keeps its type and gets `told` as a note.
pub(crate) fn interrupted(py: Python<'_>, raised: PyErr, saved: Option<bool>, told: String, error: Option<PyErr>) -> PyErr {
    let is_keyboard = raised.get_type(py).is(py.get_type::<pyo3::exceptions::PyKeyboardInterrupt>());
    if !is_keyboard {
        let value = raised.value(py);
        if value.hasattr("add_note").unwrap_or(false) {
            let _ = value.call_method1("add_note", (format!("oxiflow: {told}"),));
        }
        return raised;
    }
    let made = py.import("oxiflow._errors").and_then(|m| m.getattr("Interrupted")).and_then(|class| class.call1((told, saved)));
    match made {
        Ok(exception) => {
            let exception = PyErr::from_value(exception);
            exception.set_cause(py, error);
            exception
        }
        Err(_) => raised,
    }
}
