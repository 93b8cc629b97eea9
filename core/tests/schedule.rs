//! The scheduler, rule by rule: each [`Readiness`] variant and the rule that
//! yields it, barrier and aligned edges, fan-out and fan-in, failures that
//! block exactly their downstream, retry backoff up to `max_attempts`, the
//! asking worker's own leases, older runs, missing partitions, the spread of
//! the claimable list by the caller's randomness, and the derived status,
//! frontier and current step.

use std::collections::BTreeSet;
use std::time::Duration;

use oxiflow_core::schedule::NAMED_UPSTREAM;
use oxiflow_core::*;

const T0: i64 = 1_000_000;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn step(name: &str) -> StepId {
    StepId::new(name).unwrap()
}

fn worker(name: &str) -> WorkerId {
    WorkerId::new(name).unwrap()
}

fn pid(text: &str) -> PartitionId {
    PartitionId::parse(text).unwrap()
}

fn lease_config() -> LeaseConfig {
    LeaseConfig {
        ttl: Duration::from_millis(30_000),
        heartbeat_interval: Duration::from_millis(10_000),
        skew_allowance: Duration::from_millis(2_000),
        safety_margin: Duration::from_millis(2_000),
    }
}

fn policy() -> SchedulePolicy {
    SchedulePolicy { retry_base: Duration::from_millis(1_000), retry_max: Duration::from_millis(60_000), max_attempts: 4 }
}

/// A pipeline in run `r1` with `steps`.
fn pipeline(steps: Vec<StepPlan>) -> PipelineDoc {
    PipelineDoc::new(PipelineId::new("orders").unwrap(), RunId::new("r1").unwrap(), steps, at(0)).expect("a valid plan")
}

fn plain(name: &str) -> StepPlan {
    StepPlan::new(step(name), None)
}

fn sharded(name: &str, n: u32) -> StepPlan {
    StepPlan::new(step(name), Some(n))
}

fn barrier(name: &str) -> Dependency {
    Dependency::barrier(step(name))
}

fn aligned(name: &str) -> Dependency {
    Dependency::aligned(step(name))
}

/// A pending partition document of run `r1`, e.g. `doc("extract@2")`.
fn doc(id: &str) -> PartitionDoc {
    PartitionDoc::new(PipelineId::new("orders").unwrap(), pid(id), RunId::new("r1").unwrap(), at(0))
}

/// Every partition the plan expects, pending.
fn all_pending(p: &PipelineDoc) -> Vec<PartitionDoc> {
    p.steps.iter().flat_map(|s| s.partitions()).map(|id| doc(&id.to_string())).collect()
}

fn set(docs: &mut [PartitionDoc], id: &str, f: impl FnOnce(&mut PartitionDoc)) {
    let target = pid(id);
    let d = docs.iter_mut().find(|d| d.partition_id() == target).unwrap_or_else(|| panic!("no document {id}"));
    f(d);
}

fn completed(d: &mut PartitionDoc) {
    d.status = StepStatus::Completed { completed_at: at(T0 - 10) };
    d.attempts = 1;
}

/// Failed at `failed_at` after `failures` failed attempts (and as many claims).
fn failed(error: &str, retryable: bool, failures: u32, failed_at: i64) -> impl FnOnce(&mut PartitionDoc) {
    let error = error.to_string();
    move |d| {
        d.status = StepStatus::Failed { error, failed_at: at(failed_at), retryable };
        d.attempts = failures;
        d.failures = failures;
    }
}

/// Running, held by `who` until `expires_at`.
fn held(who: &str, expires_at: i64) -> impl FnOnce(&mut PartitionDoc) {
    let who = worker(who);
    move |d| {
        d.status = StepStatus::Running { started_at: at(expires_at - 30_000) };
        d.attempts += 1;
        d.lease = Some(Lease {
            worker_id: who,
            epoch: 1,
            acquired_at: at(expires_at - 30_000),
            expires_at: at(expires_at),
            released_at: None,
            last_write: 7,
            stop_requested: None,
            ttl_ms: Some(30_000),
            previous: Vec::new(),
        });
    }
}

fn run(p: &PipelineDoc, docs: &[PartitionDoc], now: i64, me: Option<&str>, random: u64) -> Schedule {
    let me = me.map(worker);
    schedule(p, docs, at(now), me.as_ref(), &lease_config(), &policy(), random)
}

fn readiness<'a>(s: &'a Schedule, id: &str) -> &'a Readiness {
    s.readiness(&pid(id)).unwrap_or_else(|| panic!("{id} is not in the schedule"))
}

fn claimable(s: &Schedule) -> Vec<String> {
    s.claimable.iter().map(ToString::to_string).collect()
}

fn claimable_set(s: &Schedule) -> BTreeSet<String> {
    claimable(s).into_iter().collect()
}

fn names(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn steps(ids: &[&str]) -> Vec<StepId> {
    ids.iter().map(|s| step(s)).collect()
}

fn waiting(on: &[&str]) -> Readiness {
    Readiness::Waiting { on: on.iter().map(|s| s.to_string()).collect(), count: on.len() }
}

fn blocked(by: &[&str]) -> Readiness {
    Readiness::Blocked { by: by.iter().map(|s| s.to_string()).collect(), count: by.len() }
}

const READY: Readiness = Readiness::Ready { takeover: false };

/// extract → transform → load, one partition each.
fn chain3() -> PipelineDoc {
    pipeline(vec![plain("extract"), plain("transform").after(barrier("extract")), plain("load").after(barrier("transform"))])
}

// ---------------------------------------------------------------- rules ----

#[test]
fn ready_when_nothing_holds_it_back_and_the_first_step_is_all_that_is_claimable() {
    let p = chain3();
    let docs = all_pending(&p);
    let s = run(&p, &docs, T0, Some("w1"), 1);
    assert_eq!(readiness(&s, "extract"), &READY);
    assert_eq!(readiness(&s, "transform"), &waiting(&["extract"]));
    assert_eq!(readiness(&s, "load"), &waiting(&["transform"]));
    assert_eq!(claimable(&s), ["extract"]);
    assert_eq!((s.status, s.current_step.clone(), s.frontier.clone()), (StatusKind::Pending, Some(step("extract")), steps(&["extract"])));
    assert!(!s.is_finished());
    assert!(!s.is_stalled(), "something is ready");
}

#[test]
fn completed_in_this_run_is_completed_and_releases_the_next_step() {
    let p = chain3();
    let mut docs = all_pending(&p);
    set(&mut docs, "extract", completed);
    let s = run(&p, &docs, T0, None, 1);
    assert_eq!(readiness(&s, "extract"), &Readiness::Completed);
    assert_eq!(readiness(&s, "transform"), &READY);
    assert_eq!(readiness(&s, "load"), &waiting(&["transform"]));
    assert_eq!(claimable(&s), ["transform"]);
    assert_eq!(s.status, StatusKind::Running, "something completed, something is left");
    assert_eq!(s.current_step, Some(step("transform")));
}

#[test]
fn an_older_runs_state_is_other_run_even_when_it_completed_there() {
    let p = chain3();
    let mut docs = all_pending(&p);
    set(&mut docs, "extract", |d| {
        completed(d);
        d.run_id = RunId::new("r0").unwrap();
    });
    set(&mut docs, "load", |d| d.run_id = RunId::new("r0").unwrap());
    let s = run(&p, &docs, T0, Some("w1"), 1);
    assert_eq!(readiness(&s, "extract"), &Readiness::OtherRun, "completed in r0 is not completed in r1");
    assert_eq!(readiness(&s, "transform"), &waiting(&["extract"]), "an older run's completion releases nothing");
    assert_eq!(readiness(&s, "load"), &Readiness::OtherRun, "rule 2 comes before the upstream rules");
    assert!(s.claimable.is_empty(), "{:?}", s.claimable);
    assert_eq!(s.status, StatusKind::Pending);
    assert!(s.frontier.is_empty());
    assert_eq!(s.current_step, Some(step("extract")), "the first step not done, in dependency order");
    assert!(!s.is_finished(), "an older run's partitions wait for the new run to reach them");
}

#[test]
fn an_older_run_held_by_someone_shows_the_holder_and_is_not_claimable_by_others() {
    let p = chain3();
    let mut docs = all_pending(&p);
    set(&mut docs, "extract", |d| {
        held("w2", T0 + 5_000)(d);
        d.run_id = RunId::new("r0").unwrap();
    });
    let s = run(&p, &docs, T0, Some("w1"), 1);
    assert_eq!(readiness(&s, "extract"), &Readiness::Held { worker_id: worker("w2"), until: at(T0 + 5_000) });
    assert!(s.claimable.is_empty());
    assert!(!s.is_stalled(), "a held lease will be released or expire");
    // Once its lease expires it is just an older run's state again.
    let s = run(&p, &docs, T0 + 7_001, Some("w1"), 1);
    assert_eq!(readiness(&s, "extract"), &Readiness::OtherRun);
    assert!(s.claimable.is_empty());
}

#[test]
fn paused_is_never_claimable_and_holds_back_its_downstream() {
    let p = chain3();
    let mut docs = all_pending(&p);
    set(&mut docs, "extract", |d| d.status = StepStatus::Paused);
    let s = run(&p, &docs, T0, Some("w1"), 1);
    assert_eq!(readiness(&s, "extract"), &Readiness::Paused);
    assert_eq!(readiness(&s, "transform"), &waiting(&["extract"]), "paused is not dead: its downstream waits, it is not blocked");
    assert!(s.claimable.is_empty());
    assert_eq!(s.status, StatusKind::Paused, "nothing can go on until something is resumed");
    assert!(s.frontier.is_empty());
    assert_eq!(s.current_step, Some(step("extract")));
    assert!(!s.is_finished());
    assert!(s.is_stalled(), "nothing changes until someone resumes it");
}

#[test]
fn paused_beside_ready_work_is_not_a_paused_pipeline() {
    let p = pipeline(vec![plain("a"), plain("b")]);
    let mut docs = all_pending(&p);
    set(&mut docs, "a", |d| d.status = StepStatus::Paused);
    let s = run(&p, &docs, T0, None, 1);
    assert_eq!(claimable(&s), ["b"]);
    assert_eq!(s.status, StatusKind::Pending);
    assert_eq!(s.frontier, steps(&["b"]));
    assert_eq!(s.current_step, Some(step("b")), "the first step of the frontier, not the paused one");
}

#[test]
fn a_non_retryable_failure_is_failed_for_good_and_fails_the_pipeline() {
    let p = chain3();
    let mut docs = all_pending(&p);
    set(&mut docs, "extract", failed("bad input", false, 1, T0 - 1));
    let s = run(&p, &docs, T0 + 1_000_000, Some("w1"), 1);
    assert_eq!(readiness(&s, "extract"), &Readiness::Failed { error: "bad input".into(), failures: 1 });
    assert_eq!(readiness(&s, "transform"), &blocked(&["extract"]));
    assert_eq!(readiness(&s, "load"), &blocked(&["transform"]), "blocked is transitive: named by the blocked step it waits on");
    assert!(s.claimable.is_empty());
    assert_eq!(s.status, StatusKind::Failed);
    assert!(s.is_finished(), "failed, and nothing else can ever run");
}

#[test]
fn a_live_lease_is_held_until_expiry_plus_skew_then_ready_for_takeover() {
    let p = chain3();
    let mut docs = all_pending(&p);
    let expires = T0 + 10_000;
    set(&mut docs, "extract", held("w2", expires));
    let h = Readiness::Held { worker_id: worker("w2"), until: at(expires) };
    for now in [T0, expires, expires + 2_000] {
        let s = run(&p, &docs, now, Some("w1"), 1);
        assert_eq!(readiness(&s, "extract"), &h, "at {now}");
        assert!(s.claimable.is_empty(), "at {now}");
        assert_eq!(s.status, StatusKind::Running);
        assert_eq!(s.frontier, steps(&["extract"]));
        assert_eq!(s.steps[0].running, 1);
    }
    let s = run(&p, &docs, expires + 2_001, Some("w1"), 1);
    assert_eq!(readiness(&s, "extract"), &Readiness::Ready { takeover: true });
    assert_eq!(claimable(&s), ["extract"]);
    assert_eq!(s.status, StatusKind::Running, "it started (its holder died): not pending");
}

#[test]
fn a_released_lease_is_ready_without_takeover() {
    let p = chain3();
    let mut docs = all_pending(&p);
    set(&mut docs, "extract", |d| {
        held("w2", T0 + 10_000)(d);
        d.status = StepStatus::Pending;
        d.lease.as_mut().unwrap().released_at = Some(at(T0 - 5));
    });
    let s = run(&p, &docs, T0, Some("w1"), 1);
    assert_eq!(readiness(&s, "extract"), &READY);
    assert_eq!(claimable(&s), ["extract"]);
}

#[test]
fn waiting_names_at_most_eight_upstream_partitions_and_counts_them_all() {
    let p = pipeline(vec![sharded("extract", 12), plain("load").after(barrier("extract"))]);
    let mut docs = all_pending(&p);
    set(&mut docs, "extract@3", completed);
    let s = run(&p, &docs, T0, None, 1);
    let Readiness::Waiting { on, count } = readiness(&s, "load") else { panic!("{:?}", readiness(&s, "load")) };
    assert_eq!(*count, 11, "every unfinished upstream partition is counted");
    assert_eq!(on.len(), NAMED_UPSTREAM);
    let expected: Vec<String> = [0, 1, 2, 4, 5, 6, 7, 8].iter().map(|i| format!("extract@{i}")).collect();
    assert_eq!(on, &expected, "named in shard order, completed ones left out");
}

#[test]
fn blocked_names_the_dead_partitions_and_counts_them_all() {
    let p = pipeline(vec![sharded("extract", 10), plain("load").after(barrier("extract"))]);
    let mut docs = all_pending(&p);
    for i in 0..10 {
        set(&mut docs, &format!("extract@{i}"), failed("gone", false, 1, T0));
    }
    let s = run(&p, &docs, T0, None, 1);
    let Readiness::Blocked { by, count } = readiness(&s, "load") else { panic!("{:?}", readiness(&s, "load")) };
    assert_eq!((*count, by.len()), (10, NAMED_UPSTREAM));
    assert_eq!(by[0], "extract@0");
}

#[test]
fn blocked_wins_over_waiting_when_one_upstream_is_dead_and_another_unfinished() {
    let p = pipeline(vec![plain("a"), plain("b"), plain("c").after(barrier("a")).after(barrier("b"))]);
    let mut docs = all_pending(&p);
    set(&mut docs, "a", failed("boom", false, 1, T0));
    let s = run(&p, &docs, T0, None, 1);
    assert_eq!(readiness(&s, "c"), &blocked(&["a"]));
    assert_eq!(claimable(&s), ["b"], "a failure elsewhere does not stop independent work");
    assert_eq!(s.status, StatusKind::Failed);
    assert!(!s.is_finished(), "b can still run");
}

#[test]
fn a_missing_partition_is_never_claimable_and_its_downstream_waits_on_it() {
    let p = pipeline(vec![sharded("extract", 3), plain("load").after(barrier("extract"))]);
    let mut docs = all_pending(&p);
    docs.retain(|d| d.shard != Some(1));
    set(&mut docs, "extract@0", completed);
    set(&mut docs, "extract@2", completed);
    let s = run(&p, &docs, T0, Some("w1"), 1);
    assert_eq!(readiness(&s, "extract@1"), &Readiness::Missing);
    assert_eq!(readiness(&s, "load"), &waiting(&["extract@1"]));
    assert!(s.claimable.is_empty());
    assert_eq!(s.steps[0].total, 3, "the plan's shard count, not the documents found");
    assert_eq!(s.steps[0].completed, 2);
    assert_eq!(s.status, StatusKind::Running);
    assert!(!s.is_finished());

    // A step without a shard count and no document is one missing partition.
    let p = chain3();
    let mut docs = all_pending(&p);
    docs.retain(|d| d.step_id.as_str() != "transform");
    set(&mut docs, "extract", completed);
    let s = run(&p, &docs, T0, None, 1);
    assert_eq!(readiness(&s, "transform"), &Readiness::Missing);
    assert_eq!(readiness(&s, "load"), &waiting(&["transform"]));
    assert!(s.claimable.is_empty());
}

#[test]
fn documents_of_another_pipeline_are_ignored() {
    let p = chain3();
    let mut docs = all_pending(&p);
    set(&mut docs, "extract", completed);
    let mut stranger = doc("transform");
    stranger.pipeline_id = PipelineId::new("other").unwrap();
    stranger.status = StepStatus::Completed { completed_at: at(1) };
    docs.retain(|d| d.step_id.as_str() != "transform");
    docs.push(stranger);
    let s = run(&p, &docs, T0, None, 1);
    assert_eq!(readiness(&s, "transform"), &Readiness::Missing, "another pipeline's transform is not ours");
}

// -------------------------------------------------------------- retries ----

#[test]
fn a_retryable_failure_backs_off_doubling_with_attempts_then_is_ready() {
    let p = chain3();
    let failed_at = T0;
    // policy: base 1 s, max 60 s, max_attempts 4.
    for (attempts, wait) in [(1u32, 1_000i64), (2, 2_000), (3, 4_000)] {
        let mut docs = all_pending(&p);
        set(&mut docs, "extract", failed("503", true, attempts, failed_at));
        let until = at(failed_at + wait);
        let s = run(&p, &docs, failed_at + wait - 1, Some("w1"), 1);
        assert_eq!(readiness(&s, "extract"), &Readiness::Backoff { until, failures: attempts }, "attempt {attempts}");
        assert!(s.claimable.is_empty());
        assert_eq!(s.status, StatusKind::Running, "retrying is running");
        assert_eq!(s.frontier, steps(&["extract"]), "a step retrying is on the frontier");
        assert_eq!(readiness(&s, "transform"), &waiting(&["extract"]), "a retryable failure does not block: it waits");
        let s = run(&p, &docs, failed_at + wait, Some("w1"), 1);
        assert_eq!(readiness(&s, "extract"), &READY, "attempt {attempts}: ready exactly at the end of its backoff");
        assert_eq!(claimable(&s), ["extract"]);
    }
}

#[test]
fn a_retryable_failure_becomes_permanent_at_max_attempts() {
    let p = chain3();
    let mut docs = all_pending(&p);
    set(&mut docs, "extract", failed("503", true, 4, T0));
    let s = run(&p, &docs, T0 + 10_000_000, None, 1);
    assert_eq!(readiness(&s, "extract"), &Readiness::Failed { error: "503".into(), failures: 4 });
    assert_eq!(readiness(&s, "transform"), &blocked(&["extract"]));
    assert_eq!(s.status, StatusKind::Failed);
    assert!(s.is_finished());

    // One failure fewer: still retrying.
    set(&mut docs, "extract", |d| d.failures = 3);
    let s = run(&p, &docs, T0 + 10_000_000, None, 1);
    assert_eq!(readiness(&s, "extract"), &READY);
    // Claims that did not fail (takeovers, releases) do not count.
    set(&mut docs, "extract", |d| d.attempts = 40);
    let s = run(&p, &docs, T0 + 10_000_000, None, 1);
    assert_eq!(readiness(&s, "extract"), &READY);
    assert_eq!(s.status, StatusKind::Running);
}

#[test]
fn the_backoff_is_capped_by_retry_max_and_never_overflows() {
    let policy = SchedulePolicy { retry_base: Duration::from_millis(1_000), retry_max: Duration::from_millis(5_000), max_attempts: 100 };
    let waits: Vec<u128> = (1..=6).map(|a| policy.backoff(a).as_millis()).collect();
    assert_eq!(waits, [1_000, 2_000, 4_000, 5_000, 5_000, 5_000]);
    assert_eq!(policy.backoff(0).as_millis(), 1_000, "attempt 0 (never claimed) waits like the first");
    assert_eq!(policy.backoff(u32::MAX), policy.retry_max);
    let huge = SchedulePolicy { retry_base: Duration::from_secs(u64::MAX / 2), retry_max: Duration::MAX, max_attempts: 100 };
    assert!(huge.backoff(40) >= huge.retry_base, "saturates instead of wrapping");

    let p = chain3();
    let mut docs = all_pending(&p);
    set(&mut docs, "extract", failed("503", true, 9, T0));
    let s = schedule(&p, &docs, at(T0 + 4_999), None, &lease_config(), &policy, 1);
    assert_eq!(readiness(&s, "extract"), &Readiness::Backoff { until: at(T0 + 5_000), failures: 9 });
}

#[test]
fn the_policy_reads_and_writes_milliseconds() {
    let p: SchedulePolicy = serde_json::from_str(r#"{ "retry_base_ms": 250, "max_attempts": 3 }"#).unwrap();
    assert_eq!(p.retry_base, Duration::from_millis(250));
    assert_eq!(p.retry_max, SchedulePolicy::default().retry_max, "absent fields keep their defaults");
    assert_eq!(p.max_attempts, 3);
    let json = serde_json::to_value(SchedulePolicy::default()).unwrap();
    assert_eq!(json, serde_json::json!({ "retry_base_ms": 1000, "retry_max_ms": 300000, "max_attempts": 10 }));
}

// ------------------------------------------------- barrier and aligned ----

/// extract (3 shards) → transform (3 shards, aligned) → load (barrier).
fn aligned3() -> PipelineDoc {
    pipeline(vec![sharded("extract", 3), sharded("transform", 3).after(aligned("extract")), plain("load").after(barrier("transform"))])
}

#[test]
fn an_aligned_shard_starts_when_its_own_upstream_shard_is_done() {
    let p = aligned3();
    let mut docs = all_pending(&p);
    set(&mut docs, "extract@1", completed);
    let s = run(&p, &docs, T0, None, 1);
    assert_eq!(readiness(&s, "transform@1"), &READY);
    assert_eq!(readiness(&s, "transform@0"), &waiting(&["extract@0"]), "shard 0 waits only for shard 0");
    assert_eq!(readiness(&s, "transform@2"), &waiting(&["extract@2"]));
    assert_eq!(readiness(&s, "load"), &waiting(&["transform@0", "transform@1", "transform@2"]));
    assert_eq!(claimable_set(&s), names(&["extract@0", "extract@2", "transform@1"]));
    assert_eq!(s.frontier, steps(&["extract", "transform"]));
    assert_eq!(s.current_step, Some(step("extract")));
    let counts: Vec<(usize, usize, usize, usize)> = s.steps.iter().map(|st| (st.total, st.completed, st.running, st.ready)).collect();
    assert_eq!(counts, [(3, 1, 0, 2), (3, 0, 0, 1), (1, 0, 0, 0)]);
}

#[test]
fn a_barrier_waits_for_every_upstream_partition() {
    let p = aligned3();
    let mut docs = all_pending(&p);
    for i in 0..3 {
        set(&mut docs, &format!("extract@{i}"), completed);
    }
    set(&mut docs, "transform@0", completed);
    set(&mut docs, "transform@2", completed);
    let s = run(&p, &docs, T0, None, 1);
    assert_eq!(readiness(&s, "load"), &waiting(&["transform@1"]));
    set(&mut docs, "transform@1", completed);
    let s = run(&p, &docs, T0, None, 1);
    assert_eq!(readiness(&s, "load"), &READY);
    assert_eq!(claimable(&s), ["load"]);
}

#[test]
fn a_failed_shard_blocks_its_aligned_shard_and_the_barrier_after_it_only() {
    let p = aligned3();
    let mut docs = all_pending(&p);
    set(&mut docs, "extract@0", completed);
    set(&mut docs, "extract@1", failed("corrupt file", false, 1, T0));
    set(&mut docs, "extract@2", completed);
    let s = run(&p, &docs, T0, None, 1);
    assert_eq!(readiness(&s, "transform@1"), &blocked(&["extract@1"]));
    assert_eq!(readiness(&s, "transform@0"), &READY, "the other shards go on");
    assert_eq!(readiness(&s, "transform@2"), &READY);
    assert_eq!(readiness(&s, "load"), &blocked(&["transform@1"]), "blocked wins over waiting on transform@0 and @2");
    assert_eq!(claimable_set(&s), names(&["transform@0", "transform@2"]));
    assert_eq!(s.status, StatusKind::Failed);
    assert!(!s.is_finished());

    set(&mut docs, "transform@0", completed);
    set(&mut docs, "transform@2", completed);
    let s = run(&p, &docs, T0, None, 1);
    assert!(s.claimable.is_empty());
    assert!(s.is_finished(), "failed, and everything else either done or blocked");
    assert_eq!(s.status, StatusKind::Failed);
}

// -------------------------------------------------- fan-out and fan-in ----

/// a → {b, c}; {b, c} → d; e alone; f waits for c and e.
fn diamond() -> PipelineDoc {
    pipeline(vec![
        plain("a"),
        sharded("b", 2).after(barrier("a")),
        plain("c").after(barrier("a")),
        plain("d").after(barrier("b")).after(barrier("c")),
        plain("e"),
        plain("f").after(barrier("c")).after(barrier("e")),
        plain("g").after(barrier("d")),
    ])
}

#[test]
fn fan_out_releases_every_dependent_and_fan_in_waits_for_all() {
    let p = diamond();
    let mut docs = all_pending(&p);
    let s = run(&p, &docs, T0, None, 1);
    assert_eq!(claimable_set(&s), names(&["a", "e"]));
    assert_eq!(readiness(&s, "d"), &waiting(&["b@0", "b@1", "c"]), "a fan-in names every upstream step's partitions");

    set(&mut docs, "a", completed);
    let s = run(&p, &docs, T0, None, 1);
    assert_eq!(claimable_set(&s), names(&["b@0", "b@1", "c", "e"]), "fan-out: both dependents at once");
    set(&mut docs, "b@0", completed);
    set(&mut docs, "b@1", completed);
    let s = run(&p, &docs, T0, None, 1);
    assert_eq!(readiness(&s, "d"), &waiting(&["c"]), "fan-in: one of two upstream steps done is not enough");
    set(&mut docs, "c", completed);
    let s = run(&p, &docs, T0, None, 1);
    assert_eq!(readiness(&s, "d"), &READY);
    assert_eq!(readiness(&s, "f"), &waiting(&["e"]));
    assert_eq!(claimable_set(&s), names(&["d", "e"]));
}

#[test]
fn a_permanent_failure_blocks_exactly_its_transitive_downstream() {
    let p = diamond();
    let mut docs = all_pending(&p);
    set(&mut docs, "a", completed);
    set(&mut docs, "b@1", failed("schema mismatch", false, 2, T0));
    let s = run(&p, &docs, T0, None, 1);
    assert_eq!(readiness(&s, "d"), &blocked(&["b@1"]));
    assert_eq!(readiness(&s, "g"), &blocked(&["d"]), "transitively");
    assert_eq!(readiness(&s, "f"), &waiting(&["c", "e"]), "f does not depend on b: not blocked");
    assert_eq!(claimable_set(&s), names(&["b@0", "c", "e"]));
    assert_eq!(s.status, StatusKind::Failed);
    assert!(!s.is_finished());

    for id in ["b@0", "c", "e", "f"] {
        set(&mut docs, id, completed);
    }
    let s = run(&p, &docs, T0, None, 1);
    let dead: BTreeSet<String> = s
        .steps
        .iter()
        .flat_map(|st| &st.partitions)
        .filter(|pr| !matches!(pr.readiness, Readiness::Completed))
        .map(|pr| pr.partition.to_string())
        .collect();
    assert_eq!(dead, names(&["b@1", "d", "g"]), "everything else completed");
    assert!(s.claimable.is_empty());
    assert!(s.is_finished());
    assert_eq!(s.status, StatusKind::Failed);
    assert_eq!(s.current_step, Some(step("b")), "the first step not done, in dependency order");
    assert!(s.frontier.is_empty());
}

// ---------------------------------------------------------- own leases ----

#[test]
fn the_workers_own_live_lease_is_claimable_last_and_only_for_it() {
    let p = pipeline(vec![sharded("a", 4), plain("b")]);
    let mut docs = all_pending(&p);
    set(&mut docs, "a@0", held("w1", T0 + 20_000));
    set(&mut docs, "a@1", held("w2", T0 + 20_000));
    for random in 0..20 {
        let s = run(&p, &docs, T0, Some("w1"), random);
        let c = claimable(&s);
        assert_eq!(c.len(), 4, "{c:?}");
        assert_eq!(c[3], "a@0", "own lease last, after every other step's ready partitions too: {c:?}");
        assert_eq!(c[..2].iter().cloned().collect::<BTreeSet<_>>(), names(&["a@2", "a@3"]));
        assert_eq!(c[2], "b");
        assert!(!c.contains(&"a@1".to_string()), "another worker's live lease is never claimable");
        assert_eq!(readiness(&s, "a@0"), &Readiness::Held { worker_id: worker("w1"), until: at(T0 + 20_000) });

        let s = run(&p, &docs, T0, Some("w2"), random);
        assert_eq!(claimable(&s).last().map(String::as_str), Some("a@1"));
        assert!(!claimable(&s).contains(&"a@0".to_string()));

        let s = run(&p, &docs, T0, None, random);
        assert_eq!(claimable_set(&s), names(&["a@2", "a@3", "b"]), "nobody asking: no own lease");
    }
}

#[test]
fn an_own_live_lease_on_an_older_runs_partition_is_not_claimable() {
    let p = pipeline(vec![sharded("a", 2)]);
    let mut docs = all_pending(&p);
    set(&mut docs, "a@0", held("w1", T0 + 20_000));
    set(&mut docs, "a@0", |d| d.run_id = oxiflow_core::RunId::new("run-0").unwrap());
    let s = run(&p, &docs, T0, Some("w1"), 3);
    assert_eq!(claimable(&s), ["a@1"], "only the current run's partition");
    assert_eq!(readiness(&s, "a@0"), &Readiness::Held { worker_id: worker("w1"), until: at(T0 + 20_000) });
}

#[test]
fn several_own_leases_follow_in_plan_order() {
    let p = pipeline(vec![sharded("a", 3), plain("b")]);
    let mut docs = all_pending(&p);
    set(&mut docs, "b", held("w1", T0 + 20_000));
    set(&mut docs, "a@2", held("w1", T0 + 20_000));
    set(&mut docs, "a@0", held("w1", T0 + 20_000));
    let s = run(&p, &docs, T0, Some("w1"), 3);
    assert_eq!(claimable(&s), ["a@1", "a@0", "a@2", "b"]);
}

#[test]
fn an_expired_own_lease_is_an_ordinary_takeover() {
    let p = pipeline(vec![sharded("a", 2)]);
    let mut docs = all_pending(&p);
    set(&mut docs, "a@0", held("w1", T0 - 10_000));
    let s = run(&p, &docs, T0, Some("w1"), 0);
    assert_eq!(readiness(&s, "a@0"), &Readiness::Ready { takeover: true });
    assert_eq!(claimable_set(&s), names(&["a@0", "a@1"]));
}

// ----------------------------------------------------------- spreading ----

#[test]
fn the_callers_randomness_spreads_the_order_within_a_step_tier() {
    let p = pipeline(vec![sharded("a", 8), sharded("b", 5), plain("c").after(barrier("a"))]);
    let docs = all_pending(&p);
    let a: BTreeSet<String> = (0..8).map(|i| format!("a@{i}")).collect();
    let b: BTreeSet<String> = (0..5).map(|i| format!("b@{i}")).collect();
    let mut orders = BTreeSet::new();
    let mut firsts = BTreeSet::new();
    for random in 0..200u64 {
        let s = run(&p, &docs, T0, Some("w1"), random.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let c = claimable(&s);
        assert_eq!(c.len(), 13);
        assert_eq!(c[..8].iter().cloned().collect::<BTreeSet<_>>(), a, "the first tier is a permutation of step a: {c:?}");
        assert_eq!(c[8..].iter().cloned().collect::<BTreeSet<_>>(), b, "then a permutation of step b: {c:?}");
        let again = run(&p, &docs, T0, Some("w1"), random.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        assert_eq!(claimable(&again), c, "the same randomness gives the same order");
        firsts.insert(c[0].clone());
        orders.insert(c);
    }
    assert!(orders.len() >= 190, "200 randoms gave only {} orders", orders.len());
    assert_eq!(firsts, a, "every partition of the first tier comes first for some worker");
}

#[test]
fn the_tiers_follow_dependency_order_not_plan_order() {
    // Plan order: late (after early), side, early. Dependency order, plan
    // order winning among steps that could go next: side, early, late.
    let p = pipeline(vec![sharded("late", 2).after(barrier("early")), sharded("side", 2), sharded("early", 2)]);
    let mut docs = all_pending(&p);
    set(&mut docs, "early@0", completed);
    set(&mut docs, "early@1", completed);
    for random in 0..10 {
        let s = run(&p, &docs, T0, None, random);
        let c = claimable(&s);
        assert_eq!(c[..2].iter().cloned().collect::<BTreeSet<_>>(), names(&["side@0", "side@1"]), "{c:?}");
        assert_eq!(c[2..].iter().cloned().collect::<BTreeSet<_>>(), names(&["late@0", "late@1"]), "{c:?}");
        let reported: Vec<&str> = s.steps.iter().map(|st| st.step_id.as_str()).collect();
        assert_eq!(reported, ["late", "side", "early"], "steps are reported in plan order");
        assert_eq!(s.frontier, steps(&["late", "side"]), "the frontier in plan order");
        assert_eq!(s.current_step, Some(step("side")), "the first frontier step in dependency order");
    }
}

#[test]
fn a_dependency_the_scheduler_cannot_judge_holds_the_step_back() {
    // A plan that never went through validation (hand-written JSON given
    // to the wasm `schedule`): an edge to a step that is not in the plan,
    // and a cycle. Neither may be ignored.
    let p: PipelineDoc = serde_json::from_value(serde_json::json!({
        "format_version": 3, "pipeline_id": "orders", "run_id": "r1", "batch_number": 0, "version": 1,
        "created_at": 0, "updated_at": 0,
        "steps": [
            { "step_id": "a", "after": [{ "step_id": "ghost" }] },
            { "step_id": "b", "after": [{ "step_id": "c" }] },
            { "step_id": "c", "after": [{ "step_id": "b" }] },
            { "step_id": "d" }
        ]
    }))
    .unwrap();
    let docs: Vec<PartitionDoc> = ["a", "b", "c", "d"].iter().map(|id| doc(id)).collect();
    let s = run(&p, &docs, T0, None, 1);
    for id in ["a", "b", "c"] {
        assert!(matches!(readiness(&s, id), Readiness::Waiting { .. }), "{id}: {:?}", readiness(&s, id));
    }
    assert_eq!(claimable(&s), ["d"]);
}

// ---------------------------------------------- status and current step ----

#[test]
fn all_completed_is_a_finished_pipeline_whose_current_step_is_the_last() {
    let p = pipeline(vec![plain("load").after(barrier("transform")), plain("extract"), plain("transform").after(barrier("extract"))]);
    let mut docs = all_pending(&p);
    for id in ["extract", "transform", "load"] {
        set(&mut docs, id, completed);
    }
    let s = run(&p, &docs, T0, Some("w1"), 1);
    assert_eq!(s.status, StatusKind::Completed);
    assert_eq!(s.current_step, Some(step("load")), "the last step in dependency order, though first in the plan");
    assert!(s.frontier.is_empty() && s.claimable.is_empty());
    assert!(s.is_finished());
    assert!(s.steps.iter().all(|st| st.completed == st.total && st.total == 1));
}

#[test]
fn the_status_follows_its_rule_in_order() {
    let p = pipeline(vec![plain("a"), plain("b"), plain("c")]);
    let status = |f: &dyn Fn(&mut Vec<PartitionDoc>)| {
        let mut docs = all_pending(&p);
        f(&mut docs);
        run(&p, &docs, T0, None, 1).status
    };
    assert_eq!(status(&|_| {}), StatusKind::Pending);
    assert_eq!(status(&|d| set(d, "a", completed)), StatusKind::Running);
    assert_eq!(status(&|d| set(d, "a", held("w", T0 + 1))), StatusKind::Running);
    assert_eq!(status(&|d| set(d, "a", failed("x", true, 1, T0))), StatusKind::Running, "in backoff");
    assert_eq!(
        status(&|d| {
            set(d, "a", |x| x.status = StepStatus::Paused);
            set(d, "b", held("w", T0 + 1));
        }),
        StatusKind::Running,
        "a running partition beats a paused one"
    );
    assert_eq!(
        status(&|d| {
            for id in ["a", "b", "c"] {
                set(d, id, |x| x.status = StepStatus::Paused);
            }
        }),
        StatusKind::Paused
    );
    assert_eq!(
        status(&|d| {
            set(d, "a", failed("x", false, 1, T0));
            set(d, "b", held("w", T0 + 1));
            set(d, "c", completed);
        }),
        StatusKind::Failed,
        "failed wins over everything"
    );
    assert_eq!(
        status(&|d| {
            for id in ["a", "b", "c"] {
                set(d, id, completed);
            }
        }),
        StatusKind::Completed
    );
}

#[test]
fn unplanned_steps_found_in_the_store_are_reported_last_and_scheduled_without_dependencies() {
    let p = pipeline(vec![plain("a")]);
    let mut docs = all_pending(&p);
    let mut legacy0 = doc("legacy@0");
    legacy0.status = StepStatus::Completed { completed_at: at(1) };
    docs.push(doc("legacy@1"));
    docs.push(legacy0);
    let s = run(&p, &docs, T0, None, 1);
    let reported: Vec<&str> = s.steps.iter().map(|st| st.step_id.as_str()).collect();
    assert_eq!(reported, ["a", "legacy"]);
    assert_eq!(s.steps[1].total, 2, "without a shard count its partitions are the documents found");
    assert_eq!(readiness(&s, "legacy@1"), &READY);
    assert_eq!(readiness(&s, "legacy@0"), &Readiness::Completed);
    assert_eq!(claimable_set(&s), names(&["a", "legacy@1"]));
}

#[test]
fn readiness_serializes_with_a_state_tag() {
    let json = |r: Readiness| serde_json::to_value(r).unwrap();
    assert_eq!(json(Readiness::Ready { takeover: true }), serde_json::json!({ "state": "ready", "takeover": true }));
    assert_eq!(json(Readiness::OtherRun), serde_json::json!({ "state": "other_run" }));
    assert_eq!(json(waiting(&["a@0"])), serde_json::json!({ "state": "waiting", "on": ["a@0"], "count": 1 }));
    assert_eq!(
        json(Readiness::Backoff { until: at(5), failures: 2 }),
        serde_json::json!({ "state": "backoff", "until": 5, "failures": 2 })
    );
}
