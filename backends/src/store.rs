//! The one primitive every backend offers: conditional reads and writes.

use std::fmt;

use async_trait::async_trait;
use oxiflow_core::{Object, Timestamp, Version};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A key found by [`ConditionalStore::list`], with the version of its
/// object when the listing carries it (S3, GCS and Azure listings do; the
/// local directory hashes each file). Readers that keep documents compare it
/// with the version they hold and GET only what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    /// The key, relative to the store's root.
    pub key: String,
    /// Its version as a GET returns it, when the listing carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
}

/// A key-value store with compare-and-swap writes. Everything else —
/// checkpoints, leases, takeovers — is core logic on top of these calls.
///
/// A store is correct iff it passes [`crate::conformance`].
#[async_trait]
pub trait ConditionalStore: Send + Sync + fmt::Debug {
    /// Where the store points, for messages: never includes credentials.
    fn describe(&self) -> &str;

    /// Reads `key`; `None` when absent. Objects over `max_bytes` are refused
    /// with [`oxiflow_core::Error::TooLarge`] before their body is read.
    async fn get(&self, key: &str, max_bytes: usize) -> Result<Option<Object>>;

    /// Creates `key` only if absent (`If-None-Match: *`), else
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists).
    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<Version>;

    /// Replaces `key` only if its version matches (`If-Match`), else
    /// [`Error::Precondition`](crate::Error::Precondition) (also when absent).
    async fn put_if_match(&self, key: &str, body: Vec<u8>, version: &Version) -> Result<Version>;

    /// Deletes `key`; deleting an absent key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Keys under `prefix`, relative to the store root, sorted, each with
    /// its version where the listing gives it.
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>>;

    /// When the store's own clock says `key` was last written, for
    /// comparing it with ours (`oxiflow doctor`). `None` when the store
    /// keeps no such time or shares our clock (the local directory).
    async fn written_at(&self, _key: &str) -> Result<Option<Timestamp>> {
        Ok(None)
    }
}
