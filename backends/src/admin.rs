//! Operator actions on leases across pipelines: stop requests and the
//! cleanup of dead workers' leases. (Resets: `reset.rs`; imports:
//! `transfer.rs`.)

use oxiflow_core::{keys, LeaseStatus, Operator, PartitionDoc, RequestStop, Update, WorkerId};

use crate::error::Result;
use crate::manager::StateManager;

impl StateManager {
    /// Asks `worker` to release everything it holds and stop. Returns the
    /// keys of the documents that carry the request now.
    pub async fn request_stop(&self, worker: &WorkerId, requested_by: &WorkerId) -> Result<Vec<String>> {
        let mut asked = Vec::new();
        for pipeline in self.list_pipelines().await? {
            for key in self.store.list(&keys::partitions_prefix(&pipeline)).await?.into_iter().map(|l| l.key) {
                let Some((doc, version)) = self.read::<PartitionDoc>(&key).await? else { continue };
                let held = doc.lease.as_ref().is_some_and(|l| &l.worker_id == worker && l.is_open());
                if !held {
                    continue;
                }
                let stop = RequestStop::<PartitionDoc>::new(worker.clone(), requested_by.clone());
                let c = self.run(Update::from_cached(&key, stop, self.config, doc, version)).await?;
                if c.doc.lease.as_ref().is_some_and(|l| l.stop_requested.is_some() && l.is_open()) {
                    asked.push(key);
                }
            }
        }
        Ok(asked)
    }

    /// Releases every lease that expired past the skew allowance (dead
    /// workers'); returns the keys released.
    pub async fn cleanup_stale_leases(&self) -> Result<Vec<String>> {
        let now = self.now();
        let mut released = Vec::new();
        for pipeline in self.list_pipelines().await? {
            for key in self.store.list(&keys::partitions_prefix(&pipeline)).await?.into_iter().map(|l| l.key) {
                let Some((doc, version)) = self.read::<PartitionDoc>(&key).await? else { continue };
                if !matches!(LeaseStatus::of(doc.lease.as_ref(), now, &self.config.lease), LeaseStatus::Expired { .. }) {
                    continue;
                }
                if self.run(Update::from_cached(&key, Operator::ReleaseExpired, self.config, doc, version)).await?.wrote {
                    released.push(key);
                }
            }
        }
        Ok(released)
    }
}
