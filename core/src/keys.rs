//! Where documents live under a store's root.
//!
//! ```text
//! pipelines/<pipeline_id>/pipeline.json
//! pipelines/<pipeline_id>/partitions/<step>[@<shard>].json
//! pipelines/<pipeline_id>/history/<step>[@<shard>]/<version, 20 digits>.json
//! ```

use alloc::string::String;

use crate::error::Error;
use crate::id::{PartitionId, PipelineId};

/// Prefix of everything oxiflow stores; list it to find pipelines.
pub const PIPELINES_PREFIX: &str = "pipelines/";
const PIPELINE_FILE: &str = "pipeline.json";
const PARTITIONS_DIR: &str = "partitions/";
const HISTORY_DIR: &str = "history/";
const SUFFIX: &str = ".json";

/// Where a pipeline document is stored.
pub fn pipeline_doc(pipeline: &PipelineId) -> String {
    alloc::format!("{PIPELINES_PREFIX}{pipeline}/{PIPELINE_FILE}")
}

/// Where a partition document is stored.
pub fn partition_doc(pipeline: &PipelineId, partition: &PartitionId) -> String {
    alloc::format!("{PIPELINES_PREFIX}{pipeline}/{PARTITIONS_DIR}{partition}{SUFFIX}")
}

/// List this to find every document of a pipeline (its history included).
pub fn pipeline_prefix(pipeline: &PipelineId) -> String {
    alloc::format!("{PIPELINES_PREFIX}{pipeline}/")
}

/// List this to find a pipeline's partitions.
pub fn partitions_prefix(pipeline: &PipelineId) -> String {
    alloc::format!("{PIPELINES_PREFIX}{pipeline}/{PARTITIONS_DIR}")
}

/// A create-only copy of a partition document at `version`. Zero-padded, so
/// listing returns versions in order.
pub fn history_doc(pipeline: &PipelineId, partition: &PartitionId, version: u64) -> String {
    alloc::format!("{}{version:020}{SUFFIX}", history_prefix(pipeline, partition))
}

/// List this to find a partition's history copies, oldest first.
pub fn history_prefix(pipeline: &PipelineId, partition: &PartitionId) -> String {
    alloc::format!("{PIPELINES_PREFIX}{pipeline}/{HISTORY_DIR}{partition}/")
}

/// A key this layout produced, taken apart again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocKey {
    /// A pipeline document.
    Pipeline(PipelineId),
    /// A partition document of that pipeline.
    Partition(PipelineId, PartitionId),
}

/// Parses a key relative to the store root; anything that is not ours is
/// `InvalidInput` naming the key.
pub fn parse(key: &str) -> Result<DocKey, Error> {
    let foreign = || Error::invalid(alloc::format!("{key:?} is not an oxiflow document key"));
    let rest = key.strip_prefix(PIPELINES_PREFIX).ok_or_else(foreign)?;
    let (pipeline, rest) = rest.split_once('/').ok_or_else(foreign)?;
    let pipeline = PipelineId::new(pipeline)?;
    if rest == PIPELINE_FILE {
        return Ok(DocKey::Pipeline(pipeline));
    }
    let name = rest.strip_prefix(PARTITIONS_DIR).and_then(|r| r.strip_suffix(SUFFIX)).ok_or_else(foreign)?;
    Ok(DocKey::Partition(pipeline, PartitionId::parse(name)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::StepId;

    #[test]
    fn keys_round_trip() {
        let p = PipelineId::new("orders").unwrap();
        let part = PartitionId::shard(StepId::new("load").unwrap(), 3);
        assert_eq!(pipeline_doc(&p), "pipelines/orders/pipeline.json");
        assert_eq!(partition_doc(&p, &part), "pipelines/orders/partitions/load@3.json");
        assert!(partition_doc(&p, &part).starts_with(&partitions_prefix(&p)));
        assert_eq!(history_doc(&p, &part, 42), "pipelines/orders/history/load@3/00000000000000000042.json");
        assert!(history_doc(&p, &part, 42).starts_with(&history_prefix(&p, &part)));
        assert!(parse(&history_doc(&p, &part, 42)).is_err(), "history copies are not live documents");
        assert_eq!(parse(&pipeline_doc(&p)).unwrap(), DocKey::Pipeline(p.clone()));
        assert_eq!(parse(&partition_doc(&p, &part)).unwrap(), DocKey::Partition(p, part));
    }

    #[test]
    fn foreign_and_hostile_keys_are_refused() {
        for bad in [
            "",
            "other/x",
            "pipelines/",
            "pipelines/p",
            "pipelines/p/x.json",
            "pipelines/p/partitions/a.txt",
            "pipelines/../pipeline.json",
            "pipelines/p/partitions/a/b.json",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
