//! The primitive conformance suite against every store.

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
