//! `oxiflow.Lease`: a claimed partition, kept alive by the backends'
//! background heartbeat ([`Held`]) until it is completed, failed or
//! released. A context manager: leaving the `with` block on an exception
//! records the error (a retryable failure) and releases the lease, so the
//! next claim resumes from the bookmark; leaving it normally releases a
//! lease that was not finished.

use std::collections::BTreeMap;
use std::sync::Mutex;

use oxiflow_backends::{Claimed, Ending, Held, StateManager};
use oxiflow_core::{ErrorKind, PartitionDoc, Progress, StopRequest, WorkerId};
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::errors::Failure;
use crate::{block_on, from_json};

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
/// across I/O), `status` only briefly; so a thread reading `bookmark` while
/// another checkpoints never waits for the GIL and the lock at once.
#[pyclass(module = "oxiflow._oxiflow", frozen)]
pub(crate) struct Lease {
    key: String,
    worker: WorkerId,
    held: tokio::sync::Mutex<Option<Held>>,
    status: Mutex<Status>,
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

impl Lease {
    pub(crate) fn hold(manager: StateManager, claimed: Claimed, worker: WorkerId) -> Lease {
        let key = claimed.key().to_string();
        let doc = claimed.doc().clone();
        // The heartbeat is a task on the runtime: start it inside it.
        let held = crate::runtime().block_on(async { manager.keep(claimed) });
        Lease { key, worker, held: tokio::sync::Mutex::new(Some(held)), status: Mutex::new(Status { doc, ended: None }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` with the holder, the GIL released (see [`Lease`]).
    fn with_held<T: Send>(&self, py: Python<'_>, f: impl AsyncFnOnce(&mut Option<Held>) -> T + Send) -> T {
        block_on(py, || async {
            let mut held = self.held.lock().await;
            f(&mut held).await
        })
    }

    fn gone(&self, ended: Ended) -> Failure {
        Failure::new("Fenced", format!("you no longer hold {}: this lease was {}; claim it again", self.key, ended.word()))
    }

    /// A finishing write (complete, fail, release) through `Held`. The
    /// holder stays after an error that is not fencing: the call may be
    /// made again (an `Unavailable` write is settled first).
    fn finish(&self, py: Python<'_>, ended: Ended, progress: Progress, ending: Ending) -> PyResult<()> {
        let result = self.with_held(py, async move |slot| {
            let held = slot.as_ref()?;
            let result = held.finish_in_place(progress, ending).await;
            if result.as_ref().map_or_else(|e| e.kind() == ErrorKind::Fenced, |_| true) {
                *slot = None;
            }
            Some(result)
        });
        let mut status = self.lock();
        match result {
            None => Err(self.gone(status.ended.unwrap_or(Ended::Lost)).into()),
            Some(Ok((written, doc))) => {
                status.doc = doc;
                if !written.landed {
                    // The heartbeat met a stop request and released first.
                    status.ended = Some(Ended::Stopped);
                    let message = format!(
                        "nothing was written: the lease on {} was already released by a stop request; stop working on it",
                        self.key
                    );
                    return Err(Failure::new("Stopped", message).into());
                }
                status.ended = Some(ended);
                Ok(())
            }
            Some(Err(e)) => {
                if e.kind() == ErrorKind::Fenced {
                    status.ended = Some(Ended::Lost);
                }
                Err(Failure::from(e).into())
            }
        }
    }
}

#[pymethods]
impl Lease {
    /// The pipeline's id.
    #[getter]
    fn pipeline(&self) -> String {
        self.lock().doc.pipeline_id.to_string()
    }

    /// The partition: `step` or `step@shard`.
    #[getter]
    fn partition(&self) -> String {
        self.lock().doc.partition_id().to_string()
    }

    /// The worker id this lease is held as.
    #[getter]
    fn worker(&self) -> String {
        self.worker.to_string()
    }

    /// The store key of the partition's document.
    #[getter]
    fn key(&self) -> String {
        self.key.clone()
    }

    /// Where to resume: the last processed id checkpointed (None at the start).
    #[getter]
    fn bookmark(&self) -> Option<String> {
        self.lock().doc.last_processed_id.clone()
    }

    /// The batch counter: checkpoints made on this partition in this run.
    #[getter]
    fn batch_number(&self) -> u64 {
        self.lock().doc.batch_number
    }

    /// Records counted so far in this run.
    #[getter]
    fn records_processed(&self) -> u64 {
        self.lock().doc.records_processed
    }

    /// Failed records counted so far in this run.
    #[getter]
    fn records_failed(&self) -> u64 {
        self.lock().doc.records_failed
    }

    /// The claim's attempt number (1 for the first claim in this run).
    #[getter]
    fn attempts(&self) -> u32 {
        self.lock().doc.attempts
    }

    /// The partition's `extra` map as last written.
    #[getter]
    fn extra(&self) -> BTreeMap<String, String> {
        self.lock().doc.extra.clone()
    }

    /// True while this lease is held: not completed, failed, released or lost.
    #[getter]
    fn active(&self) -> bool {
        self.lock().ended.is_none()
    }

    /// How it ended: "completed", "failed", "released", "stopped", "lost"; None while held.
    #[getter]
    fn ended(&self) -> Option<&'static str> {
        self.lock().ended.map(|e| match e {
            Ended::Completed => "completed",
            Ended::Failed => "failed",
            Ended::Released => "released",
            Ended::Stopped => "stopped",
            Ended::Lost => "lost",
        })
    }

    /// The partition document as last written (a dict).
    #[getter]
    fn doc<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let doc = self.lock().doc.clone();
        from_json(py, &doc)
    }

    /// Records progress and extends the lease: one conditional write.
    /// `batch` defaults to the batch number plus one.
    #[pyo3(signature = (last_id=None, records=0, failed=0, bytes=0, extra=None, errors=None, batch=None))]
    #[allow(clippy::too_many_arguments)]
    fn checkpoint(
        &self,
        py: Python<'_>,
        last_id: Option<String>,
        records: u64,
        failed: u64,
        bytes: u64,
        extra: Option<BTreeMap<String, String>>,
        errors: Option<Vec<String>>,
        batch: Option<u64>,
    ) -> PyResult<()> {
        let next_batch = self.lock().doc.batch_number + 1;
        let p = progress(last_id, records, failed, bytes, extra, errors, Some(batch.unwrap_or(next_batch)));
        let result = self.with_held(py, async move |slot| {
            let held = slot.as_ref()?;
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
        });
        let mut status = self.lock();
        match result {
            None => Err(self.gone(status.ended.unwrap_or(Ended::Lost)).into()),
            Some(Ok((written, doc))) => {
                status.doc = doc;
                if let Some(stop) = written.stop {
                    status.ended = Some(Ended::Stopped);
                    return Err(stopped(&self.key, &stop, written.landed).into());
                }
                Ok(())
            }
            Some(Err(e)) => {
                if e.kind() == ErrorKind::Fenced {
                    status.ended = Some(Ended::Lost);
                }
                Err(Failure::from(e).into())
            }
        }
    }

    /// Completes the partition (with a last bit of progress) and releases the lease.
    #[pyo3(signature = (last_id=None, records=0, failed=0, bytes=0, extra=None))]
    fn complete(
        &self,
        py: Python<'_>,
        last_id: Option<String>,
        records: u64,
        failed: u64,
        bytes: u64,
        extra: Option<BTreeMap<String, String>>,
    ) -> PyResult<()> {
        let p = progress(last_id, records, failed, bytes, extra, None, None);
        self.finish(py, Ended::Completed, p, Ending::Complete)
    }

    /// Fails the partition with `message` and releases the lease; a
    /// retryable failure is claimable again after the backoff.
    #[pyo3(signature = (message, retryable=true))]
    fn fail(&self, py: Python<'_>, message: String, retryable: bool) -> PyResult<()> {
        self.finish(py, Ended::Failed, Progress::default(), Ending::Fail { error: message, retryable })
    }

    /// Gives the partition back unfinished (the bookmark stays).
    #[pyo3(signature = (last_id=None, records=0, failed=0, bytes=0, extra=None))]
    fn release(
        &self,
        py: Python<'_>,
        last_id: Option<String>,
        records: u64,
        failed: u64,
        bytes: u64,
        extra: Option<BTreeMap<String, String>>,
    ) -> PyResult<()> {
        let p = progress(last_id, records, failed, bytes, extra, None, None);
        self.finish(py, Ended::Released, p, Ending::Release)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Leaving the block: on an exception, fail (retryable) with its text
    /// and release; on KeyboardInterrupt or SystemExit, and when leaving
    /// normally, release unless already finished. A failure of that write
    /// never hides the block's own exception.
    #[pyo3(signature = (exc_type=None, exc=None, _traceback=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyType>>,
        exc: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if !self.active() {
            return Ok(false);
        }
        match (exc_type, exc) {
            // KeyboardInterrupt, SystemExit: the work was interrupted, not
            // wrong; give the partition back without counting a failure.
            (Some(t), _) if !t.is_subclass_of::<pyo3::exceptions::PyException>()? => {
                let _ = self.release(py, None, 0, 0, 0, None);
                Ok(false)
            }
            (Some(t), e) => {
                let name = t.qualname().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
                let text = e.and_then(|e| e.str().ok()).map(|s| s.to_string()).unwrap_or_default();
                let message = if text.is_empty() { name } else { format!("{name}: {text}") };
                let _ = self.fail(py, message, true);
                Ok(false)
            }
            (None, _) => {
                self.release(py, None, 0, 0, 0, None)?;
                Ok(false)
            }
        }
    }

    fn __repr__(&self) -> String {
        let status = self.lock();
        let state = status.ended.map_or("held", Ended::word);
        format!("<oxiflow.Lease {} {} by {} ({state})>", status.doc.pipeline_id, status.doc.partition_id(), self.worker)
    }
}
