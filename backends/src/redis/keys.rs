//! Store keys ↔ Redis keys.
//!
//! `pipelines/<pipeline>/<rest>` becomes `<prefix>:pipelines/{<pipeline>}/<rest>`:
//! the braces are a Redis Cluster hash tag, so every document of a pipeline
//! (and its index, `<prefix>:pipelines/{<pipeline>}`) hashes to one slot
//! and each script touches keys of one slot only. Any other key (the
//! doctor's probe, test keys) is stored as `<prefix>:<key>`. Store keys may
//! not contain braces, so the mapping is one to one.

use oxiflow_core::keys::PIPELINES_PREFIX;

use crate::error::Result;

/// How a store key maps onto Redis keys under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The key prefix with its `:` separator (empty for no prefix).
    root: String,
}

impl Layout {
    /// `prefix` without a trailing separator; `""` for none.
    pub(crate) fn new(prefix: &str) -> Self {
        let root = match prefix.trim_end_matches(':') {
            "" => String::new(),
            p => format!("{p}:"),
        };
        Layout { root }
    }

    /// The Redis key of `key`, after the core's key rules (which also keep
    /// out braces: the store places hash tags itself).
    pub(crate) fn redis_key(&self, key: &str) -> Result<String> {
        oxiflow_core::keys::check_key(key)?;
        Ok(match split_pipeline(key) {
            Some((pipeline, rest)) => format!("{}{PIPELINES_PREFIX}{{{pipeline}}}/{rest}", self.root),
            None => format!("{}{key}", self.root),
        })
    }

    /// The index hash of the pipeline `key` belongs to (field: the store key,
    /// value: its version), kept by the same scripts that write the key.
    pub(crate) fn index_key(&self, key: &str) -> Option<String> {
        split_pipeline(key).map(|(pipeline, _)| self.index_of(pipeline))
    }

    fn index_of(&self, pipeline: &str) -> String {
        format!("{}{PIPELINES_PREFIX}{{{pipeline}}}", self.root)
    }

    /// A listing prefix that lies inside one pipeline is answered from its
    /// index: that index, and where its documents are when it must be
    /// rebuilt.
    pub(crate) fn pipeline_listing(&self, prefix: &str) -> Option<PipelineListing> {
        split_pipeline(prefix).map(|(pipeline, _)| {
            let index = self.index_of(pipeline);
            PipelineListing { pattern: format!("{}/*", glob_escape(&index)), index, documents: format!("{PIPELINES_PREFIX}{pipeline}/") }
        })
    }

    /// The SCAN pattern that finds every Redis key whose store key starts
    /// with `prefix` (and possibly more: callers filter the decoded keys).
    pub(crate) fn scan_pattern(&self, prefix: &str) -> String {
        let literal = if prefix.starts_with(PIPELINES_PREFIX) { PIPELINES_PREFIX } else { prefix };
        format!("{}*", glob_escape(&format!("{}{literal}", self.root)))
    }

    /// The store key of a Redis key, or `None` for keys that are not
    /// documents of this layout (indexes, other prefixes).
    pub(crate) fn store_key(&self, redis_key: &str) -> Option<String> {
        let key = redis_key.strip_prefix(&self.root)?;
        if let Some(rest) = key.strip_prefix(PIPELINES_PREFIX).and_then(|r| r.strip_prefix('{')) {
            let (pipeline, rest) = rest.split_once("}/")?;
            if pipeline.is_empty() || pipeline.contains(['{', '}', '/']) || rest.contains(['{', '}']) {
                return None;
            }
            return Some(format!("{PIPELINES_PREFIX}{pipeline}/{rest}"));
        }
        (!key.is_empty() && !key.contains(['{', '}'])).then(|| key.to_string())
    }
}

/// One pipeline's index and documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PipelineListing {
    /// The index hash (store key → version).
    pub index: String,
    /// The SCAN pattern that matches every document of the pipeline (and
    /// only those: the hash tag closes the pipeline's name).
    pub pattern: String,
    /// The store-key prefix every document of the pipeline starts with.
    pub documents: String,
}

/// `pipelines/<p>/<rest>` → `(p, rest)`.
fn split_pipeline(key: &str) -> Option<(&str, &str)> {
    let (pipeline, rest) = key.strip_prefix(PIPELINES_PREFIX)?.split_once('/')?;
    (!pipeline.is_empty()).then_some((pipeline, rest))
}

/// Escapes the characters SCAN's MATCH treats specially.
pub(crate) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_hashes_to_one_slot() {
        let l = Layout::new("oxiflow:state");
        let doc = l.redis_key("pipelines/orders/partitions/load@3.json").unwrap();
        assert_eq!(doc, "oxiflow:state:pipelines/{orders}/partitions/load@3.json");
        assert_eq!(l.redis_key("pipelines/orders/pipeline.json").unwrap(), "oxiflow:state:pipelines/{orders}/pipeline.json");
        assert_eq!(l.index_key("pipelines/orders/history/x/1.json").unwrap(), "oxiflow:state:pipelines/{orders}");
        assert_eq!(l.store_key(&doc).unwrap(), "pipelines/orders/partitions/load@3.json");
        assert_eq!(l.store_key("oxiflow:state:pipelines/{orders}"), None, "the index is not a document");
        let listing = l.pipeline_listing("pipelines/orders/partitions/").unwrap();
        assert_eq!(listing.index, "oxiflow:state:pipelines/{orders}");
        assert_eq!(listing.pattern, "oxiflow:state:pipelines/{orders}/*", "the index itself does not match");
        assert_eq!(listing.documents, "pipelines/orders/");
        assert_eq!(l.pipeline_listing("pipelines/orders"), None, "a partial pipeline name spans pipelines");
        let globby = Layout::new("a*").pipeline_listing("pipelines/o[1]/").unwrap();
        assert_eq!(globby.pattern, "a\\*:pipelines/{o\\[1\\]}/*");
    }

    #[test]
    fn other_keys_and_prefixes() {
        let l = Layout::new("p:");
        assert_eq!(l.redis_key("_oxiflow/probe/1").unwrap(), "p:_oxiflow/probe/1");
        assert_eq!(l.redis_key("pipelines/x").unwrap(), "p:pipelines/x", "no pipeline segment: no tag");
        assert_eq!(l.store_key("p:pipelines/x").unwrap(), "pipelines/x");
        assert_eq!(l.store_key("q:pipelines/x"), None, "another prefix");
        assert_eq!(Layout::new("").redis_key("a/b").unwrap(), "a/b");
        for bad in ["", "a{b", "pipelines/{p}/x"] {
            assert!(l.redis_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scan_patterns_escape_globs_and_cover_tagged_keys() {
        let l = Layout::new("a*b");
        assert_eq!(l.scan_pattern("x?/[y]"), "a\\*b:x\\?/\\[y\\]*");
        assert_eq!(l.scan_pattern("pipelines/ord"), "a\\*b:pipelines/*", "covers the tagged keys of every pipeline");
        assert_eq!(glob_escape("a\\b^c-d"), "a\\\\b\\^c\\-d");
    }
}
