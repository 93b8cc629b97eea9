//! A store wrapper that counts requests, for request budgets in tests and
//! benchmarks.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use async_trait::async_trait;
use oxiflow_core::{Object, Version};
use serde::Serialize;

use crate::error::Result;
use crate::store::{ConditionalStore, Listed};

/// Requests seen, by primitive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RequestCounts {
    /// GETs.
    pub get: u64,
    /// Creates (If-None-Match: *).
    pub put_if_absent: u64,
    /// Compare-and-swap writes (If-Match).
    pub put_if_match: u64,
    /// DELETEs.
    pub delete: u64,
    /// LISTs.
    pub list: u64,
}

impl RequestCounts {
    /// All requests.
    pub fn total(&self) -> u64 {
        self.get + self.put_if_absent + self.put_if_match + self.delete + self.list
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts {
            get: self.get - earlier.get,
            put_if_absent: self.put_if_absent - earlier.put_if_absent,
            put_if_match: self.put_if_match - earlier.put_if_match,
            delete: self.delete - earlier.delete,
            list: self.list - earlier.list,
        }
    }
}

/// Counts every request it passes on to the inner store.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ConditionalStore>,
    counts: [AtomicU64; 5],
}

impl CountingStore {
    /// Counts the requests to `inner`.
    pub fn new(inner: Arc<dyn ConditionalStore>) -> Self {
        CountingStore { inner, counts: Default::default() }
    }

    /// The requests so far.
    pub fn counts(&self) -> RequestCounts {
        let [get, put_if_absent, put_if_match, delete, list] = self.counts.each_ref().map(|c| c.load(Relaxed));
        RequestCounts { get, put_if_absent, put_if_match, delete, list }
    }

    fn bump(&self, i: usize) {
        self.counts[i].fetch_add(1, Relaxed);
    }
}

#[async_trait]
impl ConditionalStore for CountingStore {
    fn describe(&self) -> &str {
        self.inner.describe()
    }
    async fn get(&self, key: &str, max_bytes: usize) -> Result<Option<Object>> {
        self.bump(0);
        self.inner.get(key, max_bytes).await
    }
    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<Version> {
        self.bump(1);
        self.inner.put_if_absent(key, body).await
    }
    async fn put_if_match(&self, key: &str, body: Vec<u8>, version: &Version) -> Result<Version> {
        self.bump(2);
        self.inner.put_if_match(key, body, version).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.bump(3);
        self.inner.delete(key).await
    }
    async fn written_at(&self, key: &str) -> Result<Option<oxiflow_core::Timestamp>> {
        self.inner.written_at(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        self.bump(4);
        self.inner.list(prefix).await
    }
}
