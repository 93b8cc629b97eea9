//! A pipeline's documents as last read, with their versions. A listing
//! carries each object's version (S3 ListObjectsV2, Azure, GCS, the local
//! directory), so refreshing a snapshot is one LIST plus a GET of only the
//! documents that changed: a long-running reader (the worker loop, `oxiflow
//! serve`) re-reads an unchanged pipeline of any size in one request.
//!
//! A partition document that cannot be decoded (corrupt, from a newer
//! oxiflow, oversized) is the refresh's error, unless the snapshot was made
//! [`Snapshot::keeping_damaged`] (views, the worker loop): then it does not
//! hide the rest; the snapshot keeps it apart as [`Damaged`], with the
//! reason, and re-reads it only when its version moves.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use oxiflow_core::{keys, PartitionDoc, PipelineDoc, PipelineId, Version};

use crate::error::{Error, Result};
use crate::manager::{StateManager, READ_CONCURRENCY};

/// The documents of one pipeline, each with the version it was read at.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pipeline_id: PipelineId,
    pipeline: Option<(PipelineDoc, Version)>,
    partitions: BTreeMap<String, (PartitionDoc, Version)>,
    damaged: BTreeMap<String, (Option<Version>, oxiflow_core::Error)>,
    keep_damaged: bool,
}

/// A document that could not be read as one, and why: shown beside the
/// rest, never overwritten, skipped by claims.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Damaged {
    /// Its key.
    pub key: String,
    /// The decoder's or the store's refusal, with the fix.
    pub error: String,
}

/// The core's refusal when `e` says the document itself is damaged (rather
/// than the store being unreachable): corrupt, from a newer format, or too
/// large.
fn damage(e: &Error) -> Option<&oxiflow_core::Error> {
    match e {
        Error::Core(c @ oxiflow_core::Error::TooLarge { .. }) => Some(c),
        Error::Core(c) if c.kind() == oxiflow_core::ErrorKind::Corrupt => Some(c),
        _ => None,
    }
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
        Snapshot { pipeline_id, pipeline: None, partitions: BTreeMap::new(), damaged: BTreeMap::new(), keep_damaged: false }
    }

    /// Refreshes set damaged partition documents apart instead of failing:
    /// for readers that show or schedule the rest (a view, a worker), never
    /// for one that writes every document back (an export, a reset).
    pub fn keeping_damaged(mut self) -> Self {
        self.keep_damaged = true;
        self
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

    /// The partition documents that could not be read, in key order.
    pub fn damaged(&self) -> Vec<Damaged> {
        self.damaged.iter().map(|(key, (_, e))| Damaged { key: key.clone(), error: e.to_string() }).collect()
    }

    /// Whether the document at `key` is damaged.
    pub fn is_damaged(&self, key: &str) -> bool {
        self.damaged.contains_key(key)
    }
}

impl StateManager {
    /// Brings `snapshot` up to date: one LIST of the pipeline's keys, then a
    /// GET of each document that is new or whose version changed. Documents
    /// no longer listed are dropped. A missing pipeline document is
    /// [`oxiflow_core::Error::NotFound`]; a damaged one is its error, and so
    /// is a damaged partition document unless the snapshot keeps them.
    pub async fn refresh(&self, snapshot: &mut Snapshot) -> Result<Refreshed> {
        let p = snapshot.pipeline_id.clone();
        let listed = self.store().list(&keys::pipeline_prefix(&p)).await?;
        let pipeline_key = keys::pipeline_doc(&p);
        let unchanged = |cached: Option<&Version>, listed: &Option<Version>| listed.is_some() && cached == listed.as_ref();

        let mut stale_partitions = Vec::new();
        let mut kept = BTreeMap::new();
        let mut damaged = BTreeMap::new();
        let mut pipeline_listed = None;
        for item in listed {
            match keys::parse(&item.key) {
                Ok(keys::DocKey::Pipeline(_)) => pipeline_listed = Some(item),
                Ok(keys::DocKey::Partition(..)) => match (snapshot.partitions.remove(&item.key), snapshot.damaged.remove(&item.key)) {
                    (Some(cached), _) if unchanged(Some(&cached.1), &item.version) => {
                        kept.insert(item.key, cached);
                    }
                    (_, Some(known)) if unchanged(known.0.as_ref(), &item.version) => {
                        damaged.insert(item.key, known);
                    }
                    _ => stale_partitions.push(item),
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
        let fetched: Vec<_> = futures::stream::iter(stale_partitions)
            .map(|item| async move {
                match self.read::<PartitionDoc>(&item.key).await {
                    Ok(doc) => Ok((item, Ok(doc))),
                    Err(e) => match damage(&e) {
                        Some(d) => Ok((item, Err(d.clone()))),
                        None => Err(e),
                    },
                }
            })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        for (item, read) in fetched {
            match read {
                Ok(Some(doc)) => {
                    kept.insert(item.key, doc);
                }
                // Deleted between the LIST and its GET: simply absent.
                Ok(None) => {}
                Err(error) => {
                    damaged.insert(item.key, (item.version, error));
                }
            }
        }
        if let Some((_, e)) = damaged.values().next().filter(|_| !snapshot.keep_damaged) {
            return Err(e.clone().into());
        }
        snapshot.partitions = kept;
        snapshot.damaged = damaged;
        Ok(refreshed)
    }
}
