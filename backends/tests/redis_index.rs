//! A Redis write lands whole or not at all, and a pipeline's index never
//! hides its documents. Against a real redis-server
//! (`OXIFLOW_TEST_REDIS_URL`, started by `scripts/test.sh`):
//!
//! - While four workers claim, checkpoint and release, one key is spoiled
//!   (the pipeline's index replaced by a string or a list, or a partition
//!   document by a string or a list), then repaired: every error the workers
//!   saw is `Corrupt` naming the key, nothing was written over it, and what
//!   is stored equals what was acknowledged, exactly.
//! - A deleted index: the pipeline is still listed, shown and claimable,
//!   also after a write re-creates the index with only its own key; the
//!   listing rebuilds it.
//! - An index deleted over and over while documents are created and the
//!   pipeline listed: no listing misses a document acknowledged before it.
//! - An ACL that covers the documents but not the index: the write is
//!   refused whole (AccessDenied), the document is not written.

// Tests may read the clock and draw random numbers (backends/clippy.toml
// bans them in the library); their helpers are `pub` for other test files.
#![allow(unreachable_pub, clippy::disallowed_methods)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oxiflow_backends::{ConditionalStore, Error, RedisStore, StateManager, StepPlan};
use oxiflow_core::{keys, Config, ErrorKind, PartitionDoc, PartitionId, PipelineId, Progress, WorkerId};

const WORKERS: usize = 4;

fn url() -> Option<String> {
    support::redis_url_or_skip()
}

fn id<T: std::str::FromStr<Err = oxiflow_core::Error>>(s: &str) -> T {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// A raw connection for spoiling and inspecting keys.
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url.split('?').next().unwrap()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// The Redis key of a pipeline's index: `<prefix>:pipelines/{<p>}`.
fn index_key(store: &RedisStore, p: &PipelineId) -> String {
    store.redis_key(&keys::pipeline_doc(p)).unwrap().strip_suffix("/pipeline.json").unwrap().to_string()
}

/// Polls `done` until it holds (30 s at most).
async fn wait_for(what: &str, done: &dyn Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Which key is spoiled while the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spoil {
    IndexAsString,
    IndexAsList,
    DocumentAsString,
    DocumentAsList,
}

impl Spoil {
    fn hits_index(self) -> bool {
        matches!(self, Spoil::IndexAsString | Spoil::IndexAsList)
    }
    fn redis_type(self) -> &'static str {
        match self {
            Spoil::IndexAsString | Spoil::DocumentAsString => "string",
            Spoil::IndexAsList | Spoil::DocumentAsList => "list",
        }
    }
}

/// What the workers saw, per worker.
#[derive(Default)]
struct Tally {
    acked: [AtomicU64; WORKERS],
    errors: [AtomicU64; WORKERS],
    /// Errors that were not the expected `Corrupt` naming the spoiled key.
    wrong: Mutex<Vec<String>>,
}

impl Tally {
    fn acked(&self) -> [u64; WORKERS] {
        std::array::from_fn(|i| self.acked[i].load(SeqCst))
    }
    fn errors(&self) -> [u64; WORKERS] {
        std::array::from_fn(|i| self.errors[i].load(SeqCst))
    }
}

/// Worker `i`: claims partition `s<i>` as `w<i>`, checkpoints +1 five
/// times, releases; again and again. After an error it drops its session
/// (nothing of it is replayed) and claims again: a worker may re-claim its
/// own lease. Every error must be `Corrupt` and contain `expect`.
async fn worker(m: StateManager, p: PipelineId, i: usize, tally: Arc<Tally>, stop: Arc<AtomicBool>, expect: Vec<String>) {
    let part = PartitionId::step(id(&format!("s{i}")));
    let me: WorkerId = id(&format!("w{i}"));
    let failed = |e: Error| {
        tally.errors[i].fetch_add(1, SeqCst);
        let text = e.to_string();
        if e.kind() != ErrorKind::Corrupt || !expect.iter().all(|x| text.contains(x.as_str())) {
            tally.wrong.lock().unwrap().push(format!("w{i}: {:?}: {text}", e.kind()));
        }
    };
    while !stop.load(SeqCst) {
        let mut held = match m.claim(&p, &part, &me).await {
            Ok(held) => held,
            Err(e) => {
                failed(e);
                tokio::time::sleep(Duration::from_millis(2)).await; // not a spin; no race depends on it
                continue;
            }
        };
        let mut healthy = true;
        for _ in 0..5 {
            match m.checkpoint(&mut held, Progress { add_records: 1, ..Progress::default() }).await {
                Ok(w) => {
                    assert!(w.landed && w.stop.is_none(), "w{i}: {w:?}");
                    tally.acked[i].fetch_add(1, SeqCst);
                }
                Err(e) => {
                    failed(e);
                    healthy = false;
                    break;
                }
            }
        }
        if healthy {
            if let Err(e) = m.release(&mut held, Progress::default()).await {
                failed(e);
            }
        }
    }
}

async fn spoiled_while_workers_run(spoil: Spoil) {
    let Some(url) = url() else { return };
    let store = Arc::new(RedisStore::open(&url).unwrap());
    let mut conn = raw(&url).await;
    let p: PipelineId = id("orders");
    let steps: Vec<StepPlan> = (0..WORKERS).map(|i| StepPlan::new(id(&format!("s{i}")), None)).collect();
    StateManager::new(store.clone(), Config::default()).create_pipeline(&p, &id("r"), &steps).await.unwrap();

    let index = index_key(&store, &p);
    let spoiled_doc = store.redis_key(&keys::partition_doc(&p, &PartitionId::step(id("s1")))).unwrap();
    let (target, expect, affected): (String, Vec<String>, Vec<usize>) = if spoil.hits_index() {
        (
            index.clone(),
            vec![format!("{index:?}"), format!("a Redis {}", spoil.redis_type()), "delete that key".into()],
            (0..WORKERS).collect(),
        )
    } else {
        (spoiled_doc.clone(), vec![format!("{spoiled_doc:?}"), format!("a Redis {}", spoil.redis_type())], vec![1])
    };

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            // Each worker has a store (a connection) and a manager of its own.
            let m = StateManager::new(Arc::new(RedisStore::open(&url).unwrap()), Config::default());
            tokio::spawn(worker(m, p.clone(), i, tally.clone(), stop.clone(), expect.clone()))
        })
        .collect();
    wait_for("20 checkpoints each", &|| tally.acked().iter().all(|n| *n >= 20)).await;
    assert_eq!(tally.errors(), [0; WORKERS], "no error before the key is spoiled: {:?}", tally.wrong.lock().unwrap());

    // Spoil, atomically: the document is set aside whole (restored below),
    // the index is simply lost.
    let saved = format!("saved:{:016x}", rand::random::<u64>());
    let mut pipe = redis::pipe();
    pipe.atomic();
    if spoil.hits_index() {
        pipe.cmd("DEL").arg(&index).ignore();
    } else {
        pipe.cmd("RENAME").arg(&spoiled_doc).arg(&saved).ignore();
    }
    match spoil.redis_type() {
        "string" => pipe.cmd("SET").arg(&target).arg("someone else's").ignore(),
        _ => pipe.cmd("RPUSH").arg(&target).arg("someone").arg("else's").ignore(),
    };
    let () = pipe.query_async(&mut conn).await.unwrap();

    // Every affected worker fails, and keeps failing: nothing of it is
    // acknowledged while the key is spoiled. The others carry on.
    let at_spoil = tally.errors();
    wait_for("3 errors of each affected worker", &|| affected.iter().all(|&i| tally.errors()[i] >= at_spoil[i] + 3)).await;
    let (acked_failing, errors_failing) = (tally.acked(), tally.errors());
    wait_for("10 more errors of each affected worker", &|| affected.iter().all(|&i| tally.errors()[i] >= errors_failing[i] + 10)).await;
    let acked_later = tally.acked();
    for &i in &affected {
        assert_eq!(acked_later[i], acked_failing[i], "w{i}: a checkpoint was acknowledged while {target} was spoiled");
    }
    if !spoil.hits_index() {
        wait_for("the others to carry on", &|| {
            (0..WORKERS).filter(|i| !affected.contains(i)).all(|i| tally.acked()[i] >= acked_later[i] + 20)
        })
        .await;
    }
    if spoil.hits_index() {
        let err = store.list(&keys::pipeline_prefix(&p)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err:?}");
        assert!(expect.iter().all(|x| err.to_string().contains(x.as_str())), "{err}");
    }
    let found: String = redis::cmd("TYPE").arg(&target).query_async(&mut conn).await.unwrap();
    assert_eq!(found, spoil.redis_type(), "the foreign value of {target} was overwritten");

    // Repair: the index as the error says (delete it), the document by
    // putting it back.
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("DEL").arg(&target).ignore();
    if !spoil.hits_index() {
        pipe.cmd("RENAME").arg(&saved).arg(&spoiled_doc).ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    let at_repair = tally.acked();
    wait_for("20 more checkpoints each after the repair", &|| tally.acked().iter().zip(at_repair).all(|(n, r)| *n >= r + 20)).await;
    stop.store(true, SeqCst);
    for w in workers {
        w.await.unwrap();
    }

    // What is stored, read document by document, equals what was
    // acknowledged: no write that reported an error landed.
    let (acked, errors) = (tally.acked(), tally.errors());
    let reader = StateManager::new(Arc::new(RedisStore::open(&url).unwrap()), Config::default());
    let mut stored = [0; WORKERS];
    for (i, n) in stored.iter_mut().enumerate() {
        let key = keys::partition_doc(&p, &PartitionId::step(id(&format!("s{i}"))));
        *n = reader.read::<PartitionDoc>(&key).await.unwrap().unwrap().0.records_processed;
    }
    assert_eq!(stored, acked, "{spoil:?}: stored records against acknowledged checkpoints (errors {errors:?})");
    let wrong = tally.wrong.lock().unwrap().clone();
    assert!(
        wrong.is_empty(),
        "{spoil:?}: {} errors were not Corrupt naming {target}, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
    for (i, n) in errors.iter().enumerate() {
        assert_eq!(*n > 0, affected.contains(&i), "w{i} saw {n} errors ({spoil:?})");
    }
    // A reader's view agrees: its listing rebuilds the index that was deleted.
    let view = reader.view(&p).await.unwrap_or_else(|e| panic!("{spoil:?}: the pipeline after the repair: {e}"));
    let shown: Vec<u64> = view.steps.iter().map(|s| s.partitions[0].records_processed).collect();
    assert_eq!(shown, acked, "{spoil:?}: the view after the repair");

    // The listing left a complete index: the pipeline's five documents at
    // their versions, marked complete.
    let fields: BTreeMap<String, String> = redis::cmd("HGETALL").arg(&index).query_async(&mut conn).await.unwrap();
    assert!(fields.contains_key("_complete") && !fields.contains_key("_rebuilding"), "{fields:?}");
    let docs: Vec<_> = fields.keys().filter(|k| k.starts_with("pipelines/")).cloned().collect();
    assert_eq!(docs.len(), 1 + WORKERS, "{docs:?}");
    for key in docs {
        let v: String = redis::cmd("HGET").arg(store.redis_key(&key).unwrap()).arg("v").query_async(&mut conn).await.unwrap();
        assert_eq!(fields[&key], v, "the index's version of {key}");
    }
    println!("{spoil:?}: acknowledged = stored = {acked:?}; typed Corrupt errors {errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_index_spoiled_as_a_string_fails_writes_whole() {
    spoiled_while_workers_run(Spoil::IndexAsString).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_index_spoiled_as_a_list_fails_writes_whole() {
    spoiled_while_workers_run(Spoil::IndexAsList).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_document_spoiled_as_a_string_fails_its_writes_whole() {
    spoiled_while_workers_run(Spoil::DocumentAsString).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_document_spoiled_as_a_list_fails_its_writes_whole() {
    spoiled_while_workers_run(Spoil::DocumentAsList).await;
}

async fn hgetall(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> BTreeMap<String, String> {
    redis::cmd("HGETALL").arg(key).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn a_deleted_index_hides_nothing_and_is_rebuilt() {
    let Some(url) = url() else { return };
    let store = Arc::new(RedisStore::open(&url).unwrap());
    let mut conn = raw(&url).await;
    let m = StateManager::new(store.clone(), Config::default());
    let (p, s0, s1): (PipelineId, PartitionId, PartitionId) = (id("orders"), PartitionId::step(id("s0")), PartitionId::step(id("s1")));
    m.create_pipeline(&p, &id("r"), &[StepPlan::new(id("s0"), None), StepPlan::new(id("s1"), None)]).await.unwrap();
    let mut held = m.claim(&p, &s0, &id("w")).await.unwrap();
    m.checkpoint(&mut held, Progress { add_records: 3, ..Progress::default() }).await.unwrap();
    m.release(&mut held, Progress::default()).await.unwrap();
    let index = index_key(&store, &p);
    let partitions = keys::partitions_prefix(&p);
    let listed = |l: Vec<oxiflow_backends::Listed>| l.into_iter().map(|l| (l.key, l.version)).collect::<Vec<_>>();
    let before = listed(store.list(&partitions).await.unwrap());
    assert_eq!(before.len(), 2);

    let deleted: i64 = redis::cmd("DEL").arg(&index).query_async(&mut conn).await.unwrap();
    assert_eq!(deleted, 1, "{index} existed");
    assert_eq!(m.list_pipelines().await.unwrap(), std::slice::from_ref(&p), "the pipeline is listed without its index");
    assert_eq!(listed(store.list(&partitions).await.unwrap()), before, "the same keys at the same versions");
    let view = m.view(&p).await.unwrap_or_else(|e| panic!("the pipeline without its index: {e}"));
    assert_eq!(view.steps.iter().map(|s| s.partitions[0].records_processed).collect::<Vec<_>>(), [3, 0]);
    let rebuilt = hgetall(&mut conn, &index).await;
    assert_eq!(
        rebuilt.keys().map(String::as_str).collect::<Vec<_>>(),
        ["_complete", "pipelines/orders/partitions/s0.json", "pipelines/orders/partitions/s1.json", "pipelines/orders/pipeline.json"],
        "the listing rebuilt the index"
    );

    // Lost again; the next write re-creates it with its own key only, which
    // must not pass for the whole pipeline.
    let _: i64 = redis::cmd("DEL").arg(&index).query_async(&mut conn).await.unwrap();
    let mut held = m.claim(&p, &s1, &id("w")).await.unwrap();
    m.checkpoint(&mut held, Progress { add_records: 4, ..Progress::default() }).await.unwrap();
    let partial = hgetall(&mut conn, &index).await;
    assert_eq!(partial.keys().map(String::as_str).collect::<Vec<_>>(), ["pipelines/orders/partitions/s1.json"], "not marked complete");
    let view = m.view(&p).await.unwrap_or_else(|e| panic!("the pipeline with a partial index: {e}"));
    assert_eq!(view.steps.iter().map(|s| s.partitions[0].records_processed).collect::<Vec<_>>(), [3, 4]);
    for (key, version) in listed(store.list(&keys::pipeline_prefix(&p)).await.unwrap()) {
        assert_eq!(Some(store.get(&key, 1 << 20).await.unwrap().unwrap().version), version, "{key}: the listed version is the stored one");
    }
    let rebuilt = hgetall(&mut conn, &index).await;
    assert_eq!(rebuilt.len(), 4, "rebuilt again, complete: {rebuilt:?}");
    assert_eq!(rebuilt["pipelines/orders/partitions/s1.json"], partial["pipelines/orders/partitions/s1.json"], "its own key kept");

    // A listing that finds a rebuild left half-way by another (its token in
    // the index) finishes it.
    let _: i64 = redis::cmd("DEL").arg(&index).query_async(&mut conn).await.unwrap();
    let _: i64 = redis::cmd("HSET").arg(&index).arg("_rebuilding").arg("a-crashed-listing").query_async(&mut conn).await.unwrap();
    assert_eq!(store.list(&keys::pipeline_prefix(&p)).await.unwrap().len(), 3);
    let rebuilt = hgetall(&mut conn, &index).await;
    assert!(rebuilt.len() == 4 && rebuilt.contains_key("_complete"), "{rebuilt:?}");
}

#[tokio::test]
async fn listing_an_unknown_pipeline_or_deleting_the_last_document_leaves_no_index() {
    let Some(url) = url() else { return };
    let store = RedisStore::open(&url).unwrap();
    let mut conn = raw(&url).await;
    let p: PipelineId = id("gone");
    let index = index_key(&store, &p);
    let exists = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        let index = index.clone();
        async move { redis::cmd("EXISTS").arg(&index).query_async::<i64>(&mut conn).await.unwrap() == 1 }
    };
    assert!(store.list(&keys::pipeline_prefix(&p)).await.unwrap().is_empty());
    assert!(!exists(&mut conn).await, "a listing of nothing leaves no key");

    let key = keys::pipeline_doc(&p);
    store.put_if_absent(&key, b"{}".to_vec()).await.unwrap();
    assert_eq!(store.list(&keys::pipeline_prefix(&p)).await.unwrap().len(), 1);
    assert!(exists(&mut conn).await);
    store.delete(&key).await.unwrap();
    assert!(!exists(&mut conn).await, "the index goes with the last document");
    assert!(store.list(&keys::pipeline_prefix(&p)).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_foreign_value_is_listed_without_a_version_and_reads_as_corrupt() {
    let Some(url) = url() else { return };
    let store = RedisStore::open(&url).unwrap();
    let mut conn = raw(&url).await;
    let p: PipelineId = id("mixed");
    let (ours, theirs) = (keys::pipeline_doc(&p), format!("{}partitions/x.json", keys::pipeline_prefix(&p)));
    let v = store.put_if_absent(&ours, b"{}".to_vec()).await.unwrap();
    let _: () = redis::cmd("SET").arg(store.redis_key(&theirs).unwrap()).arg("someone else's").query_async(&mut conn).await.unwrap();
    let expected = vec![(theirs.clone(), None), (ours.clone(), Some(v))]; // listings are sorted by key
    let listed = |l: Vec<oxiflow_backends::Listed>| l.into_iter().map(|l| (l.key, l.version)).collect::<Vec<_>>();
    // Across pipelines (SCAN), then inside it: rebuilt, then from the index.
    let across: Vec<_> = listed(store.list("pipelines/").await.unwrap());
    assert_eq!(across, expected, "a SCAN listing");
    let _: i64 = redis::cmd("DEL").arg(index_key(&store, &p)).query_async(&mut conn).await.unwrap();
    for round in ["rebuilt", "indexed"] {
        assert_eq!(listed(store.list(&keys::pipeline_prefix(&p)).await.unwrap()), expected, "{round}");
    }
    let err = store.get(&theirs, 1024).await.unwrap_err();
    assert!(err.kind() == ErrorKind::Corrupt && err.to_string().contains("a Redis string"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_index_deleted_while_listing_never_hides_an_acknowledged_document() {
    let Some(url) = url() else { return };
    let store = Arc::new(RedisStore::open(&url).unwrap());
    let p: PipelineId = id("churn");
    let index = index_key(&store, &p);
    let prefix = keys::pipeline_prefix(&p);
    let created = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // One document created per listing begun, while it runs: the pipeline
    // stays small (every rebuild SCANs and passes all of it).
    let begun = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, created, stop, prefix, begun) =
            (Arc::new(RedisStore::open(&url).unwrap()), created.clone(), stop.clone(), prefix.clone(), begun.clone());
        tokio::spawn(async move {
            while !stop.load(SeqCst) {
                let n = created.load(SeqCst);
                if n >= begun.load(SeqCst) {
                    tokio::task::yield_now().await;
                    continue;
                }
                store.put_if_absent(&format!("{prefix}extra/{n:06}"), b"x".to_vec()).await.unwrap();
                created.store(n + 1, SeqCst);
            }
        })
    };
    let deletions = Arc::new(AtomicU64::new(0));
    let deleter = {
        let (mut conn, stop, deletions, index) = (raw(&url).await, stop.clone(), deletions.clone(), index.clone());
        tokio::spawn(async move {
            while !stop.load(SeqCst) {
                let n: i64 = redis::cmd("DEL").arg(&index).query_async(&mut conn).await.unwrap();
                deletions.fetch_add(n as u64, SeqCst);
                tokio::task::yield_now().await;
            }
        })
    };
    let mut listings = 0;
    while listings < 300 || deletions.load(SeqCst) < 50 {
        let acknowledged = created.load(SeqCst);
        begun.fetch_add(1, SeqCst);
        let listed = store.list(&prefix).await.unwrap_or_else(|e| panic!("listing {listings}: {e}"));
        let keys: std::collections::BTreeSet<String> = listed.into_iter().map(|l| l.key).collect();
        for n in 0..acknowledged {
            let key = format!("{prefix}extra/{n:06}");
            assert!(keys.contains(&key), "listing {listings} misses {key}, acknowledged before it began ({} listed)", keys.len());
        }
        listings += 1;
    }
    stop.store(true, SeqCst);
    writer.await.unwrap();
    deleter.await.unwrap();
    println!("{listings} listings, {} index deletions, {} documents: none hidden", deletions.load(SeqCst), created.load(SeqCst));
}

#[tokio::test]
async fn an_acl_that_refuses_the_index_refuses_the_write_whole() {
    let Some(url) = url() else { return };
    let admin_store = RedisStore::open(&url).unwrap();
    let mut admin = raw(&url).await;
    let p: PipelineId = id("orders");
    let doc = admin_store.redis_key(&keys::pipeline_doc(&p)).unwrap();
    let index = index_key(&admin_store, &p);
    let user = format!("oxiflow-index-{:08x}", rand::random::<u32>());
    // The pipeline's documents, not its index.
    let _: () =
        redis::cmd("ACL").arg(&["SETUSER", &user, "on", ">pw", &format!("~{index}/*"), "+@all"]).query_async(&mut admin).await.unwrap();
    let host = url.trim_start_matches("redis://").split('/').next().unwrap();
    let query = url.split_once('?').unwrap().1;
    let store = RedisStore::open(&format!("redis://{user}:pw@{host}/0?{query}")).unwrap();
    let err = store.put_if_absent(&keys::pipeline_doc(&p), b"{}".to_vec()).await.unwrap_err();
    let _: () = redis::cmd("ACL").arg(&["DELUSER", &user]).query_async(&mut admin).await.unwrap();
    assert!(matches!(err, Error::AccessDenied { .. }) && err.to_string().contains(&user), "{err:?}");
    let found: i64 = redis::cmd("EXISTS").arg(&doc).arg(&index).query_async(&mut admin).await.unwrap();
    assert_eq!(found, 0, "neither the document nor the index was written");
}
