//! A fault-injecting store wrapper: loses responses after the write
//! applied, fails requests with 500 / 503 / 409, adds latency, times out.
//! Seeded, so a failing run can be repeated.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use oxiflow_core::{Object, Version};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::store::{ConditionalStore, Listed};

/// How often each fault happens, per request (0.0 – 1.0).
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// The write is applied, then its response is lost (reported as a timeout).
    pub lose_response: f64,
    /// The request fails before reaching the store: 500 / 503 SlowDown / 409.
    pub fail_before: f64,
    /// The request waits up to `max_latency` first.
    pub latency: f64,
    /// Longest delay added to a delayed request.
    pub max_latency: Duration,
}

/// Wraps a store and injects [`Faults`].
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ConditionalStore>,
    faults: Faults,
    rng: Mutex<StdRng>,
    injected: Mutex<FaultCounts>,
}

/// What was injected, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultCounts {
    /// Writes applied whose answer was dropped.
    pub lost_responses: u64,
    /// Requests failed before reaching the store.
    pub failed_before: u64,
    /// Requests delayed.
    pub delayed: u64,
}

enum Fault {
    None,
    Before(&'static str),
    LoseResponse,
}

impl FaultyStore {
    /// `inner` with `faults` injected, reproducibly from `seed`.
    pub fn new(inner: Arc<dyn ConditionalStore>, faults: Faults, seed: u64) -> Self {
        FaultyStore { inner, faults, rng: Mutex::new(StdRng::seed_from_u64(seed)), injected: Mutex::default() }
    }

    /// The faults injected so far.
    pub fn injected(&self) -> FaultCounts {
        *self.injected.lock().unwrap()
    }

    /// Draws this request's fault; sleeps first if it is delayed.
    async fn draw(&self, write: bool) -> Fault {
        let (delay, fault) = {
            let mut rng = self.rng.lock().unwrap();
            let delay = (rng.random_bool(self.faults.latency)).then(|| self.faults.max_latency.mul_f64(rng.random()));
            let fault = if rng.random_bool(self.faults.fail_before) {
                Fault::Before(["500 Internal Server Error", "503 SlowDown", "409 ConditionalRequestConflict"][rng.random_range(0..3)])
            } else if write && rng.random_bool(self.faults.lose_response) {
                Fault::LoseResponse
            } else {
                Fault::None
            };
            (delay, fault)
        };
        {
            let mut counts = self.injected.lock().unwrap();
            if delay.is_some() {
                counts.delayed += 1;
            }
            match fault {
                Fault::Before(_) => counts.failed_before += 1,
                Fault::LoseResponse => counts.lost_responses += 1,
                Fault::None => {}
            }
        }
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        fault
    }

    fn unavailable(&self, reason: &str) -> Error {
        Error::Unavailable { store: self.inner.describe().into(), reason: format!("injected: {reason}") }
    }

    async fn write(&self, op: impl std::future::Future<Output = Result<Version>>) -> Result<Version> {
        match self.draw(true).await {
            Fault::Before(reason) => Err(self.unavailable(reason)),
            Fault::LoseResponse => {
                let _ = op.await; // applied (or refused) — the caller never learns which
                Err(self.unavailable("timeout after the write was sent"))
            }
            Fault::None => op.await,
        }
    }
}

#[async_trait]
impl ConditionalStore for FaultyStore {
    fn describe(&self) -> &str {
        self.inner.describe()
    }
    async fn get(&self, key: &str, max_bytes: usize) -> Result<Option<Object>> {
        match self.draw(false).await {
            Fault::Before(reason) => Err(self.unavailable(reason)),
            _ => self.inner.get(key, max_bytes).await,
        }
    }
    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<Version> {
        self.write(self.inner.put_if_absent(key, body)).await
    }
    async fn put_if_match(&self, key: &str, body: Vec<u8>, version: &Version) -> Result<Version> {
        self.write(self.inner.put_if_match(key, body, version)).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn written_at(&self, key: &str) -> Result<Option<oxiflow_core::Timestamp>> {
        self.inner.written_at(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        match self.draw(false).await {
            Fault::Before(reason) => Err(self.unavailable(reason)),
            _ => self.inner.list(prefix).await,
        }
    }
}
