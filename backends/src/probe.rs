//! `oxiflow doctor`'s probe: does a store honour both write conditions,
//! and how far is its clock from ours.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::manager::StateManager;

/// What the probe found a store to support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeReport {
    /// The store probed, as described to people.
    pub store: String,
    /// A second create of the same key was refused (If-None-Match: *).
    pub create_if_absent: bool,
    /// An update with a stale version was refused (If-Match).
    pub update_if_match: bool,
    /// Versions returned: ETags (S3, Azure, local) and/or generations (GCS).
    pub etags: bool,
    /// Generations returned (GCS).
    pub generations: bool,
    /// How far the store's clock is ahead of ours (negative: behind), in
    /// milliseconds, measured on the probe's write; absent when the store
    /// keeps no write times or shares our clock. Object stores keep whole
    /// seconds, so expect up to ±1,000 ms plus the round trip from a correct
    /// clock.
    pub clock_skew_ms: Option<i64>,
    /// The skew is larger than the configured skew allowance (plus the
    /// measuring error): leases may be taken over early or late.
    pub clock_skew_exceeds_allowance: bool,
}

impl StateManager {
    /// Checks that the store honours both write conditions, naming what it
    /// ignores. A store that fails is refused: it would let two workers hold
    /// one lease.
    pub async fn probe(&self) -> Result<ProbeReport> {
        let store = self.store.as_ref();
        let key = format!("_oxiflow/probe/{:016x}", self.random());
        let unsafe_store = |reason: &str| Error::UnsafeStore { store: store.describe().into(), reason: reason.into() };
        let before = self.now();
        let v1 = store.put_if_absent(&key, b"probe 1".to_vec()).await?;
        let after = self.now();
        // The store's write time against the middle of our send and receive.
        let clock_skew_ms = store.written_at(&key).await?.map(|t| t.as_millis() - (before.as_millis() + after.as_millis()) / 2);
        let error_ms = (after.as_millis() - before.as_millis()) / 2 + 1000;
        let allowance = i64::try_from(self.config.lease.skew_allowance.as_millis()).unwrap_or(i64::MAX);
        let clock_skew_exceeds_allowance = clock_skew_ms.is_some_and(|s| s.abs() > allowance.saturating_add(error_ms));
        let create_if_absent = match store.put_if_absent(&key, b"probe 2".to_vec()).await {
            Err(Error::AlreadyExists { .. }) => true,
            Ok(_) => false,
            Err(e) => return Err(e),
        };
        let v2 = store.put_if_match(&key, b"probe 3".to_vec(), &v1).await;
        let update_if_match = match (&v2, store.put_if_match(&key, b"probe 4".to_vec(), &v1).await) {
            (Ok(_), Err(Error::Precondition { .. })) => true,
            (Ok(_), Ok(_)) | (Err(Error::Precondition { .. }), _) => false,
            (Err(e), _) => return Err(unsafe_store(&format!("an update with the current version failed: {e}"))),
            (_, Err(e)) => return Err(e),
        };
        store.delete(&key).await?;
        if !create_if_absent {
            return Err(unsafe_store("it ignores If-None-Match: a second create of the same key succeeded"));
        }
        if !update_if_match {
            return Err(unsafe_store("it ignores If-Match: an update with a stale version succeeded"));
        }
        Ok(ProbeReport {
            store: store.describe().into(),
            create_if_absent,
            update_if_match,
            etags: v1.e_tag.is_some(),
            generations: v1.version.is_some(),
            clock_skew_ms,
            clock_skew_exceeds_allowance,
        })
    }
}
