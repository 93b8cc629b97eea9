//! The step state machine: every legal transition of a partition's status,
//! and a typed error for each illegal one.
//!
//! ```text
//!            claim                complete
//! Pending ──────────▶ Running ───────────▶ Completed
//!    ▲  ▲              │  ▲ │ fail
//!    │  └── release ───┘  │ └──────▶ Failed ──claim (retryable)──▶ Running
//!    │                    └ claim (takeover of an expired lease)
//!    └── resume ── Paused ◀── pause (Pending, Failed, or Running with no valid lease)
//! new run: any status ──▶ Pending, counters reset, bookmark kept
//! ```

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::doc::{check_extra, check_len, ErrorRecord, Limits, PartitionDoc, StatusKind, StepStatus};
use crate::error::Error;
use crate::id::{RunId, WorkerId};
use crate::time::Timestamp;

/// Progress a holder reports in one checkpoint. Counters are deltas, so a
/// checkpoint re-applied after a conflict adds exactly once; the bookmark and
/// batch number are absolute and may not go backwards.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// The new bookmark: where to resume after this checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_processed_id: Option<String>,
    /// When the bookmark moved; by default the writer's `now`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_processed_at: Option<Timestamp>,
    /// The holder's batch counter, absolute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_number: Option<u64>,
    /// Records processed since the last checkpoint.
    pub add_records: u64,
    /// Records that failed since the last checkpoint.
    pub add_failed: u64,
    /// Bytes processed since the last checkpoint.
    pub add_bytes: u64,
    /// Processing time since the last checkpoint.
    pub add_processing_ms: u64,
    /// Merged into the document's `extra` map; an empty value removes the key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
    /// Non-fatal errors to record in the error ring.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl Progress {
    /// Reports nothing: a write carrying it is a heartbeat.
    pub fn is_empty(&self) -> bool {
        *self == Progress::default()
    }
}

/// How a holder's work on a partition ends, if it ends with this write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// Give the partition back unfinished: Running → Pending, bookmark kept.
    Release,
    /// Running → Completed.
    Complete,
    /// Running → Failed; `retryable` lets a later claim try again.
    Fail {
        /// What went wrong, for the status and the error ring.
        error: String,
        /// Whether a later claim may try again.
        retryable: bool,
    },
}

/// What was asked of a step, for the refusal's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepAction {
    /// Claim or take over.
    Claim,
    /// A checkpoint's progress.
    RecordProgress,
    /// Give back unfinished.
    Release,
    /// Finish successfully.
    Complete,
    /// Finish with an error.
    Fail,
    /// An operator's pause.
    Pause,
    /// An operator's resume.
    Resume,
}

impl core::fmt::Display for StepAction {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            StepAction::Claim => "claim",
            StepAction::RecordProgress => "record progress on",
            StepAction::Release => "release",
            StepAction::Complete => "complete",
            StepAction::Fail => "fail",
            StepAction::Pause => "pause",
            StepAction::Resume => "resume",
        })
    }
}

fn transition_error(from: StatusKind, action: StepAction) -> Error {
    let hint = match (from, action) {
        (StatusKind::Completed, StepAction::Claim) => "it completed in this run; start a new run to process it again",
        (StatusKind::Failed, StepAction::Claim) => "it failed with a non-retryable error; reset it or start a new run",
        (StatusKind::Paused, _) => "it is paused; resume it first",
        (StatusKind::Completed, _) => "it already completed in this run",
        (_, StepAction::Resume) => "only a paused step can be resumed",
        _ => "claim the step first",
    };
    Error::InvalidTransition { from, action, hint }
}

/// The largest batch number or counter a document holds: 2^53 − 1, the
/// largest integer every runtime (JavaScript's numbers among them) reads
/// exactly.
pub const MAX_COUNTER: u64 = (1 << 53) - 1;

fn add(field: &'static str, current: u64, delta: u64) -> Result<u64, Error> {
    current.checked_add(delta).filter(|sum| *sum <= MAX_COUNTER).ok_or_else(|| over_max(field))
}

fn over_max(field: &str) -> Error {
    Error::invalid(alloc::format!("{field} would pass {MAX_COUNTER} (2^53 - 1, the largest number every runtime reads exactly)"))
}

impl PartitionDoc {
    /// Claim (or takeover): Pending, Running (an expired holder's), or a
    /// retryable Failed → Running.
    pub fn start(&mut self, now: Timestamp) -> Result<(), Error> {
        match &self.status {
            StepStatus::Pending | StepStatus::Running { .. } | StepStatus::Failed { retryable: true, .. } => {
                self.status = StepStatus::Running { started_at: now };
                self.attempts = self.attempts.saturating_add(1);
                Ok(())
            }
            other => Err(transition_error(other.kind(), StepAction::Claim)),
        }
    }

    /// Applies one checkpoint's progress. Only a Running partition records
    /// progress; nothing changes unless all of it is valid.
    pub fn record(&mut self, p: &Progress, worker: &WorkerId, now: Timestamp, limits: &Limits) -> Result<(), Error> {
        if !matches!(self.status, StepStatus::Running { .. }) {
            return Err(transition_error(self.status.kind(), StepAction::RecordProgress));
        }
        if let Some(b) = p.batch_number {
            if b > MAX_COUNTER {
                return Err(over_max("batch_number"));
            }
            if b < self.batch_number {
                return Err(Error::CounterRegression { field: "batch_number", current: self.batch_number.into(), proposed: b.into() });
            }
        }
        if let (Some(new), Some(old)) = (p.last_processed_at, self.last_processed_at) {
            if new < old {
                return Err(Error::CounterRegression {
                    field: "last_processed_at",
                    current: old.as_millis().into(),
                    proposed: new.as_millis().into(),
                });
            }
        }
        if let Some(id) = &p.last_processed_id {
            check_len("last_processed_id", id, limits.max_bookmark_bytes).map_err(Error::invalid)?;
        }
        let records = add("records_processed", self.records_processed, p.add_records)?;
        let failed = add("records_failed", self.records_failed, p.add_failed)?;
        let bytes = add("bytes_processed", self.bytes_processed, p.add_bytes)?;
        let time = add("processing_time_ms", self.processing_time_ms, p.add_processing_ms)?;
        let mut extra = self.extra.clone();
        for (k, v) in &p.extra {
            if v.is_empty() {
                extra.remove(k);
            } else {
                extra.insert(k.clone(), v.clone());
            }
        }
        check_extra(&extra, limits).map_err(Error::invalid)?;

        self.records_processed = records;
        self.records_failed = failed;
        self.bytes_processed = bytes;
        self.processing_time_ms = time;
        self.extra = extra;
        if let Some(b) = p.batch_number {
            self.batch_number = b;
        }
        let moved = p.last_processed_id.is_some() && p.last_processed_id != self.last_processed_id;
        if p.last_processed_id.is_some() {
            self.last_processed_id.clone_from(&p.last_processed_id);
        }
        if p.last_processed_at.is_some() {
            self.last_processed_at = p.last_processed_at;
        } else if moved {
            // When the bookmark moved, by the writer's clock (never backwards).
            self.last_processed_at = Some(self.last_processed_at.map_or(now, |t| t.max(now)));
        }
        for message in &p.errors {
            self.push_error(message, false, worker, now, limits);
        }
        self.worker_id = Some(worker.clone());
        // Any write by the holder shows it alive.
        self.last_heartbeat = Some(now);
        Ok(())
    }

    /// Ends the holder's work: release, complete or fail.
    pub fn finish(&mut self, finish: &Finish, worker: &WorkerId, now: Timestamp, limits: &Limits) -> Result<(), Error> {
        let action = match finish {
            Finish::Release => StepAction::Release,
            Finish::Complete => StepAction::Complete,
            Finish::Fail { .. } => StepAction::Fail,
        };
        if !matches!(self.status, StepStatus::Running { .. }) {
            return Err(transition_error(self.status.kind(), action));
        }
        self.status = match finish {
            Finish::Release => StepStatus::Pending,
            Finish::Complete => StepStatus::Completed { completed_at: now },
            Finish::Fail { error, retryable } => {
                let error = truncate(error, limits.max_error_message_bytes);
                self.push_error(&error, *retryable, worker, now, limits);
                self.failures = self.failures.saturating_add(1);
                StepStatus::Failed { error, failed_at: now, retryable: *retryable }
            }
        };
        Ok(())
    }

    /// Pending, Failed, or an abandoned Running → Paused. Idempotent.
    /// The caller checks that no valid lease is held.
    pub fn pause(&mut self) -> Result<bool, Error> {
        match self.status {
            StepStatus::Paused => Ok(false),
            StepStatus::Completed { .. } => Err(transition_error(StatusKind::Completed, StepAction::Pause)),
            _ => {
                self.status = StepStatus::Paused;
                Ok(true)
            }
        }
    }

    /// Paused → Pending. Idempotent: resuming a Pending step changes nothing.
    pub fn resume(&mut self) -> Result<bool, Error> {
        match self.status {
            StepStatus::Paused => {
                self.status = StepStatus::Pending;
                Ok(true)
            }
            StepStatus::Pending => Ok(false),
            ref other => Err(transition_error(other.kind(), StepAction::Resume)),
        }
    }

    /// Starts run `run_id`: status Pending, this run's counters zeroed; the
    /// bookmark, batch number, errors and extra stay. Idempotent per run id.
    pub fn new_run(&mut self, run_id: &RunId) -> bool {
        if &self.run_id == run_id {
            return false;
        }
        self.run_id = run_id.clone();
        self.reset();
        true
    }

    /// Pending again in the same run, this run's counters zeroed; the
    /// bookmark stays. Returns whether anything changed.
    pub fn reset(&mut self) -> bool {
        let before = (
            self.status.clone(),
            self.records_processed,
            self.records_failed,
            self.bytes_processed,
            self.processing_time_ms,
            self.attempts,
            self.failures,
        );
        self.status = StepStatus::Pending;
        self.records_processed = 0;
        self.records_failed = 0;
        self.bytes_processed = 0;
        self.processing_time_ms = 0;
        self.attempts = 0;
        self.failures = 0;
        before != (StepStatus::Pending, 0, 0, 0, 0, 0, 0)
    }

    fn push_error(&mut self, message: &str, retryable: bool, worker: &WorkerId, now: Timestamp, limits: &Limits) {
        let record = ErrorRecord {
            at: now,
            worker_id: Some(worker.clone()),
            batch_number: self.batch_number,
            message: truncate(message, limits.max_error_message_bytes),
            retryable,
        };
        self.errors.push(record, limits.errors_keep_last);
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{PartitionId, PipelineId, StepId};

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }
    fn w() -> WorkerId {
        WorkerId::new("w1").unwrap()
    }
    fn doc() -> PartitionDoc {
        PartitionDoc::new(PipelineId::new("p").unwrap(), PartitionId::step(StepId::new("s").unwrap()), RunId::new("r1").unwrap(), at(0))
    }
    fn status(kind: StatusKind) -> StepStatus {
        match kind {
            StatusKind::Pending => StepStatus::Pending,
            StatusKind::Running => StepStatus::Running { started_at: at(1) },
            StatusKind::Completed => StepStatus::Completed { completed_at: at(1) },
            StatusKind::Failed => StepStatus::Failed { error: "x".into(), failed_at: at(1), retryable: false },
            StatusKind::Paused => StepStatus::Paused,
        }
    }
    const ALL: [StatusKind; 5] = [StatusKind::Pending, StatusKind::Running, StatusKind::Completed, StatusKind::Failed, StatusKind::Paused];

    /// The whole transition table, checked cell by cell: (from, action) → to or error.
    #[test]
    fn transition_table() {
        use StatusKind::*;
        let limits = Limits::default();
        type Act = fn(&mut PartitionDoc) -> Result<(), Error>;
        let actions: [(&str, Act); 7] = [
            ("claim", |d| d.start(at(5))),
            ("progress", |d| d.record(&Progress { add_records: 1, ..Progress::default() }, &w(), at(5), &Limits::default())),
            ("release", |d| d.finish(&Finish::Release, &w(), at(5), &Limits::default())),
            ("complete", |d| d.finish(&Finish::Complete, &w(), at(5), &Limits::default())),
            ("fail", |d| d.finish(&Finish::Fail { error: "boom".into(), retryable: true }, &w(), at(5), &Limits::default())),
            ("pause", |d| d.pause().map(drop)),
            ("resume", |d| d.resume().map(drop)),
        ];
        // Expected resulting status per (from, action); None = typed error.
        let expect = |from: StatusKind, action: &str| -> Option<StatusKind> {
            match (from, action) {
                (Pending | Running, "claim") => Some(Running),
                (Failed, "claim") => None, // non-retryable in this table; retryable tested below
                (Running, "progress") => Some(Running),
                (Running, "release") => Some(Pending),
                (Running, "complete") => Some(Completed),
                (Running, "fail") => Some(Failed),
                (Pending | Running | Failed | Paused, "pause") => Some(Paused),
                (Paused | Pending, "resume") => Some(Pending),
                _ => None,
            }
        };
        let _ = &limits;
        let mut cells = 0;
        for from in ALL {
            for (name, act) in actions {
                let mut d = doc();
                d.status = status(from);
                let before = d.clone();
                let result = act(&mut d);
                match expect(from, name) {
                    Some(to) => {
                        assert!(result.is_ok(), "{from} --{name}--> expected {to}, got {result:?}");
                        assert_eq!(d.status.kind(), to, "{from} --{name}-->");
                    }
                    None => {
                        let err = result.expect_err(&alloc::format!("{from} --{name}--> must be refused"));
                        assert!(matches!(err, Error::InvalidTransition { from: f, .. } if f == from), "{err:?}");
                        assert_eq!(d, before, "a refused transition changes nothing");
                    }
                }
                cells += 1;
            }
        }
        assert_eq!(cells, 35);
    }

    #[test]
    fn completed_cannot_run_again_without_a_new_run() {
        let mut d = doc();
        d.status = status(StatusKind::Completed);
        let err = d.start(at(2)).unwrap_err();
        assert!(err.to_string().contains("start a new run"), "{err}");
        assert!(d.new_run(&RunId::new("r2").unwrap()));
        d.start(at(3)).unwrap();
        assert_eq!(d.status, StepStatus::Running { started_at: at(3) });
    }

    #[test]
    fn retryable_failure_can_be_claimed_again() {
        let mut d = doc();
        d.start(at(1)).unwrap();
        d.finish(&Finish::Fail { error: "timeout".into(), retryable: true }, &w(), at(2), &Limits::default()).unwrap();
        d.start(at(3)).unwrap();
        assert_eq!(d.attempts, 2);
        assert_eq!(d.errors.total, 1);
        assert!(d.errors.recent[0].retryable);
    }

    #[test]
    fn new_run_resets_status_and_counters_but_keeps_the_bookmark() {
        let mut d = doc();
        d.start(at(1)).unwrap();
        let p = Progress {
            last_processed_id: Some("id-42".into()),
            batch_number: Some(7),
            add_records: 10,
            add_bytes: 99,
            ..Progress::default()
        };
        d.record(&p, &w(), at(2), &Limits::default()).unwrap();
        d.finish(&Finish::Complete, &w(), at(3), &Limits::default()).unwrap();
        assert!(d.new_run(&RunId::new("r2").unwrap()));
        assert_eq!(d.status, StepStatus::Pending);
        assert_eq!((d.records_processed, d.bytes_processed, d.attempts), (0, 0, 0));
        assert_eq!(d.last_processed_id.as_deref(), Some("id-42"));
        assert_eq!(d.batch_number, 7);
        assert!(!d.new_run(&RunId::new("r2").unwrap()), "same run id twice is a no-op");
    }

    #[test]
    fn last_processed_at_follows_the_bookmark() {
        let mut d = doc();
        d.start(at(1)).unwrap();
        d.record(&Progress { add_records: 1, ..Progress::default() }, &w(), at(2), &Limits::default()).unwrap();
        assert_eq!(d.last_processed_at, None, "no bookmark, no time");
        d.record(&Progress { last_processed_id: Some("a".into()), ..Progress::default() }, &w(), at(3), &Limits::default()).unwrap();
        assert_eq!(d.last_processed_at, Some(at(3)));
        d.record(&Progress { last_processed_id: Some("a".into()), ..Progress::default() }, &w(), at(4), &Limits::default()).unwrap();
        assert_eq!(d.last_processed_at, Some(at(3)), "the same bookmark did not move");
        d.record(&Progress { last_processed_id: Some("b".into()), ..Progress::default() }, &w(), at(5), &Limits::default()).unwrap();
        assert_eq!(d.last_processed_at, Some(at(5)));
    }

    #[test]
    fn reset_keeps_run_and_bookmark_and_is_idempotent() {
        let mut d = doc();
        d.start(at(1)).unwrap();
        d.record(&Progress { last_processed_id: Some("x".into()), add_records: 3, ..Progress::default() }, &w(), at(2), &Limits::default())
            .unwrap();
        assert!(d.reset());
        assert_eq!((d.status.clone(), d.records_processed, d.attempts, d.run_id.as_str()), (StepStatus::Pending, 0, 0, "r1"));
        assert_eq!(d.last_processed_id.as_deref(), Some("x"));
        assert!(!d.reset(), "a second reset changes nothing");
    }

    #[test]
    fn counters_may_not_go_backwards_and_nothing_changes_on_refusal() {
        let mut d = doc();
        d.start(at(1)).unwrap();
        d.record(
            &Progress { batch_number: Some(5), last_processed_at: Some(at(100)), ..Progress::default() },
            &w(),
            at(2),
            &Limits::default(),
        )
        .unwrap();
        let before = d.clone();
        let err = d
            .record(&Progress { batch_number: Some(4), add_records: 3, ..Progress::default() }, &w(), at(3), &Limits::default())
            .unwrap_err();
        assert_eq!(err, Error::CounterRegression { field: "batch_number", current: 5, proposed: 4 });
        let err =
            d.record(&Progress { last_processed_at: Some(at(99)), ..Progress::default() }, &w(), at(3), &Limits::default()).unwrap_err();
        assert!(matches!(err, Error::CounterRegression { field: "last_processed_at", .. }));
        d.records_processed = MAX_COUNTER;
        let before_overflow = d.clone();
        let err = d.record(&Progress { add_records: 1, ..Progress::default() }, &w(), at(3), &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("would pass 9007199254740991"), "{err}");
        let err = d.record(&Progress { batch_number: Some(u64::MAX), ..Progress::default() }, &w(), at(3), &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("batch_number would pass"), "{err}");
        assert_eq!(d, before_overflow);
        d.records_processed = 0;
        let mut max = d.clone();
        max.record(
            &Progress { batch_number: Some(MAX_COUNTER), add_records: MAX_COUNTER, ..Progress::default() },
            &w(),
            at(3),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!((max.batch_number, max.records_processed), (MAX_COUNTER, MAX_COUNTER));
        d.records_processed = u64::MAX;
        assert_ne!(d, before);
    }

    #[test]
    fn error_ring_keeps_last_n_and_counts_all() {
        let mut d = doc();
        d.start(at(1)).unwrap();
        let limits = Limits { errors_keep_last: 3, ..Limits::default() };
        for i in 0..5 {
            let p = Progress { errors: alloc::vec![alloc::format!("e{i}")], ..Progress::default() };
            d.record(&p, &w(), at(10 + i), &limits).unwrap();
        }
        assert_eq!(d.errors.total, 5);
        let kept: Vec<_> = d.errors.recent.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(kept, ["e2", "e3", "e4"]);
    }

    #[test]
    fn extra_is_merged_and_bounded() {
        let mut d = doc();
        d.start(at(1)).unwrap();
        let limits = Limits { max_extra_entries: 2, ..Limits::default() };
        let mut p = Progress::default();
        p.extra.insert("a".into(), "1".into());
        p.extra.insert("b".into(), "2".into());
        d.record(&p, &w(), at(2), &limits).unwrap();
        let mut p = Progress::default();
        p.extra.insert("c".into(), "3".into());
        let err = d.record(&p, &w(), at(3), &limits).unwrap_err();
        assert!(err.to_string().contains("extra has 3 entries"), "{err}");
        p.extra.insert("a".into(), String::new());
        d.record(&p, &w(), at(3), &limits).unwrap();
        assert_eq!(d.extra.keys().collect::<Vec<_>>(), ["b", "c"]);
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
