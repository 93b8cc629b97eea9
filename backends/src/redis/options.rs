//! The Redis store's URL:
//!
//! ```text
//! redis://[user[:password]@]host[:port][/db][?prefix=oxiflow:state&timeout_ms=5000&wait_replicas=1&wait_timeout_ms=1000]
//! rediss://…        TLS (rustls, the system's roots; `#insecure` skips verification)
//! valkey://, valkeys://   the same
//! ```
//!
//! The path is the database number (default 0). `prefix` is the key prefix
//! (default `oxiflow:state`; empty for none). `protocol=resp3` is passed to
//! the client; any other parameter is refused.

use std::time::Duration;

use crate::error::{Error, Result};

/// The key prefix when the URL names none.
pub const DEFAULT_PREFIX: &str = "oxiflow:state";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(1);
const KNOWN: &str = "prefix, timeout_ms, wait_replicas, wait_timeout_ms, protocol";

/// `WAIT numreplicas timeout` after every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wait {
    pub replicas: u32,
    pub timeout: Duration,
}

/// A parsed URL: what to connect to, and how to name it without secrets.
#[derive(Clone)]
pub(crate) struct Target {
    /// Handed to the redis client: may hold the password; never printed.
    pub client_url: String,
    /// `redis://user@host:port/db?prefix=…`, for messages.
    pub describe: String,
    pub user: String,
    pub host: String,
    pub db: i64,
    pub prefix: String,
    pub timeout: Duration,
    pub wait: Option<Wait>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

fn millis(name: &str, value: &str, url: &str) -> Result<Duration> {
    value.parse::<u64>().ok().filter(|ms| *ms > 0).map(Duration::from_millis).ok_or_else(|| Error::InvalidUrl {
        url: url.into(),
        reason: format!("{name}={value:?} must be a positive number of milliseconds, like {name}=1000"),
    })
}

/// Parses a `redis://` / `rediss://` URL; errors name the URL without its
/// password and say how to fix it.
pub(crate) fn parse(url: &str) -> Result<Target> {
    let parsed = url::Url::parse(url).map_err(|e| Error::InvalidUrl { url: redact(url), reason: e.to_string() })?;
    let shown = redact(url);
    let bad = |reason: String| Error::InvalidUrl { url: shown.clone(), reason };
    let scheme = parsed.scheme();
    if !matches!(scheme, "redis" | "rediss" | "valkey" | "valkeys") {
        return Err(bad(format!("unknown scheme {scheme}://; a Redis store URL starts with redis:// or rediss://")));
    }
    let host = match parsed.host_str() {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => return Err(bad("no host; write redis://host:6379/0".into())),
    };
    let port = parsed.port().unwrap_or(6379);
    let db = match parsed.path().trim_matches('/') {
        "" => 0,
        path => path.parse::<i64>().ok().filter(|db| *db >= 0).ok_or_else(|| {
            bad(format!("the path {path:?} must be a database number (redis://host:6379/0); put a key prefix in ?prefix="))
        })?,
    };
    let (mut prefix, mut timeout, mut replicas, mut wait_timeout) =
        (DEFAULT_PREFIX.to_string(), DEFAULT_TIMEOUT, None, DEFAULT_WAIT_TIMEOUT);
    let mut passed = Vec::new();
    for (name, value) in parsed.query_pairs() {
        match name.as_ref() {
            "prefix" => prefix = value.to_string(),
            "timeout_ms" => timeout = millis("timeout_ms", &value, &shown)?,
            "wait_timeout_ms" => wait_timeout = millis("wait_timeout_ms", &value, &shown)?,
            "wait_replicas" => {
                replicas = Some(value.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    bad(format!("wait_replicas={value:?} must be a number of replicas of at least 1, like wait_replicas=1"))
                })?)
            }
            "protocol" => passed.push((name.to_string(), value.to_string())),
            other => return Err(bad(format!("unknown parameter {other:?}; known: {KNOWN}"))),
        }
    }
    if prefix.contains(['{', '}']) {
        return Err(bad(format!(
            "prefix {prefix:?} holds a brace; the store places Redis Cluster hash tags itself, choose a prefix without"
        )));
    }
    let wait = replicas.map(|replicas| Wait { replicas, timeout: wait_timeout });
    if wait.is_some_and(|w| w.timeout >= timeout) {
        return Err(bad(format!(
            "wait_timeout_ms ({}) must be below timeout_ms ({}), or every write waiting for replicas would time out",
            wait_timeout.as_millis(),
            timeout.as_millis()
        )));
    }
    let mut client = parsed.clone();
    client.set_query(None);
    client.set_path(&format!("/{db}"));
    if !passed.is_empty() {
        client.query_pairs_mut().extend_pairs(passed);
    }
    let user = match parsed.username() {
        "" => "default".to_string(),
        u => percent(u),
    };
    let at = if parsed.username().is_empty() { String::new() } else { format!("{user}@") };
    let host_port = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let describe = format!("{scheme}://{at}{host_port}/{db}?prefix={prefix}");
    Ok(Target { client_url: client.to_string(), describe, user, host: host_port, db, prefix, timeout, wait })
}

/// Decodes `%XX` escapes (a URL's user name).
fn percent(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        // Not a URL: show nothing after a possible `user:password@`.
        Err(_) => url.rsplit_once('@').map_or_else(|| url.to_string(), |(_, host)| format!("***@{host}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_parameters() {
        let t = parse("redis://127.0.0.1:7000").unwrap();
        assert_eq!((t.db, t.prefix.as_str(), t.timeout, t.wait), (0, DEFAULT_PREFIX, DEFAULT_TIMEOUT, None));
        assert_eq!(t.describe, "redis://127.0.0.1:7000/0?prefix=oxiflow:state");
        let t = parse("rediss://ops:s3cret@cache.internal/3?prefix=team:a&wait_replicas=2&wait_timeout_ms=250&protocol=resp3").unwrap();
        assert_eq!((t.db, t.prefix.as_str(), t.user.as_str()), (3, "team:a", "ops"));
        assert_eq!(t.wait, Some(Wait { replicas: 2, timeout: Duration::from_millis(250) }));
        assert_eq!(t.client_url, "rediss://ops:s3cret@cache.internal/3?protocol=resp3");
        assert!(!t.describe.contains("s3cret") && !format!("{t:?}").contains("s3cret"), "{}", t.describe);
        assert_eq!(t.describe, "rediss://ops@cache.internal:6379/3?prefix=team:a");
        assert_eq!(parse("redis://a%40b+c:x@h").unwrap().user, "a@b+c");
    }

    #[test]
    fn bad_urls_say_what_to_write_without_the_password() {
        for (url, needle) in [
            ("http://h:1", "starts with redis://"),
            ("redis://:pw-SECRET@h/x", "must be a database number"),
            ("redis://:pw-SECRET@h/0?prefx=a", "unknown parameter \"prefx\""),
            ("redis://h/0?wait_replicas=0", "at least 1"),
            ("redis://h/0?timeout_ms=soon", "positive number of milliseconds"),
            ("redis://h/0?wait_replicas=1&wait_timeout_ms=9000", "must be below timeout_ms"),
            ("redis://h/0?prefix=a{b}", "holds a brace"),
            ("redis:///0", "no host"),
        ] {
            let err = parse(url).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::InvalidUrl { .. }) && text.contains(needle), "{url}: {text}");
            assert!(!text.contains("pw-SECRET"), "{text}");
        }
    }
}
