//! Kept copies of partition documents (`state.history.keep_last`):
//! create-only objects under `history/`, the oldest dropped.

use oxiflow_core::{codec, keys, PartitionDoc, PartitionId, PipelineId};

use crate::error::{Error, Result};
use crate::manager::StateManager;

impl StateManager {
    /// Copies a freshly written document into the history, dropping the
    /// oldest copies beyond `history_keep_last`.
    pub(crate) async fn keep_history(&self, doc: &PartitionDoc) -> Result<()> {
        if self.history_keep_last == 0 {
            return Ok(());
        }
        let (pipeline, partition) = (&doc.pipeline_id, doc.partition_id());
        let key = keys::history_doc(pipeline, &partition, doc.version);
        match self.store.put_if_absent(&key, codec::encode(&key, doc, &self.config.limits)?).await {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let copies = self.store.list(&keys::history_prefix(pipeline, &partition)).await?;
        for old in copies.iter().take(copies.len().saturating_sub(self.history_keep_last)) {
            self.store.delete(&old.key).await?;
        }
        Ok(())
    }

    /// A partition's kept history, oldest first.
    pub async fn history(&self, pipeline: &PipelineId, partition: &PartitionId) -> Result<Vec<PartitionDoc>> {
        let mut docs = Vec::new();
        for item in self.store.list(&keys::history_prefix(pipeline, partition)).await? {
            if let Some((doc, _)) = self.read::<PartitionDoc>(&item.key).await? {
                docs.push(doc);
            }
        }
        Ok(docs)
    }
}
