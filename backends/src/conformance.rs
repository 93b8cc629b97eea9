//! The one conformance suite every store runs (after object_store's
//! `integration.rs`). A store is correct iff [`primitives`] passes; each
//! check panics with what the store did wrong.
//!
//! Every run works under a fresh random prefix, so suites can share a bucket.

use std::sync::Arc;

use oxiflow_core::Version;

use crate::error::Error;
use crate::store::ConditionalStore;

/// Room for the large-body check.
const LARGE: usize = 4 << 20;

fn run_prefix() -> String {
    format!("conformance-{:016x}/", rand::random::<u64>())
}

async fn body_of(store: &dyn ConditionalStore, key: &str) -> Option<(Vec<u8>, Version)> {
    store.get(key, LARGE + 1).await.unwrap_or_else(|e| panic!("get {key} on {}: {e}", store.describe())).map(|o| (o.body, o.version))
}

/// Create twice, stale update, update of a missing key, list with prefix,
/// large body, delete, and a concurrent compare-and-swap race.
pub async fn primitives(store: Arc<dyn ConditionalStore>) {
    let p = run_prefix();
    let s = store.as_ref();
    let name = s.describe().to_string();

    // get of a missing key
    assert!(body_of(s, &format!("{p}missing")).await.is_none(), "{name}: get of a missing key must be None");

    // create, create twice
    let key = format!("{p}doc");
    let v1 = s.put_if_absent(&key, b"one".to_vec()).await.unwrap_or_else(|e| panic!("{name}: first create failed: {e}"));
    match s.put_if_absent(&key, b"two".to_vec()).await {
        Err(Error::AlreadyExists { .. }) => {}
        other => panic!("{name}: a second create must be AlreadyExists (If-None-Match ignored?), got {other:?}"),
    }
    let (body, read_v1) = body_of(s, &key).await.expect("created key is readable");
    assert_eq!(body, b"one", "{name}: the second create must not overwrite");
    assert_eq!(read_v1.e_tag, v1.e_tag, "{name}: get must report the version the put returned");

    // update with the current version, then with a stale one
    let v2 = s
        .put_if_match(&key, b"three".to_vec(), &v1)
        .await
        .unwrap_or_else(|e| panic!("{name}: update with the current version failed: {e}"));
    assert_ne!(v2, v1, "{name}: an update must change the version");
    match s.put_if_match(&key, b"four".to_vec(), &v1).await {
        Err(Error::Precondition { .. }) => {}
        other => panic!("{name}: an update with a stale version must be Precondition (If-Match ignored?), got {other:?}"),
    }
    assert_eq!(body_of(s, &key).await.unwrap().0, b"three", "{name}: a stale update must not land");

    // update of a missing key
    match s.put_if_match(&format!("{p}missing"), b"x".to_vec(), &v2).await {
        Err(Error::Precondition { .. }) => {}
        other => panic!("{name}: updating a missing key must be Precondition, got {other:?}"),
    }

    // list with a prefix: whole-segment and partial-name prefixes
    for k in ["a/x/1", "a/x/2", "a/y/1", "ab/1"] {
        s.put_if_absent(&format!("{p}{k}"), k.as_bytes().to_vec()).await.unwrap();
    }
    let strip =
        |keys: Vec<crate::Listed>| keys.into_iter().map(|k| k.key.strip_prefix(&p).unwrap_or(&k.key).to_string()).collect::<Vec<_>>();
    assert_eq!(strip(s.list(&format!("{p}a/x/")).await.unwrap()), ["a/x/1", "a/x/2"], "{name}: list a/x/");
    assert_eq!(strip(s.list(&format!("{p}a/")).await.unwrap()), ["a/x/1", "a/x/2", "a/y/1"], "{name}: list a/");
    assert_eq!(strip(s.list(&format!("{p}a")).await.unwrap()), ["a/x/1", "a/x/2", "a/y/1", "ab/1"], "{name}: list a");
    assert!(s.list(&format!("{p}nothing/")).await.unwrap().is_empty(), "{name}: list of an empty prefix");
    // A version in a listing is the one a GET returns: readers skip the GET
    // of a document whose listed version they hold.
    for item in s.list(&format!("{p}a")).await.unwrap() {
        if let Some(listed) = item.version {
            assert_eq!(Some(listed), body_of(s, &item.key).await.map(|b| b.1), "{name}: listed and read versions of {}", item.key);
        }
    }

    // large body, and the size limit on read
    let large: Vec<u8> = (0..LARGE).map(|i| (i % 251) as u8).collect();
    let big = format!("{p}large");
    s.put_if_absent(&big, large.clone()).await.unwrap_or_else(|e| panic!("{name}: 4 MiB create failed: {e}"));
    assert!(body_of(s, &big).await.unwrap().0 == large, "{name}: 4 MiB body must round-trip");
    match s.get(&big, 1024).await {
        Err(Error::Core(oxiflow_core::Error::TooLarge { size, limit: 1024, .. })) if size == LARGE => {}
        other => panic!("{name}: a read over the limit must be TooLarge, got {:?}", other.map(|o| o.map(|o| o.body.len()))),
    }

    // delete, and delete of a missing key
    s.delete(&key).await.unwrap();
    assert!(body_of(s, &key).await.is_none(), "{name}: deleted key must be gone");
    s.delete(&key).await.unwrap_or_else(|e| panic!("{name}: deleting a missing key must succeed: {e}"));

    cas_race(store.clone(), &format!("{p}counter"), 8, 25).await;
}

/// `tasks` concurrent tasks each add 1 to a shared counter `increments`
/// times with read + compare-and-swap; the final count must be exact.
///
/// The object holds one count per task (`"3,5,0"`), so after a transient
/// error (real servers give 500s under load) a task re-reads and sees
/// whether its own write landed: retries are exact, never double-counted.
pub async fn cas_race(store: Arc<dyn ConditionalStore>, key: &str, tasks: usize, increments: u64) {
    let parse = |body: &[u8]| -> Vec<u64> { std::str::from_utf8(body).unwrap().split(',').map(|n| n.parse().unwrap()).collect() };
    store.put_if_absent(key, vec!["0"; tasks].join(",").into_bytes()).await.unwrap();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (store, key) = (store.clone(), key.to_string());
        handles.push(tokio::spawn(async move {
            let (mut done, mut conflicts, mut transient) = (0u64, 0u64, 0u32);
            while done < increments {
                let o = match store.get(&key, 4096).await {
                    Ok(o) => o.expect("counter exists"),
                    Err(Error::Unavailable { .. }) if transient < 100 => {
                        transient += 1;
                        continue;
                    }
                    Err(e) => panic!("{}: CAS race read failed: {e}", store.describe()),
                };
                let mut counts = parse(&o.body);
                if counts[task] == done + 1 {
                    done += 1; // our last write landed though its response was lost
                    continue;
                }
                counts[task] = done + 1;
                let body = counts.iter().map(u64::to_string).collect::<Vec<_>>().join(",").into_bytes();
                match store.put_if_match(&key, body, &o.version).await {
                    Ok(_) => done += 1,
                    Err(Error::Precondition { .. }) => conflicts += 1,
                    Err(Error::Unavailable { .. }) if transient < 100 => transient += 1,
                    Err(e) => panic!("{}: CAS race write failed: {e}", store.describe()),
                }
            }
            (conflicts, transient)
        }));
    }
    let (mut conflicts, mut transient) = (0, 0);
    for h in handles {
        let (c, t) = h.await.unwrap();
        conflicts += c;
        transient += t;
    }
    let o = store.get(key, 4096).await.unwrap().unwrap();
    let counts = parse(&o.body);
    assert_eq!(
        counts.iter().sum::<u64>(),
        tasks as u64 * increments,
        "{}: lost or doubled updates in the CAS race: {counts:?} ({conflicts} conflicts, {transient} transient errors retried)",
        store.describe()
    );
}

/// A clock the suite moves by hand, so expiry needs no sleeping.
#[derive(Clone)]
pub struct ManualClock(Arc<std::sync::atomic::AtomicI64>);

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        ManualClock(Arc::new(std::sync::atomic::AtomicI64::new(start_ms)))
    }
    pub fn advance(&self, d: std::time::Duration) {
        self.0.fetch_add(d.as_millis() as i64, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn clock(&self) -> crate::Clock {
        let t = self.0.clone();
        Arc::new(move || oxiflow_core::Timestamp::from_millis(t.load(std::sync::atomic::Ordering::SeqCst)))
    }
}

fn id<T: std::str::FromStr<Err = oxiflow_core::Error>>(s: &str) -> T {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

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
    let pipeline: oxiflow_core::PipelineId = id(&format!("orders-{:08x}", rand::random::<u32>()));
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
