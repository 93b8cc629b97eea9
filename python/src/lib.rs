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
//! runtime: a child opens its own `State`.

use std::future::Future;
use std::sync::Mutex;

use pyo3::prelude::*;

mod errors;
mod lease;
mod plan;
mod state;
mod store;

/// The runtime and the process it was started in.
static RUNTIME: Mutex<Option<(u32, &'static tokio::runtime::Runtime)>> = Mutex::new(None);

/// The process's runtime: two worker threads (heartbeats and I/O wait; the
/// work itself is the caller's Python). A process forked from one that had
/// started it inherits it without its threads: the child starts its own
/// (the parent's stays, unused, in the child's memory).
fn runtime() -> &'static tokio::runtime::Runtime {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match *slot {
        Some((started_in, runtime)) if started_in == pid => runtime,
        _ => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("oxiflow")
                .enable_all()
                .build()
                .expect("cannot start the oxiflow tokio runtime");
            let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
            *slot = Some((pid, runtime));
            runtime
        }
    }
}

/// Runs the future `make` returns to its end on the runtime, with the GIL
/// released meanwhile, so other Python threads run while this one waits.
fn block_on<F, T>(py: Python<'_>, make: impl FnOnce() -> F + Send) -> T
where
    F: Future<Output = T>,
    T: Send,
{
    py.allow_threads(|| runtime().block_on(make()))
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
    Ok(())
}
