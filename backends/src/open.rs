//! A store from what a user wrote: a URL of a known scheme, or a path. The
//! one table of schemes lives here; the CLI, `oxiflow serve` and the config
//! checks all read it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use oxiflow_core::{Object, Version};

use crate::error::{Error, Result};
use crate::store::{ConditionalStore, Listed};
use crate::{HttpStore, LocalDirStore, ObjectStoreBackend, ObjectStoreOptions, RedisStore};

/// Every scheme a store URL may have, and the kind of store it opens
/// (`state.backend` names kinds).
pub const SCHEMES: [(&str, &str); 14] = [
    ("file", "file"),
    ("s3", "s3"),
    ("s3a", "s3"),
    ("gs", "gcs"),
    ("az", "azure"),
    ("azure", "azure"),
    ("abfs", "azure"),
    ("memory", "memory"),
    ("http", "http"),
    ("https", "http"),
    ("redis", "redis"),
    ("rediss", "redis"),
    ("valkey", "redis"),
    ("valkeys", "redis"),
];

/// The kinds of store, as `state.backend` names them.
pub const KINDS: [&str; 7] = ["file", "s3", "gcs", "azure", "memory", "redis", "http"];

/// The schemes, for messages: `file://, s3://, …`.
pub fn known_schemes() -> String {
    SCHEMES.iter().map(|(s, _)| format!("{s}://")).collect::<Vec<_>>().join(", ")
}

/// The kind of store a URL's scheme opens, `None` when the scheme is unknown.
pub fn kind_of(url: &str) -> Option<&'static str> {
    let scheme = url.split_once("://")?.0.to_ascii_lowercase();
    SCHEMES.iter().find(|(s, _)| *s == scheme).map(|(_, k)| *k)
}

/// The schemes of a kind (`s3` → `s3, s3a`); empty for an unknown kind.
pub fn schemes_of(kind: &str) -> Vec<&'static str> {
    SCHEMES.iter().filter(|(_, k)| *k == kind).map(|(s, _)| *s).collect()
}

/// A store location as written — `s3://bucket/prefix`, `file:///abs`,
/// `/abs/path`, `rel/path`, `./a:b` — as a URL; a relative path is relative
/// to `base`. Refused, naming the known schemes: an unknown scheme, and
/// anything else with a `:` that is not a path (`s3:/bad` is a typo, not a
/// directory: write `./s3:/bad` if a directory is meant).
pub fn resolve(location: &str, base: &Path) -> Result<String> {
    let invalid = |reason: String| Error::InvalidUrl { url: location.to_string(), reason };
    if let Some((scheme, _)) = location.split_once("://") {
        return match kind_of(location) {
            Some(_) => Ok(location.to_string()),
            None => Err(invalid(format!("unknown scheme {scheme:?}; use one of {}, or a path", known_schemes()))),
        };
    }
    if location.is_empty() {
        return Err(invalid(format!("empty; use one of {}, or a path", known_schemes())));
    }
    let path = Path::new(location);
    let explicit = path.is_absolute() || location.starts_with("./") || location.starts_with("../");
    if let Some((before, _)) = location.split_once(':').filter(|_| !explicit) {
        let hint = match kind_of(&format!("{before}://")) {
            Some(_) => format!("did you mean {before}://…? "),
            None => String::new(),
        };
        return Err(invalid(format!(
            "{hint}not a store URL (known schemes: {}) nor a path; a directory whose name has a ':' is written ./{location}",
            known_schemes()
        )));
    }
    Ok(format!("file://{}", base.join(path).display()))
}

/// What opening a store needs besides its URL.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// S3, GCS, Azure: endpoint, plain http, region, credentials.
    pub object: ObjectStoreOptions,
    /// The bearer token of an `oxiflow serve` (`http(s)://`).
    pub http_token: Option<String>,
}

fn env_true(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Opens the store at `url` (see [`resolve`] for paths). A local directory
/// is created by the first write, never by a read: a read-only command on a
/// mistyped path leaves nothing behind. For S3, `AWS_ALLOW_HTTP=true` (the
/// object_store convention) allows plain http as `allow_http` does; a plain
/// http endpoint without either is refused by name.
pub fn open_store(url: &str, options: &OpenOptions) -> Result<Arc<dyn ConditionalStore>> {
    let kind = kind_of(url)
        .ok_or_else(|| Error::InvalidUrl { url: url.to_string(), reason: format!("unknown scheme; use one of {}", known_schemes()) })?;
    Ok(match kind {
        "file" => Arc::new(DeferredDir::new(&url["file://".len()..])),
        "http" => Arc::new(HttpStore::new(url, options.http_token.clone())?),
        "redis" => Arc::new(RedisStore::open(url)?),
        _ => {
            let mut object = options.object.clone();
            if kind == "s3" {
                object.allow_http |= env_true("AWS_ALLOW_HTTP");
            }
            let endpoint = object.endpoint.clone().or_else(|| match kind {
                "s3" => std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")).ok(),
                _ => None,
            });
            if let Some(endpoint) = endpoint.filter(|e| e.starts_with("http://") && !object.allow_http && kind != "memory") {
                let also = if kind == "s3" { ", or AWS_ALLOW_HTTP=true" } else { "" };
                return Err(Error::Core(oxiflow_core::Error::InvalidInput {
                    reason: format!(
                        "the endpoint {endpoint} is plain http, which is refused unless allowed: set allow_http: true under state: in the config (or OXIFLOW_ALLOW_HTTP=true{also})"
                    ),
                }));
            }
            Arc::new(ObjectStoreBackend::open(url, &object)?)
        }
    })
}

/// The local-directory store, opened (and its directory created) only once
/// there is something to read or write: reads of a directory that does not
/// exist see an empty store.
#[derive(Debug)]
struct DeferredDir {
    root: PathBuf,
    describe: String,
    store: OnceLock<LocalDirStore>,
}

impl DeferredDir {
    fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        DeferredDir { describe: format!("file://{}", root.display()), root, store: OnceLock::new() }
    }

    /// The store if its directory exists.
    fn existing(&self) -> Result<Option<&LocalDirStore>> {
        match self.store.get() {
            Some(s) => Ok(Some(s)),
            None if self.root.is_dir() => self.opened().map(Some),
            None => Ok(None),
        }
    }

    /// The store, creating its directory.
    fn opened(&self) -> Result<&LocalDirStore> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let s = LocalDirStore::open(&self.root)?;
        Ok(self.store.get_or_init(|| s))
    }
}

#[async_trait]
impl ConditionalStore for DeferredDir {
    fn describe(&self) -> &str {
        &self.describe
    }
    async fn get(&self, key: &str, max_bytes: usize) -> Result<Option<Object>> {
        oxiflow_core::keys::check_key(key)?; // refused before the directory is looked at, as by every store
        match self.existing()? {
            Some(s) => s.get(key, max_bytes).await,
            None => Ok(None),
        }
    }
    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<Version> {
        oxiflow_core::keys::check_key(key)?;
        self.opened()?.put_if_absent(key, body).await
    }
    async fn put_if_match(&self, key: &str, body: Vec<u8>, version: &Version) -> Result<Version> {
        oxiflow_core::keys::check_key(key)?;
        self.opened()?.put_if_match(key, body, version).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        oxiflow_core::keys::check_key(key)?;
        match self.existing()? {
            Some(s) => s.delete(key).await,
            None => Ok(()),
        }
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        oxiflow_core::keys::check_prefix(prefix)?;
        match self.existing()? {
            Some(s) => s.list(prefix).await,
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_to_urls_and_typos_are_refused() {
        let base = Path::new("/proj");
        assert_eq!(resolve("s3://b/p", base).unwrap(), "s3://b/p");
        assert_eq!(resolve("/abs/x", base).unwrap(), "file:///abs/x");
        assert_eq!(resolve("rel/x", base).unwrap(), "file:///proj/rel/x");
        assert_eq!(resolve("./a:b", base).unwrap(), "file:///proj/./a:b");
        assert_eq!(resolve("/abs/a:b", base).unwrap(), "file:///abs/a:b");
        let typo = resolve("s3:/bad", base).unwrap_err().to_string();
        assert!(typo.contains("did you mean s3://") && typo.contains("gs://"), "{typo}");
        let other = resolve("foo:bar", base).unwrap_err().to_string();
        assert!(other.contains("known schemes") && other.contains("./foo:bar"), "{other}");
        assert!(resolve("ftp://x/y", base).unwrap_err().to_string().contains("unknown scheme \"ftp\""));
        assert_eq!(schemes_of("s3"), ["s3", "s3a"]);
        assert_eq!(kind_of("REDISS://h"), Some("redis"));
    }

    #[tokio::test]
    async fn a_directory_is_created_by_the_first_write_not_by_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("not/yet");
        let store = open_store(&format!("file://{}", root.display()), &OpenOptions::default()).unwrap();
        assert!(store.get("a", 10).await.unwrap().is_none());
        assert!(store.list("").await.unwrap().is_empty());
        store.delete("a").await.unwrap();
        assert!(!root.exists(), "reads created {}", root.display());
        store.put_if_absent("a", b"x".to_vec()).await.unwrap();
        assert_eq!(store.get("a", 10).await.unwrap().unwrap().body, b"x");
        crate::conformance::primitives(store).await;
    }

    #[test]
    fn plain_http_needs_allow_http() {
        let options = OpenOptions {
            object: ObjectStoreOptions { endpoint: Some("http://127.0.0.1:9".into()), ..ObjectStoreOptions::default() },
            ..OpenOptions::default()
        };
        let err = open_store("az://c/p", &options).unwrap_err().to_string();
        assert!(err.contains("allow_http") && err.contains("http://127.0.0.1:9"), "{err}");
        let allowed = OpenOptions { object: ObjectStoreOptions { allow_http: true, ..options.object.clone() }, ..options };
        assert!(open_store("s3://b/p", &allowed).is_ok());
    }
}
