//! Time as data. Core never reads a clock: every function that needs "now"
//! takes a [`Timestamp`] from its caller.

use core::fmt;
use core::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC. Stored as a JSON integer so
/// JavaScript reads it with `new Date(ms)` and decoding stays cheap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating at the end of time.
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(millis_i64(d)))
    }

    /// `self - d`, saturating at the start of time.
    pub fn minus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(millis_i64(d)))
    }

    /// How long from `self` until `later`; zero when `later` is not later.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0).max(0) as u64)
    }
}

fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Display for Timestamp {
    /// RFC 3339 with milliseconds, e.g. `2026-11-26T17:19:16.000Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            None => write!(f, "{}ms", self.0),
        }
    }
}

/// Serde helper: a [`Duration`] as whole milliseconds, which is what JSON
/// configuration and the JavaScript side expect.
pub mod duration_ms {
    use core::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = Timestamp::from_millis(i64::MAX - 5);
        assert_eq!(t.plus(Duration::from_secs(1)), Timestamp::from_millis(i64::MAX));
        let t = Timestamp::from_millis(i64::MIN + 5);
        assert_eq!(t.minus(Duration::from_secs(1)), Timestamp::from_millis(i64::MIN));
    }

    #[test]
    fn until_is_zero_for_the_past() {
        let t = Timestamp::from_millis(1_000);
        assert_eq!(t.until(Timestamp::from_millis(500)), Duration::ZERO);
        assert_eq!(t.until(Timestamp::from_millis(1_250)), Duration::from_millis(250));
    }

    #[test]
    fn displays_as_rfc3339() {
        assert_eq!(Timestamp::from_millis(1_764_177_556_123).to_string(), "2025-11-26T17:19:16.123Z");
    }
}
