//! Keeps a claimed partition's lease alive in the background. Every
//! checkpoint already extends the lease, so the heartbeat task writes only
//! when the session says one is due (nothing stored within
//! `heartbeat_interval`): a worker that checkpoints more often than that
//! sends no heartbeats at all.
//!
//! The heartbeat may be cancelled at any moment, even with its write in
//! flight: the core's session records every write as unresolved from the
//! moment it begins, so the next write (a checkpoint, the release) replays
//! it first and nothing is lost or applied twice.

use std::sync::Arc;

use oxiflow_core::{PartitionDoc, Progress, StopRequest, Written};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::claims::Claimed;
use crate::error::{Error, Result};
use crate::manager::StateManager;

struct Holding {
    claimed: Claimed,
    /// Why the background heartbeat gave up (fenced, store down, …);
    /// reported by the next call.
    lost: Option<Error>,
    /// A heartbeat found a stop request: the lease is released.
    stop: Option<StopRequest>,
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
        let holding = Arc::new(Mutex::new(Holding { claimed, lost: None, stop: None }));
        let heartbeat = tokio::spawn(heartbeat_loop(self.clone(), holding.clone()));
        Held { manager: self.clone(), holding, heartbeat }
    }
}

async fn heartbeat_loop(manager: StateManager, holding: Arc<Mutex<Holding>>) {
    loop {
        let due = holding.lock().await.claimed.heartbeat_due();
        let wait = manager.now().until(due);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
            continue; // a checkpoint may have moved the due time meanwhile
        }
        let mut h = holding.lock().await;
        if manager.now() < h.claimed.heartbeat_due() {
            continue;
        }
        match manager.heartbeat(&mut h.claimed).await {
            Ok(Written { stop: Some(stop), .. }) => {
                h.stop = Some(stop);
                return;
            }
            Ok(_) => {}
            // Not lost: the session replays it before the next write. Try
            // again after the interval.
            Err(Error::Unavailable { .. }) => {
                let interval = manager.config().lease.heartbeat_interval;
                drop(h);
                tokio::time::sleep(interval).await;
            }
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

    /// Records progress and extends the lease: one conditional PUT. A stop
    /// request in the outcome means: stop working here (the lease is
    /// released; `landed` says whether this progress was stored first).
    pub async fn checkpoint(&self, progress: Progress) -> Result<Written> {
        let mut h = self.holding.lock().await;
        if let Some(e) = h.lost.take() {
            return Err(e);
        }
        if let Some(stop) = h.stop.clone() {
            return Ok(Written { landed: false, stop: Some(stop), requests: 0 });
        }
        self.manager.checkpoint(&mut h.claimed, progress).await
    }

    /// Stops the heartbeat (a write it had in flight stays unresolved in
    /// the session and is replayed by the finishing write).
    async fn finish(self) -> Result<Claimed> {
        self.heartbeat.abort();
        let mut h = self.holding.lock().await;
        match h.lost.take() {
            Some(e) => Err(e),
            None => Ok(h.claimed.clone()),
        }
    }

    /// Gives the partition back; returns the document as stored after.
    pub async fn release(self, progress: Progress) -> Result<PartitionDoc> {
        let manager = self.manager.clone();
        let mut claimed = self.finish().await?;
        manager.release(&mut claimed, progress).await?;
        Ok(claimed.doc().clone())
    }

    /// Stops the heartbeat and completes the partition.
    pub async fn complete(self, progress: Progress) -> Result<PartitionDoc> {
        let manager = self.manager.clone();
        let mut claimed = self.finish().await?;
        manager.complete(&mut claimed, progress).await?;
        Ok(claimed.doc().clone())
    }

    /// Stops the heartbeat and fails the partition.
    pub async fn fail(self, progress: Progress, error: String, retryable: bool) -> Result<PartitionDoc> {
        let manager = self.manager.clone();
        let mut claimed = self.finish().await?;
        manager.fail(&mut claimed, progress, error, retryable).await?;
        Ok(claimed.doc().clone())
    }
}

/// How [`Held::finish_in_place`] ends the holding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Gives the partition back unfinished.
    Release,
    /// Completes the partition.
    Complete,
    /// Fails it; `retryable` lets a later claim try again after the backoff.
    Fail {
        /// Recorded in the document's error log.
        error: String,
        /// Whether a later claim may try again.
        retryable: bool,
    },
}

impl Held {
    /// Stops the heartbeat and ends the holding, keeping `self`: after an
    /// `Unavailable` error the same call may be made again (the write whose
    /// outcome is unknown is settled first, so nothing is applied twice).
    /// For callers that cannot give the `Held` away (bindings to other
    /// languages); [`Held::release`], [`Held::complete`] and [`Held::fail`]
    /// consume it instead. `landed` false in the outcome: nothing was
    /// written, the lease was already released (a stop request, or an
    /// earlier ending); the document is as stored after.
    pub async fn finish_in_place(&self, progress: Progress, ending: Ending) -> Result<(Written, PartitionDoc)> {
        self.heartbeat.abort();
        let mut h = self.holding.lock().await;
        if let Some(e) = h.lost.take() {
            return Err(e);
        }
        let claimed = &mut h.claimed;
        let written = match ending {
            Ending::Release => self.manager.release(claimed, progress).await?,
            Ending::Complete => self.manager.complete(claimed, progress).await?,
            Ending::Fail { error, retryable } => self.manager.fail(claimed, progress, error, retryable).await?,
        };
        Ok((written, claimed.doc().clone()))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}
