//! `oxiflow serve`: the state over HTTP (axum). Raw documents with ETag,
//! If-Match and If-None-Match (412 on a stale version) so remote workers can
//! use it as a store (`--backend http://…`), the aggregated view, and claim /
//! checkpoint / release endpoints, and the dashboard. Every route but
//! `/healthz` and the dashboard's static files needs
//! `Authorization: Bearer <token>`, compared in constant time. The listener
//! (header and idle timeouts, the connection cap, graceful shutdown) is in
//! `serve_limits.rs`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::HashMap;

use oxiflow_backends::{Error as StoreError, Next as Claimable, Snapshot, StateManager, GENERATION_HEADER, MAX_BYTES_HEADER, SIZE_HEADER};
use oxiflow_core::{PipelineId, Progress, Version, Written};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::serve_errors::{error_response, reject_malformed_escapes, shape_errors, unauthorized, ApiError, Body};
#[path = "serve_limits.rs"]
mod limits;
use super::{partition_id, pipeline_id, worker_id, Ctx, PartitionReport};
use crate::args::ServeArgs;

struct App {
    manager: StateManager,
    token: Vec<u8>,
    /// The documents last read per pipeline: a view or a claim-next of an
    /// unchanged pipeline costs one LIST.
    snapshots: tokio::sync::Mutex<HashMap<PipelineId, Snapshot>>,
}

impl App {
    /// Refreshes the pipeline's snapshot and runs `f` on it.
    async fn with_snapshot<T>(&self, p: &PipelineId, f: impl AsyncFnOnce(&mut Snapshot) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let mut snapshots = self.snapshots.lock().await;
        let snapshot = snapshots.entry(p.clone()).or_insert_with(|| Snapshot::new(p.clone()).keeping_damaged());
        let result = f(snapshot).await;
        if result.is_err() {
            snapshots.remove(p); // a pipeline that vanished or broke is read afresh next time
        }
        result
    }
}

/// The token of `Authorization: Bearer <token>`; the scheme is
/// case-insensitive (`bearer`, `BEARER`: RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_matches(' '))
}

async fn require_token(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer);
    match presented {
        None => unauthorized("missing bearer token"),
        Some(t) if bool::from(t.as_bytes().ct_eq(&app.token)) => next.run(request).await,
        Some(_) => unauthorized("wrong bearer token"),
    }
}

fn version_headers(v: &Version) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(e) = v.e_tag.as_deref().and_then(|e| HeaderValue::from_str(e).ok()) {
        h.insert(header::ETAG, e);
    }
    if let Some(g) = v.version.as_deref().and_then(|g| HeaderValue::from_str(g).ok()) {
        h.insert(GENERATION_HEADER, g);
    }
    h
}

/// A GET names the largest body the client takes (`x-oxiflow-max-bytes`);
/// a larger object is refused here with 413 and its size, so no large body
/// is sent only to be dropped half-read.
async fn get_object(State(app): State<Arc<App>>, Path(key): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let limit = headers.get(MAX_BYTES_HEADER).and_then(|v| v.to_str().ok()?.parse::<usize>().ok()).unwrap_or(MAX_BODY).min(MAX_BODY);
    match app.manager.store().get(&key, limit).await {
        Ok(None) => Err(oxiflow_core::Error::NotFound { key }.into()),
        Ok(Some(o)) => Ok((version_headers(&o.version), o.body).into_response()),
        Err(StoreError::Core(oxiflow_core::Error::TooLarge { size, .. })) => {
            let mut response = ApiError::from(oxiflow_core::Error::TooLarge { key, size, limit }).into_response();
            *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            response.headers_mut().insert(SIZE_HEADER, HeaderValue::from(size));
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

async fn put_object(State(app): State<Arc<App>>, Path(key): Path<String>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let store = app.manager.store();
    let version = if header("if-none-match").as_deref() == Some("*") {
        store.put_if_absent(&key, body.to_vec()).await?
    } else {
        let expected = Version { e_tag: header("if-match"), version: header(GENERATION_HEADER) };
        if expected.e_tag.is_none() && expected.version.is_none() {
            return Err(crate::exit::usage("a PUT needs If-None-Match: * or If-Match: <etag>; unconditional writes are refused").into());
        }
        store.put_if_match(&key, body.to_vec(), &expected).await?
    };
    Ok((StatusCode::CREATED, version_headers(&version)).into_response())
}

async fn delete_object(State(app): State<Arc<App>>, Path(key): Path<String>) -> Result<StatusCode, ApiError> {
    app.manager.store().delete(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct Prefix {
    #[serde(default)]
    prefix: String,
}

async fn list_keys(State(app): State<Arc<App>>, Query(q): Query<Prefix>) -> Result<Response, ApiError> {
    Ok(Json(app.manager.store().list(&q.prefix).await?).into_response())
}

async fn list_pipelines(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    Ok(Json(app.manager.list_pipelines().await?).into_response())
}

/// The aggregated view; partition documents that cannot be read are named
/// in `damaged` beside the rest (200), never a failure of the whole answer.
async fn view(State(app): State<Arc<App>>, Path(p): Path<String>) -> Result<Response, ApiError> {
    let m = &app.manager;
    let view = app
        .with_snapshot(&pipeline_id(&p)?, async |s| {
            m.refresh(s).await?;
            Ok(m.readable_view(s)?)
        })
        .await?;
    Ok(Json(view).into_response())
}

/// Error answers name the store as "the store", never by its location: a
/// local directory's is an absolute path on this machine.
async fn hide_store_location(State(app): State<Arc<App>>, response: Response) -> Response {
    let location = app.manager.store().describe();
    if !(response.status().is_client_error() || response.status().is_server_error()) || location.is_empty() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "failure", crate::exit::FAILURE, "the error answer could not be read");
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut hidden = text.replace(location, "the store");
    if let Some(root) = location.strip_prefix("file://").filter(|r| r.starts_with('/') && r.len() > 1) {
        hidden = hidden.replace(root, "the store");
    }
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(hidden))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NextBody {
    worker_id: String,
}

/// Claims what the scheduler says is ready: `{"claimed": <partition>}`, or
/// `{"claimed": null, "finished": false|true, "schedule": …}` saying why
/// each partition waits (still 200: nothing ready is an answer, not an error).
async fn claim_next(State(app): State<Arc<App>>, Path(p): Path<String>, Body(b): Body<NextBody>) -> Result<Response, ApiError> {
    let (m, me) = (&app.manager, worker_id(&b.worker_id)?);
    let next = app.with_snapshot(&pipeline_id(&p)?, async |s| Ok(m.claim_next(s, &me).await?)).await?;
    let body = match next {
        Claimable::Claimed(c) => serde_json::json!({ "claimed": PartitionReport::of(c.doc(), m.now(), &m.config().lease) }),
        Claimable::Wait(s) => serde_json::json!({ "claimed": null, "finished": false, "schedule": s }),
        Claimable::Finished(s) => serde_json::json!({ "claimed": null, "finished": true, "schedule": s }),
    };
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HolderBody {
    worker_id: String,
    #[serde(default)]
    progress: Progress,
    /// For checkpoint: "complete", or {"fail": {"error": "…", "retryable": true}}.
    #[serde(default)]
    finish: Option<oxiflow_core::Finish>,
    /// For claim: claim even though upstream steps are unfinished.
    #[serde(default)]
    force: bool,
}

/// The partition after a call; `"stopped": {"requested_by"}` when the write
/// was saved and a stop request released the lease (stop working on it).
fn report(app: &App, doc: &oxiflow_core::PartitionDoc, written: Option<&Written>) -> Response {
    let mut body = serde_json::to_value(PartitionReport::of(doc, app.manager.now(), &app.manager.config().lease)).unwrap_or_default();
    if let (Some(stop), Some(map)) = (written.and_then(|w| w.stop.as_ref()), body.as_object_mut()) {
        map.insert("stopped".into(), serde_json::json!({ "requested_by": stop.requested_by }));
    }
    Json(body).into_response()
}

async fn claim(
    State(app): State<Arc<App>>,
    Path((p, part)): Path<(String, String)>,
    Body(b): Body<HolderBody>,
) -> Result<Response, ApiError> {
    let (p, part, me) = (pipeline_id(&p)?, partition_id(&part)?, worker_id(&b.worker_id)?);
    let c = if b.force { app.manager.claim(&p, &part, &me).await? } else { app.manager.claim_in_order(&p, &part, &me).await? };
    Ok(report(&app, c.doc(), None))
}

/// Adopts the lease the worker holds and writes once: a checkpoint, or
/// the given finish (release, complete, fail).
async fn holder_write(app: &App, p: &str, part: &str, b: HolderBody) -> Result<Response, ApiError> {
    let m = &app.manager;
    let mut held = m.adopt(&pipeline_id(p)?, &partition_id(part)?, &worker_id(&b.worker_id)?).await?;
    let written = match b.finish {
        None => m.checkpoint(&mut held, b.progress).await?,
        Some(oxiflow_core::Finish::Complete) => m.complete(&mut held, b.progress).await?,
        Some(oxiflow_core::Finish::Fail { error, retryable }) => m.fail(&mut held, b.progress, error, retryable).await?,
        Some(oxiflow_core::Finish::Release) => m.release(&mut held, b.progress).await?,
    };
    Ok(report(app, held.doc(), Some(&written)))
}

async fn checkpoint(
    State(app): State<Arc<App>>,
    Path((p, part)): Path<(String, String)>,
    Body(b): Body<HolderBody>,
) -> Result<Response, ApiError> {
    holder_write(&app, &p, &part, b).await
}

async fn release(
    State(app): State<Arc<App>>,
    Path((p, part)): Path<(String, String)>,
    Body(b): Body<HolderBody>,
) -> Result<Response, ApiError> {
    holder_write(&app, &p, &part, HolderBody { finish: Some(oxiflow_core::Finish::Release), ..b }).await
}

fn load_token(args: &ServeArgs) -> anyhow::Result<Vec<u8>> {
    let token = match &args.token_file {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| crate::exit::usage(format!("cannot read token file {}: {e}", path.display())))?
        }
        None => std::env::var("OXIFLOW_SERVE_TOKEN").unwrap_or_default(),
    };
    let token = token.trim().to_string();
    let from = if args.token_file.is_some() { "--token-file" } else { "OXIFLOW_SERVE_TOKEN" };
    match token.chars().count() {
        0 => {
            return Err(crate::exit::usage(
                "oxiflow serve needs a bearer token of at least 16 characters in OXIFLOW_SERVE_TOKEN or --token-file",
            ))
        }
        n if n < MIN_TOKEN => {
            return Err(crate::exit::usage(format!("token too short ({n} characters; at least {MIN_TOKEN}) in {from}")));
        }
        _ => {}
    }
    Ok(token.into_bytes())
}

/// The shortest bearer token `serve` accepts.
const MIN_TOKEN: usize = 16;

/// Largest object body accepted (documents themselves are limited to 1 MiB
/// by the core; the raw object API is a general store).
const MAX_BODY: usize = 8 << 20;

pub(crate) fn router(manager: StateManager, token: Vec<u8>) -> Router {
    let app = Arc::new(App { manager, token, snapshots: Default::default() });
    let api = Router::new()
        .route("/v1/objects/{*key}", get(get_object).put(put_object).delete(delete_object))
        .route("/v1/keys", get(list_keys))
        .route("/v1/pipelines", get(list_pipelines))
        .route("/v1/pipelines/{pipeline}", get(view))
        .route("/v1/pipelines/{pipeline}/claim-next", post(claim_next))
        .route("/v1/pipelines/{pipeline}/partitions/{partition}/claim", post(claim))
        .route("/v1/pipelines/{pipeline}/partitions/{partition}/checkpoint", post(checkpoint))
        .route("/v1/pipelines/{pipeline}/partitions/{partition}/release", post(release))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_token))
        .layer(DefaultBodyLimit::max(MAX_BODY));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(super::dashboard::routes())
        .merge(api)
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "not_found", crate::exit::NOT_FOUND, "no such route") })
        .layer(middleware::from_fn(reject_malformed_escapes))
        .layer(middleware::map_response(shape_errors))
        .layer(middleware::map_response_with_state(app.clone(), hide_store_location))
        .with_state(app)
}

pub(crate) async fn run(ctx: &Ctx, args: &ServeArgs) -> anyhow::Result<()> {
    let token = load_token(args)?;
    for (flag, d) in [("--header-timeout", args.header_timeout), ("--idle-timeout", args.idle_timeout)] {
        if d.is_zero() {
            return Err(crate::exit::usage(format!("{flag} must be more than 0")));
        }
    }
    let limits = limits::Limits {
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections as usize,
    };
    let manager = ctx.manager()?;
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let address = listener.local_addr()?;
    eprintln!("oxiflow serve: {} on http://{address}", ctx.settings.url);
    eprintln!("dashboard: http://{address}/dashboard/");
    limits::serve(listener, router(manager, token), limits, limits::shutdown_signal()).await;
    Ok(())
}
