//! Moving pipelines between stores: export, import (also a restore over an
//! existing pipeline) and copy. An import over a pipeline holds it as a
//! reset does, and keeps epochs and generations rising.

use oxiflow_core::{
    keys, Claim, Finish, Holder, PartitionDoc, PipelineDoc, PipelineId, PipelineProgress, ResetScope, Restore, Session, Update,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manager::StateManager;
use crate::snapshot::Snapshot;

/// Who holds a pipeline while an import writes it.
const RESTORER: &str = "oxiflow-import";

/// A pipeline's documents, as exported and imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    /// Always "oxiflow-state-export".
    pub kind: String,
    /// The document format it was written in.
    pub format_version: u64,
    /// The pipeline document.
    pub pipeline: PipelineDoc,
    /// Every partition document.
    pub partitions: Vec<PartitionDoc>,
}

const EXPORT_KIND: &str = "oxiflow-state-export";

/// What an import (or one pipeline of a copy) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Imported {
    /// Partition documents written.
    pub partitions: usize,
    /// The pipeline existed and was replaced.
    pub replaced: bool,
    /// Records the replaced partitions had counted beyond the export's:
    /// acknowledged progress the replacement gave up.
    pub discarded_records: u64,
}

impl StateManager {
    /// Every document of a pipeline, for `import` into this or another store.
    pub async fn export(&self, pipeline: &PipelineId) -> Result<Export> {
        let (doc, partitions) = self.load(pipeline).await?;
        Ok(Export { kind: EXPORT_KIND.into(), format_version: oxiflow_core::FORMAT_VERSION, pipeline: doc, partitions })
    }

    /// Writes an export's documents (also: `state copy`). Refuses, changing
    /// nothing, when the pipeline exists unless `replace`, and while any of
    /// its partitions is held by a live lease unless `force`. Over an
    /// existing pipeline it holds the pipeline's lease while it writes, as a
    /// reset does ([`oxiflow_core::generation`]): claims wait, and a claim
    /// that raced the check makes it let go and refuse. Each document is put
    /// in place by the core's [`Restore`]: its lease released at an epoch
    /// above any it had, so no holder of the old state or of the exported one
    /// can write again; generations continue above both, so nothing read
    /// before the import resets what it restored. Reports the acknowledged
    /// progress the replacement discards. A process killed while writing
    /// leaves some partitions restored: import again.
    pub async fn import(&self, export: &Export, replace: bool, force: bool) -> Result<Imported> {
        let export = self.check_export(export)?;
        let pipeline = &export.pipeline.pipeline_id;
        let pipeline_key = keys::pipeline_doc(pipeline);
        let mut snapshot = Snapshot::new(pipeline.clone());
        let existing = match self.refresh(&mut snapshot).await {
            Ok(_) => true,
            Err(Error::Core(oxiflow_core::Error::NotFound { .. })) => false,
            Err(e) => return Err(e),
        };
        let now = self.now();
        let mut generation = export.pipeline.generation;
        let (mut lock, mut discarded_records) = (None, 0);
        if existing {
            if !replace {
                return Err(Error::AlreadyExists { store: self.store().describe().into(), key: pipeline_key });
            }
            let unheld = |snapshot: &Snapshot| if force { Ok(()) } else { self.ensure_unheld(snapshot, &ResetScope::Pipeline) };
            unheld(&snapshot)?;
            let doc = snapshot.pipeline().expect("a refreshed snapshot has its pipeline").clone();
            let version = snapshot.pipeline_version().cloned().unwrap_or_default();
            let claim = Claim::<PipelineDoc>::new(RESTORER.parse()?, self.random());
            let mut held = Session::claimed(
                &pipeline_key,
                self.run(Update::from_cached(&pipeline_key, claim, *self.config(), doc, version)).await?,
                *self.config(),
                now,
            );
            self.refresh(&mut snapshot).await?;
            if let Err(e) = unheld(&snapshot) {
                let _ = self.run(held.write(PipelineProgress::default(), Some(Finish::Release), self.random())).await;
                return Err(e);
            }
            let current = snapshot.pipeline().expect("a refreshed snapshot has its pipeline");
            for part in snapshot.partitions().iter().map(|p| p.as_of(current, now)) {
                let kept = export.partitions.iter().find(|p| p.partition_id() == part.partition_id());
                let kept = kept.map_or(0, |p| p.as_of(&export.pipeline, now).records_processed);
                discarded_records += part.records_processed.saturating_sub(kept);
            }
            generation = generation.max(current.generation) + 1;
            lock = Some(Holder::of(held.lease()));
        }
        // Over a pipeline, every document at the new generation (as the
        // export's readers saw it); into a fresh store, as exported.
        let restored = |p: &PartitionDoc| match lock {
            Some(_) => PartitionDoc { generation, ..p.as_of(&export.pipeline, now) },
            None => p.clone(),
        };
        for p in &export.partitions {
            let key = keys::partition_doc(pipeline, &p.partition_id());
            // Under our hold, a live lease can only be a claim that landed
            // after we took it; it lets go unused when it sees us: fence it.
            let force = force || lock.is_some();
            self.run(Update::new(&key, Restore { doc: restored(p), force, holder: None }, *self.config())).await?;
        }
        let mut doc = export.pipeline.clone();
        if lock.is_some() {
            doc.generation = generation;
            doc.step_generations = doc.steps.iter().map(|s| (s.step_id.clone(), generation)).collect();
        }
        let restore = Restore { doc, force: force && lock.is_none(), holder: lock };
        self.run(Update::new(&pipeline_key, restore, *self.config())).await?;
        Ok(Imported { partitions: export.partitions.len(), replaced: existing, discarded_records })
    }

    /// Checks an export's kind, format and ids; an older format that parsed
    /// into the current types is brought to the current format.
    fn check_export(&self, export: &Export) -> Result<Export> {
        if export.kind != EXPORT_KIND {
            return Err(oxiflow_core::Error::InvalidInput { reason: format!("not an oxiflow export (kind {:?})", export.kind) }.into());
        }
        let newest = [export.format_version, export.pipeline.format_version]
            .into_iter()
            .chain(export.partitions.iter().map(|p| p.format_version))
            .max()
            .unwrap_or_default();
        if newest > oxiflow_core::FORMAT_VERSION {
            return Err(oxiflow_core::Error::InvalidInput {
                reason: format!(
                    "the export has format_version {newest}, this build reads up to {}; upgrade oxiflow",
                    oxiflow_core::FORMAT_VERSION
                ),
            }
            .into());
        }
        let mut export = export.clone();
        export.pipeline.format_version = oxiflow_core::FORMAT_VERSION;
        export.partitions.iter_mut().for_each(|p| p.format_version = oxiflow_core::FORMAT_VERSION);
        for p in &export.partitions {
            if p.pipeline_id != export.pipeline.pipeline_id {
                return Err(oxiflow_core::Error::InvalidInput {
                    reason: format!("partition {} belongs to pipeline {}", p.partition_id(), p.pipeline_id),
                }
                .into());
            }
        }
        Ok(export)
    }

    /// Copies pipelines (all when `pipelines` is empty) into `target`, each
    /// as [`StateManager::import`] does.
    pub async fn copy_to(&self, target: &StateManager, pipelines: &[PipelineId], replace: bool, force: bool) -> Result<Vec<Imported>> {
        let pipelines = if pipelines.is_empty() { self.list_pipelines().await? } else { pipelines.to_vec() };
        let mut done = Vec::with_capacity(pipelines.len());
        for p in &pipelines {
            done.push(target.import(&self.export(p).await?, replace, force).await?);
        }
        Ok(done)
    }
}
