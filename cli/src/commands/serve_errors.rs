//! `oxiflow serve`'s errors: every one is `{"error": {kind, exit_code,
//! message}}` with the HTTP status of its kind (`crate::exit`'s one table):
//! the handlers' own, axum's rejections and router answers
//! ([`shape_errors`]), and the answers written below the router — the 503
//! of a connection over the cap and hyper's 400 / 414 / 431 to a request it
//! cannot parse ([`raw_error_response`], [`reshape_automatic`]).

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use oxiflow_backends::Error as StoreError;

/// An error as JSON with the status that means the same as the CLI's exit code.
pub(super) struct ApiError(pub anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = crate::exit::code(&self.0);
        let status = match self.0.downcast_ref::<StoreError>() {
            Some(StoreError::Precondition { .. } | StoreError::AlreadyExists { .. }) => StatusCode::PRECONDITION_FAILED,
            _ => StatusCode::from_u16(crate::exit::http_status(&self.0)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        error_response(status, crate::exit::name(code), code, &format!("{:#}", self.0))
    }
}

/// The one error shape: `{"error": {kind, exit_code, message}}`.
fn error_body(kind: &str, exit_code: u8, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "kind": kind, "exit_code": exit_code, "message": message } })
}

/// An error response in the one shape.
pub(super) fn error_response(status: StatusCode, kind: &str, exit_code: u8, message: &str) -> Response {
    (status, Json(error_body(kind, exit_code, message))).into_response()
}

/// A whole HTTP/1.1 error response in the one shape, as bytes, for the
/// listener to write on a connection it then closes (no router runs).
pub(super) fn raw_error_response(status: StatusCode, kind: &str, exit_code: u8, message: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let body = error_body(kind, exit_code, message).to_string();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\ndate: {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        httpdate::fmt_http_date(std::time::SystemTime::now()),
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    head.into_bytes()
}

/// hyper answers a request it cannot parse by itself, before any router:
/// `HTTP/1.1 400|414|431 …` with only `connection: close`,
/// `content-length: 0` and `date`, then closes. Given the bytes hyper is
/// about to write, the same answer in the one shape, or `None` for anything
/// else (every response of the router that is an error has a JSON body).
pub(super) fn reshape_automatic(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() > 256 || !bytes.starts_with(b"HTTP/1.1 ") || !bytes.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = std::str::from_utf8(&bytes[..bytes.len() - 4]).ok()?;
    let mut lines = head.split("\r\n");
    let status = StatusCode::from_bytes(lines.next()?.as_bytes().get(9..12)?).ok()?;
    let message = match status {
        StatusCode::BAD_REQUEST => "malformed request: its request line or a header cannot be parsed",
        StatusCode::URI_TOO_LONG => "URI too long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request headers too large",
        _ => return None,
    };
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => empty = value.trim() == "0",
            "connection" | "date" => {}
            _ => return None,
        }
    }
    empty.then(|| raw_error_response(status, "invalid", crate::exit::INVALID, message, &[]))
}

/// A JSON request body; a malformed one is a 400 in the error shape.
pub(super) struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = Response;
    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => {
                let status = match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                    _ => StatusCode::BAD_REQUEST,
                };
                Err(error_response(status, "invalid", crate::exit::INVALID, &format!("request body: {}", rejection.body_text())))
            }
        }
    }
}

/// Any other error response (a 405 from the router, a 413 from the body
/// limit, axum's 400 for a path or query it cannot decode) in the same
/// shape, by its status; a short plain-text body (axum's reason: "Failed to
/// deserialize query string: duplicate field `prefix`") is the message.
pub(super) async fn shape_errors(response: Response) -> Response {
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes().to_vec()).unwrap_or_default();
    if content_type.starts_with(b"application/json") || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (kind, code) = match status {
        StatusCode::NOT_FOUND => ("not_found", crate::exit::NOT_FOUND),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", crate::exit::UNAVAILABLE),
        s if s.is_server_error() => ("failure", crate::exit::FAILURE),
        _ => ("invalid", crate::exit::INVALID),
    };
    let (parts, body) = response.into_parts();
    let text = match content_type.starts_with(b"text/plain") {
        true => axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default(),
        false => String::new(),
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error") } else { &text };
    let mut shaped = error_response(status, kind, code, message);
    for (name, value) in parts.headers.iter().filter(|(n, _)| **n != header::CONTENT_TYPE && **n != header::CONTENT_LENGTH) {
        shaped.headers_mut().insert(name, value.clone());
    }
    shaped
}

/// A `%` in the path or query not followed by two hex digits is refused
/// (400 `invalid`), not decoded as itself: `?prefix=%ZZ` names no prefix.
pub(super) async fn reject_malformed_escapes(request: Request, next: axum::middleware::Next) -> Response {
    let uri = request.uri();
    let malformed = [Some(uri.path()), uri.query()].into_iter().flatten().find_map(|part| {
        part.match_indices('%').find_map(|(at, _)| {
            let escape = part.as_bytes().get(at + 1..at + 3);
            (!escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit))).then(|| part.get(at..(at + 3).min(part.len())).unwrap_or("%"))
        })
    });
    match malformed {
        Some(escape) => error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            crate::exit::INVALID,
            &format!("malformed percent-encoding `{escape}` in the URL (a `%` is written `%25`)"),
        ),
        None => next.run(request).await,
    }
}

/// 401: the store client reports it as access denied (exit 2).
pub(super) fn unauthorized(message: &str) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, "unauthorized", crate::exit::INVALID, message);
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
