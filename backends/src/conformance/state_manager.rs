//! The StateManager over a store: the whole life of a pipeline.

use std::sync::Arc;

use super::{id, ManualClock};
use crate::store::ConditionalStore;

/// The StateManager suite: claim / contend / release, checkpoint chains,
/// expiry and takeover with fencing of the old holder, remote stop, cleanup,
/// a new run, export → import, and copy into `other` (a different store).
pub async fn state_manager(store: Arc<dyn ConditionalStore>, other: Arc<dyn ConditionalStore>) {
    use oxiflow_core::{Error as CoreError, PartitionId, Progress, StatusKind, StepStatus};

    use crate::manager::StateManager;
    use crate::snapshot::Snapshot;

    let name = store.describe().to_string();
    let clock = ManualClock::new(1_764_000_000_000);
    let config = oxiflow_core::Config::default();
    let ttl = config.lease.ttl + config.lease.skew_allowance + std::time::Duration::from_millis(1);
    let m = StateManager::new(store.clone(), config).with_clock(clock.clock());
    #[allow(clippy::disallowed_methods)] // a unique pipeline per run, not a decision
    let unique = rand::random::<u32>();
    let pipeline: oxiflow_core::PipelineId = id(&format!("orders-{unique:08x}"));
    let (w1, w2, w3, ops) = (id("w1"), id("w2"), id("w3"), id("ops"));
    let steps = oxiflow_core::plan::chain([(id("extract"), None), (id("transform"), Some(2)), (id("load"), None)]);
    m.create_pipeline(&pipeline, &id("run-1"), &steps).await.unwrap_or_else(|e| panic!("{name}: create: {e}"));
    m.create_pipeline(&pipeline, &id("run-1"), &steps).await.unwrap_or_else(|e| panic!("{name}: creating twice must be a no-op: {e}"));
    assert!(m.list_pipelines().await.unwrap().contains(&pipeline), "{name}: list_pipelines");
    let extract = PartitionId::step(id("extract"));
    let t0 = PartitionId::shard(id("transform"), 0);

    // claim, contend, checkpoint chain, release
    let mut c1 = m.claim(&pipeline, &extract, &w1).await.unwrap();
    match m.claim(&pipeline, &extract, &w2).await {
        Err(crate::Error::Core(CoreError::LeaseHeld { holder, .. })) => assert_eq!(holder, w1, "{name}"),
        other => panic!("{name}: a held lease must refuse w2, got {other:?}"),
    }
    for i in 1..=3u64 {
        let p = Progress {
            last_processed_id: Some(format!("order-{}", i * 100)),
            batch_number: Some(i),
            add_records: 100,
            add_bytes: 10,
            ..Progress::default()
        };
        m.checkpoint(&mut c1, p).await.unwrap_or_else(|e| panic!("{name}: checkpoint {i}: {e}"));
    }
    let back = Progress { batch_number: Some(1), ..Progress::default() };
    assert!(
        matches!(m.checkpoint(&mut c1, back).await, Err(crate::Error::Core(CoreError::CounterRegression { .. }))),
        "{name}: batch regression"
    );
    m.release(&mut c1, Progress::default()).await.unwrap();
    let released = c1.doc();
    assert_eq!((released.status.kind(), released.records_processed), (StatusKind::Pending, 300), "{name}: release keeps counts");
    let mut c2 = m.claim(&pipeline, &extract, &w2).await.unwrap();
    assert_eq!((c2.doc().attempts, c2.doc().last_processed_id.as_deref(), c2.lease().epoch), (2, Some("order-300"), 2), "{name}: resume");
    m.complete(&mut c2, Progress { add_records: 5, ..Progress::default() }).await.unwrap();
    let done = c2.doc();
    assert!(matches!(done.status, StepStatus::Completed { .. }) && done.records_processed == 305, "{name}: complete");

    // expiry and takeover: the old holder is fenced and lands nothing. Its
    // clock runs behind (it still trusts its lease), so the store's
    // compare-and-swap is what refuses it.
    let slow = ManualClock::new((clock.clock())().as_millis());
    let slow_m = StateManager::new(store.clone(), config).with_clock(slow.clock());
    let mut old = slow_m.claim(&pipeline, &t0, &w2).await.unwrap();
    slow_m.checkpoint(&mut old, Progress { add_records: 7, ..Progress::default() }).await.unwrap();
    clock.advance(ttl);
    let mut new = m.claim(&pipeline, &t0, &w3).await.unwrap_or_else(|e| panic!("{name}: takeover after expiry: {e}"));
    assert_eq!(new.lease().epoch, old.lease().epoch + 1, "{name}: takeover bumps the epoch");
    let mut late = old.clone();
    match slow_m.checkpoint(&mut old, Progress { add_records: 1_000, ..Progress::default() }).await {
        Err(crate::Error::Core(CoreError::Fenced { holder, .. })) => assert_eq!(holder, Some(w3.clone()), "{name}"),
        other => panic!("{name}: the old holder must be fenced, got {other:?}"),
    }
    // With a correct clock it is past its trusted time: refused unsent.
    match m.checkpoint(&mut late, Progress { add_records: 1_000, ..Progress::default() }).await {
        Err(crate::Error::Core(CoreError::Expired { worker_id, .. })) => assert_eq!(worker_id, w2, "{name}"),
        other => panic!("{name}: a holder past its trusted time must be refused, got {other:?}"),
    }
    m.checkpoint(&mut new, Progress { add_records: 3, ..Progress::default() }).await.unwrap();
    let view = m.view(&pipeline).await.unwrap();
    let t0_view = &view.steps[1].partitions[0];
    assert_eq!(
        (t0_view.records_processed, t0_view.worker_id.clone()),
        (10, Some(w3.clone())),
        "{name}: only the new holder's progress counts"
    );

    // remote stop: the holder's next write saves its progress and releases
    let asked = m.request_stop(&w3, &ops).await.unwrap();
    assert_eq!(asked.len(), 1, "{name}: w3 holds one partition: {asked:?}");
    match m.checkpoint(&mut new, Progress { add_records: 2, ..Progress::default() }).await {
        Ok(oxiflow_core::Written { landed: true, stop: Some(stop), .. }) => assert_eq!(stop.requested_by, ops),
        other => panic!("{name}: a stop request must save the progress and stop the holder, got {other:?}"),
    }
    assert!(new.lease().released_at.is_some() && new.doc().records_processed == 12, "{name}: stop saved progress and released");
    m.claim(&pipeline, &t0, &w1).await.unwrap_or_else(|e| panic!("{name}: a stopped partition is free: {e}"));

    // cleanup of a dead worker's lease
    m.claim(&pipeline, &PartitionId::shard(id("transform"), 1), &w2).await.unwrap();
    assert!(m.cleanup_stale_leases().await.unwrap().is_empty(), "{name}: live leases are not cleaned");
    clock.advance(ttl);
    assert_eq!(m.cleanup_stale_leases().await.unwrap().len(), 2, "{name}: both expired leases are released");

    // export → import elsewhere → identical view; import refuses to clobber
    let export = m.export(&pipeline).await.unwrap();
    assert_eq!(export.partitions.len(), 4, "{name}: export holds every partition");
    let target = StateManager::new(other.clone(), config).with_clock(clock.clock());
    target.import(&export, false, false).await.unwrap_or_else(|e| panic!("{name} → {}: import: {e}", other.describe()));
    // The same documents; each write here is a new version at this store's clock.
    let unstamped = |mut e: crate::Export| {
        e.pipeline.version = 0;
        e.pipeline.updated_at = oxiflow_core::Timestamp::from_millis(0);
        for p in &mut e.partitions {
            p.version = 0;
            p.updated_at = oxiflow_core::Timestamp::from_millis(0);
        }
        e
    };
    assert_eq!(unstamped(target.export(&pipeline).await.unwrap()), unstamped(export.clone()), "{name}: import reproduces the documents");
    let refused = target.import(&export, false, false).await;
    assert!(matches!(refused, Err(crate::Error::AlreadyExists { .. })), "{name}: import must not clobber");
    let replaced = target.import(&export, true, false).await.unwrap_or_else(|e| panic!("{name}: import --replace: {e}"));
    assert_eq!((replaced.replaced, replaced.discarded_records), (true, 0), "{name}: the same state again discards nothing");
    let json = serde_json::to_string(&export).unwrap();
    assert_eq!(serde_json::from_str::<crate::Export>(&json).unwrap(), export, "{name}: export JSON round-trips");

    // restores never put epochs back: a holder of the replaced state is fenced
    let load = PartitionId::step(id("load"));
    let mut holder = target.claim(&pipeline, &load, &w2).await.unwrap();
    target.checkpoint(&mut holder, Progress { add_records: 5, ..Progress::default() }).await.unwrap();
    let before = target.view(&pipeline).await.unwrap();
    let held = target.import(&export, true, false).await;
    assert!(matches!(held, Err(crate::Error::Core(CoreError::LeaseHeld { .. }))), "{name}: a live lease refuses a restore: {held:?}");
    assert_eq!(target.view(&pipeline).await.unwrap(), before, "{name}: a refused restore changes nothing");
    let forced = target.import(&export, true, true).await.unwrap();
    assert_eq!(forced.discarded_records, 5, "{name}: the restore reports the acknowledged progress it discards");
    match target.checkpoint(&mut holder, Progress { add_records: 1_000, ..Progress::default() }).await {
        Err(crate::Error::Core(CoreError::Fenced { landed: false, .. })) => {}
        other => panic!("{name}: the holder of the replaced state must be fenced, got {other:?}"),
    }
    let restored = target.export(&pipeline).await.unwrap();
    for (before, after) in export.partitions.iter().zip(&restored.partitions) {
        let (b, a) = (before.lease.as_ref().map_or(0, |l| l.epoch), after.lease.as_ref().map_or(0, |l| l.epoch));
        assert!(a > b || (a == 0 && b == 0), "{name}: {} epoch {b} → {a}: restores continue above the highest epoch", after.partition_id());
        assert!(after.lease.as_ref().is_none_or(|l| l.released_at.is_some()), "{name}: a restored lease is released");
    }
    let load_after = restored.partitions.iter().find(|p| p.partition_id() == load).unwrap();
    assert!(load_after.lease.as_ref().unwrap().epoch > holder.lease().epoch, "{name}: above the fenced holder's epoch too");

    // copy between two different stores
    let copied = StateManager::new(store.clone(), config).copy_to(&target, std::slice::from_ref(&pipeline), true, false).await.unwrap();
    assert_eq!(copied.len(), 1);

    // a new run resets statuses and counters, keeps bookmarks
    m.new_run(&pipeline, &id("run-2"), &id("operator")).await.unwrap_or_else(|e| panic!("{name}: new run: {e}"));
    let view = m.view(&pipeline).await.unwrap();
    assert_eq!((view.run_id.as_str(), view.status, view.records_processed), ("run-2", StatusKind::Pending, 0), "{name}: new run");
    assert_eq!(view.steps[0].partitions[0].last_processed_id.as_deref(), Some("order-300"), "{name}: bookmark kept");

    // history: the last 3 versions of a partition, as create-only copies
    let hm = StateManager::new(store.clone(), config).with_clock(clock.clock()).with_history(3);
    let load = PartitionId::step(id("load"));
    let mut c = hm.claim(&pipeline, &load, &w1).await.unwrap();
    for _ in 0..4 {
        hm.checkpoint(&mut c, Progress { add_records: 1, ..Progress::default() }).await.unwrap();
    }
    let history = hm.history(&pipeline, &load).await.unwrap();
    let versions: Vec<u64> = history.iter().map(|d| d.version).collect();
    let v = c.doc().version;
    assert_eq!(versions, [v - 2, v - 1, v], "{name}: history keeps the last 3 versions in order");
    assert_eq!(history.last().unwrap(), c.doc(), "{name}: the newest copy is the live document");

    // a snapshot refreshes with one LIST and GETs only what changed
    let mut snapshot = Snapshot::new(pipeline.clone());
    let first = m.refresh(&mut snapshot).await.unwrap();
    assert_eq!((first.fetched, first.kept), (5, 0), "{name}: the first refresh reads every document");
    let again = m.refresh(&mut snapshot).await.unwrap();
    assert_eq!((again.fetched, again.kept), (0, 5), "{name}: an unchanged pipeline is re-read from the listing alone");
    hm.checkpoint(&mut c, Progress { add_records: 1, ..Progress::default() }).await.unwrap();
    let changed = m.refresh(&mut snapshot).await.unwrap();
    assert_eq!((changed.fetched, changed.kept), (1, 4), "{name}: one changed document, one GET");
    assert_eq!(snapshot.partitions().iter().find(|d| d.step_id.as_str() == "load").unwrap(), c.doc(), "{name}: the GET saw the change");

    // the store honours both conditions
    // At the wall clock (this suite's own clock is a manual one).
    let report = StateManager::new(store.clone(), config).probe().await.unwrap_or_else(|e| panic!("{name}: probe: {e}"));
    assert!(report.create_if_absent && report.update_if_match);
    assert!(!report.clock_skew_exceeds_allowance, "{name}: a server on this machine shares its clock: {report:?}");
}
