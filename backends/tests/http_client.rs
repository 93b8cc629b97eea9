//! The HTTP store's client against a raw TCP server that misbehaves the way
//! keep-alive connections do: it answers one request, then closes the
//! connection just as the next request arrives on it.

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

use oxiflow_backends::{ConditionalStore, Error, HttpStore};
use oxiflow_core::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Reads one request head (these requests have no body or a short one).
async fn read_request(socket: &mut TcpStream) -> Option<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&seen).to_string();
    Some(head.lines().next().unwrap_or_default().to_string())
}

/// Every connection answers its first request with 404 and closes on the
/// second without answering; each request line is reported on `seen`.
async fn closing_server() -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(line) = read_request(&mut socket).await {
                    tx.send(line).unwrap();
                    socket.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await.unwrap();
                }
                if let Some(line) = read_request(&mut socket).await {
                    tx.send(format!("{line} (closed)")).unwrap();
                }
            });
        }
    });
    (url, seen)
}

fn drain(seen: &mut mpsc::UnboundedReceiver<String>) -> Vec<String> {
    std::iter::from_fn(|| seen.try_recv().ok()).collect()
}

#[tokio::test]
async fn reads_and_deletes_survive_a_keep_alive_connection_closing_under_them() {
    let (url, mut seen) = closing_server().await;
    let store = HttpStore::new(&url, None).unwrap();
    assert!(store.get("a", 1024).await.unwrap().is_none());
    assert!(store.get("a", 1024).await.unwrap().is_none(), "the second GET meets the closed connection and is sent again");
    store.delete("a").await.unwrap();
    let lines = drain(&mut seen);
    assert_eq!(lines.iter().filter(|l| l.ends_with("(closed)")).count(), 2, "both retries were caused by a closed connection: {lines:?}");
    assert_eq!(lines.len(), 5, "{lines:?}");
}

#[tokio::test]
async fn a_conditional_write_is_never_sent_twice() {
    let (url, mut seen) = closing_server().await;
    let store = HttpStore::new(&url, None).unwrap();
    assert!(store.get("a", 1024).await.unwrap().is_none());
    let version = Version { e_tag: Some("\"1\"".into()), version: None };
    match store.put_if_match("a", b"body".to_vec(), &version).await {
        Err(Error::Unavailable { .. }) => {}
        other => panic!("a write whose connection closed has an unknown outcome, reported as Unavailable; got {other:?}"),
    }
    let lines = drain(&mut seen);
    assert_eq!(lines.iter().filter(|l| l.starts_with("PUT")).count(), 1, "{lines:?}");
}
