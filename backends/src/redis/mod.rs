//! A [`ConditionalStore`] on Redis or Valkey (`redis://`, `rediss://`).
//!
//! - Every operation is one Lua script run with EVALSHA ([`::redis::Script`]:
//!   on `NOSCRIPT`, which means the script did not run, it loads the script
//!   and sends it again). Create-if-absent and compare-and-swap are atomic
//!   on the server; no WATCH/MULTI, which is unsound on a shared multiplexed
//!   connection. A checkpoint is one round trip.
//! - Versions are random 128-bit tokens: they never repeat (ABA-safe, also
//!   across a delete and a re-create).
//! - A read checks the body's size (HSTRLEN) in the same script before
//!   sending it: an object over the limit is refused without transferring it.
//! - A script checks the type of every key it will write before its first
//!   write: it writes everything or nothing. A foreign document is corrupt
//!   and never overwritten; an index that is not a hash is corrupt too,
//!   naming the key and the fix (delete it).
//! - Listing inside a pipeline is one script returning the pipeline's index
//!   (kept by the same scripts), with versions. An index not marked
//!   complete (deleted, or new) is rebuilt first from a SCAN of the
//!   pipeline's hash-tagged keys, so a lost index never hides a document
//!   (`scripts.rs` says why that is sound with writes running). Other
//!   prefixes SCAN (MATCH, glob characters escaped; never KEYS) and read the
//!   versions in one pipeline.
//! - A pipeline's keys share a Redis Cluster hash tag (`keys.rs`).
//! - One reconnecting multiplexed connection ([`ConnectionManager`]); a
//!   command whose reply is lost (timeout, dropped connection) is reported
//!   [`Error::Unavailable`] and never sent again here: the outcome is
//!   unknown and the core resolves it with its write id.
//! - `wait_replicas=N`: `WAIT N wait_timeout_ms` in the same round trip as
//!   every write; fewer acknowledgements is `Unavailable` (see README.md for
//!   what asynchronous replication can still lose).

mod errors;
mod keys;
mod options;
mod scripts;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{ErrorKind, RedisError, Script, ServerErrorKind, Value};
use async_trait::async_trait;
use oxiflow_core::{Object, Timestamp, Version};

use self::keys::{Layout, PipelineListing};
use self::options::Target;
use self::scripts::{Reply, SCRIPTS};
use crate::error::{Error, Result};
use crate::store::{ConditionalStore, Listed};

pub use self::options::DEFAULT_PREFIX;

/// Keys SCAN asks for per call.
const SCAN_COUNT: usize = 1000;

/// A Redis or Valkey server (5.0 or newer) holding oxiflow state under a key
/// prefix. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    layout: Layout,
    target: Target,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("target", &self.target.describe).finish()
    }
}

impl RedisStore {
    /// Opens `redis://[user:password@]host:port/db?prefix=…` (see
    /// `options.rs` for every parameter). Connects lazily: a wrong password,
    /// database or host shows at the first request. Must be called inside a
    /// tokio runtime.
    pub fn open(url: &str) -> Result<Self> {
        let target = options::parse(url)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Store { store: target.describe, reason: "the Redis store must be opened inside a tokio runtime".into() });
        }
        let client = ::redis::Client::open(target.client_url.as_str())
            .map_err(|e| Error::InvalidUrl { url: target.describe.clone(), reason: e.to_string() })?;
        // Reconnects are quick and few: the core's retry policy does the
        // waiting, with backoff and jitter, and resolves lost replies.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(std::time::Duration::from_millis(50))
            .set_max_delay(std::time::Duration::from_millis(500))
            .set_connection_timeout(Some(target.timeout))
            .set_response_timeout(Some(target.timeout));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| errors::map(&target, "", e))?;
        Ok(RedisStore { conn, layout: Layout::new(&target.prefix), target })
    }

    /// The Redis key that holds `key` (for operators and tests).
    pub fn redis_key(&self, key: &str) -> Result<String> {
        self.layout.redis_key(key)
    }

    /// Runs `script` with EVALSHA (plus WAIT after writes when configured)
    /// and decodes its reply. `NOSCRIPT` means it did not run: load, resend.
    async fn eval(&self, script: &Script, key: &str, keys: &[String], args: &[&[u8]], write: bool) -> Result<Reply> {
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(keys.len()).arg(keys).arg(args);
        let mut conn = self.conn.clone();
        let wait = self.target.wait.filter(|_| write);
        let mut loaded = false;
        let value = loop {
            let sent = match wait {
                None => cmd.query_async::<Value>(&mut conn).await,
                Some(w) => self.eval_and_wait(&cmd, w, key, &mut conn).await?,
            };
            match sent {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) && !loaded => {
                    script.load_async(&mut conn).await.map_err(|e| errors::map(&self.target, key, e))?;
                    loaded = true;
                }
                Err(e) => return Err(errors::map(&self.target, key, e)),
                Ok(value) => break value,
            }
        };
        Reply::decode(value).map_err(|reason| Error::Store { store: self.target.describe.clone(), reason })
    }

    /// EVALSHA and WAIT in one round trip: the script's reply, once enough
    /// replicas acknowledged (else `Unavailable`: the write is on the primary).
    async fn eval_and_wait(
        &self,
        cmd: &::redis::Cmd,
        wait: options::Wait,
        key: &str,
        conn: &mut ConnectionManager,
    ) -> Result<Result<Value, RedisError>> {
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors().add_command(cmd.clone()).cmd("WAIT").arg(wait.replicas).arg(wait.timeout.as_millis() as u64);
        let replies: Vec<Value> = pipe.query_async(conn).await.map_err(|e| errors::map(&self.target, key, e))?;
        let mut replies = replies.into_iter();
        let (Some(first), Some(acked)) = (replies.next(), replies.next()) else {
            return Err(errors::map(
                &self.target,
                key,
                RedisError::from((ErrorKind::Parse, "EVALSHA and WAIT gave fewer than two replies")),
            ));
        };
        if let Value::ServerError(e) = first {
            return Ok(Err(e.into()));
        }
        errors::check_wait(&self.target, key, wait, &acked)?;
        Ok(Ok(first))
    }

    /// A script's refusal (or anything it should not have said) as the
    /// store's typed error: foreign documents and indexes are corrupt.
    fn unexpected(&self, key: &str, reply: Reply) -> Error {
        match reply {
            Reply::Foreign { redis_key, what } => errors::foreign(&self.target, key, &redis_key, &what),
            Reply::BadIndex { redis_key, what } => errors::bad_index(&self.target, key, &redis_key, &what),
            other => Error::Store { store: self.target.describe.clone(), reason: format!("unexpected reply for {key}: {other:?}") },
        }
    }

    async fn write(&self, script: &Script, key: &str, leading: &[&[u8]], body: &[u8]) -> Result<(Reply, Version)> {
        #[allow(clippy::disallowed_methods)] // the store's own version token: unique, not a decision
        let token = format!("{:032x}", rand::random::<u128>());
        let field = key.as_bytes();
        let mut args: Vec<&[u8]> = leading.to_vec();
        args.extend([token.as_bytes(), body, field]);
        let reply = self.eval(script, key, &self.doc_keys(key)?, &args, true).await?;
        Ok((reply, Version { e_tag: Some(format!("\"{token}\"")), version: None }))
    }

    fn doc_keys(&self, key: &str) -> Result<Vec<String>> {
        let mut keys = vec![self.layout.redis_key(key)?];
        keys.extend(self.layout.index_key(key));
        Ok(keys)
    }

    /// Every key of one pipeline under `prefix`, with versions: one script
    /// that returns the pipeline's index. An index that is not known
    /// complete (lost, or never listed since it was created) is rebuilt
    /// first from a SCAN of the pipeline's keys (see `scripts.rs`).
    async fn list_pipeline(&self, listing: &PipelineListing, prefix: &str) -> Result<Vec<Listed>> {
        #[allow(clippy::disallowed_methods)] // a rebuild's token: unique, not a decision
        let token = format!("{:032x}", rand::random::<u128>());
        let reply = match self.eval(&SCRIPTS.list, prefix, std::slice::from_ref(&listing.index), &[token.as_bytes()], false).await? {
            Reply::Rebuild(token) => {
                let found = self.scan(&listing.pattern, &listing.documents, prefix).await?;
                self.rebuild(listing, prefix, &token, &found).await?
            }
            other => other,
        };
        match reply {
            Reply::Ok(fields) => Ok(index_listing(fields, prefix)),
            other => Err(self.unexpected(prefix, other)),
        }
    }

    /// The second half of a rebuild: `found` (store key → Redis key) is what
    /// a SCAN begun after `token` was set found.
    async fn rebuild(
        &self,
        listing: &PipelineListing,
        prefix: &str,
        token: &str,
        found: &std::collections::BTreeMap<String, String>,
    ) -> Result<Reply> {
        let mut keys = Vec::with_capacity(found.len() + 1);
        keys.push(listing.index.clone());
        let mut args: Vec<&[u8]> = Vec::with_capacity(found.len() + 1);
        args.push(token.as_bytes());
        for (key, redis_key) in found {
            keys.push(redis_key.clone());
            args.push(key.as_bytes());
        }
        self.eval(&SCRIPTS.rebuild, prefix, &keys, &args, false).await
    }

    /// SCAN (never KEYS) for `pattern`: store key → Redis key of every
    /// document found whose store key starts with `prefix`.
    async fn scan(&self, pattern: &str, prefix: &str, describe: &str) -> Result<std::collections::BTreeMap<String, String>> {
        let mut conn = self.conn.clone();
        let mut found = std::collections::BTreeMap::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await
                .map_err(|e| errors::map(&self.target, describe, e))?;
            for redis_key in batch {
                if let Some(key) = self.layout.store_key(&redis_key).filter(|k| k.starts_with(prefix)) {
                    found.insert(key, redis_key);
                }
            }
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }

    /// SCAN for keys under `prefix`, then their versions in one pipeline. A
    /// key that holds something other than a hash is listed without a
    /// version: reading it reports it as corrupt, naming it.
    async fn list_scan(&self, prefix: &str) -> Result<Vec<Listed>> {
        let found = self.scan(&self.layout.scan_pattern(prefix), prefix, prefix).await?;
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors();
        for redis_key in found.values() {
            pipe.cmd("HGET").arg(redis_key).arg("v");
        }
        let versions: Vec<Value> = pipe.query_async(&mut conn).await.map_err(|e| errors::map(&self.target, prefix, e))?;
        let mut listed = Vec::with_capacity(found.len());
        for ((key, redis_key), version) in found.into_iter().zip(versions) {
            match version {
                Value::BulkString(v) => {
                    let v = String::from_utf8_lossy(&v).into_owned();
                    listed.push(Listed { key, version: Some(Version { e_tag: Some(format!("\"{v}\"")), version: None }) });
                }
                Value::Nil => {} // deleted since the SCAN saw it
                Value::ServerError(e) if e.code() == "WRONGTYPE" => listed.push(Listed { key, version: None }),
                Value::ServerError(e) => return Err(errors::map(&self.target, &key, e.into())),
                other => {
                    return Err(errors::foreign(&self.target, &key, &redis_key, &format!("a version that reads {other:?}")));
                }
            }
        }
        Ok(listed)
    }
}

/// An index's fields (`field, version, …`) under `prefix`, sorted. Fields
/// that are not store keys (`_complete`) fall outside every prefix; an
/// empty version (a foreign value found by a rebuild) is listed as none.
fn index_listing(fields: Vec<Vec<u8>>, prefix: &str) -> Vec<Listed> {
    let mut found: Vec<Listed> = fields
        .chunks_exact(2)
        .map(|pair| (String::from_utf8_lossy(&pair[0]).into_owned(), String::from_utf8_lossy(&pair[1]).into_owned()))
        .filter(|(key, _)| key.starts_with(prefix))
        .map(|(key, v)| Listed { key, version: (!v.is_empty()).then(|| Version { e_tag: Some(format!("\"{v}\"")), version: None }) })
        .collect();
    found.sort_by(|a, b| a.key.cmp(&b.key));
    found
}

/// The token inside a version we issued (quoted like an HTTP ETag).
fn token(version: &Version) -> Option<&str> {
    version.e_tag.as_deref().map(|e| e.trim_matches('"')).filter(|t| !t.is_empty())
}

#[async_trait]
impl ConditionalStore for RedisStore {
    fn describe(&self) -> &str {
        &self.target.describe
    }

    async fn get(&self, key: &str, max_bytes: usize) -> Result<Option<Object>> {
        let limit = max_bytes.to_string();
        match self.eval(&SCRIPTS.get, key, &[self.layout.redis_key(key)?], &[limit.as_bytes()], false).await? {
            Reply::Absent => Ok(None),
            Reply::TooBig(size) => Err(oxiflow_core::Error::TooLarge { key: key.into(), size, limit: max_bytes }.into()),
            Reply::Ok(mut parts) if parts.len() == 2 => {
                let body = parts.pop().unwrap_or_default();
                let v = String::from_utf8_lossy(&parts[0]).into_owned();
                Ok(Some(Object { body, version: Version { e_tag: Some(format!("\"{v}\"")), version: None } }))
            }
            other => Err(self.unexpected(key, other)),
        }
    }

    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<Version> {
        match self.write(&SCRIPTS.create, key, &[], &body).await? {
            (Reply::Ok(_), version) => Ok(version),
            (Reply::Exists, _) => Err(Error::AlreadyExists { store: self.target.describe.clone(), key: key.into() }),
            (other, _) => Err(self.unexpected(key, other)),
        }
    }

    async fn put_if_match(&self, key: &str, body: Vec<u8>, version: &Version) -> Result<Version> {
        oxiflow_core::keys::check_key(key)?;
        let Some(expected) = token(version) else {
            return Err(Error::Precondition { store: self.target.describe.clone(), key: key.into() });
        };
        match self.write(&SCRIPTS.swap, key, &[expected.as_bytes()], &body).await? {
            (Reply::Ok(_), version) => Ok(version),
            (Reply::Precondition, _) => Err(Error::Precondition { store: self.target.describe.clone(), key: key.into() }),
            (other, _) => Err(self.unexpected(key, other)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.eval(&SCRIPTS.delete, key, &self.doc_keys(key)?, &[key.as_bytes()], true).await? {
            Reply::Ok(_) => Ok(()),
            other => Err(self.unexpected(key, other)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        oxiflow_core::keys::check_prefix(prefix)?;
        match self.layout.pipeline_listing(prefix) {
            Some(listing) => self.list_pipeline(&listing, prefix).await,
            None => self.list_scan(prefix).await,
        }
    }

    /// The server's clock at the key's last write (stored by the scripts).
    async fn written_at(&self, key: &str) -> Result<Option<Timestamp>> {
        let mut conn = self.conn.clone();
        let redis_key = self.layout.redis_key(key)?;
        let ms: Option<i64> = ::redis::cmd("HGET").arg(&redis_key).arg("t").query_async(&mut conn).await.map_err(|e| {
            if e.code() == Some("WRONGTYPE") {
                return errors::foreign(&self.target, key, &redis_key, "another type than a hash");
            }
            errors::map(&self.target, key, e)
        })?;
        Ok(ms.map(Timestamp::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index is lost between a rebuild's SCAN and its second script,
    /// and a document the SCAN missed was written into the lost index only:
    /// that rebuild must not mark the re-created index complete, or every
    /// later listing would miss the document. Steps the listing by hand
    /// against the redis-server of `OXIFLOW_TEST_REDIS_URL`.
    #[tokio::test]
    async fn a_rebuild_whose_index_was_lost_meanwhile_marks_nothing_complete() {
        let Ok(url) = std::env::var("OXIFLOW_TEST_REDIS_URL") else {
            assert!(std::env::var_os("CI").is_none(), "redis-server must run in CI");
            eprintln!("SKIPPED: OXIFLOW_TEST_REDIS_URL is not set (scripts/test.sh starts redis-server)");
            return;
        };
        #[allow(clippy::disallowed_methods)] // a fresh prefix per run
        let store = RedisStore::open(&format!("{url}?prefix=test:{:016x}", rand::random::<u64>())).unwrap();
        let prefix = "pipelines/race/";
        let listing = store.layout.pipeline_listing(prefix).unwrap();
        let mut conn = store.conn.clone();
        let mut exists = async |field: &str| -> bool {
            ::redis::cmd("HEXISTS").arg(&listing.index).arg(field).query_async::<i64>(&mut conn).await.unwrap() == 1
        };
        store.put_if_absent("pipelines/race/pipeline.json", b"{}".to_vec()).await.unwrap();

        // A listing begins: a token, then a SCAN.
        let token = match store.eval(&SCRIPTS.list, prefix, std::slice::from_ref(&listing.index), &[b"t1"], false).await.unwrap() {
            Reply::Rebuild(token) => token,
            other => panic!("an index never listed is rebuilt first: {other:?}"),
        };
        let found = store.scan(&listing.pattern, &listing.documents, prefix).await.unwrap();
        assert_eq!(found.keys().collect::<Vec<_>>(), ["pipelines/race/pipeline.json"]);
        // Meanwhile: a document the SCAN did not see, the index lost, and a
        // write that re-creates it with its own key only.
        store.put_if_absent("pipelines/race/partitions/x.json", b"{}".to_vec()).await.unwrap();
        let mut raw = store.conn.clone();
        let _: i64 = ::redis::cmd("DEL").arg(&listing.index).query_async(&mut raw).await.unwrap();
        store.put_if_absent("pipelines/race/partitions/y.json", b"{}".to_vec()).await.unwrap();

        match store.rebuild(&listing, prefix, &token, &found).await.unwrap() {
            Reply::Ok(fields) => {
                let keys: Vec<_> = index_listing(fields, prefix).into_iter().map(|l| l.key).collect();
                assert_eq!(keys, ["pipelines/race/pipeline.json"], "answered from its SCAN");
            }
            other => panic!("{other:?}"),
        }
        assert!(!exists("_complete").await, "the re-created index lacks x.json: it must not be marked complete");
        let keys: Vec<_> = store.list(prefix).await.unwrap().into_iter().map(|l| l.key).collect();
        assert_eq!(keys, ["pipelines/race/partitions/x.json", "pipelines/race/partitions/y.json", "pipelines/race/pipeline.json"]);
        assert!(exists("_complete").await, "the next listing rebuilt it");
    }
}
