//! Configuration, as the `oxiflow` command and the Python package read it:
//! `.oxiflow/config.yaml` (found by walking up from the current directory),
//! overridden by `OXIFLOW_*` environment variables, then by the caller's
//! own values (flags, arguments). String values may use `${VAR}` and
//! `${VAR:-default}`.
//!
//! With nothing configured, state lives in `.oxiflow/state` on the local
//! disk: the embedded default. The original shape, `state_manager:`, is
//! accepted too (`legacy.rs`); one file holds one of the two.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cwd = std::env::current_dir()?;
//! let settings = oxiflow_backends::config::load(&cwd, None, None, &|k| std::env::var(k).ok())?;
//! let state = settings.open()?; // a StateManager over the configured store
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use oxiflow_core::{Config as CoreConfig, ErrorKind};
use serde::Deserialize;

use self::legacy::StateManagerSection;
use crate::{ObjectStoreOptions, OpenOptions, StateManager};

mod legacy;

/// A configuration problem, with where it is. Always the caller's to fix
/// ([`ErrorKind::Invalid`], exit 2 in the CLI).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is not YAML.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The config file.
        file: String,
        /// Where, 1-based (0 when unknown).
        line: usize,
        /// Where, 1-based (0 when unknown).
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A value is wrong: unknown field, bad duration, two shapes at once, ….
    #[error("{file}: {message}")]
    Invalid {
        /// The config file, or "(no config file)".
        file: String,
        /// What is wrong, and the fix.
        message: String,
    },
    /// The file cannot be read. The reason is text, not a source: it is printed once.
    #[error("cannot read {file}: {reason}")]
    Read {
        /// The config file.
        file: String,
        /// The operating system's error.
        reason: String,
    },
    /// An `OXIFLOW_*` variable is wrong.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable's name.
        var: String,
        /// What is wrong with its value.
        message: String,
    },
    /// The store location (flag, variable or file) names no store.
    #[error(transparent)]
    Location(crate::Error),
}

impl ConfigError {
    /// Always [`ErrorKind::Invalid`]: the configuration is the caller's to fix.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Invalid
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    state: Option<StateSection>,
    state_manager: Option<StateManagerSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateSection {
    backend: Option<String>,
    url: Option<String>,
    endpoint: Option<String>,
    allow_http: Option<bool>,
    region: Option<String>,
    lease_ttl: Option<String>,
    heartbeat_interval: Option<String>,
    skew_allowance: Option<String>,
    safety_margin: Option<String>,
    history: Option<KeepLast>,
    errors: Option<KeepLast>,
    retries: Option<Retries>,
}

/// How failed partitions are retried (`state.retries`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Retries {
    /// Wait after the first failure; doubles per attempt.
    base: Option<String>,
    /// Longest wait.
    max: Option<String>,
    /// Attempts after which a failure is permanent.
    max_attempts: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeepLast {
    keep_last: usize,
}

/// Everything resolved: where the state is and how to treat it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// The store URL (`file:///…`, `s3://…`, `memory://`).
    pub url: String,
    /// The config file used, if any.
    pub config_file: Option<PathBuf>,
    /// Leases, retries, limits: what the core's operations run with.
    pub core: CoreConfig,
    /// `state.history.keep_last`: copies kept per partition (0: none).
    pub history_keep_last: usize,
    /// `state.endpoint`, `allow_http`, `region` for S3-compatible stores.
    pub object: ObjectStoreOptions,
    /// `state_manager.http.auth_token` (`OXIFLOW_TOKEN` overrides it).
    pub http_token: Option<String>,
    /// `state_manager.stale_worker_timeout`: accepted and kept; `state
    /// cleanup --stale-workers` releases leases once they expired past the
    /// skew allowance, whatever this says (docs/cli.md).
    pub stale_worker_timeout: Option<Duration>,
    /// `state_manager.checkpoint_interval`: accepted and kept; workers
    /// checkpoint when their batch reports progress (docs/cli.md).
    pub checkpoint_interval: Option<Duration>,
}

const CONFIG_DIR: &str = ".oxiflow";
const CONFIG_FILE: &str = "config.yaml";

/// `${VAR}` and `${VAR:-default}` in `text`, from `env`. An unset variable
/// without a default is an error naming it.
pub fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match (env(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable {name} is not set (use ${{{name}:-default}} for a default)")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn expand_value(v: &mut serde_yaml_ng::Value, env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
    match v {
        serde_yaml_ng::Value::String(s) => *s = expand(s, env)?,
        serde_yaml_ng::Value::Mapping(m) => {
            for (_, v) in m.iter_mut() {
                expand_value(v, env)?;
            }
        }
        serde_yaml_ng::Value::Sequence(s) => {
            for v in s {
                expand_value(v, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Finds `.oxiflow/config.yaml` in `dir` or above.
fn find_config(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().map(|d| d.join(CONFIG_DIR).join(CONFIG_FILE)).find(|p| p.is_file())
}

fn duration(file: &str, field: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|e| ConfigError::Invalid {
        file: file.into(),
        message: format!("{field}: {value:?} is not a duration like 30s or 500ms ({e})"),
    })
}

/// A duration from an environment variable, blamed on the variable.
fn env_duration(var: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value)
        .map_err(|e| ConfigError::Env { var: var.into(), message: format!("{value:?} is not a duration like 30s or 500ms ({e})") })
}

/// Resolves settings from the file, the environment and the flags.
///
/// `cwd`: where to start looking for `.oxiflow/config.yaml` (and what a
/// relative `config_flag` is relative to); `config_flag`: a config file to
/// use instead (`--config`; else `OXIFLOW_CONFIG`, else the search);
/// `backend_flag`: a store URL or path overriding `OXIFLOW_BACKEND` and the
/// file (`--backend`); `env`: the environment (`std::env::var` in
/// programs, a table in tests).
pub fn load(
    cwd: &Path,
    config_flag: Option<&Path>,
    backend_flag: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let config_file = match config_flag {
        Some(p) => Some(cwd.join(p)),
        None => env("OXIFLOW_CONFIG").map(|p| cwd.join(p)).or_else(|| find_config(cwd)),
    };
    let (section, mapped, name) = match &config_file {
        None => (StateSection::default(), legacy::Mapped::default(), "(no config file)".to_string()),
        Some(path) => {
            let name = path.display().to_string();
            let invalid = |message: String| ConfigError::Invalid { file: name.clone(), message };
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read { file: name.clone(), reason: e.to_string() })?;
            let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|e| {
                let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                ConfigError::Syntax { file: name.clone(), line, column, message: e.to_string() }
            })?;
            if value.is_null() {
                value = serde_yaml_ng::Value::Mapping(Default::default());
            }
            if value.get("state").is_some() && value.get(legacy::KEY).is_some() {
                return Err(invalid(format!("both state: and {}: are set; keep one (state: is the current shape)", legacy::KEY)));
            }
            // Only the state_manager section in use is expanded.
            let (mut chosen, mut aside) = (None, Vec::new());
            if let Some(sm) = value.get_mut(legacy::KEY).and_then(|v| v.as_mapping_mut()) {
                chosen = legacy::chosen(sm, env).map_err(invalid)?;
                aside = legacy::set_aside(sm, chosen);
            }
            expand_value(&mut value, env).map_err(invalid)?;
            if let Some(sm) = value.get_mut(legacy::KEY).and_then(|v| v.as_mapping_mut()) {
                legacy::restore(sm, aside);
            }
            let parsed: FileConfig = serde_yaml_ng::from_value(value).map_err(|e| invalid(e.to_string()))?;
            let (section, mapped) = match parsed.state_manager {
                None => (parsed.state.unwrap_or_default(), legacy::Mapped::default()),
                Some(sm) => {
                    let m = sm.map(chosen).map_err(invalid)?;
                    if m.nfs {
                        tracing::warn!(
                            "{name}: state_manager.nfs uses the local-directory store, which relies on flock and atomic rename; NFS may honour neither across machines: share state through Redis or an object store instead"
                        );
                    }
                    let url = m.url.clone();
                    (
                        StateSection {
                            url,
                            lease_ttl: m.lease_ttl.clone(),
                            heartbeat_interval: m.heartbeat_interval.clone(),
                            ..Default::default()
                        },
                        m,
                    )
                }
            };
            (section, mapped, name)
        }
    };
    // The project root: where `.oxiflow/` is, else the current directory.
    let root = config_file.as_ref().and_then(|p| p.parent()).and_then(|d| d.parent()).map_or_else(|| cwd.to_path_buf(), Path::to_path_buf);

    let pick = |var: &str, file: Option<String>| env(var).filter(|v| !v.is_empty()).or(file);
    let url = backend_flag.map(str::to_string).or_else(|| pick("OXIFLOW_BACKEND", section.url.clone()));
    let url = match url {
        None => format!("file://{}", root.join(CONFIG_DIR).join("state").display()),
        Some(location) => crate::resolve(&location, &root).map_err(ConfigError::Location)?,
    };
    if let Some(kind) = pick("OXIFLOW_BACKEND_KIND", section.backend.clone()) {
        let scheme = url.split("://").next().unwrap_or_default();
        if kind != "auto" && !crate::KINDS.contains(&kind.as_str()) {
            return Err(ConfigError::Invalid {
                file: name,
                message: format!("state.backend: unknown backend {kind:?} (auto, {})", crate::KINDS.join(", ")),
            });
        }
        if kind != "auto" && !crate::schemes_of(&kind).contains(&scheme) {
            return Err(ConfigError::Invalid { file: name, message: format!("state.backend is {kind} but the URL {url} is {scheme}://") });
        }
    }

    let mut core = CoreConfig::default();
    let retries = section.retries.unwrap_or_default();
    let durations = [
        ("OXIFLOW_RETRY_BASE", "retries.base", retries.base, &mut core.schedule.retry_base),
        ("OXIFLOW_RETRY_MAX", "retries.max", retries.max, &mut core.schedule.retry_max),
        ("OXIFLOW_LEASE_TTL", mapped.ttl_field.unwrap_or("lease_ttl"), section.lease_ttl.clone(), &mut core.lease.ttl),
        (
            "OXIFLOW_HEARTBEAT_INTERVAL",
            mapped.heartbeat_field.unwrap_or("heartbeat_interval"),
            section.heartbeat_interval.clone(),
            &mut core.lease.heartbeat_interval,
        ),
        ("OXIFLOW_SKEW_ALLOWANCE", "skew_allowance", section.skew_allowance.clone(), &mut core.lease.skew_allowance),
        ("OXIFLOW_SAFETY_MARGIN", "safety_margin", section.safety_margin.clone(), &mut core.lease.safety_margin),
    ];
    for (var, field, file_value, slot) in durations {
        match (env(var).filter(|v| !v.is_empty()), file_value) {
            (Some(v), _) => *slot = env_duration(var, &v)?,
            (None, Some(v)) => *slot = duration(&name, field, &v)?,
            (None, None) => {}
        }
    }
    core.lease.validate().map_err(|e| ConfigError::Invalid { file: name.clone(), message: e.to_string() })?;
    let stale_worker_timeout =
        mapped.stale_worker_timeout.map(|v| duration(&name, "state_manager.stale_worker_timeout", &v)).transpose()?;
    let checkpoint_interval = mapped.checkpoint_interval.map(|v| duration(&name, "state_manager.checkpoint_interval", &v)).transpose()?;
    let number = |var: &str, file: Option<usize>| -> Result<Option<usize>, ConfigError> {
        match env(var).filter(|v| !v.is_empty()) {
            Some(v) => v.parse().map(Some).map_err(|_| ConfigError::Env { var: var.into(), message: format!("{v:?} is not a number") }),
            None => Ok(file),
        }
    };
    if let Some(n) = number("OXIFLOW_ERRORS_KEEP_LAST", section.errors.map(|k| k.keep_last))? {
        core.limits.errors_keep_last = n;
    }
    if let Some(n) = number("OXIFLOW_MAX_ATTEMPTS", retries.max_attempts)? {
        core.schedule.max_attempts = u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| ConfigError::Invalid {
            file: name.clone(),
            message: format!("retries.max_attempts is {n}; it must be between 1 and {}", u32::MAX),
        })?;
    }
    let history_keep_last = number("OXIFLOW_HISTORY_KEEP_LAST", section.history.map(|k| k.keep_last))?.unwrap_or(0);
    let object = ObjectStoreOptions {
        endpoint: pick("OXIFLOW_ENDPOINT", section.endpoint),
        allow_http: pick("OXIFLOW_ALLOW_HTTP", section.allow_http.map(|b| b.to_string())).is_some_and(|v| v == "true" || v == "1"),
        region: pick("OXIFLOW_REGION", section.region),
        ..ObjectStoreOptions::default()
    };
    let http_token = mapped.http_token;
    Ok(Settings { url, config_file, core, history_keep_last, object, http_token, stale_worker_timeout, checkpoint_interval })
}

impl Settings {
    /// Opens the store the settings point at ([`crate::open_store`]).
    pub fn open(&self) -> crate::Result<StateManager> {
        // A remote `oxiflow serve`'s token: OXIFLOW_TOKEN, else the config file.
        let http_token = std::env::var("OXIFLOW_TOKEN").ok().filter(|t| !t.is_empty()).or_else(|| self.http_token.clone());
        let store = crate::open_store(&self.url, &OpenOptions { object: self.object.clone(), http_token })?;
        Ok(StateManager::new(store, self.core).with_history(self.history_keep_last))
    }

    /// These settings pointed at another store: a URL, or a path relative
    /// to `base` (`state copy --to`: the current directory).
    pub fn at(&self, location: &str, base: &Path) -> crate::Result<Settings> {
        let url = crate::resolve(location, base)?;
        Ok(Settings { url, ..self.clone() })
    }
}

#[cfg(test)]
mod tests;
