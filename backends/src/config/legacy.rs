//! The original configuration shape, accepted as written:
//!
//! ```yaml
//! state_manager:
//!   backend: auto  # auto, file, nfs, redis, http
//!   file: { base_path: ".oxiflow/state", lock_timeout: "30s" }
//!   redis: { connection_url: "${REDIS_URL:-redis://localhost:6379}", key_prefix: "oxiflow:state", lock_timeout: "45s" }
//!   http: { base_url: "${STATE_SERVICE_URL:-http://oxiflow-state:8080}", auth_token: "${STATE_SERVICE_TOKEN}" }
//!   heartbeat_interval: "10s"
//!   stale_worker_timeout: "5m"
//!   checkpoint_interval: "30s"
//! ```
//!
//! It maps onto the `state:` settings: the chosen section's location
//! becomes `state.url`, `lock_timeout` the lease ttl. `auto` picks a section
//! as [`auto`] says (above: `file`, unless `REDIS_URL` or the http
//! variables are set). Only the chosen section's `${VAR}`s are expanded: an
//! unset variable in a section not in use is not an error.

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

pub(crate) const KEY: &str = "state_manager";
const SECTIONS: [&str; 4] = ["file", "nfs", "redis", "http"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StateManagerSection {
    /// Read from the raw mapping by [`chosen`], before expansion.
    #[allow(dead_code)]
    backend: Option<String>,
    file: Option<FileSection>,
    nfs: Option<NfsSection>,
    redis: Option<RedisSection>,
    http: Option<HttpSection>,
    heartbeat_interval: Option<String>,
    stale_worker_timeout: Option<String>,
    checkpoint_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSection {
    base_path: Option<String>,
    lock_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NfsSection {
    mount_path: String,
    lock_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisSection {
    connection_url: String,
    key_prefix: Option<String>,
    lock_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    base_url: String,
    auth_token: Option<String>,
}

/// What the section says, in the terms of `state:`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Mapped {
    /// A URL or a path (relative to the project); `None`: the embedded default.
    pub url: Option<String>,
    pub lease_ttl: Option<String>,
    pub heartbeat_interval: Option<String>,
    pub stale_worker_timeout: Option<String>,
    pub checkpoint_interval: Option<String>,
    pub http_token: Option<String>,
    /// The local-directory store on a network file system.
    pub nfs: bool,
    /// Where the lease ttl and heartbeat came from, for messages.
    pub ttl_field: Option<&'static str>,
    pub heartbeat_field: Option<&'static str>,
}

/// The section `state_manager` uses, from the raw (unexpanded) mapping:
/// `backend`, or with `auto` (the default) the one [`auto`] picks.
pub(crate) fn chosen(section: &Mapping, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<&'static str>, String> {
    let backend = match section.get("backend") {
        None | Some(Value::Null) => "auto".to_string(),
        Some(Value::String(s)) => super::expand(s, env)?,
        Some(other) => return Err(format!("{KEY}.backend: {other:?} is not one of auto, file, nfs, redis, http")),
    };
    match backend.as_str() {
        "auto" => auto(section, env),
        b => SECTIONS
            .into_iter()
            .find(|s| *s == b)
            .map(Some)
            .ok_or_else(|| format!("{KEY}.backend: unknown backend {b:?} (auto, file, nfs, redis, http)")),
    }
}

/// `backend: auto`. No section: the embedded default; one: that one.
/// Among several, a section is chosen by its environment when a `${VAR}`
/// in it is set (not empty): one so chosen is used, two or more are refused
/// naming the variables. With none so chosen, the one section that does
/// not wait for a variable is used (`file` or `nfs`, or one written in
/// literals only), else the embedded default; two such are refused.
fn auto(section: &Mapping, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<&'static str>, String> {
    let present: Vec<&'static str> = SECTIONS.into_iter().filter(|s| section.get(*s).is_some_and(|v| !v.is_null())).collect();
    if present.len() <= 1 {
        return Ok(present.first().copied());
    }
    // (section, the variables set in it) and the sections that wait for none.
    let (mut by_env, mut fixed): (Vec<(&'static str, Vec<String>)>, Vec<&'static str>) = (Vec::new(), Vec::new());
    for s in present {
        let mut vars = Vec::new();
        variables(&section[s], &mut vars);
        let set: Vec<String> = vars.iter().filter(|v| env(v).is_some_and(|x| !x.is_empty())).cloned().collect();
        if !set.is_empty() {
            by_env.push((s, set));
        } else if vars.is_empty() || matches!(s, "file" | "nfs") {
            fixed.push(s);
        }
    }
    match (by_env.as_slice(), fixed.as_slice()) {
        ([(one, _)], _) | ([], [one]) => Ok(Some(one)),
        ([], []) => Ok(None),
        ([], many) => Err(format!(
            "{KEY}.backend is auto but {} are all set and none is chosen by its environment (a ${{VAR}} in it that is set); set {KEY}.backend to the one to use, or remove the others",
            many.iter().map(|s| format!("{KEY}.{s}")).collect::<Vec<_>>().join(", ")
        )),
        (many, _) => Err(format!(
            "{KEY}.backend is auto and the environment chooses several sections: {}; set {KEY}.backend to the one to use",
            many.iter().map(|(s, vars)| format!("{KEY}.{s} ({} set)", vars.join(", "))).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The `${VAR}` names in the string values under `v`, as [`super::expand`] reads them.
fn variables(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(text) => {
            let mut rest = text.as_str();
            while let Some(start) = rest.find("${") {
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else { break };
                let name = after[..end].split_once(":-").map_or(&after[..end], |(n, _)| n);
                if !out.iter().any(|o| o == name) {
                    out.push(name.to_string());
                }
                rest = &after[end + 1..];
            }
        }
        Value::Mapping(m) => m.values().for_each(|v| variables(v, out)),
        Value::Sequence(s) => s.iter().for_each(|v| variables(v, out)),
        _ => {}
    }
}

/// Removes the sections not in use (they are kept aside unexpanded, and
/// put back by [`restore`] so that unknown keys in them are still refused).
pub(crate) fn set_aside(section: &mut Mapping, chosen: Option<&str>) -> Vec<(Value, Value)> {
    let unused: Vec<Value> = SECTIONS.iter().filter(|s| Some(**s) != chosen).map(|s| Value::String(s.to_string())).collect();
    unused.into_iter().filter_map(|k| section.remove(&k).map(|v| (k, v))).collect()
}

pub(crate) fn restore(section: &mut Mapping, aside: Vec<(Value, Value)>) {
    section.extend(aside);
}

impl StateManagerSection {
    /// The settings of the chosen section (see [`chosen`]).
    pub(crate) fn map(self, chosen: Option<&str>) -> Result<Mapped, String> {
        let mut m = Mapped {
            heartbeat_interval: self.heartbeat_interval,
            stale_worker_timeout: self.stale_worker_timeout,
            checkpoint_interval: self.checkpoint_interval,
            heartbeat_field: Some("state_manager.heartbeat_interval"),
            ..Mapped::default()
        };
        let missing = |name: &str, field: &str| format!("{KEY}.backend is {name} but {KEY}.{name} is missing; add it with {field}");
        match chosen {
            None => {}
            Some("file") => {
                if let Some(f) = self.file {
                    (m.url, m.lease_ttl, m.ttl_field) = (f.base_path, f.lock_timeout, Some("state_manager.file.lock_timeout"));
                }
            }
            Some("nfs") => {
                let n = self.nfs.ok_or_else(|| missing("nfs", "mount_path"))?;
                (m.url, m.lease_ttl, m.nfs) = (Some(n.mount_path), n.lock_timeout, true);
                m.ttl_field = Some("state_manager.nfs.lock_timeout");
            }
            Some("redis") => {
                let r = self.redis.ok_or_else(|| missing("redis", "connection_url"))?;
                m.url = Some(redis_url(&r.connection_url, r.key_prefix.as_deref())?);
                (m.lease_ttl, m.ttl_field) = (r.lock_timeout, Some("state_manager.redis.lock_timeout"));
            }
            Some("http") => {
                let h = self.http.ok_or_else(|| missing("http", "base_url"))?;
                (m.url, m.http_token) = (Some(h.base_url), h.auth_token.filter(|t| !t.is_empty()));
            }
            Some(other) => return Err(format!("{KEY}.backend: unknown backend {other:?}")),
        }
        Ok(m)
    }
}

/// `connection_url` with `key_prefix` as its `prefix` parameter.
fn redis_url(connection_url: &str, key_prefix: Option<&str>) -> Result<String, String> {
    let field = format!("{KEY}.redis.connection_url");
    let mut url = url::Url::parse(connection_url).map_err(|e| format!("{field}: {e}; write redis://host:6379/0"))?;
    if !matches!(url.scheme(), "redis" | "rediss" | "valkey" | "valkeys") {
        return Err(format!("{field} must start with redis:// or rediss://, not {}://", url.scheme()));
    }
    if let Some(prefix) = key_prefix {
        if url.query_pairs().any(|(k, _)| k == "prefix") {
            return Err(format!("{KEY}.redis: both key_prefix and ?prefix= in connection_url; keep one"));
        }
        url.query_pairs_mut().append_pair("prefix", prefix);
    }
    Ok(url.to_string())
}
