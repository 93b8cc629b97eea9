//! What a completed partition hands off: the core's [`handoff`] over just
//! the documents it needs.

use oxiflow_core::{handoff, keys, DependencyKind, PartitionId, PipelineDoc, PipelineId};

use crate::error::Result;
use crate::manager::StateManager;

impl StateManager {
    /// The partitions that became ready because `completed` is done (read
    /// after its completion was stored): the steps after its step — its own
    /// shard across an aligned edge, every partition across a barrier —
    /// that the scheduler finds ready. Reads the pipeline document, those
    /// partitions and what they depend on, nothing else: one GET plus one
    /// per document, 16 at a time.
    pub async fn handoff(&self, pipeline: &PipelineId, completed: &PartitionId) -> Result<Vec<PartitionId>> {
        let key = keys::pipeline_doc(pipeline);
        let (doc, _) = self.read::<PipelineDoc>(&key).await?.ok_or(oxiflow_core::Error::NotFound { key })?;
        let mut wanted = vec![completed.clone()];
        for plan in doc.steps.iter() {
            for dep in plan.after.iter().filter(|d| d.step_id == completed.step_id) {
                let candidates = match (dep.kind, plan.shards) {
                    (DependencyKind::Aligned, Some(_)) => vec![PartitionId { step_id: plan.step_id.clone(), shard: completed.shard }],
                    _ => self.partitions_of(&doc, &plan.step_id).await?,
                };
                for candidate in candidates {
                    wanted.extend(self.upstream_of(&doc, &candidate).await?);
                    wanted.push(candidate);
                }
            }
        }
        wanted.sort_by(|a, b| (&a.step_id, a.shard).cmp(&(&b.step_id, b.shard)));
        wanted.dedup();
        let docs = self.read_partitions(pipeline, wanted).await?;
        Ok(handoff(&doc, &self.schedule(&doc, &docs, None), completed))
    }
}
