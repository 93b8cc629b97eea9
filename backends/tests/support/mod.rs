//! The stores the integration tests run against. Servers are started by
//! `scripts/test.sh` (moto for S3, azurite for Azure, redis-server) and found through
//! `OXIFLOW_TEST_*` variables. Outside CI a missing server is skipped with a
//! message; under CI (`CI` set) it fails the test: nothing skips silently.
#![allow(dead_code)] // each test binary uses a different subset

pub mod redis_server;

use std::sync::Arc;

use oxiflow_backends::{ConditionalStore, LocalDirStore, ObjectStoreBackend, ObjectStoreOptions, RedisStore};

/// Azurite's published development account key.
const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn missing(server: &str, why: &str) -> Option<Arc<dyn ConditionalStore>> {
    if std::env::var_os("CI").is_some() {
        panic!("{server} must run in CI but {why}; run the tests through scripts/test.sh");
    }
    eprintln!("SKIPPED {server}: {why} (scripts/test.sh starts it)");
    None
}

pub fn memory() -> Arc<dyn ConditionalStore> {
    Arc::new(ObjectStoreBackend::open("memory://", &ObjectStoreOptions::default()).unwrap())
}

pub fn local_dir(dir: &std::path::Path) -> Arc<dyn ConditionalStore> {
    Arc::new(LocalDirStore::open(dir).unwrap())
}

/// Options for the moto server, with a fresh prefix per call.
pub fn s3_options() -> Option<(String, ObjectStoreOptions)> {
    let endpoint = std::env::var("OXIFLOW_TEST_S3_ENDPOINT").ok()?;
    let bucket = std::env::var("OXIFLOW_TEST_S3_BUCKET").unwrap_or_else(|_| "oxiflow-test".into());
    let url = format!("s3://{bucket}/run-{:016x}", rand::random::<u64>());
    let options = ObjectStoreOptions {
        endpoint: Some(endpoint),
        allow_http: true,
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        region: Some("us-east-1".into()),
        ..ObjectStoreOptions::default()
    };
    Some((url, options))
}

pub fn s3() -> Option<Arc<dyn ConditionalStore>> {
    let Some((url, options)) = s3_options() else { return missing("S3 (moto)", "OXIFLOW_TEST_S3_ENDPOINT is not set") };
    eprintln!("RAN against S3 on moto: {url} at {}", options.endpoint.as_deref().unwrap_or_default());
    Some(Arc::new(ObjectStoreBackend::open(&url, &options).unwrap()))
}

/// S3 in a bucket of its own, created for the caller: moto lists a prefix
/// by walking the whole bucket, so a long test in the shared bucket (which
/// earlier tests fill) slows down with everything else.
pub async fn s3_own_bucket() -> Option<Arc<dyn ConditionalStore>> {
    let Some((_, options)) = s3_options() else { return missing("S3 (moto)", "OXIFLOW_TEST_S3_ENDPOINT is not set") };
    let endpoint = options.endpoint.clone().unwrap_or_default();
    let bucket = format!("oxiflow-own-{:016x}", rand::random::<u64>());
    let created = reqwest::Client::new().put(format!("{endpoint}/{bucket}")).send().await.expect("moto answers");
    assert!(created.status().is_success(), "creating bucket {bucket} on moto: {}", created.status());
    eprintln!("RAN against S3 on moto: s3://{bucket} at {endpoint}");
    Some(Arc::new(ObjectStoreBackend::open(&format!("s3://{bucket}/run"), &options).unwrap()))
}

pub fn azure() -> Option<Arc<dyn ConditionalStore>> {
    let Ok(endpoint) = std::env::var("OXIFLOW_TEST_AZURE_ENDPOINT") else {
        return missing("Azure (azurite)", "OXIFLOW_TEST_AZURE_ENDPOINT is not set");
    };
    let container = std::env::var("OXIFLOW_TEST_AZURE_CONTAINER").unwrap_or_else(|_| "oxiflow-test".into());
    let url = format!("az://{container}/run-{:016x}", rand::random::<u64>());
    let options = ObjectStoreOptions {
        endpoint: Some(endpoint.clone()),
        allow_http: true,
        azure_account: Some("devstoreaccount1".into()),
        secret_access_key: Some(AZURITE_KEY.into()),
        ..ObjectStoreOptions::default()
    };
    eprintln!("RAN against Azure on azurite: {url} at {endpoint}");
    Some(Arc::new(ObjectStoreBackend::open(&url, &options).unwrap()))
}

/// The Redis server's URL with a fresh key prefix per call.
pub fn redis_url() -> Option<String> {
    let url = std::env::var("OXIFLOW_TEST_REDIS_URL").ok()?;
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}prefix=test:{:016x}", rand::random::<u64>()))
}

/// [`redis_url`], or `None` with the test skipped, saying so (a missing
/// server fails under CI: scripts/test.sh starts redis-server).
pub fn redis_url_or_skip() -> Option<String> {
    let url = redis_url();
    if url.is_none() {
        assert!(std::env::var_os("CI").is_none(), "redis-server must run in CI");
        eprintln!("SKIPPED: OXIFLOW_TEST_REDIS_URL is not set (scripts/test.sh starts redis-server)");
    }
    url
}

pub fn redis() -> Option<Arc<dyn ConditionalStore>> {
    let Some(url) = redis_url() else { return missing("Redis (redis-server)", "OXIFLOW_TEST_REDIS_URL is not set") };
    eprintln!("RAN against Redis: {url}");
    Some(Arc::new(RedisStore::open(&url).unwrap()))
}
