//! `oxiflow.Store`: the conditional store itself, for integrations that
//! keep their own small documents beside oxiflow's (an Airflow state-store
//! backend): read with a version, create-if-absent, compare-and-swap,
//! delete, list.
//!
//! Keys live under the store's root, next to oxiflow's `pipelines/`: use a
//! prefix of your own (`airflow/…`). Writes and deletes under `pipelines/`
//! are refused; those are oxiflow's documents, changed through `State`.

use std::sync::Arc;

use oxiflow_backends::{ConditionalStore, Error as StoreError};
use oxiflow_core::Version;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::Failure;
use crate::state::State;
use crate::{block_on, Local};

/// A store of bytes with compare-and-swap writes. Usable only in the
/// process that opened it ([`Local`]).
#[pyclass(module = "oxiflow._oxiflow", frozen)]
pub(crate) struct Store {
    store: Local<Arc<dyn ConditionalStore>>,
    max_bytes: usize,
}

/// A key this API may change: valid, and not one of oxiflow's documents.
fn check_writable(key: &str) -> Result<(), Failure> {
    oxiflow_core::keys::check_key(key)?;
    if key.starts_with(oxiflow_core::keys::PIPELINES_PREFIX) || key == "pipelines" {
        return Err(Failure::invalid(format!(
            "key {key:?} is under pipelines/, where oxiflow keeps its own documents; change those through State, and keep your keys under a prefix of your own"
        )));
    }
    Ok(())
}

/// The opaque version string: the store's version as JSON.
fn version_text(version: &Version) -> String {
    serde_json::to_string(version).expect("a version is JSON")
}

fn version_of(text: &str) -> Result<Version, Failure> {
    serde_json::from_str(text)
        .map_err(|_| Failure::invalid(format!("version {text:?} is not a version this store returned; pass what get() or put() gave")))
}

impl Store {
    pub(crate) fn new(store: Arc<dyn ConditionalStore>, max_bytes: usize) -> Store {
        Store { store: Local::new(store, "Store", "open a new oxiflow.Store (or oxiflow.State) in the child"), max_bytes }
    }
}

/// A conflict as the CLI words it: someone else wrote first.
fn conflict(e: StoreError, key: &str) -> Failure {
    match e {
        StoreError::AlreadyExists { .. } => {
            Failure::new("Conflict", format!("{key} already exists; read it and pass its version to replace it"))
        }
        StoreError::Precondition { .. } => {
            Failure::new("Conflict", format!("{key} changed since it was read (or was deleted); read it again and retry"))
        }
        e => e.into(),
    }
}

#[pymethods]
impl Store {
    /// The store at `url`, configured like `State(url, **options)`.
    #[new]
    #[pyo3(signature = (url=None, **options))]
    fn open(url: Option<String>, options: Option<&Bound<'_, pyo3::types::PyDict>>) -> PyResult<Store> {
        State::open(url, options)?.store()
    }

    /// The object at `key` and its version, or None.
    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<(Bound<'py, PyBytes>, String)>> {
        let store = self.store.get()?;
        let max = self.max_bytes;
        let found = block_on(py, || async { store.get(key, max).await }).map_err(Failure::from)?;
        Ok(found.map(|o| (PyBytes::new(py, &o.body), version_text(&o.version))))
    }

    /// Writes `data` at `key`: created only if absent (`version=None`), or
    /// replaced only if its version is still `version`; else `Conflict`.
    /// Returns the new version.
    #[pyo3(signature = (key, data, *, version=None))]
    fn put(&self, py: Python<'_>, key: &str, data: Vec<u8>, version: Option<&str>) -> PyResult<String> {
        check_writable(key)?;
        if data.len() > self.max_bytes {
            return Err(Failure::invalid(format!("{} bytes for {key} is over the limit of {} bytes", data.len(), self.max_bytes)).into());
        }
        let expected = version.map(version_of).transpose()?;
        let store = self.store.get()?;
        let written = block_on(py, || async {
            match &expected {
                None => store.put_if_absent(key, data).await,
                Some(v) => store.put_if_match(key, data, v).await,
            }
        });
        Ok(version_text(&written.map_err(|e| conflict(e, key))?))
    }

    /// Deletes `key`; an absent key is not an error.
    fn delete(&self, py: Python<'_>, key: &str) -> PyResult<()> {
        check_writable(key)?;
        let store = self.store.get()?;
        Ok(block_on(py, || async { store.delete(key).await }).map_err(Failure::from)?)
    }

    /// The keys under `prefix` (a key prefix, "" for all), sorted.
    #[pyo3(signature = (prefix=""))]
    fn list(&self, py: Python<'_>, prefix: &str) -> PyResult<Vec<String>> {
        let store = self.store.get()?;
        let listed = block_on(py, || async { store.list(prefix).await }).map_err(Failure::from)?;
        let mut keys: Vec<String> = listed.into_iter().map(|l| l.key).collect();
        keys.sort();
        Ok(keys)
    }

    fn __repr__(&self) -> String {
        match self.store.get() {
            Ok(store) => format!("oxiflow.Store({:?})", store.describe()),
            Err(_) => format!("<oxiflow.Store opened in process {}: unusable here>", self.store.pid()),
        }
    }
}
