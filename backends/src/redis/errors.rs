//! Redis failures as the store's errors: one sentence each, with the fix,
//! naming the user and host but never the password.

use ::redis::{ErrorKind, RedisError, ServerErrorKind, Value};

use super::options::{Target, Wait};
use crate::error::Error;

/// Maps a failed request on `key`.
pub(crate) fn map(target: &Target, key: &str, e: RedisError) -> Error {
    let store = target.describe.clone();
    let detail = e.detail().unwrap_or_default().to_string();
    let code = e.code().unwrap_or_default().to_string();
    let text = e.to_string();
    let (user, host, db) = (&target.user, &target.host, target.db);
    if e.kind() == ErrorKind::AuthenticationFailed || code == "WRONGPASS" {
        return Error::AccessDenied { store, reason: format!("the server at {host} refused the password of user {user:?}") };
    }
    if code == "NOAUTH" {
        return Error::AccessDenied {
            store,
            reason: format!("the server at {host} requires a password; write it in the URL, redis://{user}:PASSWORD@{host}/{db}"),
        };
    }
    if e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm) || code == "NOPERM" {
        return Error::AccessDenied {
            store,
            reason: format!("user {user:?} at {host} may not run what oxiflow needs ({detail}); grant it +@read +@write +@scripting +wait +scan on the prefix"),
        };
    }
    if text.contains("switch database") || detail.contains("DB index is out of range") {
        return Error::InvalidUrl {
            url: store,
            reason: format!(
                "database {db} does not exist on {host} ({detail}); use a number below the server's `databases` setting (16 by default)"
            ),
        };
    }
    if e.is_io_error() && (text.contains("certificate") || text.contains("UnknownIssuer")) {
        return Error::InvalidUrl {
            url: store,
            reason: format!(
                "the TLS certificate of {host} is not trusted ({text}); add its CA to the system's trust store, or add #insecure to the URL to skip verification"
            ),
        };
    }
    if e.is_timeout() {
        let tls = if target.describe.starts_with("rediss://") || target.describe.starts_with("valkeys://") {
            " (a server without TLS never answers a TLS handshake: use redis:// for it)"
        } else {
            ""
        };
        return Error::Unavailable {
            store,
            reason: format!("no reply on {key} within {} ms; the outcome is unknown{tls}", target.timeout.as_millis()),
        };
    }
    if e.is_connection_refusal() {
        return Error::Unavailable { store, reason: format!("cannot connect to {host}: {text}") };
    }
    if e.is_io_error() || e.is_connection_dropped() {
        return Error::Unavailable { store, reason: format!("{text}; if a write was in flight its outcome is unknown") };
    }
    match e.kind() {
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::ClusterDown,
        ) => Error::Unavailable { store, reason: text },
        // The URL points at the wrong kind of server: fix the configuration.
        ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask | ServerErrorKind::CrossSlot) => Error::InvalidUrl {
            url: store,
            reason: format!("{host} is a Redis Cluster node ({text}); this store talks to one server: point it at a standalone primary"),
        },
        ErrorKind::Parse => Error::InvalidUrl {
            url: store,
            reason: format!(
                "the server at {host} does not speak the Redis protocol ({text}); check the host and port (is it an HTTP port?)"
            ),
        },
        _ if code == "BUSY" => Error::Unavailable { store, reason: format!("the server is busy running a long script: {detail}") },
        _ if code == "OOM" => Error::Unavailable { store, reason: format!("the server is out of memory (maxmemory): {detail}") },
        _ => Error::Store { store, reason: text },
    }
}

/// A key under the prefix holds something oxiflow did not write.
pub(crate) fn foreign(target: &Target, key: &str, redis_key: &str, what: &str) -> Error {
    oxiflow_core::Error::Corrupt {
        key: key.into(),
        reason: format!(
            "the Redis key {redis_key:?} in {} holds {what}, not an oxiflow document (a hash with v and b); another program writes under prefix {:?}: choose another prefix or database",
            target.describe, target.prefix
        ),
    }
    .into()
}

/// A pipeline's index (a hash of store key → version) holds something else.
/// Nothing was written; deleting it is safe: the next listing rebuilds it.
pub(crate) fn bad_index(target: &Target, key: &str, index: &str, what: &str) -> Error {
    oxiflow_core::Error::Corrupt {
        key: key.into(),
        reason: format!(
            "the Redis key {index:?} in {} is the index of a pipeline's documents but holds {what}, not a hash; nothing was written: delete that key (redis-cli -n {} DEL '{index}') and the next listing rebuilds the index from the documents",
            target.describe, target.db
        ),
    }
    .into()
}

/// `WAIT`'s answer: fewer replicas than asked is an unknown outcome.
pub(crate) fn check_wait(target: &Target, key: &str, wait: Wait, acked: &Value) -> Result<(), Error> {
    let got = match acked {
        Value::Int(n) => *n,
        Value::ServerError(e) => return Err(map(target, key, e.clone().into())),
        other => return Err(Error::Store { store: target.describe.clone(), reason: format!("unexpected WAIT reply {other:?}") }),
    };
    if got < i64::from(wait.replicas) {
        return Err(Error::Unavailable {
            store: target.describe.clone(),
            reason: format!(
                "the write of {key} reached the primary but only {got} of {} replicas acknowledged it within {} ms (wait_replicas)",
                wait.replicas,
                wait.timeout.as_millis()
            ),
        });
    }
    Ok(())
}
