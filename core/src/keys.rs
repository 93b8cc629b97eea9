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

/// Longest key a store accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest segment (between '/') of a key, in bytes: with the local store's
/// temp-file decoration it still fits a file name (255 bytes) on every file
/// system.
pub const MAX_SEGMENT_LEN: usize = 220;
/// Most segments in a key: the layout above uses at most five; keys of
/// your own (`oxiflow.Store`, the Airflow state store) a few more.
pub const MAX_KEY_DEPTH: usize = 16;

/// Checks a key before it reaches any store: relative, at most
/// [`MAX_KEY_DEPTH`] segments of ASCII letters, digits and `._@-`, none
/// empty, hidden (leading '.') or over [`MAX_SEGMENT_LEN`]. Keys become file
/// names and object names, so this is what keeps every store inside its
/// root. Refusals are `InvalidInput` naming the rule.
pub fn check_key(key: &str) -> Result<(), Error> {
    check_path(key, false)
}

/// Checks a listing prefix by the same rules as [`check_key`], except that
/// it may be empty (everything) and its last segment may be empty or
/// partial (`pipelines/`, `pipelines/ord`).
pub fn check_prefix(prefix: &str) -> Result<(), Error> {
    check_path(prefix, true)
}

fn check_path(path: &str, prefix: bool) -> Result<(), Error> {
    let what = if prefix { "prefix" } else { "key" };
    let bad = |why: &str| {
        let shown: String = path.chars().take(64).flat_map(char::escape_debug).collect();
        Error::invalid(alloc::format!("{what} \"{shown}\" {why}"))
    };
    if path.len() > MAX_KEY_LEN {
        return Err(bad(&alloc::format!("is over {MAX_KEY_LEN} bytes")));
    }
    if prefix && path.is_empty() {
        return Ok(());
    }
    let segments: alloc::vec::Vec<&str> = path.split('/').collect();
    if segments.len() > MAX_KEY_DEPTH {
        return Err(bad(&alloc::format!("has more than {MAX_KEY_DEPTH} segments")));
    }
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            if prefix && i == last {
                continue;
            }
            return Err(bad("has an empty segment (a leading, trailing or doubled '/'): keys are relative paths"));
        }
        if segment.len() > MAX_SEGMENT_LEN {
            return Err(bad(&alloc::format!("has a segment over {MAX_SEGMENT_LEN} bytes")));
        }
        if segment.starts_with('.') {
            return Err(bad("has a segment starting with '.' (hidden, '.' or '..'): keys stay inside the store"));
        }
        if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-')) {
            return Err(bad("may contain only ASCII letters, digits, '.', '_', '@', '-' and '/'"));
        }
    }
    Ok(())
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
    fn keys_and_prefixes_stay_inside_the_store() {
        let p = PipelineId::new("orders").unwrap();
        let part = PartitionId::shard(StepId::new("s".repeat(crate::id::MAX_ID_LEN)).unwrap(), u32::MAX);
        for key in [pipeline_doc(&p), partition_doc(&p, &part), history_doc(&p, &part, u64::MAX), "_oxiflow/probe/00ff".into()] {
            check_key(&key).unwrap();
        }
        for prefix in ["", "pipelines/", "pipelines/ord", "pipelines/orders/partitions/"] {
            check_prefix(prefix).unwrap();
        }
        let deep = "a/".repeat(MAX_KEY_DEPTH) + "a";
        let long = "a".repeat(MAX_SEGMENT_LEN + 1);
        for bad in [
            "",
            "/etc/hosts",
            "../outside/secret.txt",
            "a/../b",
            "a/./b",
            "a//b",
            "a/",
            ".lock",
            "a/.tmp",
            "a\\b",
            "a\0b",
            "a b",
            "a%2Fb",
            "ä",
            &deep,
            &long,
        ] {
            assert!(check_key(bad).is_err(), "key {bad:?}");
        }
        for bad in ["../outside/", "../../../etc/host", "/", "/etc", "pipelines/../", "pipelines/.", "a//", ".", "..", "a\n", &deep, &long]
        {
            assert!(check_prefix(bad).is_err(), "prefix {bad:?}");
        }
        let message = check_prefix("../outside/").unwrap_err().to_string();
        assert!(message.contains("stay inside the store"), "{message}");
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
