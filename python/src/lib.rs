//! `oxiflow._oxiflow`: the native part of the `oxiflow` Python package.
//!
//! A thin layer over `oxiflow-backends`: [`State`](state::State) is a
//! `StateManager` opened from the same configuration as the `oxiflow`
//! command, [`Lease`](lease::Lease) a claimed partition with the backends'
//! background heartbeat (`Held`), [`Store`](store::Store) the conditional
//! store itself. Every rule (what may be claimed, fencing, retries) stays in
//! the core and the backends; this crate converts arguments and errors.
//!
//! Every call that does I/O releases the GIL and runs on one small tokio
//! runtime per process, started on first use (again in a forked child).
//! Objects opened before a fork hold connections and tasks of the parent's
//! runtime: every one remembers the process that made it ([`Local`]), and
//! refuses to be used in another (`UsedAfterFork`) rather than hang or
//! write there; a child opens its own `State`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyDict;

mod errors;
mod lease;
mod plan;
mod state;
mod store;

/// Python-level `fork()`s this process descends through (`os.register_at_fork`).
static FORKS: AtomicU64 = AtomicU64::new(0);

/// The process an object was made in: its pid, and the forks counted so
/// far (a pid can come back; a fork seen by Python always counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    pid: u32,
    forks: u64,
}

impl Origin {
    pub(crate) fn here() -> Origin {
        Origin { pid: std::process::id(), forks: FORKS.load(Ordering::SeqCst) }
    }

    pub(crate) fn is_here(self) -> bool {
        self == Origin::here()
    }
}

/// A value that belongs to the process that made it: reachable only there
/// (elsewhere: `UsedAfterFork`, at once), and never dropped elsewhere, since
/// dropping a connection of the parent's runtime in a child could block on
/// a lock held at the fork, or deregister the parent's sockets from the
/// epoll instance the two processes share.
pub(crate) struct Local<T> {
    origin: Origin,
    /// What it is and what to do instead, for the message: "Lease",
    /// "open a new oxiflow.State in the child and claim again".
    what: &'static str,
    fix: &'static str,
    /// Always `Some` but while dropping.
    value: Option<T>,
}

impl<T> Local<T> {
    pub(crate) fn new(value: T, what: &'static str, fix: &'static str) -> Self {
        Local { origin: Origin::here(), what, fix, value: Some(value) }
    }

    /// Nothing, in the process that made it; else why not.
    pub(crate) fn check(&self) -> Result<(), errors::Failure> {
        if self.origin.is_here() {
            return Ok(());
        }
        let message = format!(
            "this {} was created in process {} and cannot be used after fork() (this is process {}); {}",
            self.what,
            self.origin.pid,
            std::process::id(),
            self.fix
        );
        Err(errors::Failure::new("UsedAfterFork", message))
    }

    /// The value, in the process that made it.
    pub(crate) fn get(&self) -> Result<&T, errors::Failure> {
        self.check()?;
        Ok(self.value.as_ref().expect("a Local holds its value until dropped"))
    }

    /// The process it was made in.
    pub(crate) fn pid(&self) -> u32 {
        self.origin.pid
    }
}

impl<T> Drop for Local<T> {
    fn drop(&mut self) {
        if !self.origin.is_here() {
            std::mem::forget(self.value.take());
        }
    }
}

/// The runtime and the process it was started in.
static RUNTIME: Mutex<Option<(Origin, &'static tokio::runtime::Runtime)>> = Mutex::new(None);

/// The process's runtime: two worker threads (heartbeats and I/O wait; the
/// work itself is the caller's Python). A process forked from one that had
/// started it inherits it without its threads: the child starts its own
/// (the parent's stays, unused and never dropped, in the child's memory).
fn runtime() -> &'static tokio::runtime::Runtime {
    let here = Origin::here();
    let mut slot = RUNTIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match *slot {
        Some((started_in, runtime)) if started_in == here => runtime,
        _ => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("oxiflow")
                .enable_all()
                .build()
                .expect("cannot start the oxiflow tokio runtime");
            let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
            *slot = Some((here, runtime));
            runtime
        }
    }
}

/// Runs the future `make` returns to its end on the runtime, with the GIL
/// released meanwhile, so other Python threads run while this one waits.
/// A signal (Ctrl-C) meanwhile does not stop it: its handler runs when
/// Python next checks, after the call.
fn block_on<F, T>(py: Python<'_>, make: impl FnOnce() -> F + Send) -> T
where
    F: Future<Output = T>,
    T: Send,
{
    py.allow_threads(|| runtime().block_on(make()))
}

/// `os.register_at_fork(after_in_child=…)`: counts the fork, so objects made
/// before it know they are in another process.
#[pyfunction(name = "_after_fork_in_child")]
fn after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::SeqCst);
}

/// `json.loads(text)`: documents cross into Python as the JSON the CLI prints.
fn from_json<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| errors::Failure::bug(format!("cannot encode a document as JSON: {e}")))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// The native module.
#[pymodule]
fn _oxiflow(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<state::State>()?;
    m.add_class::<lease::Lease>()?;
    m.add_class::<store::Store>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    let hook = wrap_pyfunction!(after_fork_in_child, m)?;
    let os = m.py().import("os")?;
    if os.hasattr("register_at_fork")? {
        let kwargs = PyDict::new(m.py());
        kwargs.set_item("after_in_child", hook)?;
        os.call_method("register_at_fork", (), Some(&kwargs))?;
    }
    Ok(())
}
