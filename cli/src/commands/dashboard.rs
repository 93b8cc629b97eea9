//! The dashboard's static files, compiled into the binary: the page
//! (`dashboard/`) and the core as wasm (`wasm/pkg/web`, when built; see
//! `build.rs`). They hold no state, so they need no token; the page asks for
//! the token and sends it with every API call.

use axum::http::header;
#[cfg(not(dashboard_wasm))]
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// Scripts and wasm only from this origin; `wasm-unsafe-eval` lets the page
/// compile the core and nothing else.
const CSP: &str =
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(dashboard_wasm)]
fn wasm_glue() -> Response {
    asset("text/javascript", include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../wasm/pkg/web/oxiflow_wasm.js")))
}

#[cfg(dashboard_wasm)]
fn wasm_module() -> Response {
    asset("application/wasm", include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../wasm/pkg/web/oxiflow_wasm_bg.wasm")))
}

#[cfg(not(dashboard_wasm))]
fn missing_wasm() -> Response {
    (StatusCode::NOT_FOUND, "this oxiflow was built without the wasm package: run scripts/build-wasm.sh, then rebuild").into_response()
}

#[cfg(not(dashboard_wasm))]
use missing_wasm as wasm_glue;
#[cfg(not(dashboard_wasm))]
use missing_wasm as wasm_module;

pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard/", get(|| async { asset("text/html; charset=utf-8", include_bytes!("../../../dashboard/index.html")) }))
        .route("/dashboard/app.js", get(|| async { asset("text/javascript", include_bytes!("../../../dashboard/app.js")) }))
        .route("/dashboard/style.css", get(|| async { asset("text/css", include_bytes!("../../../dashboard/style.css")) }))
        .route("/dashboard/pkg/oxiflow_wasm.js", get(|| async { wasm_glue() }))
        .route("/dashboard/pkg/oxiflow_wasm_bg.wasm", get(|| async { wasm_module() }))
}
