//! The Redis store's bad inputs and failures: typed errors in one sentence
//! with the fix, no secret echoed, nothing foreign overwritten, the size
//! checked before the body is sent, lost replies reported as unknown.

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use oxiflow_backends::{ConditionalStore, Error, RedisStore, StateManager, StepPlan};
use oxiflow_core::{Config, ErrorKind, PartitionId};

const SECRET: &str = "pw-that-must-never-print";

fn url() -> Option<String> {
    support::redis_url_or_skip()
}

/// A raw connection for arranging what the store will find.
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url.split('?').next().unwrap()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

fn host_of(url: &str) -> String {
    url.trim_start_matches("redis://").split('/').next().unwrap().to_string()
}

#[tokio::test]
async fn a_wrong_password_is_access_denied_naming_user_and_host_without_the_secret() {
    let Some(url) = url() else { return };
    let host = host_of(&url);
    let mut admin = raw(&url).await;
    let user = format!("oxiflow-test-{:08x}", rand::random::<u32>());
    let _: () = redis::cmd("ACL").arg(&["SETUSER", &user, "on", ">right-password", "~*", "+@all"]).query_async(&mut admin).await.unwrap();
    let right = RedisStore::open(&format!("redis://{user}:right-password@{host}/0?prefix=t:{user}")).unwrap();
    assert!(right.get("k", 10).await.unwrap().is_none(), "the user and its password work");

    let store = RedisStore::open(&format!("redis://{user}:{SECRET}@{host}/0")).unwrap();
    let err = store.get("pipelines/p/pipeline.json", 1 << 20).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::AccessDenied { .. }) && err.kind() == ErrorKind::Invalid, "{err:?}");
    assert!(text.contains(&user) && text.contains(&host) && text.contains("refused the password"), "{text}");
    assert!(!text.contains(SECRET) && !format!("{err:?} {store:?}").contains(SECRET), "secret leaked: {err:?}");
    let _: () = redis::cmd("ACL").arg(&["DELUSER", &user]).query_async(&mut admin).await.unwrap();
}

#[tokio::test]
async fn a_missing_database_names_the_number_and_the_fix() {
    let Some(url) = url() else { return };
    let store = RedisStore::open(&format!("redis://{}/4096", host_of(&url))).unwrap();
    let err = store.get("pipelines/p/pipeline.json", 1 << 20).await.unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(err.to_string().contains("database 4096 does not exist") && err.to_string().contains("16 by default"), "{err}");
}

#[tokio::test]
async fn foreign_values_under_the_prefix_are_corrupt_and_left_untouched() {
    let Some(url) = url() else { return };
    let store = Arc::new(RedisStore::open(&url).unwrap());
    let mut conn = raw(&url).await;
    let key = "pipelines/orders/partitions/s.json";
    let redis_key = store.redis_key(key).unwrap();
    assert!(redis_key.ends_with(":pipelines/{orders}/partitions/s.json"), "{redis_key}");
    let _: () = redis::cmd("SET").arg(&redis_key).arg("someone else's").query_async(&mut conn).await.unwrap();
    let version = oxiflow_core::Version { e_tag: Some("\"x\"".into()), version: None };
    let errors = [
        store.get(key, 1024).await.map(|_| ()).unwrap_err(),
        store.put_if_absent(key, b"{}".to_vec()).await.map(|_| ()).unwrap_err(),
        store.put_if_match(key, b"{}".to_vec(), &version).await.map(|_| ()).unwrap_err(),
        store.delete(key).await.unwrap_err(),
    ];
    for err in errors {
        let text = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err:?}");
        assert!(text.contains(&redis_key) && text.contains("a Redis string") && text.contains("choose another prefix"), "{text}");
    }
    let kept: String = redis::cmd("GET").arg(&redis_key).query_async(&mut conn).await.unwrap();
    assert_eq!(kept, "someone else's", "nothing foreign is overwritten or deleted");

    // A hash that is not ours, read through the StateManager.
    let m = StateManager::new(store.clone(), Config::default());
    m.create_pipeline(&"other".parse().unwrap(), &"r".parse().unwrap(), &[StepPlan::new("s".parse().unwrap(), None)]).await.unwrap();
    let doc = store.redis_key("pipelines/other/partitions/s.json").unwrap();
    let _: () = redis::cmd("HDEL").arg(&doc).arg("b").query_async(&mut conn).await.unwrap();
    let err = m.claim(&"other".parse().unwrap(), &PartitionId::step("s".parse().unwrap()), &"w".parse().unwrap()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err:?}");
    assert!(err.to_string().contains("a hash without the field b"), "{err}");
}

#[tokio::test]
async fn a_read_over_the_limit_is_refused_before_the_body_is_sent() {
    let Some(url) = url() else { return };
    let store = RedisStore::open(&url).unwrap();
    let size = 2 << 20;
    store.put_if_absent("big", vec![b'x'; size]).await.unwrap();
    let mut conn = raw(&url).await;
    let sent =
        |info: String| -> u64 { info.lines().find_map(|l| l.strip_prefix("total_net_output_bytes:")).unwrap().trim().parse().unwrap() };
    let before = sent(redis::cmd("INFO").arg("stats").query_async(&mut conn).await.unwrap());
    match store.get("big", 1 << 20).await {
        Err(Error::Core(oxiflow_core::Error::TooLarge { size: s, limit, .. })) => assert_eq!((s, limit), (size, 1 << 20)),
        other => panic!("a read over the limit must be TooLarge, got {:?}", other.map(|o| o.map(|o| o.body.len()))),
    }
    let after = sent(redis::cmd("INFO").arg("stats").query_async(&mut conn).await.unwrap());
    assert!(after - before < 64 << 10, "{} bytes left the server for a refused 2 MiB read", after - before);
}

#[tokio::test]
async fn a_server_that_is_not_redis_says_so() {
    // An HTTP server: answers anything with 400 and closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
            });
        }
    });
    let store = RedisStore::open(&format!("redis://127.0.0.1:{port}/0")).unwrap();
    let err = store.get("pipelines/p/pipeline.json", 1024).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "the URL points at the wrong server: a configuration error, not worth retrying: {err:?}");
    assert!(err.to_string().contains("does not speak the Redis protocol") && err.to_string().contains(&port.to_string()), "{err}");
}

#[tokio::test]
async fn a_server_that_is_down_is_unavailable_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = Arc::new(RedisStore::open(&format!("redis://u:{SECRET}@127.0.0.1:{port}/0")).unwrap());
    let config = Config { retry: oxiflow_core::RetryPolicy { max_transient_failures: 2, ..Default::default() }, ..Config::default() };
    let m = StateManager::new(store, config);
    let err = m.claim(&"p".parse().unwrap(), &PartitionId::step("s".parse().unwrap()), &"w".parse().unwrap()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}")) && text.contains("after 3 attempts"), "{text}");
    assert!(!format!("{err:?}").contains(SECRET), "secret leaked: {err:?}");
}

#[tokio::test]
async fn glob_characters_in_the_prefix_do_not_widen_a_listing() {
    let Some(url) = url() else { return };
    let base = url.split('?').next().unwrap();
    let tag = format!("{:08x}", rand::random::<u32>());
    let globby = RedisStore::open(&format!("{base}?prefix=g{tag}*[a]?")).unwrap();
    let plain = RedisStore::open(&format!("{base}?prefix=g{tag}X[a]Y")).unwrap();
    globby.put_if_absent("a/1", b"1".to_vec()).await.unwrap();
    plain.put_if_absent("a/2", b"2".to_vec()).await.unwrap();
    plain.put_if_absent("pipelines/p/pipeline.json", b"2".to_vec()).await.unwrap();
    let keys = |l: Vec<oxiflow_backends::Listed>| l.into_iter().map(|l| l.key).collect::<Vec<_>>();
    assert_eq!(keys(globby.list("").await.unwrap()), ["a/1"]);
    assert_eq!(keys(globby.list("a/").await.unwrap()), ["a/1"]);
    assert!(globby.list("pipelines/").await.unwrap().is_empty());
    assert_eq!(keys(plain.list("").await.unwrap()), ["a/2", "pipelines/p/pipeline.json"]);
}

#[tokio::test]
async fn scripts_flushed_from_the_server_are_loaded_again() {
    let Some(url) = url() else { return };
    let store = RedisStore::open(&url).unwrap();
    let v = store.put_if_absent("k", b"1".to_vec()).await.unwrap();
    let mut conn = raw(&url).await;
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    let v2 = store.put_if_match("k", b"2".to_vec(), &v).await.unwrap();
    assert_eq!(store.get("k", 10).await.unwrap().unwrap().version, v2, "the write ran once, after loading the script");
}

#[tokio::test]
async fn a_lost_reply_is_unavailable_and_the_write_may_still_land() {
    let Some(url) = url() else { return };
    let store = RedisStore::open(&format!("{url}&timeout_ms=300")).unwrap();
    let v1 = store.put_if_absent("k", b"before".to_vec()).await.unwrap();
    let mut admin = raw(&url).await;
    let _: () = redis::cmd("CLIENT").arg(&["PAUSE", "1500", "WRITE"]).query_async(&mut admin).await.unwrap();
    let err = store.put_if_match("k", b"after".to_vec(), &v1).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }) && err.to_string().contains("the outcome is unknown"), "{err:?}");
    // The paused command runs when the pause ends: it landed, once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let o = store.get("k", 100).await;
        if let Ok(Some(o)) = o {
            if o.body == b"after" {
                assert_ne!(o.version, v1);
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the paused write never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(store.put_if_match("k", b"again".to_vec(), &v1).await, Err(Error::Precondition { .. })), "v1 is stale now");
}

#[tokio::test]
async fn wait_replicas_without_enough_replicas_is_unavailable_after_the_write() {
    let Some(url) = url() else { return };
    let store = RedisStore::open(&format!("{url}&wait_replicas=1&wait_timeout_ms=100")).unwrap();
    let err = store.put_if_absent("k", b"1".to_vec()).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("only 0 of 1 replicas acknowledged it within 100 ms"), "{err}");
    assert_eq!(store.get("k", 10).await.unwrap().unwrap().body, b"1", "the primary has the write: its outcome was unknown, not failed");
}

#[tokio::test]
async fn wait_replicas_with_a_replica_acknowledges() {
    let Some(primary) = support::redis_server::RedisServer::start(&[]) else { return };
    let replica = support::redis_server::RedisServer::start(&["--replicaof", "127.0.0.1", &primary.port.to_string()]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !replica.command("INFO replication").is_some_and(|r| r.contains("master_link_status:up")) {
        assert!(std::time::Instant::now() < deadline, "the replica never synced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = RedisStore::open(&format!("{}?wait_replicas=1&wait_timeout_ms=2000", primary.url())).unwrap();
    let v = store.put_if_absent("k", b"1".to_vec()).await.unwrap();
    store.put_if_match("k", b"2".to_vec(), &v).await.unwrap();
    let on_replica = RedisStore::open(&replica.url()).unwrap();
    assert_eq!(on_replica.get("k", 10).await.unwrap().unwrap().body, b"2", "acknowledged means on the replica too");
}

/// A redis-server with only a TLS port, on a throwaway self-signed certificate.
struct TlsServer {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_server() -> Option<TlsServer> {
    let binary = std::env::var_os("OXIFLOW_TEST_REDIS_SERVER")?;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl makes the test certificate");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new(binary)
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1", "--tls-auth-clients", "no", "--save", ""])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&cert)
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Some(TlsServer { port, child, _dir: dir })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rediss_passes_the_primitives_and_an_untrusted_certificate_says_what_to_do() {
    let Some(server) = tls_server() else {
        assert!(std::env::var_os("CI").is_none(), "redis-server must run in CI");
        eprintln!("SKIPPED rediss: OXIFLOW_TEST_REDIS_SERVER is not set");
        return;
    };
    let url = format!("rediss://127.0.0.1:{}/0?prefix=tls&timeout_ms=1000#insecure", server.port);
    let store = Arc::new(RedisStore::open(&url).unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.get("ready", 10).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the TLS server never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    oxiflow_backends::conformance::primitives(store).await;

    let strict = RedisStore::open(&format!("rediss://127.0.0.1:{}/0", server.port)).unwrap();
    let err = strict.get("k", 10).await.unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(err.to_string().contains("certificate") && err.to_string().contains("#insecure"), "{err}");
}
