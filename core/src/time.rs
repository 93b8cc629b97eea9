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
    /// Milliseconds since the Unix epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
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

/// The proleptic Gregorian date of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`), so core needs no date library.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    /// RFC 3339 with milliseconds, e.g. `2026-11-26T17:19:16.000Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (secs, ms) = (self.0.div_euclid(1000), self.0.rem_euclid(1000));
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", sod / 3600, sod % 3600 / 60, sod % 60)
    }
}

/// Serde helper: a [`Duration`] as whole milliseconds, which is what JSON
/// configuration and the JavaScript side expect.
pub mod duration_ms {
    use core::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes whole milliseconds, saturating at `u64::MAX`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Reads whole milliseconds.
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
        let cases = [
            (1_764_177_556_123, "2025-11-26T17:19:16.123Z"),
            (0, "1970-01-01T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        ];
        for (ms, text) in cases {
            assert_eq!(Timestamp::from_millis(ms).to_string(), text, "{ms}");
        }
    }
}
