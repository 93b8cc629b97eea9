//! `oxiflow serve`'s listener: hyper's HTTP/1.1 connections under limits
//! that keep slow or idle clients from holding every file descriptor.
//!
//! - At most `max_connections` are served at once (a semaphore). One more is
//!   answered `503` with `Retry-After` and the JSON error body as soon as it
//!   begins its request, then closed, rather than left in the accept queue.
//! - A connection that has not sent a complete request head `header_timeout`
//!   after it opened, or after the first byte of its next request, is closed.
//! - A keep-alive connection with no request in progress that has moved no
//!   byte for `idle_timeout` is closed.
//! - A request whose body stops arriving for `header_timeout` is cut, and its
//!   connection closed.
//! - An accept error (EMFILE…) is logged once and retried after a short pause,
//!   not in a busy loop.
//! - Ctrl-C or SIGTERM: stop accepting; connections that never sent a request
//!   are closed, requests in progress finish (hyper's graceful shutdown), for
//!   at most [`SHUTDOWN_GRACE`].
//!
//! hyper's own `header_read_timeout` is not used: it restarts as soon as a
//! keep-alive connection goes idle, so it would also be the idle timeout. One
//! watchdog per connection does both, from what the connection's reads,
//! writes and requests say ([`Activity`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;

use crate::commands::serve_errors::{raw_error_response, reshape_automatic};

/// What `oxiflow serve --header-timeout --idle-timeout --max-connections` set.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// How long a shutdown waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The pause after an accept error that is not about one connection.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Refused connections answered at once; beyond, the 503 is written without
/// waiting and the socket closed.
const MAX_REFUSING: usize = 64;
/// How long a refused connection waits for its client to begin its request
/// before the 503 is sent: an HTTP client takes an answer that came before
/// it wrote its request for a broken connection.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);
/// How long a refused connection is kept in all, then reading what its
/// client sent (closing a socket with unread input resets it, and the client
/// may lose the 503 it was sent).
const REFUSAL_LINGER: Duration = Duration::from_secs(3);

/// Ctrl-C or SIGTERM.
pub(super) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Serves `router` on `listener` until `shutdown` completes, then lets
/// requests in progress finish (at most [`SHUTDOWN_GRACE`]).
pub(super) async fn serve(listener: TcpListener, router: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut http = http1::Builder::new();
    // The watchdog below times headers and idleness; hyper's flattened
    // buffer hands each response head to `poll_write` whole.
    http.header_read_timeout(None).writev(false);
    let graceful = GracefulShutdown::new();
    let (closing, closing_rx) = watch::channel(false);
    let service = TowerToHyperService::new(router);
    let mut failing = false;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    failing = false;
                    stream
                }
                Err(e) if about_one_connection(&e) => continue,
                Err(e) => {
                    if !failing {
                        tracing::warn!("oxiflow serve: accept error: {e}; retrying every {} ms", ACCEPT_BACKOFF.as_millis());
                        failing = true;
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(stream, &refusing, limits.max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked { stream, activity: activity.clone(), replacing: None });
        let connection = graceful.watch(http.serve_connection(io, Counted { inner: service.clone(), activity: activity.clone() }));
        let closing = closing_rx.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                result = &mut connection => {
                    if let Err(e) = result {
                        tracing::debug!("oxiflow serve: connection: {e}");
                    }
                }
                () = activity.expired(limits, closing) => tracing::debug!("oxiflow serve: connection timed out; closed"),
            }
            // The slot is free before the socket closes: a client that saw
            // the close and connects again finds it free.
            drop(slot);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("oxiflow serve: requests still in progress after {} s; closing them", SHUTDOWN_GRACE.as_secs());
    }
}

/// An accept error about the one connection being accepted (its client gave
/// up first): accept the next one at once.
fn about_one_connection(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused)
}

/// A connection over the cap: the 503 once its client has sent a first byte
/// (or [`REFUSAL_WAIT`] passed), a FIN, and what the client sent read and
/// dropped until it closes or [`REFUSAL_LINGER`] passes.
fn refuse(mut stream: TcpStream, refusing: &Arc<Semaphore>, max_connections: usize) {
    let refusal = raw_error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        crate::exit::UNAVAILABLE,
        &format!("too many connections (at most {max_connections} at once); try again shortly"),
        &[("retry-after", "1")],
    );
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        let _ = stream.try_write(&refusal);
        return;
    };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            let mut sink = [0u8; 4096];
            if let Ok(read) = tokio::time::timeout(REFUSAL_WAIT, stream.read(&mut sink)).await {
                if read? == 0 {
                    return Ok(()); // the client is gone
                }
            }
            stream.write_all(&refusal).await?;
            stream.shutdown().await?;
            while stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
        drop(permit);
    });
}

/// Where a connection is, for its watchdog.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Reading a request head since this instant; `fresh`: no request came
    /// before it on this connection.
    Head { since: Instant, fresh: bool },
    /// This many requests in the router.
    Busy(usize),
    /// No request in progress; the last byte moved at this instant.
    Idle(Instant),
}

struct Activity {
    phase: Mutex<Phase>,
    /// The request whose body is being received (its number on this
    /// connection), and when the last of it came.
    body: Mutex<Option<(u64, Instant)>>,
    requests: AtomicU64,
    /// Woken when the phase changes kind (another deadline, or none).
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            phase: Mutex::new(Phase::Head { since: Instant::now(), fresh: true }),
            body: Mutex::new(None),
            requests: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the phase `f` returns; wakes the watchdog when it changed kind.
    fn update(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        let next = f(*phase);
        let moved = std::mem::discriminant(&next) != std::mem::discriminant(&*phase);
        *phase = next;
        drop(phase);
        if moved {
            self.changed.notify_one();
        }
    }

    /// Bytes came in: the start of the next request, when none was in progress.
    fn read(&self) {
        self.update(|p| match p {
            Phase::Idle(_) => Phase::Head { since: Instant::now(), fresh: false },
            p => p,
        });
    }

    /// Bytes went out: an idle connection is still sending its last answer.
    fn wrote(&self) {
        self.update(|p| match p {
            Phase::Idle(_) => Phase::Idle(Instant::now()),
            p => p,
        });
    }

    /// A request head came; `body`: a body follows. Returns the request's number.
    fn request_started(&self, body: bool) -> u64 {
        let request = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if body {
            *self.body.lock().unwrap_or_else(|e| e.into_inner()) = Some((request, Instant::now()));
        }
        self.update(|p| match p {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        });
        request
    }

    /// More of the request's body came (`done`: all of it, or the router dropped it).
    fn body_read(&self, request: u64, done: bool) {
        let mut body = self.body.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, since)) = body.as_mut().filter(|(n, _)| *n == request) {
            *since = Instant::now();
            if done {
                *body = None;
            }
        }
    }

    /// When a body being received last moved.
    fn receiving(&self) -> Option<Instant> {
        self.body.lock().unwrap_or_else(|e| e.into_inner()).map(|(_, since)| since)
    }

    fn request_ended(&self) {
        self.update(|p| match p {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }

    /// Completes when the connection is to be closed: a request head not
    /// complete in time, a request body that stopped coming, an idle
    /// keep-alive connection, or (once `closing`) a connection that never
    /// sent a request. A request whose body is all in never times out here.
    async fn expired(&self, limits: Limits, mut closing: watch::Receiver<bool>) {
        let mut shutting_down = *closing.borrow_and_update();
        loop {
            let deadline = match self.phase() {
                Phase::Head { fresh: true, .. } if shutting_down => return,
                Phase::Head { since, .. } => Some(since + limits.header_timeout),
                Phase::Idle(since) => Some(since + limits.idle_timeout),
                Phase::Busy(_) => self.receiving().map(|since| since + limits.header_timeout),
            };
            if deadline.is_some_and(|d| d <= Instant::now()) {
                return;
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                () = self.changed.notified() => {}
                changed = closing.changed(), if !shutting_down => shutting_down = changed.is_err() || *closing.borrow_and_update(),
            }
        }
    }
}

/// The router, counting its requests in progress for the watchdog.
#[derive(Clone)]
struct Counted {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

/// Ends the request for the watchdog when the router's future completes or
/// is dropped.
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Counted {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let number = self.activity.request_started(!hyper::body::Body::is_end_stream(request.body()));
        let in_progress = InProgress(self.activity.clone());
        let activity = self.activity.clone();
        let request = request.map(|inner| axum::body::Body::new(Receiving { inner, activity, request: number }));
        let response = hyper::service::Service::call(&self.inner, request);
        Box::pin(async move {
            let response = response.await;
            drop(in_progress);
            response
        })
    }
}

/// A request's body, reporting its progress to the watchdog.
struct Receiving {
    inner: Incoming,
    activity: Arc<Activity>,
    request: u64,
}

impl hyper::body::Body for Receiving {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        let done = !matches!(frame, Some(Ok(_))) || self.inner.is_end_stream();
        self.activity.body_read(self.request, done);
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.activity.body_read(self.request, true);
    }
}

/// The socket, reporting bytes in and out to the watchdog, and writing
/// hyper's own answers to requests it cannot parse in the JSON error shape.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
    /// A reshaped answer being written in place of hyper's: its bytes, how
    /// many are written, and how many of hyper's it stands for.
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl AsyncRead for Tracked {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.activity.read();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            this.replacing = reshape_automatic(buf).map(|bytes| (bytes, 0, buf.len()));
        }
        if let Some((bytes, written, stands_for)) = &mut this.replacing {
            while *written < bytes.len() {
                let n = ready!(Pin::new(&mut this.stream).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            let n = (*stands_for).min(buf.len());
            this.replacing = None;
            this.activity.wrote();
            return Poll::Ready(Ok(n));
        }
        let n = ready!(Pin::new(&mut this.stream).poll_write(cx, buf))?;
        if n > 0 {
            this.activity.wrote();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
