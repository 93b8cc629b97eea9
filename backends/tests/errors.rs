//! Bad stores and bad input give typed errors a person can act on, and
//! never leak credentials.

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use oxiflow_backends::{ConditionalStore, Error, ObjectStoreBackend, ObjectStoreOptions, StateManager, StepPlan};
use oxiflow_core::{Config, ErrorKind, Object, PartitionId, Version};

const SECRET: &str = "s3cr3t-V4lue-that-must-never-print";

/// A store that ignores both conditions, like some S3-compatible servers do.
#[derive(Debug)]
struct IgnoresConditions(Arc<dyn ConditionalStore>);

#[async_trait]
impl ConditionalStore for IgnoresConditions {
    fn describe(&self) -> &str {
        "naive://ignores-conditions"
    }
    async fn get(&self, key: &str, max: usize) -> oxiflow_backends::Result<Option<Object>> {
        self.0.get(key, max).await
    }
    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> oxiflow_backends::Result<Version> {
        self.0.delete(key).await?;
        self.0.put_if_absent(key, body).await
    }
    async fn put_if_match(&self, key: &str, body: Vec<u8>, _: &Version) -> oxiflow_backends::Result<Version> {
        self.0.delete(key).await?;
        self.0.put_if_absent(key, body).await
    }
    async fn delete(&self, key: &str) -> oxiflow_backends::Result<()> {
        self.0.delete(key).await
    }
    async fn list(&self, prefix: &str) -> oxiflow_backends::Result<Vec<oxiflow_backends::Listed>> {
        self.0.list(prefix).await
    }
}

#[tokio::test]
async fn probe_refuses_a_store_that_ignores_conditions() {
    let m = StateManager::new(Arc::new(IgnoresConditions(support::memory())), Config::default());
    let err = m.probe().await.unwrap_err();
    assert!(matches!(err, Error::UnsafeStore { .. }), "{err:?}");
    assert!(err.to_string().contains("ignores If-None-Match"), "{err}");
}

#[tokio::test]
async fn a_server_that_is_down_is_unavailable_naming_the_endpoint() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let options = ObjectStoreOptions {
        endpoint: Some(endpoint.clone()),
        allow_http: true,
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some(SECRET.into()),
        region: Some("us-east-1".into()),
        ..ObjectStoreOptions::default()
    };
    let store = Arc::new(ObjectStoreBackend::open("s3://bucket/prefix", &options).unwrap());
    let config = Config { retry: oxiflow_core::RetryPolicy { max_transient_failures: 2, ..Default::default() }, ..Config::default() };
    let m = StateManager::new(store, config);
    let p = "orders".parse().unwrap();
    let err = m.claim(&p, &PartitionId::step("s".parse().unwrap()), &"w".parse().unwrap()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Unavailable { .. }) && err.kind() == ErrorKind::Unavailable, "{err:?}");
    assert!(text.contains(&endpoint) && text.contains("after 3 attempts"), "{text}");
    assert!(!text.contains(SECRET) && !format!("{err:?}").contains(SECRET), "credentials leaked: {err:?}");
}

#[tokio::test]
async fn a_missing_bucket_says_so() {
    let Some((_, mut options)) = support::s3_options() else { return };
    options.secret_access_key = Some(SECRET.into());
    let store = Arc::new(ObjectStoreBackend::open("s3://no-such-bucket-here/x", &options).unwrap());
    let err = store.get("pipelines/p/pipeline.json", 1 << 20).await.unwrap_err();
    assert!(matches!(err, Error::MissingBucket { .. }), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!format!("{err:?}").contains(SECRET), "credentials leaked: {err:?}");
}

/// Errors are classified by status, code and transport kind, never by
/// their text: names that carry the words of other errors change nothing.
#[tokio::test]
async fn names_that_look_like_other_errors_do_not_change_the_classification() {
    let Some((url, options)) = support::s3_options() else { return };
    let missing = Arc::new(ObjectStoreBackend::open("s3://connection-500-timed-out/503", &options).unwrap());
    let err = missing.get("pipelines/p/pipeline.json", 1 << 20).await.unwrap_err();
    assert!(matches!(err, Error::MissingBucket { .. }), "a missing bucket, not a transient failure: {err:?}");

    let store = Arc::new(ObjectStoreBackend::open(&format!("{url}/NoSuchBucket-500"), &options).unwrap());
    let key = "connection-refused-500/NoSuchBucket/AccessDenied.json";
    assert!(store.get(key, 1 << 20).await.unwrap().is_none(), "a missing key is absent, not an error");
    store.put_if_absent(key, b"{}".to_vec()).await.unwrap();
    let stale = oxiflow_core::Version { e_tag: Some("\"500-connection\"".into()), version: None };
    let err = store.put_if_match(key, b"{}".to_vec(), &stale).await.unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "a stale version, whatever the names: {err:?}");
}

#[tokio::test]
async fn wrong_azure_credentials_are_access_denied_without_the_key() {
    let Ok(endpoint) = std::env::var("OXIFLOW_TEST_AZURE_ENDPOINT") else {
        assert!(std::env::var_os("CI").is_none(), "azurite must run in CI");
        return;
    };
    let wrong_key = "d3Jvbmcta2V5LXRoYXQtbXVzdC1uZXZlci1wcmludA==";
    let options = ObjectStoreOptions {
        endpoint: Some(endpoint),
        allow_http: true,
        azure_account: Some("devstoreaccount1".into()),
        secret_access_key: Some(wrong_key.into()),
        ..ObjectStoreOptions::default()
    };
    let store = ObjectStoreBackend::open("az://oxiflow-test/x", &options).unwrap();
    let err = store.get("pipelines/p/pipeline.json", 1 << 20).await.unwrap_err();
    assert!(matches!(err, Error::AccessDenied { .. }), "{err:?}");
    assert!(!format!("{err:?}").contains(wrong_key), "credentials leaked: {err:?}");
}

#[tokio::test]
async fn unknown_schemes_and_bucketless_urls_are_refused_with_the_fix() {
    for (url, hint) in [
        ("ftp://x/y", "unknown scheme"),
        ("redsi://u:pw-SECRET@h/0", "redis://"),
        ("s3:///prefix", "no bucket"),
        ("not a url", "relative URL"),
        ("file:///tmp/x", "local-directory store"),
    ] {
        let err = ObjectStoreBackend::open(url, &ObjectStoreOptions::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }) && err.to_string().contains(hint), "{url}: {err}");
        assert!(!err.to_string().contains("pw-SECRET"), "{err}");
    }
}

#[tokio::test]
async fn corrupt_and_oversized_documents_are_typed_and_left_untouched() {
    let store = support::memory();
    let m = StateManager::new(store.clone(), Config::default());
    let p = "orders".parse().unwrap();
    m.create_pipeline(&p, &"r".parse().unwrap(), &[StepPlan::new("s".parse().unwrap(), None)]).await.unwrap();
    let key = "pipelines/orders/partitions/s.json";
    let original = store.get(key, 1 << 20).await.unwrap().unwrap();
    let mut damaged = original.body.clone();
    damaged[40] ^= 0x20;
    let v = store.put_if_match(key, damaged.clone(), &original.version).await.unwrap();
    let err = m.claim(&p, &PartitionId::step("s".parse().unwrap()), &"w".parse().unwrap()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(key) && err.to_string().contains("nothing was overwritten"), "{err}");
    assert_eq!(store.get(key, 1 << 20).await.unwrap().unwrap().body, damaged, "the damaged bytes are kept as they were");

    let huge = vec![b'x'; (1 << 20) + 1];
    store.put_if_match(key, huge, &v).await.unwrap();
    let err = m.claim(&p, &PartitionId::step("s".parse().unwrap()), &"w".parse().unwrap()).await.unwrap_err();
    assert!(matches!(err, Error::Core(oxiflow_core::Error::TooLarge { .. })), "{err:?}");
}

#[tokio::test]
async fn hostile_keys_cannot_leave_the_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = support::local_dir(dir.path());
    for key in ["../escape", "/etc/passwd", "a/../../b", "a//b", ".lock", "a/.hidden", "a\\b", "a\0b", ""] {
        let err = store.put_if_absent(key, b"x".to_vec()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{key:?}: {err}");
    }
    assert!(!dir.path().parent().unwrap().join("escape").exists());
}

#[tokio::test]
async fn a_missing_container_says_so() {
    let Ok(endpoint) = std::env::var("OXIFLOW_TEST_AZURE_ENDPOINT") else {
        assert!(std::env::var_os("CI").is_none(), "azurite must run in CI");
        return;
    };
    let options = ObjectStoreOptions {
        endpoint: Some(endpoint),
        allow_http: true,
        azure_account: Some("devstoreaccount1".into()),
        secret_access_key: Some("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==".into()),
        ..ObjectStoreOptions::default()
    };
    let store = ObjectStoreBackend::open("az://no-such-container/x", &options).unwrap();
    let err = store.get("pipelines/p/pipeline.json", 1 << 20).await.unwrap_err();
    assert!(matches!(err, Error::MissingBucket { .. }), "{err:?}");
    let err = store.put_if_absent("pipelines/p/pipeline.json", b"x".to_vec()).await.unwrap_err();
    assert!(matches!(err, Error::MissingBucket { .. }), "{err:?}");
}

#[tokio::test]
async fn exports_of_an_older_format_import_and_newer_ones_are_refused() {
    let m = StateManager::new(support::memory(), Config::default());
    let p = "orders".parse().unwrap();
    m.create_pipeline(&p, &"r".parse().unwrap(), &[StepPlan::new("s".parse().unwrap(), None)]).await.unwrap();
    let mut export = m.export(&p).await.unwrap();

    let target = StateManager::new(support::memory(), Config::default());
    let mut future = export.clone();
    future.partitions[0].format_version = oxiflow_core::FORMAT_VERSION + 1;
    let err = target.import(&future, false, false).await.unwrap_err();
    assert!(err.to_string().contains("upgrade oxiflow"), "{err}");
    assert!(target.list_pipelines().await.unwrap().is_empty(), "nothing written");

    export.format_version = 1;
    export.pipeline.format_version = 1;
    export.partitions[0].format_version = 1;
    target.import(&export, false, false).await.unwrap();
    let (pipeline, parts) = target.load(&p).await.unwrap();
    assert_eq!((pipeline.format_version, parts[0].format_version), (oxiflow_core::FORMAT_VERSION, oxiflow_core::FORMAT_VERSION));
}

/// What an attacker or a careless operator can plant in a local store's
/// directory: a FIFO (opening it for reading would block forever), a symlink
/// to a file outside the store, a directory where a document should be. Reads
/// refuse them as corrupt at once, listings skip them, and no message names an
/// absolute path.
#[tokio::test]
async fn a_local_store_never_follows_or_opens_special_files() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = oxiflow_backends::LocalDirStore::open(dir.path()).unwrap();
    store.put_if_absent("pipelines/p/partitions/ok.json", b"x".to_vec()).await.unwrap();
    let parts = dir.path().join("pipelines/p/partitions");
    let fifo = std::ffi::CString::new(parts.join("fifo.json").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), parts.join("link.json")).unwrap();
    std::os::unix::fs::symlink(outside.path(), parts.join("linkdir")).unwrap();
    std::fs::create_dir(parts.join("dir.json")).unwrap();

    let bound = std::time::Duration::from_secs(10);
    let listed = tokio::time::timeout(bound, store.list("pipelines/")).await.expect("a listing never blocks on a FIFO").unwrap();
    assert_eq!(listed.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(), ["pipelines/p/partitions/ok.json"]);
    for key in ["fifo.json", "link.json", "dir.json"] {
        let key = format!("pipelines/p/partitions/{key}");
        let err = tokio::time::timeout(bound, store.get(&key, 1 << 20)).await.expect("a read never blocks on a FIFO").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{key}: {err}");
        let err = store.put_if_absent(&key, b"y".to_vec()).await.unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{key}: {err}");
    }
    assert_eq!(std::fs::read_to_string(outside.path().join("secret.txt")).unwrap(), "secret", "nothing outside was touched");

    // A write that fails on the file system names the key, not the path.
    store.put_if_absent("pipelines/q", b"a file where a directory must be".to_vec()).await.unwrap();
    let err = store.put_if_absent("pipelines/q/pipeline.json", b"x".to_vec()).await.unwrap_err();
    let message = oxiflow_backends::chain(&err);
    assert!(message.contains("pipelines/q/pipeline.json"), "{message}");
    assert!(!message.contains(dir.path().to_str().unwrap()), "an absolute path in {message}");
}
