//! `probe` (and so `oxiflow doctor`) compares the store's clock with ours on
//! its own write, and says when the difference exceeds the skew allowance.

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use oxiflow_backends::{ConditionalStore, Listed, Result, StateManager};
use oxiflow_core::{Config, Object, Timestamp, Version};

/// A store whose clock runs `ahead` of ours.
#[derive(Debug)]
struct Skewed {
    inner: Arc<dyn ConditionalStore>,
    ahead: Duration,
}

#[async_trait]
impl ConditionalStore for Skewed {
    fn describe(&self) -> &str {
        self.inner.describe()
    }
    async fn get(&self, key: &str, max_bytes: usize) -> Result<Option<Object>> {
        self.inner.get(key, max_bytes).await
    }
    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<Version> {
        self.inner.put_if_absent(key, body).await
    }
    async fn put_if_match(&self, key: &str, body: Vec<u8>, version: &Version) -> Result<Version> {
        self.inner.put_if_match(key, body, version).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        self.inner.list(prefix).await
    }
    async fn written_at(&self, key: &str) -> Result<Option<Timestamp>> {
        Ok(self.inner.written_at(key).await?.map(|t| t.plus(self.ahead)))
    }
}

#[tokio::test]
async fn a_store_clock_beyond_the_skew_allowance_is_reported() {
    let config = Config::default(); // skew allowance 2 s
    let honest = StateManager::new(support::memory(), config).probe().await.unwrap();
    let skew = honest.clock_skew_ms.expect("object stores keep write times");
    assert!(skew.abs() <= 1_100 && !honest.clock_skew_exceeds_allowance, "the same clock: {honest:?}");

    let ahead = Skewed { inner: support::memory(), ahead: Duration::from_secs(60) };
    let report = StateManager::new(Arc::new(ahead), config).probe().await.unwrap();
    let skew = report.clock_skew_ms.unwrap();
    assert!((58_900..=61_100).contains(&skew) && report.clock_skew_exceeds_allowance, "60 s ahead: {report:?}");

    let local = tempfile::tempdir().unwrap();
    let report = StateManager::new(support::local_dir(local.path()), config).probe().await.unwrap();
    assert_eq!((report.clock_skew_ms, report.clock_skew_exceeds_allowance), (None, false), "the local directory shares our clock");
}
