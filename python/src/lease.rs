//! `oxiflow.Lease`: a claimed partition, kept alive by the backends'
//! background heartbeat ([`Held`]) until it is completed, failed or
//! released. A context manager: leaving the `with` block on an exception
//! records the error (a retryable failure) and releases the lease, so the
//! next claim resumes from the bookmark; leaving it normally releases a
//! lease that was not finished.
//!
//! Two promises beyond the backends': a lease is usable only in the process
//! that claimed it ([`Local`]: a forked child gets `UsedAfterFork` at once,
//! never a hang or a write), and a Ctrl-C while a write is in flight never
//! abandons it: the write runs to its end and the interrupt that follows
//! says how it ended ([`Lease::deliver`]).

use std::collections::BTreeMap;
use std::sync::Mutex;

use oxiflow_backends::{Claimed, Ending, Held, StateManager};
use oxiflow_core::{ErrorKind, PartitionDoc, Progress, StopRequest, WorkerId, MAX_COUNTER};
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::errors::Failure;
use crate::{block_on, from_json, Local};

/// What a forked child is told to do instead.
const IN_THE_CHILD: &str = "open a new oxiflow.State in the child and claim again";

/// How a lease ended, for the message of a later call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Completed,
    Failed,
    Released,
    Stopped,
    Lost,
}

impl Ended {
    fn word(self) -> &'static str {
        match self {
            Ended::Completed => "completed",
            Ended::Failed => "failed",
            Ended::Released => "released",
            Ended::Stopped => "released by a stop request",
            Ended::Lost => "lost (fenced, or the store refused a write)",
        }
    }
}

/// What the getters read: short locks, never held across I/O.
struct Status {
    /// The document as last written by this lease.
    doc: PartitionDoc,
    ended: Option<Ended>,
}

/// A claimed partition with a background heartbeat.
///
/// Two locks: `held` is taken only with the GIL released (a write holds it
/// across I/O, so writes through one lease run one at a time), `status` only
/// briefly; so a thread reading `bookmark` while another checkpoints never
/// waits for the GIL and the lock at once.
#[pyclass(module = "oxiflow._oxiflow", frozen)]
pub(crate) struct Lease {
    key: String,
    worker: WorkerId,
    held: Local<tokio::sync::Mutex<Option<Held>>>,
    status: Mutex<Status>,
}

/// A count from Python (`records`, `batch`, …): a whole number a document
/// can hold; None is 0. Values a u64 holds go to the core as they are (it
/// refuses those past its maximum, naming the field); the rest are refused
/// here, never clamped.
fn count(name: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<u64> {
    let Some(value) = value.filter(|v| !v.is_none()) else { return Ok(0) };
    value.extract::<u64>().map_err(|_| {
        let shown = value.repr().map(|r| r.to_string()).unwrap_or_else(|_| "that".into());
        let shown: String = shown.chars().take(64).collect();
        Failure::invalid(format!("{name} must be a whole number from 0 to {MAX_COUNTER} (2^53 - 1), not {shown}")).into()
    })
}

/// What a write's outcome says about the store: saved, not saved, or
/// unknown (the store did not answer; the next write settles it).
fn saved_by(error: &oxiflow_backends::Error) -> Option<bool> {
    (error.kind() != ErrorKind::Unavailable).then_some(false)
}

/// The progress arguments every holder write takes.
fn progress(
    last_id: Option<String>,
    records: u64,
    failed: u64,
    bytes: u64,
    extra: Option<BTreeMap<String, String>>,
    errors: Option<Vec<String>>,
    batch: Option<u64>,
) -> Progress {
    Progress {
        last_processed_id: last_id,
        batch_number: batch,
        add_records: records,
        add_failed: failed,
        add_bytes: bytes,
        extra: extra.unwrap_or_default(),
        errors: errors.unwrap_or_default(),
        ..Progress::default()
    }
}

fn stopped(key: &str, stop: &StopRequest, landed: bool) -> Failure {
    let saved = if landed { "saved, then stopped" } else { "stopped" };
    Failure::new(
        "Stopped",
        format!(
            "{saved}: {} asked the holder of {key} to stop ({}); the lease is released: stop working on it",
            stop.requested_by, stop.requested_at
        ),
    )
}

impl Status {
    /// Keeps `doc` unless a newer one is kept already: threads sharing the
    /// lease write one at a time but may report back in another order.
    fn take(&mut self, doc: PartitionDoc) {
        if doc.version >= self.doc.version {
            self.doc = doc;
        }
    }
}

impl Lease {
    pub(crate) fn hold(manager: StateManager, claimed: Claimed, worker: WorkerId) -> Lease {
        let key = claimed.key().to_string();
        let doc = claimed.doc().clone();
        // The heartbeat is a task on the runtime: start it inside it.
        let held = crate::runtime().block_on(async { manager.keep(claimed) });
        Lease {
            key,
            worker,
            held: Local::new(tokio::sync::Mutex::new(Some(held)), "Lease", IN_THE_CHILD),
            status: Mutex::new(Status { doc, ended: None }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The status, in the process that claimed (elsewhere, `UsedAfterFork`).
    fn status(&self) -> PyResult<std::sync::MutexGuard<'_, Status>> {
        self.held.check()?;
        Ok(self.lock())
    }

    /// Runs `f` with the holder, the GIL released (see [`Lease`]); in
    /// another process than the claim's, `UsedAfterFork` before any I/O.
    fn with_held<T: Send>(&self, py: Python<'_>, f: impl AsyncFnOnce(&mut Option<Held>) -> T + Send) -> PyResult<T> {
        let held = self.held.get()?;
        Ok(block_on(py, || async {
            let mut held = held.lock().await;
            f(&mut held).await
        }))
    }

    /// Hands a write's outcome to the caller. A signal that arrived while
    /// it was in flight (Ctrl-C) did not stop it; its handler runs now,
    /// before returning, so whatever it raises (KeyboardInterrupt becomes
    /// `Interrupted`) says how the write ended: `saved` is what the store
    /// holds. Left to Python's next check instead, a KeyboardInterrupt
    /// would be raised at the call as if it had failed, after it landed.
    fn deliver(&self, py: Python<'_>, what: &str, outcome: PyResult<()>, saved: Option<bool>) -> PyResult<()> {
        let Err(raised) = py.check_signals() else { return outcome };
        let (batch, records) = {
            let status = self.lock();
            (status.doc.batch_number, status.doc.records_processed)
        };
        let told = match (saved, &outcome) {
            (Some(true), _) => format!(
                "interrupted after the {what} on {} was saved (batch {batch}, {records} records in all); it stands: resume after it",
                self.key
            ),
            (Some(false), Err(e)) => format!("interrupted; the {what} on {} was not saved: {}", self.key, e.value(py)),
            (Some(false), Ok(())) => format!("interrupted; the {what} on {} was not saved", self.key),
            (None, _) => format!(
                "interrupted; the {what} on {} may or may not be saved (the store did not answer); the lease's next write settles it",
                self.key
            ),
        };
        Err(crate::errors::interrupted(py, raised, saved, told, outcome.err()))
    }

    fn gone(&self, ended: Ended) -> Failure {
        Failure::new("Fenced", format!("you no longer hold {}: this lease was {}; claim it again", self.key, ended.word()))
    }

    /// A finishing write (complete, fail, release) through `Held`. The
    /// holder stays after an error that is not fencing: the call may be
    /// made again (an `Unavailable` write is settled first).
    /// `interruptible`: a Ctrl-C meanwhile is raised from this call with
    /// the outcome ([`Lease::deliver`]); `__exit__` leaves it to Python.
    fn finish(&self, py: Python<'_>, ended: Ended, progress: Progress, ending: Ending, interruptible: bool) -> PyResult<()> {
        let result = self.with_held(py, async move |slot| {
            let held = slot.as_ref()?;
            let result = held.finish_in_place(progress, ending).await;
            if result.as_ref().map_or_else(|e| e.kind() == ErrorKind::Fenced, |_| true) {
                *slot = None;
            }
            Some(result)
        })?;
        let (outcome, saved) = {
            let mut status = self.lock();
            match result {
                None => (Err(self.gone(status.ended.unwrap_or(Ended::Lost))), Some(false)),
                Some(Ok((written, doc))) => {
                    status.take(doc);
                    if written.landed {
                        status.ended = Some(ended);
                        (Ok(()), Some(true))
                    } else {
                        // The heartbeat met a stop request and released first.
                        status.ended = Some(Ended::Stopped);
                        let message = format!(
                            "nothing was written: the lease on {} was already released by a stop request; stop working on it",
                            self.key
                        );
                        (Err(Failure::new("Stopped", message)), Some(false))
                    }
                }
                Some(Err(e)) => {
                    if e.kind() == ErrorKind::Fenced {
                        status.ended = Some(Ended::Lost);
                    }
                    let saved = saved_by(&e);
                    (Err(Failure::from(e)), saved)
                }
            }
        };
        // The status lock is released: making the exception runs Python.
        let outcome = outcome.map_err(PyErr::from);
        if !interruptible {
            return outcome;
        }
        let what = match ended {
            Ended::Completed => "completion",
            Ended::Failed => "failure",
            _ => "release",
        };
        self.deliver(py, what, outcome, saved)
    }
}

#[pymethods]
impl Lease {
    /// The pipeline's id.
    #[getter]
    fn pipeline(&self) -> PyResult<String> {
        Ok(self.status()?.doc.pipeline_id.to_string())
    }

    /// The partition: `step` or `step@shard`.
    #[getter]
    fn partition(&self) -> PyResult<String> {
        Ok(self.status()?.doc.partition_id().to_string())
    }

    /// The worker id this lease is held as.
    #[getter]
    fn worker(&self) -> PyResult<String> {
        self.held.check()?;
        Ok(self.worker.to_string())
    }

    /// The store key of the partition's document.
    #[getter]
    fn key(&self) -> PyResult<String> {
        self.held.check()?;
        Ok(self.key.clone())
    }

    /// Where to resume: the last processed id checkpointed (None at the start).
    #[getter]
    fn bookmark(&self) -> PyResult<Option<String>> {
        Ok(self.status()?.doc.last_processed_id.clone())
    }

    /// The batch counter: checkpoints made on this partition in this run.
    #[getter]
    fn batch_number(&self) -> PyResult<u64> {
        Ok(self.status()?.doc.batch_number)
    }

    /// Records counted so far in this run.
    #[getter]
    fn records_processed(&self) -> PyResult<u64> {
        Ok(self.status()?.doc.records_processed)
    }

    /// Failed records counted so far in this run.
    #[getter]
    fn records_failed(&self) -> PyResult<u64> {
        Ok(self.status()?.doc.records_failed)
    }

    /// The claim's attempt number (1 for the first claim in this run).
    #[getter]
    fn attempts(&self) -> PyResult<u32> {
        Ok(self.status()?.doc.attempts)
    }

    /// The partition's `extra` map as last written.
    #[getter]
    fn extra(&self) -> PyResult<BTreeMap<String, String>> {
        Ok(self.status()?.doc.extra.clone())
    }

    /// True while this lease is held: not completed, failed, released or lost.
    #[getter]
    fn active(&self) -> PyResult<bool> {
        Ok(self.status()?.ended.is_none())
    }

    /// How it ended: "completed", "failed", "released", "stopped", "lost"; None while held.
    #[getter]
    fn ended(&self) -> PyResult<Option<&'static str>> {
        Ok(self.status()?.ended.map(|e| match e {
            Ended::Completed => "completed",
            Ended::Failed => "failed",
            Ended::Released => "released",
            Ended::Stopped => "stopped",
            Ended::Lost => "lost",
        }))
    }

    /// The partition document as last written (a dict).
    #[getter]
    fn doc<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let doc = self.status()?.doc.clone();
        from_json(py, &doc)
    }

    /// Records progress and extends the lease: one conditional write.
    /// `batch` defaults to the batch number plus one, decided inside the
    /// write: threads sharing the lease get consecutive numbers.
    #[pyo3(signature = (last_id=None, records=None, failed=None, bytes=None, extra=None, errors=None, batch=None))]
    #[allow(clippy::too_many_arguments)]
    fn checkpoint(
        &self,
        py: Python<'_>,
        last_id: Option<String>,
        records: Option<&Bound<'_, PyAny>>,
        failed: Option<&Bound<'_, PyAny>>,
        bytes: Option<&Bound<'_, PyAny>>,
        extra: Option<BTreeMap<String, String>>,
        errors: Option<Vec<String>>,
        batch: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let batch = batch.filter(|b| !b.is_none()).map(|b| count("batch", Some(b))).transpose()?;
        let p = progress(last_id, count("records", records)?, count("failed", failed)?, count("bytes", bytes)?, extra, errors, batch);
        let result = self.with_held(py, async move |slot| {
            let held = slot.as_ref()?;
            let mut p = p;
            if p.batch_number.is_none() {
                // Under the lease's write lock, from the document as last
                // stored: no other write of this lease comes between (a
                // heartbeat leaves the number as it is). The core's own
                // None means "unchanged", as for a heartbeat.
                p.batch_number = Some(held.doc().await.batch_number.saturating_add(1));
            }
            let result = match held.checkpoint(p).await {
                Ok(written) => Ok((written, held.doc().await)),
                Err(e) => Err(e),
            };
            // A stop released the lease; fenced: nothing more can be
            // written under it. Anything else (unavailable, a refused
            // counter): the lease is still ours; try again, or finish.
            let over = match &result {
                Ok((written, _)) => written.stop.is_some(),
                Err(e) => e.kind() == ErrorKind::Fenced,
            };
            if over {
                *slot = None;
            }
            Some(result)
        })?;
        let (outcome, saved) = {
            let mut status = self.lock();
            match result {
                None => (Err(self.gone(status.ended.unwrap_or(Ended::Lost))), Some(false)),
                Some(Ok((written, doc))) => {
                    status.take(doc);
                    match written.stop {
                        Some(stop) => {
                            status.ended = Some(Ended::Stopped);
                            (Err(stopped(&self.key, &stop, written.landed)), Some(written.landed))
                        }
                        None => (Ok(()), Some(written.landed)),
                    }
                }
                Some(Err(e)) => {
                    if e.kind() == ErrorKind::Fenced {
                        status.ended = Some(Ended::Lost);
                    }
                    let saved = saved_by(&e);
                    (Err(Failure::from(e)), saved)
                }
            }
        };
        // The status lock is released: making the exception runs Python.
        self.deliver(py, "checkpoint", outcome.map_err(PyErr::from), saved)
    }

    /// Completes the partition (with a last bit of progress) and releases the lease.
    #[pyo3(signature = (last_id=None, records=None, failed=None, bytes=None, extra=None))]
    fn complete(
        &self,
        py: Python<'_>,
        last_id: Option<String>,
        records: Option<&Bound<'_, PyAny>>,
        failed: Option<&Bound<'_, PyAny>>,
        bytes: Option<&Bound<'_, PyAny>>,
        extra: Option<BTreeMap<String, String>>,
    ) -> PyResult<()> {
        let p = progress(last_id, count("records", records)?, count("failed", failed)?, count("bytes", bytes)?, extra, None, None);
        self.finish(py, Ended::Completed, p, Ending::Complete, true)
    }

    /// Fails the partition with `message` and releases the lease; a
    /// retryable failure is claimable again after the backoff.
    #[pyo3(signature = (message, retryable=true))]
    fn fail(&self, py: Python<'_>, message: String, retryable: bool) -> PyResult<()> {
        self.finish(py, Ended::Failed, Progress::default(), Ending::Fail { error: message, retryable }, true)
    }

    /// Gives the partition back unfinished (the bookmark stays).
    #[pyo3(signature = (last_id=None, records=None, failed=None, bytes=None, extra=None))]
    fn release(
        &self,
        py: Python<'_>,
        last_id: Option<String>,
        records: Option<&Bound<'_, PyAny>>,
        failed: Option<&Bound<'_, PyAny>>,
        bytes: Option<&Bound<'_, PyAny>>,
        extra: Option<BTreeMap<String, String>>,
    ) -> PyResult<()> {
        let p = progress(last_id, count("records", records)?, count("failed", failed)?, count("bytes", bytes)?, extra, None, None);
        self.finish(py, Ended::Released, p, Ending::Release, true)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Leaving the block: on an exception, fail (retryable) with its text
    /// and release; on KeyboardInterrupt or SystemExit, and when leaving
    /// normally, release unless already finished. A failure of that write
    /// never hides the block's own exception (nor does a Ctrl-C during it:
    /// Python raises that after the block). In a forked child, nothing is
    /// written: `UsedAfterFork` when leaving normally.
    #[pyo3(signature = (exc_type=None, exc=None, _traceback=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyType>>,
        exc: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if self.held.check().is_err() && exc_type.is_some() {
            return Ok(false);
        }
        if !self.active()? {
            return Ok(false);
        }
        match (exc_type, exc) {
            // KeyboardInterrupt, SystemExit: the work was interrupted, not
            // wrong; give the partition back without counting a failure.
            (Some(t), _) if !t.is_subclass_of::<pyo3::exceptions::PyException>()? => {
                let _ = self.finish(py, Ended::Released, Progress::default(), Ending::Release, false);
                Ok(false)
            }
            (Some(t), e) => {
                let name = t.qualname().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
                let text = e.and_then(|e| e.str().ok()).map(|s| s.to_string()).unwrap_or_default();
                let message = if text.is_empty() { name } else { format!("{name}: {text}") };
                let _ = self.finish(py, Ended::Failed, Progress::default(), Ending::Fail { error: message, retryable: true }, false);
                Ok(false)
            }
            (None, _) => {
                self.finish(py, Ended::Released, Progress::default(), Ending::Release, true)?;
                Ok(false)
            }
        }
    }

    fn __repr__(&self) -> String {
        if self.held.check().is_err() {
            return format!("<oxiflow.Lease {} by {} (claimed in process {}: unusable here)>", self.key, self.worker, self.held.pid());
        }
        let status = self.lock();
        let state = status.ended.map_or("held", Ended::word);
        format!("<oxiflow.Lease {} {} by {} ({state})>", status.doc.pipeline_id, status.doc.partition_id(), self.worker)
    }
}
