//! Validated identifiers. Ids become object keys and file names, so they are
//! checked once, here, and every rule has a name the error message can quote.

use alloc::string::String;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Which rule an id broke. The message says what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum IdRule {
    /// No characters at all.
    #[error("must not be empty")]
    Empty,
    /// Over [`MAX_ID_LEN`] bytes.
    #[error("must be at most {MAX_ID_LEN} bytes")]
    TooLong,
    /// A '/' would split the object key.
    #[error("must not contain '/' (ids become object keys)")]
    Slash,
    /// A backslash would split a file name on Windows.
    #[error("must not contain '\\' (ids become file names)")]
    Backslash,
    /// '..' could escape a directory.
    #[error("must not contain '..' (path traversal)")]
    DotDot,
    /// NUL, newline or another control character.
    #[error("must not contain control characters such as NUL or newline")]
    Control,
    /// A leading '.' hides a file; a leading '-' reads as a flag.
    #[error("must not start with '.' or '-'")]
    LeadingPunctuation,
    /// A character outside ASCII letters, digits, '.', '_' and '-'.
    #[error("may contain only ASCII letters, digits, '.', '_' and '-'")]
    Charset,
}

/// What kind of id was rejected, for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    /// A [`PipelineId`].
    Pipeline,
    /// A [`StepId`].
    Step,
    /// A [`WorkerId`].
    Worker,
    /// A [`RunId`].
    Run,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Pipeline => "pipeline id",
            IdKind::Step => "step id",
            IdKind::Worker => "worker id",
            IdKind::Run => "run id",
        })
    }
}

/// Checks `value` against the id rules, most specific rule first.
pub fn check_id(value: &str) -> Result<(), IdRule> {
    if value.is_empty() {
        return Err(IdRule::Empty);
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdRule::TooLong);
    }
    if value.contains('/') {
        return Err(IdRule::Slash);
    }
    if value.contains('\\') {
        return Err(IdRule::Backslash);
    }
    if value.chars().any(char::is_control) {
        return Err(IdRule::Control);
    }
    if value.contains("..") {
        return Err(IdRule::DotDot);
    }
    if value.starts_with(['.', '-']) {
        return Err(IdRule::LeadingPunctuation);
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(IdRule::Charset);
    }
    Ok(())
}

/// A short, printable rendering of a rejected value: hostile ids can be
/// 10 KB long or full of control characters.
fn quote_rejected(value: &str) -> String {
    const SHOWN: usize = 64;
    let mut out: String = value.chars().take(SHOWN).flat_map(char::escape_debug).collect();
    if value.chars().count() > SHOWN {
        out.push('…');
    }
    out
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `value` against the id rules.
            pub fn new(value: impl Into<String>) -> Result<Self, Error> {
                let value = value.into();
                match check_id(&value) {
                    Ok(()) => Ok($name(value)),
                    Err(rule) => Err(Error::InvalidId { kind: $kind, value: quote_rejected(&value), rule }),
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(value: String) -> Result<Self, Error> {
                $name::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl core::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                $name::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// Names a pipeline; the first path segment under `pipelines/`.
    PipelineId,
    IdKind::Pipeline
);
id_type!(
    /// Names a step of a pipeline.
    StepId,
    IdKind::Step
);
id_type!(
    /// Names a worker process. Must be unique among processes running at once.
    WorkerId,
    IdKind::Worker
);
id_type!(
    /// Names one run of a pipeline; a new run resets statuses, keeps bookmarks.
    RunId,
    IdKind::Run
);

/// One partition document: a step, or one shard of a step. In JSON it is
/// its key form, `step` or `step@shard`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct PartitionId {
    /// The step.
    pub step_id: StepId,
    /// Which shard; `None` for an unsharded step.
    pub shard: Option<u32>,
}

impl From<PartitionId> for String {
    fn from(id: PartitionId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for PartitionId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        PartitionId::parse(&s)
    }
}

impl PartitionId {
    /// The one partition of an unsharded step.
    pub fn step(step_id: StepId) -> Self {
        PartitionId { step_id, shard: None }
    }

    /// Shard `shard` of a sharded step.
    pub fn shard(step_id: StepId, shard: u32) -> Self {
        PartitionId { step_id, shard: Some(shard) }
    }

    /// Parses the key form: `step` or `step@shard`. '@' is never part of an id.
    pub fn parse(s: &str) -> Result<Self, Error> {
        match s.split_once('@') {
            None => Ok(PartitionId::step(StepId::new(s)?)),
            Some((step, shard)) => {
                let shard = shard.parse::<u32>().ok().filter(|n| n.to_string() == shard).ok_or_else(|| Error::InvalidInput {
                    reason: alloc::format!("shard in {:?} must be a decimal number without leading zeros", quote_rejected(s)),
                })?;
                Ok(PartitionId::shard(StepId::new(step)?, shard))
            }
        }
    }
}

impl fmt::Display for PartitionId {
    /// The key form: `step` or `step@shard`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shard {
            None => write!(f, "{}", self.step_id),
            Some(n) => write!(f, "{}@{}", self.step_id, n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn accepts_ordinary_ids() {
        for ok in ["extract", "step_2", "a.b-c", "X", "0", &"a".repeat(MAX_ID_LEN)] {
            assert_eq!(check_id(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn names_the_rule_each_hostile_id_breaks() {
        let long = "a".repeat(MAX_ID_LEN + 1);
        let cases: &[(&str, IdRule)] = &[
            ("", IdRule::Empty),
            (&long, IdRule::TooLong),
            ("a/b", IdRule::Slash),
            ("/", IdRule::Slash),
            ("a\\b", IdRule::Backslash),
            ("..", IdRule::DotDot),
            ("a..b", IdRule::DotDot),
            ("a\0b", IdRule::Control),
            ("a\nb", IdRule::Control),
            ("\u{7f}", IdRule::Control),
            (".hidden", IdRule::LeadingPunctuation),
            ("-rf", IdRule::LeadingPunctuation),
            ("a b", IdRule::Charset),
            ("step@1", IdRule::Charset),
            ("ехtract", IdRule::Charset),    // Cyrillic lookalikes
            ("a\u{200b}b", IdRule::Charset), // zero-width space
        ];
        for (value, rule) in cases {
            assert_eq!(check_id(value), Err(*rule), "{value:?}");
        }
    }

    #[test]
    fn error_message_quotes_a_bounded_escaped_value() {
        let hostile = "\0".repeat(10_000);
        let err = PipelineId::new(hostile).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("pipeline id"), "{msg}");
        assert!(msg.contains("at most 128 bytes") && msg.contains("\\0\\0"), "{msg}");
        assert!(msg.len() < 600, "message is bounded: {} bytes", msg.len());
    }

    #[test]
    fn deserializing_validates() {
        let err = serde_json::from_str::<StepId>("\"a..b\"").unwrap_err();
        assert!(err.to_string().contains("'..'"), "{err}");
        let ok: StepId = serde_json::from_str("\"load\"").unwrap();
        assert_eq!(ok.as_str(), "load");
    }

    #[test]
    fn partition_ids_round_trip_through_their_key_form() {
        for s in ["load", "load@0", "load@17"] {
            assert_eq!(PartitionId::parse(s).unwrap().to_string(), s);
        }
        for bad in ["load@", "load@x", "load@01", "load@-1", "@1", "a/b@1"] {
            assert!(PartitionId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
