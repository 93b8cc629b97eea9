//! The codec: canonical JSON with a CRC-32 checksum over the canonical body.
//!
//! A stored document is the canonical JSON of the document (fields in
//! declaration order, maps sorted, no whitespace) with one more field appended
//! last: `"checksum":"<crc32 of the body without that field, 8 hex digits>"`.
//! `format_version` is always the first field, so a reader can tell a newer
//! format before it trusts anything else. Unknown fields are refused, so a
//! rewrite never silently drops data. Decoding never panics.

use alloc::string::String;
use alloc::vec::Vec;

use crate::doc::{Document, Limits, FORMAT_VERSION};
use crate::error::Error;

const CHECKSUM_PREFIX: &[u8] = b",\"checksum\":\"";
const CHECKSUM_SUFFIX_LEN: usize = CHECKSUM_PREFIX.len() + 8 + 2; // ,"checksum":"XXXXXXXX"}
const HEADER: &[u8] = b"{\"format_version\":";

/// Encodes `doc` canonically with its checksum, refusing bodies over the limit.
pub fn encode<D: Document>(key: &str, doc: &D, limits: &Limits) -> Result<Vec<u8>, Error> {
    let mut out = serde_json::to_vec(doc).map_err(|e| Error::invalid(alloc::format!("cannot encode {key}: {e}")))?;
    let crc = crc32fast::hash(&out);
    out.pop(); // the closing brace; the checksum goes before it
    out.extend_from_slice(CHECKSUM_PREFIX);
    out.extend_from_slice(hex8(crc).as_bytes());
    out.extend_from_slice(b"\"}");
    if out.len() > limits.max_document_bytes {
        return Err(Error::TooLarge { key: key.into(), size: out.len(), limit: limits.max_document_bytes });
    }
    Ok(out)
}

/// Decodes and checks a stored document: size, format version, checksum,
/// shape, then the document's own invariants.
pub fn decode<D: Document>(key: &str, bytes: &[u8], limits: &Limits) -> Result<D, Error> {
    let corrupt = |reason: String| Error::Corrupt { key: key.into(), reason };
    if bytes.len() > limits.max_document_bytes {
        return Err(Error::TooLarge { key: key.into(), size: bytes.len(), limit: limits.max_document_bytes });
    }
    let format = read_format_version(bytes).map_err(corrupt)?;
    if format > FORMAT_VERSION {
        return Err(Error::UnsupportedFormat { key: key.into(), found: format, supported: FORMAT_VERSION });
    }
    let mut body = verify_checksum(bytes).map_err(corrupt)?;
    if format < FORMAT_VERSION {
        let mut value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| corrupt(alloc::format!("not JSON: {e}")))?;
        for from in format..FORMAT_VERSION {
            migrate(&mut value, from).map_err(corrupt)?;
        }
        // Back through bytes rather than `from_value`: one deserializer per
        // document type instead of two (36 KB less wasm), the same errors.
        body = serde_json::to_vec(&value).map_err(|e| corrupt(alloc::format!("cannot re-encode after migration: {e}")))?;
    }
    let doc: D = serde_json::from_slice(&body).map_err(|e| corrupt(alloc::format!("not a valid {} document: {e}", D::KIND)))?;
    doc.check(limits).map_err(corrupt)?;
    Ok(doc)
}

/// The migration hook: rewrites a document of format `from` into format
/// `from + 1`; `decode` applies it once per step up to [`FORMAT_VERSION`].
/// Migrated documents are only read; the next write stores the new format.
pub fn migrate(value: &mut serde_json::Value, from: u64) -> Result<(), String> {
    let doc = value.as_object_mut().ok_or("not a JSON object")?;
    match from {
        // Format 2 added the optional `lease.ttl_ms`: a format 1 document is
        // a format 2 document without it.
        1 => {
            doc.insert("format_version".into(), 2.into());
            Ok(())
        }
        // Format 3 made the pipeline's steps a plan with dependencies. A
        // format 2 list meant "each step after the one before": a chain of
        // barriers. Shard counts were not recorded, so they stay absent (the
        // partitions are the documents found). A lease's one `previous`
        // holder became a list of them.
        2 => {
            if let Some(previous) = doc.get_mut("lease").and_then(|l| l.as_object_mut()).and_then(|l| l.get_mut("previous")) {
                if previous.is_object() {
                    *previous = serde_json::Value::Array(alloc::vec![previous.take()]);
                }
            }
            if let Some(steps) = doc.get_mut("steps") {
                let names = steps.as_array().ok_or("steps is not a list")?;
                let mut plan = Vec::with_capacity(names.len());
                for (i, name) in names.iter().enumerate() {
                    let name = name.as_str().ok_or("a step in the list is not a string")?;
                    let mut step = serde_json::Map::new();
                    step.insert("step_id".into(), name.into());
                    if i > 0 {
                        let mut dep = serde_json::Map::new();
                        dep.insert("step_id".into(), names[i - 1].clone());
                        step.insert("after".into(), serde_json::Value::Array(alloc::vec![dep.into()]));
                    }
                    plan.push(serde_json::Value::Object(step));
                }
                *steps = serde_json::Value::Array(plan);
            }
            doc.insert("format_version".into(), 3.into());
            Ok(())
        }
        _ => Err(alloc::format!("format_version {from} was never written by oxiflow")),
    }
}

/// Reads `format_version` from its canonical place at the start.
fn read_format_version(bytes: &[u8]) -> Result<u64, String> {
    let Some(rest) = bytes.strip_prefix(HEADER) else {
        return Err(if bytes.is_empty() {
            "empty object".into()
        } else {
            "does not start with {\"format_version\": (not an oxiflow document, or not canonical)".into()
        });
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 || rest.get(digits) != Some(&b',') {
        return Err("format_version is not a plain integer".into());
    }
    core::str::from_utf8(&rest[..digits]).ok().and_then(|s| s.parse().ok()).ok_or_else(|| "format_version is not a plain integer".into())
}

/// Checks the trailing checksum and returns the canonical body it covers:
/// the document without the `checksum` field.
fn verify_checksum(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.len() < HEADER.len() + CHECKSUM_SUFFIX_LEN || !bytes.ends_with(b"\"}") {
        return Err("truncated: no checksum at the end".into());
    }
    let (body, suffix) = bytes.split_at(bytes.len() - CHECKSUM_SUFFIX_LEN);
    let Some(hex) = suffix.strip_prefix(CHECKSUM_PREFIX) else {
        return Err("truncated: no checksum at the end".into());
    };
    let mut canonical = Vec::with_capacity(body.len() + 1);
    canonical.extend_from_slice(body);
    canonical.push(b'}');
    let computed = hex8(crc32fast::hash(&canonical));
    // Compared as text: the encoder writes exactly 8 lowercase hex digits.
    if &hex[..8] != computed.as_bytes() {
        return Err(alloc::format!("checksum mismatch: stored {:?}, computed {computed}", String::from_utf8_lossy(&hex[..8])));
    }
    Ok(canonical)
}

fn hex8(n: u32) -> String {
    alloc::format!("{n:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::{PartitionDoc, PipelineDoc};
    use crate::id::{PartitionId, PipelineId, RunId, StepId};
    use crate::time::Timestamp;

    fn doc() -> PartitionDoc {
        let mut d = PartitionDoc::new(
            PipelineId::new("p").unwrap(),
            PartitionId::shard(StepId::new("load").unwrap(), 2),
            RunId::new("r1").unwrap(),
            Timestamp::from_millis(5),
        );
        d.version = 1;
        d
    }

    const KEY: &str = "pipelines/p/partitions/load@2.json";

    #[test]
    fn round_trips_and_is_canonical() {
        let limits = Limits::default();
        let bytes = encode(KEY, &doc(), &limits).unwrap();
        let text = core::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("{\"format_version\":3,\"pipeline_id\":\"p\",\"step_id\":\"load\",\"shard\":2,"), "{text}");
        assert!(text.ends_with("\"}") && text.contains(",\"checksum\":\""), "{text}");
        let back: PartitionDoc = decode(KEY, &bytes, &limits).unwrap();
        assert_eq!(back, doc());
        assert_eq!(encode(KEY, &back, &limits).unwrap(), bytes, "re-encoding gives the same bytes");
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let limits = Limits::default();
        let bytes = encode(KEY, &doc(), &limits).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(decode::<PartitionDoc>(KEY, &b, &limits).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn every_truncation_is_corrupt() {
        let limits = Limits::default();
        let bytes = encode(KEY, &doc(), &limits).unwrap();
        for n in 0..bytes.len() {
            let err = decode::<PartitionDoc>(KEY, &bytes[..n], &limits).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "truncated to {n}: {err:?}");
        }
    }

    #[test]
    fn future_format_is_refused_by_name() {
        let limits = Limits::default();
        let text =
            String::from_utf8(encode(KEY, &doc(), &limits).unwrap()).unwrap().replacen("\"format_version\":3", "\"format_version\":7", 1);
        let err = decode::<PartitionDoc>(KEY, text.as_bytes(), &limits).unwrap_err();
        assert_eq!(err, Error::UnsupportedFormat { key: KEY.into(), found: 7, supported: 3 });
        assert!(err.to_string().contains("upgrade oxiflow"));
    }

    #[test]
    fn format_1_and_2_documents_are_read_as_the_current_format() {
        let limits = Limits::default();
        let mut d = doc();
        d.format_version = 1;
        let bytes = encode(KEY, &d, &limits).unwrap();
        assert!(bytes.starts_with(b"{\"format_version\":1,"));
        let back: PartitionDoc = decode(KEY, &bytes, &limits).unwrap();
        assert_eq!(back, doc(), "migrated to the current format");
        d.format_version = 2;
        let back: PartitionDoc = decode(KEY, &encode(KEY, &d, &limits).unwrap(), &limits).unwrap();
        assert_eq!(back, doc());
    }

    /// Seals a hand-written canonical body the way `encode` does.
    fn seal(body: &str) -> Vec<u8> {
        let crc = hex8(crc32fast::hash(body.as_bytes()));
        alloc::format!("{},\"checksum\":\"{crc}\"}}", &body[..body.len() - 1]).into_bytes()
    }

    #[test]
    fn a_format_2_lease_keeps_its_previous_holder_as_a_list_of_one() {
        let body = r#"{"format_version":2,"pipeline_id":"p","step_id":"load","shard":2,"run_id":"r1","status":"pending","batch_number":0,"records_processed":0,"records_failed":0,"bytes_processed":0,"processing_time_ms":0,"attempts":1,"errors":{"total":0,"recent":[]},"lease":{"worker_id":"w2","epoch":2,"acquired_at":5,"expires_at":9,"released_at":7,"last_write":3,"previous":{"worker_id":"w1","epoch":1,"last_write":8}},"version":4,"updated_at":7}"#;
        let doc: PartitionDoc = decode(KEY, &seal(body), &Limits::default()).unwrap();
        let previous = &doc.lease.as_ref().unwrap().previous;
        assert_eq!(previous.len(), 1);
        assert_eq!((previous[0].worker_id.as_str(), previous[0].epoch, previous[0].last_write), ("w1", 1, 8));
    }

    #[test]
    fn a_format_2_step_list_becomes_a_chain_of_barriers() {
        use crate::plan::{Dependency, StepPlan};
        let body = r#"{"format_version":2,"pipeline_id":"p","run_id":"r1","steps":["extract","transform","load"],"current_step":"extract","batch_number":0,"version":4,"created_at":5,"updated_at":5}"#;
        let key = "pipelines/p/pipeline.json";
        let doc: PipelineDoc = decode(key, &seal(body), &Limits::default()).unwrap();
        let s = |n: &str| StepId::new(n).unwrap();
        assert_eq!(doc.format_version, FORMAT_VERSION);
        assert_eq!(
            doc.steps,
            [
                StepPlan::new(s("extract"), None),
                StepPlan::new(s("transform"), None).after(Dependency::barrier(s("extract"))),
                StepPlan::new(s("load"), None).after(Dependency::barrier(s("transform"))),
            ]
        );
        let again: PipelineDoc = decode(key, &encode(key, &doc, &Limits::default()).unwrap(), &Limits::default()).unwrap();
        assert_eq!(again, doc, "stored again in format 3, it reads back the same");
    }

    #[test]
    fn impossible_old_format_is_refused() {
        let limits = Limits::default();
        let mut d = doc();
        d.format_version = 0;
        let bytes = encode(KEY, &d, &limits).unwrap();
        let err = decode::<PartitionDoc>(KEY, &bytes, &limits).unwrap_err();
        assert_eq!(err, Error::Corrupt { key: KEY.into(), reason: "format_version 0 was never written by oxiflow".into() });
    }

    #[test]
    fn oversized_is_refused_before_parsing() {
        let limits = Limits { max_document_bytes: 64, ..Limits::default() };
        let err = decode::<PartitionDoc>(KEY, &[b' '; 65], &limits).unwrap_err();
        assert_eq!(err, Error::TooLarge { key: KEY.into(), size: 65, limit: 64 });
        let err = encode(KEY, &doc(), &limits).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }));
    }

    #[test]
    fn valid_checksum_on_wrong_kind_is_corrupt_with_reason() {
        let limits = Limits::default();
        let bytes = encode(KEY, &doc(), &limits).unwrap();
        let err = decode::<PipelineDoc>(KEY, &bytes, &limits).unwrap_err();
        assert!(err.to_string().contains("not a valid pipeline document"), "{err}");
    }

    #[test]
    fn invariants_are_checked_after_decoding() {
        let limits = Limits::default();
        let mut d = doc();
        d.version = 0;
        let bytes = encode(KEY, &d, &limits).unwrap();
        let err = decode::<PartitionDoc>(KEY, &bytes, &limits).unwrap_err();
        assert!(err.to_string().contains("version must be at least 1"), "{err}");
    }

    #[test]
    fn hostile_ids_inside_a_checksummed_body_are_corrupt() {
        let limits = Limits::default();
        let body = String::from_utf8(encode(KEY, &doc(), &limits).unwrap()).unwrap();
        let body = body.replacen("\"step_id\":\"load\"", "\"step_id\":\"..\"", 1);
        // Re-seal with a correct checksum so only the id is wrong.
        let end = body.len() - CHECKSUM_SUFFIX_LEN;
        let unsealed = alloc::format!("{}}}", &body[..end]);
        let resealed =
            alloc::format!("{},\"checksum\":\"{}\"}}", &unsealed[..unsealed.len() - 1], hex8(crc32fast::hash(unsealed.as_bytes())));
        let err = decode::<PartitionDoc>(KEY, resealed.as_bytes(), &limits).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }) && err.to_string().contains("'..'"), "{err}");
    }
}
