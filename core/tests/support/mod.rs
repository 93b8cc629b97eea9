//! What the two simulations share: the network's faults, the store's
//! versions, and one way of driving a claim and a holder session.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use oxiflow_core::{Action, Claim, Committed, Drive, LeaseConfig, PartitionDoc, Response, Session, Timestamp, Update, Version, Written};

/// What the network does with one delivery.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    None,
    /// The request never reaches the store.
    DropRequest,
    /// The store applies it, the response is lost.
    LoseResponse,
}

/// Short leases, so that virtual time reaches expiry and takeover quickly:
/// trust ends 100 ms before expiry, takeover starts 200 ms after it.
pub(crate) fn short_leases() -> LeaseConfig {
    LeaseConfig {
        ttl: Duration::from_millis(1_000),
        heartbeat_interval: Duration::from_millis(300),
        skew_allowance: Duration::from_millis(200),
        safety_margin: Duration::from_millis(100),
    }
}

/// The n-th version an in-test store hands out.
pub(crate) fn etag(n: u64) -> Version {
    Version { e_tag: Some(format!("\"{n}\"")), version: None }
}

/// What the claim driver or the session wants next. Lives for one step of
/// the harness, so its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum OpAction {
    Claim(Action<Committed<PartitionDoc>>),
    Write(Action<Written>),
}

/// The claim driver and the session, seen alike by the harness.
pub(crate) trait Driver {
    fn handle(&mut self, response: Response, now: Timestamp, random: u64) -> OpAction;
    fn wake(&mut self, now: Timestamp) -> OpAction;
}

impl Driver for Update<Claim<PartitionDoc>> {
    fn handle(&mut self, response: Response, now: Timestamp, random: u64) -> OpAction {
        OpAction::Claim(Drive::handle(self, response, now, random))
    }
    fn wake(&mut self, now: Timestamp) -> OpAction {
        OpAction::Claim(Drive::wake(self, now))
    }
}

impl Driver for Session {
    fn handle(&mut self, response: Response, now: Timestamp, random: u64) -> OpAction {
        OpAction::Write(Session::handle(self, response, now, random))
    }
    fn wake(&mut self, now: Timestamp) -> OpAction {
        OpAction::Write(Session::wake(self, now))
    }
}
