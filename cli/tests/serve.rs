//! `oxiflow serve` as a live process: bearer-token auth, ETag semantics, the
//! HTTP store passing the one conformance suite against it, and the CLI
//! using it as a backend.

// The shared helpers in tests/support are `pub` for every test file.
#![allow(unreachable_pub)]

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use oxiflow_backends::{conformance, ConditionalStore, HttpStore, ObjectStoreBackend, ObjectStoreOptions};
use support::ox;

const TOKEN: &str = "test-token-0123456789abcdef";

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(dir: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = ox(dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("OXIFLOW_SERVE_TOKEN", TOKEN)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !client.get(format!("{url}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "oxiflow serve did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Server { child, url }
}

fn store(server: &Server, token: Option<&str>) -> Arc<dyn ConditionalStore> {
    Arc::new(HttpStore::new(&server.url, token.map(str::to_string)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_http_store_passes_the_conformance_suite_against_a_live_service() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    conformance::primitives(store(&server, Some(TOKEN))).await;
    let memory = Arc::new(ObjectStoreBackend::open("memory://", &ObjectStoreOptions::default()).unwrap());
    conformance::state_manager(store(&server, Some(TOKEN)), memory).await;
}

#[tokio::test]
async fn auth_missing_wrong_and_right_tokens_and_an_open_health_check() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = reqwest::Client::new();
    let get = |token: Option<&str>| {
        let r = client.get(format!("{}/v1/pipelines", server.url));
        match token {
            Some(t) => r.header("authorization", format!("Bearer {t}")),
            None => r,
        }
    };
    assert_eq!(get(None).send().await.unwrap().status(), 401);
    assert_eq!(get(Some("wrong-token-0123456789")).send().await.unwrap().status(), 401);
    assert_eq!(get(Some(&TOKEN[..TOKEN.len() - 1])).send().await.unwrap().status(), 401, "a prefix of the token is wrong");
    assert_eq!(get(Some(TOKEN)).send().await.unwrap().status(), 200);
    assert_eq!(client.get(format!("{}/healthz", server.url)).send().await.unwrap().status(), 200);

    // The HTTP store with a wrong token: access denied, and the token is not in the message.
    let err = store(&server, Some("wrong-token-0123456789")).get("pipelines/x/pipeline.json", 1 << 20).await.unwrap_err();
    assert!(matches!(err, oxiflow_backends::Error::AccessDenied { .. }), "{err:?}");
    assert!(!format!("{err:?}").contains("wrong-token-0123456789"));
}

#[tokio::test]
async fn stale_versions_get_412_and_unconditional_writes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/objects/pipelines/p/partitions/s.json", server.url);
    let put = |body: &'static str, header: (&'static str, String)| {
        client.put(&url).header("authorization", format!("Bearer {TOKEN}")).header(header.0, header.1).body(body).send()
    };
    let created = put("one", ("if-none-match", "*".into())).await.unwrap();
    assert_eq!(created.status(), 201);
    let etag = created.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(put("two", ("if-none-match", "*".into())).await.unwrap().status(), 412);
    assert_eq!(put("three", ("if-match", etag.clone())).await.unwrap().status(), 201);
    assert_eq!(put("four", ("if-match", etag)).await.unwrap().status(), 412, "stale ETag");
    let unconditional = client.put(&url).header("authorization", format!("Bearer {TOKEN}")).body("five").send().await.unwrap();
    assert_eq!(unconditional.status(), 400);
}

#[tokio::test]
async fn the_cli_uses_the_service_as_its_backend() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client_dir = tempfile::tempdir().unwrap();
    let run =
        |args: &[&str]| ox(client_dir.path()).args(args).env("OXIFLOW_BACKEND", &server.url).env("OXIFLOW_TOKEN", TOKEN).output().unwrap();
    assert!(run(&["state", "create", "orders", "--step", "extract"]).status.success());
    assert!(run(&["claim", "orders", "extract", "--worker", "w1"]).status.success());
    assert_eq!(run(&["claim", "orders", "extract", "--worker", "w2"]).status.code(), Some(5));
    assert!(run(&["checkpoint", "orders", "extract", "--worker", "w1", "--add-records", "9"]).status.success());
    // The service's own view agrees, and the documents live in the service's store.
    let view: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/pipelines/orders", server.url))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap()
        .json_value()
        .await;
    assert_eq!(view["records_processed"], 9, "{view:#}");
    assert!(dir.path().join(".oxiflow/state/pipelines/orders/partitions/extract.json").is_file());
    // Without the token the CLI gets a clear refusal.
    let o = ox(client_dir.path()).args(["state", "list"]).env("OXIFLOW_BACKEND", &server.url).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("access denied"));
}

/// Every error, 401 and a malformed body included, has the documented shape
/// `{"error": {kind, exit_code, message}}` and the status of its kind.
#[tokio::test]
async fn every_error_has_the_documented_shape_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = reqwest::Client::new();
    let auth = format!("Bearer {TOKEN}");
    let shaped = |status: u16, kind: &'static str, code: u64| {
        move |r: reqwest::Response| async move {
            assert_eq!(r.status(), status);
            assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
            let body = r.json_value().await;
            let e = &body["error"];
            assert_eq!((e["kind"].as_str(), e["exit_code"].as_u64()), (Some(kind), Some(code)), "{body:#}");
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body:#}");
        }
    };
    let r = client.get(format!("{}/v1/pipelines", server.url)).send().await.unwrap();
    shaped(401, "unauthorized", 2)(r).await;
    let r = client.get(format!("{}/v1/objects/pipelines/none/pipeline.json", server.url)).header("authorization", &auth).send();
    shaped(404, "not_found", 3)(r.await.unwrap()).await;
    let r = client.get(format!("{}/v1/pipelines/none", server.url)).header("authorization", &auth).send().await.unwrap();
    shaped(404, "not_found", 3)(r).await;
    let claim = format!("{}/v1/pipelines/p/partitions/s/claim", server.url);
    let r = client.post(&claim).header("authorization", &auth).header("content-type", "application/json").body("{oops").send();
    shaped(400, "invalid", 2)(r.await.unwrap()).await;
    let r = client.post(&claim).header("authorization", &auth).header("content-type", "application/json").body("{}").send();
    shaped(400, "invalid", 2)(r.await.unwrap()).await;
    let r = client.get(format!("{}/v1/nowhere", server.url)).header("authorization", &auth).send().await.unwrap();
    shaped(404, "not_found", 3)(r).await;
    let r = client.delete(format!("{}/v1/pipelines", server.url)).header("authorization", &auth).send().await.unwrap();
    shaped(405, "invalid", 2)(r).await;
}

#[test]
fn serve_refuses_to_start_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let o = ox(dir.path()).args(["serve", "--listen", "127.0.0.1:0"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs a bearer token"));
}

trait JsonValue {
    async fn json_value(self) -> serde_json::Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}
