//! object_store's errors, classified by structure, never by searching the
//! message: object_store's variants, the HTTP status of the response, the
//! transport error kind, and the `<Code>` field of an S3 or Azure error
//! body. A key or bucket named `…500…`, `…connection…` or `NoSuchBucket`
//! changes nothing (tests below, and `backends/tests/errors.rs` on moto).

use object_store::client::{HttpError, HttpErrorKind};

use crate::error::{chain, Error};

/// What a failed request says about itself.
#[derive(Debug, Default, PartialEq, Eq)]
struct Failure {
    /// The response's HTTP status, when there was a response.
    status: Option<u16>,
    /// The error code in an S3 or Azure XML error body.
    code: Option<String>,
    /// The transport failure, when there was no response.
    transport: Option<HttpErrorKind>,
}

/// object_store's fixed wording for a response with an error status
/// (`RequestError::Status`), whose type it does not export.
const STATUS_PREFIX: &str = "Server returned non-2xx status code: ";
/// …and for an error body on a 2xx response (S3 does that).
const BODY_PREFIX: &str = "Server returned error response: ";

impl Failure {
    fn of(e: &(dyn std::error::Error + 'static)) -> Failure {
        let mut found = Failure::default();
        let mut current = Some(e);
        while let Some(e) = current {
            if let Some(http) = e.downcast_ref::<HttpError>() {
                found.transport = Some(http.kind());
            }
            // Only an error whose own message *starts* with the server's
            // answer: the one object_store made from the response.
            let own = e.to_string();
            if let Some(rest) = own.strip_prefix(STATUS_PREFIX) {
                found.status = rest.get(..3).and_then(|digits| digits.parse().ok());
                found.code = found.code.or_else(|| xml_code(rest));
            } else if let Some(body) = own.strip_prefix(BODY_PREFIX) {
                found.code = found.code.or_else(|| xml_code(body));
            }
            current = e.source();
        }
        found
    }
}

/// The `<Code>` element of an S3 or Azure error body.
fn xml_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = body[start..].find("</Code>")? + start;
    Some(body[start..end].trim().to_string())
}

const MISSING_BUCKET: [&str; 2] = ["NoSuchBucket", "ContainerNotFound"];
const ACCESS_DENIED: [&str; 5] =
    ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "AuthenticationFailed", "AuthorizationFailure"];
const TRANSIENT: [&str; 4] = ["SlowDown", "ConditionalRequestConflict", "ServerBusy", "InternalError"];

/// A 404 for the bucket or container, not the key (object_store reports
/// both as `NotFound`).
pub(super) fn names_missing_bucket(e: &object_store::Error) -> bool {
    Failure::of(e).code.is_some_and(|c| MISSING_BUCKET.contains(&c.as_str()))
}

/// Our error for any other failure of `store`.
pub(super) fn classify(store: String, e: &object_store::Error) -> Error {
    let reason = || first_line(&chain(e));
    if let object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } = e {
        return Error::AccessDenied { store, reason: reason() };
    }
    let failure = Failure::of(e);
    let code = failure.code.as_deref().unwrap_or_default();
    if MISSING_BUCKET.contains(&code) {
        return Error::MissingBucket { store };
    }
    if ACCESS_DENIED.contains(&code) || matches!(failure.status, Some(401 | 403)) {
        return Error::AccessDenied { store, reason: reason() };
    }
    let transient_status = matches!(failure.status, Some(408 | 409 | 429 | 500..=599));
    let transient_transport = matches!(
        failure.transport,
        Some(HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Timeout | HttpErrorKind::Interrupted)
    );
    if TRANSIENT.contains(&code) || transient_status || (failure.status.is_none() && transient_transport) {
        return Error::Unavailable { store, reason: reason() };
    }
    Error::Store { store, reason: reason() }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    line.chars().take(400).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error shaped like object_store's: an outer message naming the
    /// request (with the key in its URL) over the server's answer.
    #[derive(Debug)]
    struct Outer(String, Box<dyn std::error::Error + Send + Sync>);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} - {}", self.0, self.1)
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(self.1.as_ref())
        }
    }

    fn answered(key: &str, status: &str, body: &str) -> object_store::Error {
        let inner = std::io::Error::other(format!("{STATUS_PREFIX}{status}: {body}"));
        let outer = Outer(format!("Error performing PUT http://127.0.0.1:9000/bucket/{key} in 3ms"), Box::new(inner));
        object_store::Error::Generic { store: "S3", source: Box::new(outer) }
    }

    fn kind(e: Error) -> &'static str {
        match e {
            Error::Unavailable { .. } => "unavailable",
            Error::AccessDenied { .. } => "access denied",
            Error::MissingBucket { .. } => "missing bucket",
            Error::Store { .. } => "store",
            _ => "other",
        }
    }

    #[test]
    fn names_in_keys_and_bodies_do_not_change_the_classification() {
        let hostile = "connection-500-503-timed-out-NoSuchBucket-AccessDenied";
        let bad_request = answered(hostile, "400 Bad Request", &format!("<Error><Code>InvalidArgument</Code><Key>{hostile}</Key></Error>"));
        assert_eq!(kind(classify("s".into(), &bad_request)), "store", "a 400 is permanent, whatever the key says");
        let missing_key = answered(hostile, "404 Not Found", &format!("<Error><Code>NoSuchKey</Code><Key>{hostile}</Key></Error>"));
        assert!(!names_missing_bucket(&missing_key), "the key is missing, not the bucket");
    }

    #[test]
    fn statuses_codes_and_transport_kinds_decide() {
        let c = |e: &object_store::Error| kind(classify("s".into(), e));
        assert_eq!(c(&answered("k", "503 Service Unavailable", "<Error><Code>SlowDown</Code></Error>")), "unavailable");
        assert_eq!(c(&answered("k", "500 Internal Server Error", "")), "unavailable");
        assert_eq!(c(&answered("k", "409 Conflict", "<Error><Code>ConditionalRequestConflict</Code></Error>")), "unavailable");
        assert_eq!(c(&answered("k", "403 Forbidden", "<Error><Code>SignatureDoesNotMatch</Code></Error>")), "access denied");
        assert_eq!(c(&answered("k", "404 Not Found", "<Error><Code>NoSuchBucket</Code></Error>")), "missing bucket");
        assert_eq!(c(&answered("k", "400 Bad Request", "")), "store");
        let refused = HttpError::new(HttpErrorKind::Connect, std::io::Error::other("tcp connect error"));
        assert_eq!(c(&object_store::Error::Generic { store: "S3", source: Box::new(refused) }), "unavailable");
        let garbled = HttpError::new(HttpErrorKind::Decode, std::io::Error::other("connection 500 timed out"));
        assert_eq!(
            c(&object_store::Error::Generic { store: "S3", source: Box::new(garbled) }),
            "store",
            "a body that cannot be decoded is not retried"
        );
    }
}
