//! Leases with fencing. A lease lives inside the document it guards, so
//! claiming is a compare-and-swap on that document, and the CAS itself fences
//! every earlier holder: their cached version is stale, their next write fails.

use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::id::WorkerId;
use crate::time::{duration_ms, Timestamp};

/// The longest lease ttl accepted: a batch that runs longer keeps its lease
/// with heartbeats, and a lease of years would outlive every reader's
/// patience (and overflow their clocks).
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Timing rules for leases. Core never reads a clock; these say how far to
/// trust a timestamp taken on another machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeaseConfig {
    /// How long a claim or a write keeps the lease.
    #[serde(with = "duration_ms", rename = "ttl_ms")]
    pub ttl: Duration,
    /// A heartbeat is due when nothing was written for this long.
    #[serde(with = "duration_ms", rename = "heartbeat_interval_ms")]
    pub heartbeat_interval: Duration,
    /// Others treat a lease as expired only this long after `expires_at`.
    #[serde(with = "duration_ms", rename = "skew_allowance_ms")]
    pub skew_allowance: Duration,
    /// The holder trusts its lease only until `expires_at - safety_margin`.
    #[serde(with = "duration_ms", rename = "safety_margin_ms")]
    pub safety_margin: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            skew_allowance: Duration::from_secs(2),
            safety_margin: Duration::from_secs(2),
        }
    }
}

impl LeaseConfig {
    /// These settings for a claim that asks for its own `ttl` (`oxiflow
    /// claim --ttl`, Python's `claim(ttl=)`): the heartbeat interval scales
    /// with the ttl and stays within the trusted time. The safety margin
    /// stays (later writers apply the configured one), so `None` when the
    /// ttl does not exceed it: no write could ever be trusted under it.
    pub fn with_ttl(&self, ttl: Duration) -> Option<LeaseConfig> {
        let room = ttl.checked_sub(self.safety_margin).filter(|room| !room.is_zero())?;
        let scaled = match self.ttl.is_zero() {
            true => self.heartbeat_interval,
            false => self.heartbeat_interval.mul_f64(ttl.as_secs_f64() / self.ttl.as_secs_f64()),
        };
        Some(LeaseConfig { ttl, heartbeat_interval: scaled.min(room / 2).max(Duration::from_millis(1)), ..*self })
    }

    /// Rejects settings under which a holder could not keep its lease.
    pub fn validate(&self) -> Result<(), Error> {
        if self.ttl.is_zero() {
            return Err(Error::invalid("lease ttl must be positive"));
        }
        if self.ttl > MAX_LEASE_TTL {
            return Err(Error::invalid("lease ttl must be at most 24h (a longer batch keeps its lease with heartbeats)"));
        }
        if self.safety_margin >= self.ttl {
            return Err(Error::invalid("lease safety margin must be shorter than the ttl"));
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.ttl.saturating_sub(self.safety_margin) {
            return Err(Error::invalid("heartbeat interval must be positive and shorter than ttl minus the safety margin"));
        }
        Ok(())
    }
}

/// A request, written by another process, that the holder release and stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// Who asked.
    pub requested_by: WorkerId,
    /// When, by the asker's clock.
    pub requested_at: Timestamp,
}

/// The lease stored in a document. It stays after release (with
/// `released_at` set) so the epoch only ever grows and a holder can
/// recognise its own last write after a lost response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// Who holds the lease (or last held it, once released).
    pub worker_id: WorkerId,
    /// Fencing token: every claim or takeover adds one.
    pub epoch: u64,
    /// When this holder claimed it.
    pub acquired_at: Timestamp,
    /// Until when it is held; each holder write pushes it on.
    pub expires_at: Timestamp,
    /// When the holder let go; `None` while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<Timestamp>,
    /// Id of the holder's last landed write (caller-chosen random number).
    /// A retry that finds its own id here knows the write landed.
    pub last_write: u64,
    /// Someone asked the holder to release and stop; its next write does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_requested: Option<StopRequest>,
    /// The ttl the claim asked for: each holder write extends the lease by
    /// it, so a long claim stays long whoever's config later writes. Absent
    /// in older documents, where the writer's configured ttl applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Who held the lease before this claim, and before that, with their
    /// last writes, newest first (at most [`PREVIOUS_HOLDERS`]): a holder
    /// whose write landed (response lost) just before someone else claimed —
    /// or before several claims — finds it here and knows it landed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<Holder>,
}

impl Lease {
    /// Not let go by its holder (it may still have expired: see
    /// [`Lease::is_live`]).
    pub fn is_open(&self) -> bool {
        self.released_at.is_none()
    }

    /// Held and not claimable by others at `now`: open, and not past
    /// `expires_at + skew_allowance`.
    pub fn is_live(&self, now: Timestamp, config: &LeaseConfig) -> bool {
        matches!(LeaseStatus::of(Some(self), now, config), LeaseStatus::Held { .. })
    }
}

/// Earlier holders a lease remembers. A holder whose write's outcome is
/// unknown learns it as long as fewer than this many claims came after it.
pub const PREVIOUS_HOLDERS: usize = 8;

/// How a lease looks to someone who does not hold it, at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LeaseStatus {
    /// Never claimed.
    Free,
    /// Released by its holder.
    Released,
    /// Held, and not yet claimable.
    Held {
        /// When it runs out unless renewed.
        expires_at: Timestamp,
    },
    /// Past `expires_at + skew_allowance`: anyone may take it over.
    Expired {
        /// The lease's `expires_at`.
        expired_at: Timestamp,
    },
}

impl LeaseStatus {
    /// How `lease` (`None`: never claimed) looks at `now`.
    pub fn of(lease: Option<&Lease>, now: Timestamp, config: &LeaseConfig) -> Self {
        match lease {
            None => LeaseStatus::Free,
            Some(l) if l.released_at.is_some() => LeaseStatus::Released,
            Some(l) if now > l.expires_at.plus(config.skew_allowance) => LeaseStatus::Expired { expired_at: l.expires_at },
            Some(l) => LeaseStatus::Held { expires_at: l.expires_at },
        }
    }

    /// Anyone may claim it now: free, released or expired.
    pub fn is_claimable(self) -> bool {
        !matches!(self, LeaseStatus::Held { .. })
    }
}

/// The identity a holder writes under: who, at which epoch, after which of
/// its own writes. Returned by a successful claim; advanced by each write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Who holds the lease.
    pub worker_id: WorkerId,
    /// The epoch its claim got.
    pub epoch: u64,
    /// The write id of its last landed write.
    pub last_write: u64,
}

impl Holder {
    /// The holder identity recorded in `lease`.
    pub fn of(lease: &Lease) -> Self {
        Holder { worker_id: lease.worker_id.clone(), epoch: lease.epoch, last_write: lease.last_write }
    }

    /// True while the holder may act on its lease by its own clock: until
    /// `expires_at - safety_margin`. Never act outside the store (emit
    /// output, call an API) on a lease this says is no longer valid.
    pub fn trusts(lease: &Lease, now: Timestamp, config: &LeaseConfig) -> bool {
        lease.is_open() && now < lease.expires_at.minus(config.safety_margin)
    }
}

/// Outcome of checking a holder's write against the stored lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HolderCheck {
    /// The stored lease is the holder's, at the holder's last write: go on.
    Current,
    /// The stored lease already carries this write: it landed earlier.
    Landed,
}

/// Checks that `holder` may write `write_id` over the stored `lease`.
pub(crate) fn check_holder(key: &str, lease: Option<&Lease>, holder: &Holder, write_id: u64) -> Result<HolderCheck, Error> {
    let fenced = |current: Option<&Lease>, landed: bool| Error::Fenced {
        key: key.into(),
        worker_id: holder.worker_id.clone(),
        epoch: holder.epoch,
        holder: current.filter(|l| l.is_open()).map(|l| l.worker_id.clone()),
        landed,
    };
    let Some(l) = lease.filter(|l| l.worker_id == holder.worker_id && l.epoch == holder.epoch) else {
        // Our write may have landed just before someone else claimed.
        let ours_then_replaced = Holder { last_write: write_id, ..holder.clone() };
        let landed = lease.is_some_and(|l| l.previous.contains(&ours_then_replaced));
        return Err(fenced(lease, landed));
    };
    if l.last_write == write_id {
        return Ok(HolderCheck::Landed);
    }
    if l.released_at.is_some() {
        return Err(fenced(None, false));
    }
    if l.last_write != holder.last_write {
        return Err(Error::Conflict {
            key: key.into(),
            reason: alloc::format!(
                "another process wrote under worker {} epoch {}; a worker id must not be shared by processes running at once",
                holder.worker_id,
                holder.epoch
            ),
        });
    }
    Ok(HolderCheck::Current)
}

/// Refuses a holder's write once its lease is past its trusted time
/// (`expires_at - safety_margin` by the writer's clock): others may treat it
/// as expired soon, and an operator may already have acted on that.
pub(crate) fn ensure_trusted(key: &str, lease: Option<&Lease>, now: Timestamp, config: &LeaseConfig) -> Result<(), Error> {
    match lease {
        Some(l) if !Holder::trusts(l, now, config) => Err(Error::Expired {
            key: key.into(),
            worker_id: l.worker_id.clone(),
            epoch: l.epoch,
            trusted_until: l.expires_at.minus(config.safety_margin),
        }),
        _ => Ok(()),
    }
}

/// `expires_at` for a holder with a hard deadline: never past it.
pub(crate) fn capped(expires_at: Timestamp, deadline: Option<Timestamp>) -> Timestamp {
    deadline.map_or(expires_at, |d| expires_at.min(d))
}

/// Takes the lease for `worker_id` if it is claimable at `now`, with epoch
/// one past the stored one. A worker may re-claim its own valid lease (a
/// restarted process): that too bumps the epoch and fences the old process.
pub(crate) fn take(
    key: &str,
    lease: &mut Option<Lease>,
    worker_id: &WorkerId,
    write_id: u64,
    now: Timestamp,
    config: &LeaseConfig,
    deadline: Option<Timestamp>,
) -> Result<(), Error> {
    let status = LeaseStatus::of(lease.as_ref(), now, config);
    if let (LeaseStatus::Held { expires_at }, Some(l)) = (status, lease.as_ref()) {
        if &l.worker_id != worker_id {
            return Err(Error::LeaseHeld { key: key.into(), holder: l.worker_id.clone(), epoch: l.epoch, expires_at });
        }
    }
    let epoch = lease.as_ref().map_or(0, |l| l.epoch) + 1;
    let previous: Vec<Holder> = match lease.as_ref() {
        Some(l) => core::iter::once(Holder::of(l)).chain(l.previous.iter().cloned()).take(PREVIOUS_HOLDERS).collect(),
        None => Vec::new(),
    };
    *lease = Some(Lease {
        worker_id: worker_id.clone(),
        epoch,
        acquired_at: now,
        expires_at: capped(now.plus(config.ttl), deadline),
        released_at: None,
        last_write: write_id,
        stop_requested: None,
        ttl_ms: Some(u64::try_from(config.ttl.as_millis()).unwrap_or(u64::MAX)),
        previous,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> WorkerId {
        WorkerId::new(s).unwrap()
    }

    fn cfg() -> LeaseConfig {
        LeaseConfig {
            ttl: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(300),
            skew_allowance: Duration::from_millis(100),
            safety_margin: Duration::from_millis(100),
        }
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn a_claims_own_ttl_scales_the_heartbeat_and_keeps_the_margin() {
        let c = cfg(); // ttl 1000, heartbeat 300, margin 100
        let long = c.with_ttl(Duration::from_millis(4000)).unwrap();
        assert_eq!(
            (long.ttl, long.heartbeat_interval, long.safety_margin),
            (Duration::from_millis(4000), Duration::from_millis(1200), c.safety_margin)
        );
        let short = c.with_ttl(Duration::from_millis(300)).unwrap();
        assert_eq!(short.heartbeat_interval, Duration::from_millis(90), "scaled, and within half the trusted time");
        assert!(short.validate().is_ok() && long.validate().is_ok());
        assert_eq!(c.with_ttl(c.safety_margin), None, "never trusted");
    }

    #[test]
    fn status_moves_from_free_to_held_to_expired_only_after_skew() {
        let c = cfg();
        let mut lease = None;
        assert_eq!(LeaseStatus::of(lease.as_ref(), at(0), &c), LeaseStatus::Free);
        take("k", &mut lease, &w("a"), 1, at(0), &c, None).unwrap();
        assert_eq!(LeaseStatus::of(lease.as_ref(), at(1000), &c), LeaseStatus::Held { expires_at: at(1000) });
        assert_eq!(LeaseStatus::of(lease.as_ref(), at(1100), &c), LeaseStatus::Held { expires_at: at(1000) });
        assert_eq!(LeaseStatus::of(lease.as_ref(), at(1101), &c), LeaseStatus::Expired { expired_at: at(1000) });
    }

    #[test]
    fn holder_stops_trusting_before_others_may_take_over() {
        let c = cfg();
        let mut lease = None;
        take("k", &mut lease, &w("a"), 1, at(0), &c, None).unwrap();
        let l = lease.as_ref().unwrap();
        assert!(Holder::trusts(l, at(899), &c));
        assert!(!Holder::trusts(l, at(900), &c));
        // The gap between the holder's last trusted instant and the first
        // takeover instant is safety_margin + skew_allowance.
        assert!(!LeaseStatus::of(Some(l), at(1100), &c).is_claimable());
    }

    #[test]
    fn held_lease_refuses_others_with_holder_and_expiry() {
        let c = cfg();
        let mut lease = None;
        take("k", &mut lease, &w("a"), 1, at(0), &c, None).unwrap();
        let err = take("k", &mut lease, &w("b"), 2, at(500), &c, None).unwrap_err();
        assert_eq!(err, Error::LeaseHeld { key: "k".into(), holder: w("a"), epoch: 1, expires_at: at(1000) });
    }

    #[test]
    fn takeover_after_expiry_bumps_epoch() {
        let c = cfg();
        let mut lease = None;
        take("k", &mut lease, &w("a"), 1, at(0), &c, None).unwrap();
        take("k", &mut lease, &w("b"), 2, at(1101), &c, None).unwrap();
        let l = lease.unwrap();
        assert_eq!((l.worker_id, l.epoch, l.expires_at), (w("b"), 2, at(2101)));
    }

    #[test]
    fn released_lease_is_claimable_at_once_and_keeps_its_epoch() {
        let c = cfg();
        let mut lease = None;
        take("k", &mut lease, &w("a"), 1, at(0), &c, None).unwrap();
        lease.as_mut().unwrap().released_at = Some(at(10));
        assert_eq!(LeaseStatus::of(lease.as_ref(), at(11), &c), LeaseStatus::Released);
        take("k", &mut lease, &w("b"), 2, at(11), &c, None).unwrap();
        assert_eq!(lease.unwrap().epoch, 2);
    }

    #[test]
    fn same_worker_reclaim_fences_its_older_process() {
        let c = cfg();
        let mut lease = None;
        take("k", &mut lease, &w("a"), 1, at(0), &c, None).unwrap();
        let old = Holder::of(lease.as_ref().unwrap());
        take("k", &mut lease, &w("a"), 2, at(10), &c, None).unwrap();
        assert!(matches!(check_holder("k", lease.as_ref(), &old, 3), Err(Error::Fenced { .. })));
    }

    #[test]
    fn holder_check_recognises_current_landed_fenced_and_shared() {
        let c = cfg();
        let mut lease = None;
        take("k", &mut lease, &w("a"), 7, at(0), &c, None).unwrap();
        let h = Holder::of(lease.as_ref().unwrap());
        assert_eq!(check_holder("k", lease.as_ref(), &h, 8), Ok(HolderCheck::Current));
        lease.as_mut().unwrap().last_write = 8;
        assert_eq!(check_holder("k", lease.as_ref(), &h, 8), Ok(HolderCheck::Landed));
        lease.as_mut().unwrap().last_write = 9;
        assert!(matches!(check_holder("k", lease.as_ref(), &h, 8), Err(Error::Conflict { .. })));
        lease.as_mut().unwrap().released_at = Some(at(5));
        assert!(matches!(check_holder("k", lease.as_ref(), &h, 8), Err(Error::Fenced { holder: None, landed: false, .. })));
        assert!(matches!(check_holder("k", None, &h, 8), Err(Error::Fenced { .. })));
    }

    #[test]
    fn a_landed_release_is_recognised_after_someone_else_claimed() {
        let c = cfg();
        let mut lease = None;
        take("k", &mut lease, &w("a"), 7, at(0), &c, None).unwrap();
        let a = Holder::of(lease.as_ref().unwrap());
        // a's release (write 8) lands; its response is lost; b claims.
        let l = lease.as_mut().unwrap();
        l.last_write = 8;
        l.released_at = Some(at(5));
        take("k", &mut lease, &w("b"), 9, at(6), &c, None).unwrap();
        assert!(
            matches!(check_holder("k", lease.as_ref(), &a, 8), Err(Error::Fenced { landed: true, .. })),
            "fenced, but a's write 8 landed"
        );
        assert!(matches!(check_holder("k", lease.as_ref(), &a, 10), Err(Error::Fenced { landed: false, .. })), "a's other writes did not");
    }

    #[test]
    fn config_validation_names_the_problem() {
        let mut c = cfg();
        assert!(c.validate().is_ok());
        c.safety_margin = c.ttl;
        assert!(c.validate().unwrap_err().to_string().contains("safety margin"));
        c = cfg();
        c.heartbeat_interval = Duration::from_millis(950);
        assert!(c.validate().unwrap_err().to_string().contains("heartbeat"));
        let years = LeaseConfig::default().with_ttl(Duration::from_secs(9_999_999_999 * 86_400)).unwrap();
        assert!(years.validate().unwrap_err().to_string().contains("at most 24h"));
        assert!(LeaseConfig::default().with_ttl(MAX_LEASE_TTL).unwrap().validate().is_ok());
    }
}
