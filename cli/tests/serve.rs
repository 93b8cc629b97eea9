//! `oxiflow serve` as a live process: bearer-token auth, ETag semantics, the
//! HTTP store passing the one conformance suite against it, the CLI using it
//! as a backend, every error in the one JSON shape (hyper's own 400 / 414
//! included), and the listener's limits: the connection cap, the header and
//! idle timeouts, graceful shutdown on SIGTERM.

// The shared helpers in tests/support are `pub` for every test file.
#![allow(unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;

use oxiflow_backends::{conformance, ConditionalStore, HttpStore, ObjectStoreBackend, ObjectStoreOptions};
use support::ox;

const TOKEN: &str = "test-token-0123456789abcdef";

struct Server {
    child: Child,
    url: String,
    /// `127.0.0.1:port`, for raw sockets.
    addr: String,
    /// Its stderr so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(dir: &Path) -> Server {
    start_with(dir, &[])
}

/// `oxiflow serve` with `args`, ready once it printed its dashboard URL (it
/// listens by then): no connection is opened to find out, so a test of the
/// connection cap starts with every slot free.
fn start_with(dir: &Path, args: &[&str]) -> Server {
    start_limited(dir, args, None)
}

/// [`start_with`], with at most `fd_limit` open file descriptors.
fn start_limited(dir: &Path, args: &[&str], fd_limit: Option<u64>) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut command = ox(dir);
    command.args(["serve", "--listen", &addr]).args(args).env("OXIFLOW_SERVE_TOKEN", TOKEN).stderr(Stdio::piped());
    if let Some(n) = fd_limit {
        let limit = libc::rlimit { rlim_cur: n as libc::rlim_t, rlim_max: n as libc::rlim_t };
        // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
    }
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (ready, listening) = std::sync::mpsc::channel();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("dashboard: ") {
                let _ = ready.send(());
            }
            lines.lock().unwrap().push(line);
        }
    });
    let server = Server { child, url: format!("http://{addr}"), addr, log };
    listening.recv_timeout(Duration::from_secs(20)).expect("oxiflow serve did not come up");
    server
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
    // The scheme is case-insensitive (RFC 7235); the token is not.
    let with = |authorization: String| client.get(format!("{}/v1/pipelines", server.url)).header("authorization", authorization).send();
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        assert_eq!(with(format!("{scheme} {TOKEN}")).await.unwrap().status(), 200, "{scheme}");
    }
    assert_eq!(with(format!("Bearer {}", TOKEN.to_uppercase())).await.unwrap().status(), 401);
    assert_eq!(with(format!("Basic {TOKEN}")).await.unwrap().status(), 401, "another scheme");
    assert_eq!(with(format!("Bearer{TOKEN}")).await.unwrap().status(), 401, "no space after the scheme");

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

    // Queries and path parameters axum cannot decode, or that name nothing
    // valid: 400 in the shape, saying what is wrong.
    assert!(invalid(&client, &server, "/v1/keys?prefix=a&prefix=b").await.contains("duplicate field `prefix`"));
    assert!(invalid(&client, &server, "/v1/keys?prefix=%ZZ").await.contains("malformed percent-encoding `%ZZ`"));
    assert!(invalid(&client, &server, "/v1/objects/pipelines/p%2").await.contains("malformed percent-encoding `%2`"));
    assert!(invalid(&client, &server, "/v1/pipelines/%FF").await.contains("Invalid UTF-8 in `pipeline`"));
    assert!(invalid(&client, &server, "/v1/objects/%C3%28").await.contains("Invalid UTF-8"));
    assert!(invalid(&client, &server, "/v1/pipelines/bad%20name").await.contains("bad name"));
}

/// A 400 `invalid` error in the shape for `path` (authorized); its message.
async fn invalid(client: &reqwest::Client, server: &Server, path: &str) -> String {
    let r = client.get(format!("{}{path}", server.url)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 400, "{path}");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"), "{path}");
    let body = r.json_value().await;
    let e = &body["error"];
    assert_eq!((e["kind"].as_str(), e["exit_code"].as_u64()), (Some("invalid"), Some(2)), "{path}: {body:#}");
    e["message"].as_str().unwrap_or_else(|| panic!("{path}: {body:#}")).to_string()
}

/// hyper answers a request it cannot parse before any router runs; those
/// answers too are in the one shape, then the connection is closed.
#[tokio::test]
async fn requests_that_cannot_be_parsed_get_the_shape_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), &[]);
    let long = format!("GET /v1/keys?prefix={} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\r\n", "a".repeat(70_000));
    for (request, status, message) in [
        (long.as_bytes(), 414, "URI too long"),
        (b"GARBAGE\r\n\r\n".as_slice(), 400, "malformed request"),
        (b"GET /a\x01b HTTP/1.1\r\nhost: x\r\n\r\n".as_slice(), 400, "malformed request"),
        (b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n".as_slice(), 400, "malformed request"),
    ] {
        let mut socket = TcpStream::connect(&server.addr).await.unwrap();
        socket.write_all(request).await.unwrap();
        let answer = read_to_close(&mut socket, Duration::from_secs(10)).await;
        let (got, head, body) = error_of(&answer);
        assert_eq!(got, status, "{head}");
        assert_eq!((body["error"]["kind"].as_str(), body["error"]["exit_code"].as_u64()), (Some("invalid"), Some(2)), "{body:#}");
        assert!(body["error"]["message"].as_str().unwrap().starts_with(message), "{body:#}");
        assert!(head.to_ascii_lowercase().contains("\r\nconnection: close"), "{head}");
    }
    // The server is fine afterwards.
    let ok = reqwest::Client::new().get(format!("{}/v1/pipelines", server.url)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

/// The connection cap and the header timeout, with slow clients that send
/// half a request line and stall (20,100 of them once exhausted the file
/// descriptors): beyond the cap a connection is answered 503 at once; each
/// stalled one is closed when the header timeout has passed; then a normal
/// request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_fill_the_cap_get_503_beyond_it_and_are_closed_after_the_header_timeout() {
    const CAP: usize = 8;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), &["--max-connections", "8", "--header-timeout", "3s", "--idle-timeout", "60s"]);
    let stall = |addr: String| async move {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        let opened = Instant::now();
        socket.write_all(b"GET /v1/pipel").await.unwrap();
        (socket, opened)
    };
    // Accepted in order: these take every slot.
    let mut stalled = Vec::new();
    for _ in 0..CAP {
        stalled.push(stall(server.addr.clone()).await);
    }

    // One more stalled client: answered 503 and closed long before its header timeout.
    let (mut extra, opened) = stall(server.addr.clone()).await;
    let answer = read_to_close(&mut extra, HEADER_TIMEOUT + Duration::from_secs(10)).await;
    assert!(opened.elapsed() < HEADER_TIMEOUT / 2, "the 503 took {:?}", opened.elapsed());
    let (status, head, body) = error_of(&answer);
    assert_eq!(status, 503, "{head}");
    assert!(head.to_ascii_lowercase().contains("\r\nretry-after: 1"), "{head}");
    assert_eq!((body["error"]["kind"].as_str(), body["error"]["exit_code"].as_u64()), (Some("unavailable"), Some(8)), "{body:#}");
    assert!(body["error"]["message"].as_str().unwrap().contains("too many connections (at most 8"), "{body:#}");
    // And a real client, health check included, the same.
    let started = Instant::now();
    let r = reqwest::Client::new().get(format!("{}/healthz", server.url)).send().await.unwrap();
    assert!(started.elapsed() < HEADER_TIMEOUT / 2, "the 503 took {:?}", started.elapsed());
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.json_value().await["error"]["kind"], "unavailable");

    // Each stalled client: nothing, then the server closes it, not before its header timeout.
    for (mut socket, opened) in stalled {
        let answer = read_to_close(&mut socket, HEADER_TIMEOUT + Duration::from_secs(10)).await;
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
        assert!(opened.elapsed() >= HEADER_TIMEOUT, "closed after {:?}", opened.elapsed());
    }
    // Their slots are free again.
    let r = reqwest::Client::new().get(format!("{}/v1/pipelines", server.url)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// An idle keep-alive connection lives for the idle timeout, longer than the
/// header timeout; the next request's head, once begun, has the header
/// timeout, and so has a request body that stops coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_get_the_idle_timeout_and_a_begun_request_the_header_timeout() {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
    const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), &["--header-timeout", "1s", "--idle-timeout", "4s"]);
    let served = |addr: String| async move {
        let mut socket = TcpStream::connect(&addr).await.unwrap();
        socket.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(b"\r\n\r\nok") {
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "closed after {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&chunk[..n]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
        (socket, Instant::now())
    };
    let idle = async {
        let (mut socket, answered) = served(server.addr.clone()).await;
        assert!(read_to_close(&mut socket, IDLE_TIMEOUT + Duration::from_secs(10)).await.is_empty());
        answered.elapsed()
    };
    let begun = async {
        let (mut socket, _) = served(server.addr.clone()).await;
        socket.write_all(b"GET /heal").await.unwrap();
        let begun = Instant::now();
        assert!(read_to_close(&mut socket, IDLE_TIMEOUT + Duration::from_secs(10)).await.is_empty());
        begun.elapsed()
    };
    let stalled_body = async {
        let mut socket = TcpStream::connect(&server.addr).await.unwrap();
        let head = format!(
            "POST /v1/pipelines/p/claim-next HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.write_all(b"{\"worker_id\": ").await.unwrap();
        let stalled = Instant::now();
        let answer = read_to_close(&mut socket, IDLE_TIMEOUT + Duration::from_secs(10)).await;
        assert!(!String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 2"), "{}", String::from_utf8_lossy(&answer));
        stalled.elapsed()
    };
    let (idle, begun, stalled_body) = tokio::join!(idle, begun, stalled_body);
    assert!(idle >= IDLE_TIMEOUT - Duration::from_millis(500), "an idle connection was closed after {idle:?}");
    assert!(begun >= HEADER_TIMEOUT && begun < IDLE_TIMEOUT - Duration::from_secs(1), "a begun request was closed after {begun:?}");
    assert!(
        stalled_body >= HEADER_TIMEOUT && stalled_body < IDLE_TIMEOUT - Duration::from_secs(1),
        "a stalled body was cut after {stalled_body:?}"
    );
}

/// SIGTERM: the server stops, closing a connection that never sent a
/// request at once rather than waiting out its header timeout, and exits 0.
#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_with(dir.path(), &["--header-timeout", "60s"]);
    let mut stalled = TcpStream::connect(&server.addr).await.unwrap();
    stalled.write_all(b"GET /v1/pipel").await.unwrap();
    let ok = reqwest::Client::new().get(format!("{}/healthz", server.url)).send().await.unwrap();
    assert_eq!(ok.status(), 200, "the server runs");
    let signalled = Instant::now();
    // SAFETY: a signal to our own child, which is alive (not yet waited for).
    assert_eq!(unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    assert!(read_to_close(&mut stalled, Duration::from_secs(20)).await.is_empty());
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(signalled.elapsed() < Duration::from_secs(20), "still running after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(10), "took {:?}: waited out the stalled connection", signalled.elapsed());
}

/// Out of file descriptors (more clients than its limit, the cap higher):
/// accept fails with EMFILE; the server says so once, does not spin on the
/// error, and serves again once the clients are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_server_backs_off_logs_once_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_limited(dir.path(), &["--max-connections", "64", "--header-timeout", "60s"], Some(32));
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut socket = TcpStream::connect(&server.addr).await.unwrap();
        socket.write_all(b"GET /v1/pipel").await.unwrap();
        stalled.push(socket);
    }
    let accept_errors = || server.log.lock().unwrap().iter().filter(|l| l.contains("accept error: Too many open files")).count();
    let deadline = Instant::now() + Duration::from_secs(20);
    while accept_errors() == 0 {
        assert!(Instant::now() < deadline, "no accept error: {:?}", server.log.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The backlog stays non-empty and accept keeps failing: over this
    // window a loop retrying at once would burn a core.
    let (cpu, started) = (cpu_seconds(server.child.id()), Instant::now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let used = cpu_seconds(server.child.id()) - cpu;
    assert!(used < 0.25, "{used:.2} s of CPU in {:?} while out of descriptors", started.elapsed());
    assert_eq!(accept_errors(), 1, "{:?}", server.log.lock().unwrap());
    drop(stalled);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let r = client.get(format!("{}/v1/pipelines", server.url)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// User plus system CPU time of a process, in seconds (Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks
}

#[test]
fn serve_refuses_limits_of_zero() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value, says) in [
        ("--max-connections", "0", "invalid value '0' for '--max-connections"),
        ("--header-timeout", "0s", "--header-timeout must be more than 0"),
        ("--idle-timeout", "0s", "--idle-timeout must be more than 0"),
    ] {
        let o = ox(dir.path()).args(["serve", "--listen", "127.0.0.1:0", flag, value]).env("OXIFLOW_SERVE_TOKEN", TOKEN).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{flag} {value}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(says), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

/// Everything the server sends until it closes the connection, within `limit`.
async fn read_to_close(socket: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut answer = Vec::new();
    match tokio::time::timeout(limit, socket.read_to_end(&mut answer)).await {
        Ok(result) => result.unwrap_or_else(|e| panic!("{e} after {}", String::from_utf8_lossy(&answer))),
        Err(_) => panic!("the server did not close the connection within {limit:?}: {}", String::from_utf8_lossy(&answer)),
    };
    answer
}

/// A raw error answer: its status and head, and its body, checked to be
/// `{"error": {kind, exit_code, message}}` as JSON with a message.
fn error_of(answer: &[u8]) -> (u16, String, serde_json::Value) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {text}"));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {head}"));
    assert!(head.to_ascii_lowercase().contains("\r\ncontent-type: application/json"), "{head}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    let e = &body["error"];
    assert!(e["kind"].is_string() && e["exit_code"].is_u64(), "{body:#}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body:#}");
    (status, head.to_string(), body)
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

/// The hardening issue's attacks on the key routes of a local-directory
/// `serve`: listings and keys that would leave the store are refused, special
/// files are never opened, a damaged document is named beside the rest, and
/// no answer names the store's absolute path.
#[tokio::test]
async fn keys_outside_the_store_are_refused_and_no_answer_names_an_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    let root = dir.path().join(".oxiflow/state");
    assert!(ox(dir.path()).args(["state", "create", "p", "--step", "s:2"]).status().unwrap().success());
    let server = start(dir.path()).await;
    let client = reqwest::Client::new();
    let get = |path: String| client.get(format!("{}{path}", server.url)).bearer_auth(TOKEN).send();
    let absolute = root.to_str().unwrap().to_string();
    for path in [
        "/v1/keys?prefix=../",
        "/v1/keys?prefix=..%2F..%2F..%2Fetc%2Fhost",
        "/v1/keys?prefix=%2Fetc",
        "/v1/keys?prefix=pipelines%2F..%2F..%2F",
    ] {
        let message = invalid(&client, &server, path).await;
        assert!(!message.contains("secret") && !message.contains(&absolute), "{path}: {message}");
    }
    let long = format!("/v1/objects/pipelines/{}", "k".repeat(300));
    assert!(invalid(&client, &server, &long).await.contains("over 220 bytes"));
    let deep = format!("/v1/objects/{}x", "d/".repeat(2000));
    assert!(invalid(&client, &server, &deep).await.contains("over 1024 bytes"));
    let deep = format!("/v1/objects/{}x", "d/".repeat(20));
    assert!(invalid(&client, &server, &deep).await.contains("more than 16 segments"));
    assert!(!root.join("d").exists(), "nothing was created");

    // A FIFO beside the documents: listed never, read as corrupt at once.
    let fifo = std::ffi::CString::new(root.join("pipelines/p/partitions/f.json").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let listed = get("/v1/keys?prefix=pipelines/".into()).await.unwrap().json_value().await;
    let keys: Vec<&str> = listed.as_array().unwrap().iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["pipelines/p/partitions/s@0.json", "pipelines/p/partitions/s@1.json", "pipelines/p/pipeline.json"]);
    let r = get("/v1/objects/pipelines/p/partitions/f.json".into()).await.unwrap();
    assert_eq!(r.status(), 422);
    std::fs::remove_file(root.join("pipelines/p/partitions/f.json")).unwrap();

    // A damaged partition document: the view shows the other one, names it.
    let damaged = root.join("pipelines/p/partitions/s@1.json");
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&damaged, bytes).unwrap();
    let r = get("/v1/pipelines/p".into()).await.unwrap();
    assert_eq!(r.status(), 200);
    let view = r.json_value().await;
    assert_eq!(view["steps"][0]["partitions"].as_array().map(Vec::len), Some(1), "{view:#}");
    assert_eq!(view["damaged"][0]["key"], "pipelines/p/partitions/s@1.json", "{view:#}");

    // A conflict's message names the key, never the store's location.
    let r = client
        .put(format!("{}/v1/objects/pipelines/p/pipeline.json", server.url))
        .bearer_auth(TOKEN)
        .header("if-none-match", "*")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let body = r.text().await.unwrap();
    assert!(body.contains("pipelines/p/pipeline.json") && body.contains("the store") && !body.contains(&absolute), "{body}");
}
