//! The primitive conformance suite against every store.

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

mod support;

use oxiflow_backends::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_passes_the_primitives() {
    conformance::primitives(support::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_directory_passes_the_primitives() {
    let dir = tempfile::tempdir().unwrap();
    conformance::primitives(support::local_dir(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_on_moto_passes_the_primitives() {
    if let Some(store) = support::s3() {
        conformance::primitives(store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_on_azurite_passes_the_primitives() {
    if let Some(store) = support::azure() {
        conformance::primitives(store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_passes_the_primitives() {
    if let Some(store) = support::redis() {
        conformance::primitives(store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_passes_the_state_manager_suite() {
    conformance::state_manager(support::memory(), support::memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_directory_passes_the_state_manager_suite() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    conformance::state_manager(support::local_dir(a.path()), support::local_dir(b.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_on_moto_passes_the_state_manager_suite() {
    let dir = tempfile::tempdir().unwrap();
    if let Some(store) = support::s3() {
        // copy across kinds: S3 → local directory
        conformance::state_manager(store, support::local_dir(dir.path())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_on_azurite_passes_the_state_manager_suite() {
    if let (Some(store), Some(other)) = (support::azure(), support::s3()) {
        // copy across kinds: Azure → S3
        conformance::state_manager(store, other).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_passes_the_state_manager_suite() {
    if let (Some(store), Some(other)) = (support::redis(), support::redis()) {
        // copy across two prefixes of one server
        conformance::state_manager(store, other).await;
    }
}

/// A store that ignores both write conditions, like some S3-compatible
/// servers, and lists without versions.
#[derive(Debug)]
struct Careless(std::sync::Arc<dyn oxiflow_backends::ConditionalStore>);

#[async_trait::async_trait]
impl oxiflow_backends::ConditionalStore for Careless {
    fn describe(&self) -> &str {
        "careless://"
    }
    async fn get(&self, key: &str, max: usize) -> oxiflow_backends::Result<Option<oxiflow_core::Object>> {
        self.0.get(key, max).await
    }
    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> oxiflow_backends::Result<oxiflow_core::Version> {
        self.0.delete(key).await?;
        self.0.put_if_absent(key, body).await
    }
    async fn put_if_match(&self, key: &str, body: Vec<u8>, _: &oxiflow_core::Version) -> oxiflow_backends::Result<oxiflow_core::Version> {
        self.0.delete(key).await?;
        self.0.put_if_absent(key, body).await
    }
    async fn delete(&self, key: &str) -> oxiflow_backends::Result<()> {
        self.0.delete(key).await
    }
    async fn list(&self, prefix: &str) -> oxiflow_backends::Result<Vec<oxiflow_backends::Listed>> {
        Ok(self.0.list(prefix).await?.into_iter().map(|l| oxiflow_backends::Listed { version: None, ..l }).collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_suite_names_every_failing_check_and_skips_what_a_store_does_not_offer() {
    use futures::FutureExt;
    let careless = || std::sync::Arc::new(Careless(support::memory())) as std::sync::Arc<dyn oxiflow_backends::ConditionalStore>;
    let caps = conformance::Capabilities { versions_in_listing: false, ..conformance::Capabilities::default() };
    let failed = std::panic::AssertUnwindSafe(conformance::primitives_with(careless(), caps)).catch_unwind().await.unwrap_err();
    let message = failed.downcast_ref::<String>().cloned().unwrap_or_default();
    // (The CAS race may or may not lose an update on such a store: not asserted.)
    for check in ["create once, refuse the second", "update with the current version, refuse a stale one", "update of a missing key"] {
        assert!(message.contains(check), "{check:?} not reported in: {message}");
    }
    assert!(!message.contains("listed versions"), "a capability not offered is skipped, not failed: {message}");
    assert!(!message.contains("list by prefix"), "checks that pass are not reported: {message}");
    // Declared capable, the missing versions fail too.
    let failed = std::panic::AssertUnwindSafe(conformance::primitives(careless())).catch_unwind().await.unwrap_err();
    assert!(failed.downcast_ref::<String>().is_some_and(|m| m.contains("listed versions are the read ones")));
}
