//! `oxiflow.State`: pipeline state in one store, configured like the CLI.

use std::time::Duration;

use oxiflow_backends::config::Settings;
use oxiflow_backends::{Export, Next, Snapshot, StateManager};
use oxiflow_core::{LeaseConfig, PartitionId, PipelineId, Readiness, RunId, Schedule, WorkerId};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::errors::Failure;
use crate::lease::Lease;
use crate::store::Store;
use crate::{block_on, from_json, Local};

/// The options `State(url, **options)` takes, for messages.
const OPTIONS: &str = "config, lease_ttl, heartbeat_interval, skew_allowance, safety_margin, retry_base, retry_max, max_attempts, \
                       errors_keep_last, history_keep_last, endpoint, region, allow_http";

/// Pipeline state in one store: a `StateManager` and the settings it was
/// opened with. Usable only in the process that opened it ([`Local`]).
#[pyclass(module = "oxiflow._oxiflow", frozen)]
pub(crate) struct State {
    manager: Local<StateManager>,
    settings: Settings,
}

/// A duration from Python: `"30s"`, `1.5` (seconds) or a `timedelta`.
fn duration(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let bad = || Failure::invalid(format!("{name}: give a duration like \"30s\" or \"500ms\", seconds as a number, or a timedelta"));
    if let Ok(text) = value.downcast::<PyString>() {
        let text = text.to_cow()?;
        return humantime::parse_duration(&text)
            .map_err(|e| Failure::invalid(format!("{name}: {text:?} is not a duration like 30s or 500ms ({e})")).into());
    }
    let seconds: f64 = if value.hasattr("total_seconds")? {
        value.call_method0("total_seconds")?.extract()?
    } else {
        value.extract().map_err(|_| bad())?
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad().into())
}

fn count(name: &str, value: &Bound<'_, PyAny>) -> PyResult<usize> {
    value.extract::<usize>().map_err(|_| Failure::invalid(format!("{name} must be a whole number, 0 or more")).into())
}

fn text(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if value.is_none() {
        return Ok(None);
    }
    value.extract::<String>().map(Some).map_err(|_| Failure::invalid(format!("{name} must be a string")).into())
}

/// The lease settings for a claim with its own ttl (the core's
/// [`LeaseConfig::with_ttl`], as `oxiflow claim --ttl`), or why not.
fn lease_with_ttl(ttl: Duration, configured: &LeaseConfig) -> Result<LeaseConfig, Failure> {
    let Some(lease) = configured.with_ttl(ttl) else {
        let margin = humantime::format_duration(configured.safety_margin);
        return Err(Failure::invalid(format!(
            "ttl {} is too short: a lease is trusted until it expires minus the safety margin ({margin}), so the ttl must be longer than {margin} (or lower safety_margin)",
            humantime::format_duration(ttl),
        )));
    };
    lease.validate().map_err(|e| Failure::invalid(format!("ttl {}: {e}", humantime::format_duration(ttl))))?;
    Ok(lease)
}

pub(crate) fn pipeline_id(s: &str) -> Result<PipelineId, Failure> {
    Ok(s.parse::<PipelineId>()?)
}

/// Why nothing was claimed, in one line: what the first few waiting
/// partitions wait for.
fn waiting(schedule: &Schedule) -> String {
    let reasons: Vec<String> = schedule
        .steps
        .iter()
        .flat_map(|s| &s.partitions)
        .filter_map(|p| {
            let why = match &p.readiness {
                Readiness::Ready { .. } | Readiness::Completed => return None,
                Readiness::Held { worker_id, until } => format!("held by {worker_id} until {until}"),
                Readiness::Backoff { until, failures } => format!("failed {failures} time(s), retried after {until}"),
                Readiness::Failed { error, .. } => format!("failed for good: {error}"),
                Readiness::Paused => "paused".into(),
                r => oxiflow_backends::readiness_reason(r),
            };
            Some(format!("{}: {why}", p.partition))
        })
        .collect();
    match reasons.len() {
        0 => String::new(),
        n if n > 3 => format!(" ({}; and {} more)", reasons[..3].join("; "), n - 3),
        _ => format!(" ({})", reasons.join("; ")),
    }
}

impl State {
    /// Opens the state at `url` (any store URL the CLI takes, or a path),
    /// else where `.oxiflow/config.yaml` and `OXIFLOW_*` say, as the CLI does.
    pub(crate) fn open(url: Option<String>, options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let cwd = std::env::current_dir().map_err(|e| Failure::invalid(format!("cannot read the current directory: {e}")))?;
        let config = match options.map(|o| o.get_item("config")).transpose()?.flatten() {
            Some(v) if !v.is_none() => {
                Some(v.extract::<std::path::PathBuf>().map_err(|_| Failure::invalid("config must be the path of a config file"))?)
            }
            _ => None,
        };
        let mut settings =
            oxiflow_backends::config::load(&cwd, config.as_deref(), url.as_deref(), &|k| std::env::var(k).ok()).map_err(Failure::from)?;
        let configured = settings.core.lease;
        let mut ttl = None;
        let mut heartbeat_given = false;
        for (key, value) in options.map(|o| o.iter().collect::<Vec<_>>()).unwrap_or_default() {
            let key: String = key.extract()?;
            let core = &mut settings.core;
            heartbeat_given |= key == "heartbeat_interval";
            match key.as_str() {
                "config" => {}
                "lease_ttl" => ttl = Some(duration(&key, &value)?),
                "heartbeat_interval" => core.lease.heartbeat_interval = duration(&key, &value)?,
                "skew_allowance" => core.lease.skew_allowance = duration(&key, &value)?,
                "safety_margin" => core.lease.safety_margin = duration(&key, &value)?,
                "retry_base" => core.schedule.retry_base = duration(&key, &value)?,
                "retry_max" => core.schedule.retry_max = duration(&key, &value)?,
                "max_attempts" => {
                    core.schedule.max_attempts = u32::try_from(count(&key, &value)?)
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| Failure::invalid("max_attempts must be at least 1"))?
                }
                "errors_keep_last" => core.limits.errors_keep_last = count(&key, &value)?,
                "history_keep_last" => settings.history_keep_last = count(&key, &value)?,
                "endpoint" => settings.object.endpoint = text(&key, &value)?,
                "region" => settings.object.region = text(&key, &value)?,
                "allow_http" => settings.object.allow_http = value.is_truthy()?,
                other => return Err(Failure::invalid(format!("unknown option {other:?}; State takes {OPTIONS}")).into()),
            }
        }
        if let Some(ttl) = ttl {
            settings.core.lease.ttl = ttl;
            if !heartbeat_given {
                // Only the ttl given: the heartbeat scales with it, as for claim(ttl=…).
                let margin = LeaseConfig { safety_margin: settings.core.lease.safety_margin, ..configured };
                settings.core.lease.heartbeat_interval = lease_with_ttl(ttl, &margin)?.heartbeat_interval;
            }
        }
        settings.core.lease.validate().map_err(|e| Failure::invalid(e.to_string()))?;
        // Some stores (Redis) start their connection task on the runtime.
        let manager = {
            let _runtime = crate::runtime().enter();
            settings.open().map_err(Failure::from)?
        };
        Ok(State { manager: Local::new(manager, "State", "open a new oxiflow.State in the child"), settings })
    }

    /// The manager, in the process that opened it (elsewhere, `UsedAfterFork`).
    fn manager(&self) -> Result<&StateManager, Failure> {
        self.manager.get()
    }

    fn manager_with_ttl(&self, ttl: Option<&Bound<'_, PyAny>>) -> PyResult<StateManager> {
        let manager = self.manager()?;
        let Some(ttl) = ttl.filter(|t| !t.is_none()) else { return Ok(manager.clone()) };
        let mut core = self.settings.core;
        core.lease = lease_with_ttl(duration("ttl", ttl)?, &core.lease)?;
        Ok(StateManager::new(manager.store().clone(), core).with_history(self.settings.history_keep_last))
    }
}

#[pymethods]
impl State {
    /// Opens the state at `url` (any store URL the CLI takes, or a path),
    /// else where `.oxiflow/config.yaml` and `OXIFLOW_*` say, as the CLI does.
    #[new]
    #[pyo3(signature = (url=None, **options))]
    fn new(url: Option<String>, options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        State::open(url, options)
    }

    /// The store URL in use (`file:///…`, `s3://…`, …).
    #[getter]
    fn url(&self) -> PyResult<String> {
        self.manager()?;
        Ok(self.settings.url.clone())
    }

    /// The config file read, if any.
    #[getter]
    fn config_file(&self) -> PyResult<Option<String>> {
        self.manager()?;
        Ok(self.settings.config_file.as_ref().map(|p| p.display().to_string()))
    }

    /// The store itself, for compare-and-swap of your own keys.
    #[getter]
    pub(crate) fn store(&self) -> PyResult<Store> {
        Ok(Store::new(self.manager()?.store().clone(), self.settings.core.limits.max_document_bytes))
    }

    fn __repr__(&self) -> String {
        format!("oxiflow.State({:?})", self.settings.url)
    }

    /// Creates the pipeline and its partitions; idempotent for the same plan.
    #[pyo3(signature = (pipeline, steps, run_id=None))]
    fn create_pipeline<'py>(
        &self,
        py: Python<'py>,
        pipeline: &str,
        steps: &Bound<'py, PyAny>,
        run_id: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let p = pipeline_id(pipeline)?;
        let run: RunId = run_id.unwrap_or("run-1").parse().map_err(Failure::from)?;
        let plan = crate::plan::from_python(steps)?;
        let m = self.manager()?;
        let doc = block_on(py, || async { m.create_pipeline(&p, &run, &plan).await }).map_err(Failure::from)?;
        from_json(py, &doc)
    }

    /// The pipeline's view: what `oxiflow state show --json` prints.
    fn view<'py>(&self, py: Python<'py>, pipeline: &str) -> PyResult<Bound<'py, PyAny>> {
        let p = pipeline_id(pipeline)?;
        let m = self.manager()?;
        let view = block_on(py, || async { m.view(&p).await }).map_err(Failure::from)?;
        from_json(py, &view)
    }

    /// The ids of every pipeline in the store, sorted.
    fn list_pipelines(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let m = self.manager()?;
        let ids = block_on(py, || async { m.list_pipelines().await }).map_err(Failure::from)?;
        let mut ids: Vec<String> = ids.into_iter().map(|p| p.to_string()).collect();
        ids.sort();
        Ok(ids)
    }

    /// Every document of the pipeline: what `oxiflow state export` writes.
    fn export<'py>(&self, py: Python<'py>, pipeline: &str) -> PyResult<Bound<'py, PyAny>> {
        let p = pipeline_id(pipeline)?;
        let m = self.manager()?;
        let export = block_on(py, || async { m.export(&p).await }).map_err(Failure::from)?;
        from_json(py, &export)
    }

    /// Writes an export (a dict, or its JSON text) as `oxiflow state import` does.
    #[pyo3(name = "import_", signature = (export, replace=false, force=false))]
    fn import<'py>(&self, py: Python<'py>, export: &Bound<'py, PyAny>, replace: bool, force: bool) -> PyResult<Bound<'py, PyAny>> {
        let text: String = match export.downcast::<PyString>() {
            Ok(s) => s.to_cow()?.into_owned(),
            Err(_) => py.import("json")?.call_method1("dumps", (export,))?.extract()?,
        };
        let export: Export =
            serde_json::from_str(&text).map_err(|e| Failure::invalid(format!("not an oxiflow export (oxiflow state export): {e}")))?;
        let m = self.manager()?;
        let imported = block_on(py, || async { m.import(&export, replace, force).await }).map_err(Failure::from)?;
        from_json(py, &imported)
    }

    /// Claims a partition: the next ready one (`partition=None`), or the
    /// named one once its upstream is done. Returns a `Lease`.
    /// `force=True` claims a named partition whatever its upstream says.
    #[pyo3(signature = (pipeline, partition=None, worker=None, ttl=None, force=false))]
    fn claim(
        &self,
        py: Python<'_>,
        pipeline: &str,
        partition: Option<&str>,
        worker: Option<&str>,
        ttl: Option<&Bound<'_, PyAny>>,
        force: bool,
    ) -> PyResult<Lease> {
        let p = pipeline_id(pipeline)?;
        let part = partition.map(PartitionId::parse).transpose().map_err(Failure::from)?;
        let worker: WorkerId = match worker {
            Some(w) => w.parse().map_err(Failure::from)?,
            None => default_worker(py)?,
        };
        let m = self.manager_with_ttl(ttl)?;
        let claimed = match part {
            Some(part) if force => block_on(py, || async { m.claim(&p, &part, &worker).await }).map_err(Failure::from)?,
            Some(part) => block_on(py, || async { m.claim_in_order(&p, &part, &worker).await }).map_err(Failure::from)?,
            None => match block_on(py, || async { m.claim_next(&mut Snapshot::new(p.clone()), &worker).await }).map_err(Failure::from)? {
                Next::Claimed(c) => *c,
                Next::Wait(schedule) => {
                    let message = format!("nothing in {p} is ready yet{}; wait and claim again", waiting(&schedule));
                    return Err(Failure::new("NotReady", message).with_schedule(&schedule).into());
                }
                Next::Finished(schedule) => {
                    let message = format!("nothing left to claim in {p} ({}); state show says why", schedule.status);
                    return Err(Failure::new("Finished", message).with_schedule(&schedule).into());
                }
            },
        };
        Ok(Lease::hold(m, claimed, worker))
    }
}

/// `<host>-<pid>`: one worker per process unless the caller names one.
fn default_worker(py: Python<'_>) -> PyResult<WorkerId> {
    let host: String = py.import("socket")?.call_method0("gethostname")?.extract()?;
    let host: String = host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    let host = host.trim_start_matches(['-', '.']);
    let host = if host.is_empty() { "python" } else { host };
    let id = format!("{}-{}", &host[..host.len().min(100)], std::process::id());
    Ok(id.parse().map_err(Failure::from)?)
}
