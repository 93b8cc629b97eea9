//! Holders with a hard deadline: an AWS Lambda invocation is killed at its
//! deadline (at most 15 minutes after it started), whatever it is doing.
//! Written once here for every runtime (the Rust runner in `oxiflow-lambda`,
//! the Node package through wasm).
//!
//! - Its lease ends at the deadline ([`Deadline::ends_at`]; claims and
//!   writes are capped there: [`crate::Claim::with_deadline`],
//!   [`crate::Session::with_deadline`]), so a killed invocation's partition
//!   is claimable again `skew_allowance` after the deadline instead of a
//!   whole configured lease later.
//! - A reported deadline is only trusted when it is ahead of the clock and
//!   at most [`MAX_INVOCATION`] away: platforms near the end and local
//!   emulators report 0, a duration instead of a time, or nothing. An
//!   untrusted one is replaced by one configured lease from now.
//! - Batches run while the time left exceeds the longest batch so far plus
//!   a margin for the release, all inside the holder's trusted time
//!   (`ends_at − safety_margin`): [`Pace`].

use core::time::Duration;

use serde::Serialize;

use crate::lease::LeaseConfig;
use crate::time::Timestamp;

/// The longest an AWS Lambda invocation runs; a deadline further ahead is
/// not a real one.
pub const MAX_INVOCATION: Duration = Duration::from_secs(15 * 60);

/// Why a reported deadline was not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Distrust {
    /// None was reported.
    Missing,
    /// It had passed already (or was now) by this much: a clock that lies,
    /// or a duration sent in place of a time.
    Past {
        /// How far behind the clock it was, in ms.
        by_ms: u64,
    },
    /// It was further ahead than any invocation runs ([`MAX_INVOCATION`]).
    TooFar {
        /// How far ahead of the clock it was, in ms.
        ahead_ms: u64,
    },
}

impl core::fmt::Display for Distrust {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Distrust::Missing => f.write_str("no deadline was reported"),
            Distrust::Past { by_ms } => write!(f, "the reported deadline passed {by_ms} ms ago"),
            Distrust::TooFar { ahead_ms } => {
                write!(f, "the reported deadline is {ahead_ms} ms ahead, beyond the 15 minutes an invocation can run")
            }
        }
    }
}

/// When a holder with a hard deadline must be done, and whether the
/// platform's word for it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Deadline {
    /// The lease ends here; nothing may be written after
    /// `ends_at − safety_margin`.
    pub ends_at: Timestamp,
    /// Set when the reported deadline was not trusted and `ends_at` is one
    /// configured lease from when it was judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distrust: Option<Distrust>,
}

impl Deadline {
    /// Judges the deadline the platform reported at `now`. Trusted when
    /// ahead of `now` by at most [`MAX_INVOCATION`]; otherwise the holder
    /// gets `fallback` (the configured lease ttl) from `now`, and
    /// [`Deadline::distrust`] says why, for the log.
    pub fn judge(reported: Option<Timestamp>, now: Timestamp, fallback: Duration) -> Deadline {
        let distrust = match reported {
            None => Some(Distrust::Missing),
            Some(at) if at <= now => Some(Distrust::Past { by_ms: ms(at.until(now)) }),
            Some(at) if now.until(at) > MAX_INVOCATION => Some(Distrust::TooFar { ahead_ms: ms(now.until(at)) }),
            Some(_) => None,
        };
        match (distrust, reported) {
            (None, Some(at)) => Deadline { ends_at: at, distrust: None },
            _ => Deadline { ends_at: now.plus(fallback), distrust },
        }
    }

    /// The ttl a claim at `now` asks for: the whole time to the deadline
    /// (no heartbeats needed; each write's extension is capped there).
    pub fn lease_ttl(&self, now: Timestamp) -> Duration {
        now.until(self.ends_at)
    }

    /// The last moment a write may be begun and still land while trusted:
    /// `ends_at − safety_margin − margin`, `margin` being the time one write
    /// takes.
    pub fn last_write_at(&self, lease: &LeaseConfig, margin: Duration) -> Timestamp {
        self.ends_at.minus(lease.safety_margin).minus(margin)
    }
}

/// How long batches take, measured by the runner: another batch is begun
/// only while the longest so far still fits before the release must be
/// written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pace {
    /// The longest batch so far, in ms (none before the first).
    pub longest_ms: Option<u64>,
    /// Batches measured.
    pub batches: u32,
}

impl Pace {
    /// Records a batch that took `took` (its work and its checkpoint).
    pub fn record(&mut self, took: Duration) {
        self.longest_ms = Some(self.longest_ms.unwrap_or(0).max(ms(took)));
        self.batches += 1;
    }

    /// Whether another batch begun at `now` is expected to end, and leave
    /// `margin` for the release, before the holder stops trusting its lease.
    /// Before any batch is measured, one is begun if any time is left.
    pub fn another_batch(&self, deadline: &Deadline, now: Timestamp, lease: &LeaseConfig, margin: Duration) -> bool {
        let last_write = deadline.last_write_at(lease, margin);
        now < last_write && now.plus(Duration::from_millis(self.longest_ms.unwrap_or(0))) <= last_write
    }

    /// The time a batch begun at `now` may take (zero when none is left):
    /// handlers that size their batches read it.
    pub fn budget(&self, deadline: &Deadline, now: Timestamp, lease: &LeaseConfig, margin: Duration) -> Duration {
        now.until(deadline.last_write_at(lease, margin))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    fn lease() -> LeaseConfig {
        LeaseConfig { safety_margin: Duration::from_millis(200), ..LeaseConfig::default() }
    }

    #[test]
    fn a_deadline_ahead_within_fifteen_minutes_is_trusted() {
        let at = NOW.plus(Duration::from_secs(14 * 60));
        let d = Deadline::judge(Some(at), NOW, Duration::from_secs(30));
        assert_eq!(d, Deadline { ends_at: at, distrust: None });
        assert_eq!(d.lease_ttl(NOW), Duration::from_secs(14 * 60));
    }

    #[test]
    fn missing_past_and_far_deadlines_fall_back_to_the_configured_lease() {
        let fallback = Duration::from_secs(30);
        let cases = [
            (None, Distrust::Missing),
            (Some(NOW), Distrust::Past { by_ms: 0 }),
            // `cargo lambda watch` sends a duration (600000) where a Unix time belongs.
            (Some(Timestamp::from_millis(600_000)), Distrust::Past { by_ms: 1_800_000_000_000 - 600_000 }),
            (Some(NOW.plus(Duration::from_secs(15 * 60 + 1))), Distrust::TooFar { ahead_ms: 901_000 }),
        ];
        for (reported, why) in cases {
            let d = Deadline::judge(reported, NOW, fallback);
            assert_eq!(d, Deadline { ends_at: NOW.plus(fallback), distrust: Some(why) }, "{reported:?}");
            assert!(!why.to_string().is_empty());
        }
    }

    #[test]
    fn batches_go_on_while_the_longest_one_still_fits_before_the_release() {
        let d = Deadline { ends_at: NOW.plus(Duration::from_millis(3000)), distrust: None };
        let margin = Duration::from_millis(300);
        // The last write may begin at 3000 − 200 − 300 = 2500 ms.
        let mut pace = Pace::default();
        assert!(pace.another_batch(&d, NOW, &lease(), margin), "the first batch is begun while time is left");
        assert_eq!(pace.budget(&d, NOW, &lease(), margin), Duration::from_millis(2500));
        pace.record(Duration::from_millis(400));
        pace.record(Duration::from_millis(900));
        pace.record(Duration::from_millis(100));
        assert_eq!(pace, Pace { longest_ms: Some(900), batches: 3 });
        assert!(pace.another_batch(&d, NOW.plus(Duration::from_millis(1600)), &lease(), margin));
        assert!(!pace.another_batch(&d, NOW.plus(Duration::from_millis(1601)), &lease(), margin));
        assert!(!Pace::default().another_batch(&d, NOW.plus(Duration::from_millis(2500)), &lease(), margin));
        assert_eq!(pace.budget(&d, NOW.plus(Duration::from_millis(2600)), &lease(), margin), Duration::ZERO);
    }
}
