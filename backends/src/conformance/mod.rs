//! The one conformance suite every store runs (after object_store's
//! `integration.rs`): small named checks, each under a prefix of its own,
//! all run even when some fail. A store is correct iff [`primitives`]
//! passes (or [`primitives_with`] for the capabilities it declares).
//!
//! Every run works under a fresh random prefix, so suites can share a bucket.

use std::sync::Arc;

use oxiflow_core::Version;

use crate::store::ConditionalStore;

mod primitives;
mod state_manager;

pub use primitives::{cas_race, primitives, primitives_with, Capabilities};
pub use state_manager::state_manager;

/// Room for the large-body check.
pub(crate) const LARGE: usize = 4 << 20;

pub(crate) fn run_prefix() -> String {
    #[allow(clippy::disallowed_methods)] // a unique prefix per run, not a decision
    let run = rand::random::<u64>();
    format!("conformance-{run:016x}/")
}

pub(crate) async fn body_of(store: &dyn ConditionalStore, key: &str) -> Option<(Vec<u8>, Version)> {
    store.get(key, LARGE + 1).await.unwrap_or_else(|e| panic!("get {key} on {}: {e}", store.describe())).map(|o| (o.body, o.version))
}

/// A clock the suite moves by hand, so expiry needs no sleeping.
#[derive(Clone)]
pub struct ManualClock(Arc<std::sync::atomic::AtomicI64>);

impl ManualClock {
    /// A clock standing at `start_ms` (Unix milliseconds).
    pub fn new(start_ms: i64) -> Self {
        ManualClock(Arc::new(std::sync::atomic::AtomicI64::new(start_ms)))
    }
    /// Moves every clock made from it forward by `d`.
    pub fn advance(&self, d: std::time::Duration) {
        self.0.fetch_add(d.as_millis() as i64, std::sync::atomic::Ordering::SeqCst);
    }
    /// A [`crate::Clock`] reading this one.
    pub fn clock(&self) -> crate::Clock {
        let t = self.0.clone();
        Arc::new(move || oxiflow_core::Timestamp::from_millis(t.load(std::sync::atomic::Ordering::SeqCst)))
    }
}

pub(crate) fn id<T: std::str::FromStr<Err = oxiflow_core::Error>>(s: &str) -> T {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}
