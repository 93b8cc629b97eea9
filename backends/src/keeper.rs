//! Keeps a claimed partition's lease alive in the background. Every
//! checkpoint already extends the lease, so the heartbeat task writes only
//! when no checkpoint happened within `heartbeat_interval`: a worker that
//! checkpoints more often than that sends no heartbeats at all.

use std::sync::Arc;

use oxiflow_core::{PartitionDoc, Progress};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::manager::{Claimed, StateManager};

struct Holding {
    claimed: Claimed,
    last_write: Instant,
    /// Why the background heartbeat gave up (fenced, stop requested, …);
    /// reported by the next call.
    lost: Option<Error>,
}

/// A partition held with a background heartbeat. Dropping it stops the
/// heartbeat (the lease then expires by itself); prefer `release`.
pub struct Held {
    manager: StateManager,
    holding: Arc<Mutex<Holding>>,
    heartbeat: JoinHandle<()>,
}

impl StateManager {
    /// Starts keeping `claimed` alive.
    pub fn keep(&self, claimed: Claimed) -> Held {
        let holding = Arc::new(Mutex::new(Holding { claimed, last_write: Instant::now(), lost: None }));
        let heartbeat = tokio::spawn(heartbeat_loop(self.clone(), holding.clone()));
        Held { manager: self.clone(), holding, heartbeat }
    }
}

async fn heartbeat_loop(manager: StateManager, holding: Arc<Mutex<Holding>>) {
    let interval = manager.config().lease.heartbeat_interval;
    loop {
        let due = holding.lock().await.last_write + interval;
        tokio::time::sleep_until(due).await;
        let mut h = holding.lock().await;
        if h.last_write + interval > Instant::now() {
            continue; // a checkpoint extended the lease meanwhile
        }
        match manager.heartbeat(&mut h.claimed).await {
            Ok(()) => h.last_write = Instant::now(),
            // Not lost: the write is settled before the next one; try again.
            Err(Error::Unavailable { .. }) => h.last_write = Instant::now(),
            Err(e) => {
                tracing::warn!(key = h.claimed.key(), error = %e, "heartbeat stopped");
                h.lost = Some(e);
                return;
            }
        }
    }
}

impl Held {
    /// The document as last written.
    pub async fn doc(&self) -> PartitionDoc {
        self.holding.lock().await.claimed.doc().clone()
    }

    /// Records progress and extends the lease: one conditional PUT.
    pub async fn checkpoint(&self, progress: Progress) -> Result<()> {
        let mut h = self.holding.lock().await;
        if let Some(e) = h.lost.take() {
            return Err(e);
        }
        self.manager.checkpoint(&mut h.claimed, progress).await?;
        h.last_write = Instant::now();
        Ok(())
    }

    async fn finish(self) -> Result<Claimed> {
        self.heartbeat.abort();
        let mut h = self.holding.lock().await;
        match h.lost.take() {
            Some(e) => Err(e),
            None => Ok(h.claimed.clone()),
        }
    }

    pub async fn release(self, progress: Progress) -> Result<PartitionDoc> {
        let manager = self.manager.clone();
        manager.release(&mut self.finish().await?, progress).await
    }

    pub async fn complete(self, progress: Progress) -> Result<PartitionDoc> {
        let manager = self.manager.clone();
        manager.complete(&mut self.finish().await?, progress).await
    }

    pub async fn fail(self, progress: Progress, error: String, retryable: bool) -> Result<PartitionDoc> {
        let manager = self.manager.clone();
        manager.fail(&mut self.finish().await?, progress, error, retryable).await
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}
