//! `oxiflow serve`'s errors: every one is `{"error": {kind, exit_code,
//! message}}` with the HTTP status of its kind (`crate::exit`'s one table).

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
pub(super) fn error_response(status: StatusCode, kind: &str, exit_code: u8, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "kind": kind, "exit_code": exit_code, "message": message } });
    (status, Json(body)).into_response()
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
/// limit) in the same shape, by its status.
pub(super) async fn shape_errors(response: Response) -> Response {
    let status = response.status();
    let json = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (kind, code) = match status {
        StatusCode::NOT_FOUND => ("not_found", crate::exit::NOT_FOUND),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", crate::exit::UNAVAILABLE),
        s if s.is_server_error() => ("failure", crate::exit::FAILURE),
        _ => ("invalid", crate::exit::INVALID),
    };
    let (parts, _) = response.into_parts();
    let mut shaped = error_response(status, kind, code, status.canonical_reason().unwrap_or("error"));
    for (name, value) in parts.headers.iter().filter(|(n, _)| **n != header::CONTENT_TYPE && **n != header::CONTENT_LENGTH) {
        shaped.headers_mut().insert(name, value.clone());
    }
    shaped
}

/// 401: the store client reports it as access denied (exit 2).
pub(super) fn unauthorized(message: &str) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, "unauthorized", crate::exit::INVALID, message);
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
