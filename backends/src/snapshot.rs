//! A pipeline's documents as last read, with their versions. A listing
//! carries each object's version (S3 ListObjectsV2, Azure, GCS, the local
//! directory), so refreshing a snapshot is one LIST plus a GET of only the
//! documents that changed: a long-running reader (the worker loop, `oxiflow
//! serve`) re-reads an unchanged pipeline of any size in one request.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use oxiflow_core::{keys, PartitionDoc, PipelineDoc, PipelineId, Version};

use crate::error::Result;
use crate::manager::{StateManager, READ_CONCURRENCY};

/// The documents of one pipeline, each with the version it was read at.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pipeline_id: PipelineId,
    pipeline: Option<(PipelineDoc, Version)>,
    partitions: BTreeMap<String, (PartitionDoc, Version)>,
}

/// What one refresh cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Refreshed {
    /// Documents read because they were new or changed.
    pub fetched: usize,
    /// Documents kept because the listing showed the same version.
    pub kept: usize,
}

impl Snapshot {
    /// An empty snapshot: the first refresh reads everything.
    pub fn new(pipeline_id: PipelineId) -> Self {
        Snapshot { pipeline_id, pipeline: None, partitions: BTreeMap::new() }
    }

    /// The pipeline it holds.
    pub fn pipeline_id(&self) -> &PipelineId {
        &self.pipeline_id
    }

    /// The pipeline document, once a refresh found it.
    pub fn pipeline(&self) -> Option<&PipelineDoc> {
        self.pipeline.as_ref().map(|(d, _)| d)
    }

    /// The version the pipeline document was read at.
    pub fn pipeline_version(&self) -> Option<&Version> {
        self.pipeline.as_ref().map(|(_, v)| v)
    }

    /// The partition documents, in key order.
    pub fn partitions(&self) -> Vec<PartitionDoc> {
        self.partitions.values().map(|(d, _)| d.clone()).collect()
    }

    /// A partition document as last read, with its version.
    pub fn partition(&self, key: &str) -> Option<&(PartitionDoc, Version)> {
        self.partitions.get(key)
    }
}

impl StateManager {
    /// Brings `snapshot` up to date: one LIST of the pipeline's keys, then a
    /// GET of each document that is new or whose version changed. Documents
    /// no longer listed are dropped. A missing pipeline document is
    /// [`oxiflow_core::Error::NotFound`].
    pub async fn refresh(&self, snapshot: &mut Snapshot) -> Result<Refreshed> {
        let p = snapshot.pipeline_id.clone();
        let listed = self.store().list(&keys::pipeline_prefix(&p)).await?;
        let pipeline_key = keys::pipeline_doc(&p);
        let unchanged = |cached: Option<&Version>, listed: &Option<Version>| listed.is_some() && cached == listed.as_ref();

        let mut stale_partitions = Vec::new();
        let mut kept = BTreeMap::new();
        let mut pipeline_listed = None;
        for item in listed {
            match keys::parse(&item.key) {
                Ok(keys::DocKey::Pipeline(_)) => pipeline_listed = Some(item),
                Ok(keys::DocKey::Partition(..)) => match snapshot.partitions.remove(&item.key) {
                    Some(cached) if unchanged(Some(&cached.1), &item.version) => {
                        kept.insert(item.key, cached);
                    }
                    _ => stale_partitions.push(item.key),
                },
                Err(_) => {} // history copies and anything not ours
            }
        }
        let mut refreshed = Refreshed { fetched: stale_partitions.len(), kept: kept.len() };

        let Some(pipeline_item) = pipeline_listed else {
            return Err(oxiflow_core::Error::NotFound { key: pipeline_key }.into());
        };
        if !unchanged(snapshot.pipeline.as_ref().map(|(_, v)| v), &pipeline_item.version) {
            refreshed.fetched += 1;
            snapshot.pipeline =
                Some(self.read::<PipelineDoc>(&pipeline_key).await?.ok_or(oxiflow_core::Error::NotFound { key: pipeline_key })?);
        } else {
            refreshed.kept += 1;
        }
        let fetched: Vec<(String, Option<(PartitionDoc, Version)>)> = futures::stream::iter(stale_partitions)
            .map(|k| async move { self.read::<PartitionDoc>(&k).await.map(|d| (k, d)) })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        // A document deleted between the LIST and its GET is simply absent.
        kept.extend(fetched.into_iter().filter_map(|(k, d)| d.map(|d| (k, d))));
        snapshot.partitions = kept;
        Ok(refreshed)
    }
}
