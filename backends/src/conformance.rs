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
    let strip = |keys: Vec<String>| keys.into_iter().map(|k| k.strip_prefix(&p).unwrap_or(&k).to_string()).collect::<Vec<_>>();
    assert_eq!(strip(s.list(&format!("{p}a/x/")).await.unwrap()), ["a/x/1", "a/x/2"], "{name}: list a/x/");
    assert_eq!(strip(s.list(&format!("{p}a/")).await.unwrap()), ["a/x/1", "a/x/2", "a/y/1"], "{name}: list a/");
    assert_eq!(strip(s.list(&format!("{p}a")).await.unwrap()), ["a/x/1", "a/x/2", "a/y/1", "ab/1"], "{name}: list a");
    assert!(s.list(&format!("{p}nothing/")).await.unwrap().is_empty(), "{name}: list of an empty prefix");

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
