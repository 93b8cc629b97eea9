//! The store primitives, check by check.

use std::sync::Arc;

use super::{body_of, run_prefix, LARGE};
use crate::error::Error;
use crate::store::ConditionalStore;

/// What a store offers beyond the required primitives. A check that needs
/// a capability the store lacks is skipped (and said so), not failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Listings carry each object's version (S3, Azure, GCS, the local
    /// directory, Redis, HTTP): readers then skip unchanged documents.
    pub versions_in_listing: bool,
    /// Bodies of 4 MiB round-trip (documents are limited to 1 MiB; a store
    /// for documents only may refuse more).
    pub large_bodies: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities { versions_in_listing: true, large_bodies: true }
    }
}

type Check = fn(Arc<dyn ConditionalStore>, String) -> futures::future::BoxFuture<'static, ()>;
/// Whether a check applies to a store with these capabilities.
type Applies = fn(&Capabilities) -> bool;

/// Every check, by name, with the capability it needs.
fn checks() -> Vec<(&'static str, Applies, Check)> {
    let always = |_: &Capabilities| true;
    vec![
        ("get of a missing key", always, |s, p| Box::pin(get_missing(s, p))),
        ("create once, refuse the second", always, |s, p| Box::pin(create_once(s, p))),
        ("update with the current version, refuse a stale one", always, |s, p| Box::pin(update_if_match(s, p))),
        ("update of a missing key", always, |s, p| Box::pin(update_missing(s, p))),
        ("list by prefix", always, |s, p| Box::pin(list_by_prefix(s, p))),
        ("listed versions are the read ones", |c| c.versions_in_listing, |s, p| Box::pin(listed_versions(s, p))),
        ("large body and the read limit", |c| c.large_bodies, |s, p| Box::pin(large_body(s, p))),
        ("delete, and delete of a missing key", always, |s, p| Box::pin(delete(s, p))),
        ("keys and prefixes that leave the store are refused", always, |s, p| Box::pin(hostile_keys(s, p))),
        ("compare-and-swap race, 8 tasks x 25", always, |s, p| Box::pin(async move { cas_race(s, &format!("{p}counter"), 8, 25).await })),
    ]
}

/// Runs every primitive check: see [`primitives_with`].
pub async fn primitives(store: Arc<dyn ConditionalStore>) {
    primitives_with(store, Capabilities::default()).await
}

/// Runs each check that `capabilities` allows under a fresh prefix of its
/// own, all of them even when some fail, then panics naming every check
/// that failed and what the store did wrong.
pub async fn primitives_with(store: Arc<dyn ConditionalStore>, capabilities: Capabilities) {
    use futures::FutureExt;
    let run = run_prefix();
    let mut failed = Vec::new();
    let all = checks();
    for (i, (name, applies, check)) in all.iter().enumerate() {
        if !applies(&capabilities) {
            eprintln!("{}: skipped {name:?} (capability not offered)", store.describe());
            continue;
        }
        let outcome = std::panic::AssertUnwindSafe(check(store.clone(), format!("{run}{i}/"))).catch_unwind().await;
        if let Err(panic) = outcome {
            let message = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            failed.push(format!("{name}: {}", message.unwrap_or_default()));
        }
    }
    assert!(failed.is_empty(), "{}: {} of {} checks failed:\n{}", store.describe(), failed.len(), all.len(), failed.join("\n"));
}

async fn get_missing(store: Arc<dyn ConditionalStore>, p: String) {
    assert!(body_of(store.as_ref(), &format!("{p}missing")).await.is_none(), "get of a missing key must be None");
}

async fn create_once(store: Arc<dyn ConditionalStore>, p: String) {
    let (s, key) = (store.as_ref(), format!("{p}doc"));
    let v1 = s.put_if_absent(&key, b"one".to_vec()).await.unwrap_or_else(|e| panic!("first create failed: {e}"));
    match s.put_if_absent(&key, b"two".to_vec()).await {
        Err(Error::AlreadyExists { .. }) => {}
        other => panic!("a second create must be AlreadyExists (If-None-Match ignored?), got {other:?}"),
    }
    let (body, read_v1) = body_of(s, &key).await.expect("created key is readable");
    assert_eq!(body, b"one", "the second create must not overwrite");
    assert_eq!(read_v1.e_tag, v1.e_tag, "get must report the version the put returned");
}

async fn update_if_match(store: Arc<dyn ConditionalStore>, p: String) {
    let (s, key) = (store.as_ref(), format!("{p}doc"));
    let v1 = s.put_if_absent(&key, b"one".to_vec()).await.unwrap();
    let v2 = s.put_if_match(&key, b"three".to_vec(), &v1).await.unwrap_or_else(|e| panic!("update with the current version failed: {e}"));
    assert_ne!(v2, v1, "an update must change the version");
    match s.put_if_match(&key, b"four".to_vec(), &v1).await {
        Err(Error::Precondition { .. }) => {}
        other => panic!("an update with a stale version must be Precondition (If-Match ignored?), got {other:?}"),
    }
    assert_eq!(body_of(s, &key).await.unwrap().0, b"three", "a stale update must not land");
}

async fn update_missing(store: Arc<dyn ConditionalStore>, p: String) {
    let s = store.as_ref();
    let v = s.put_if_absent(&format!("{p}doc"), b"one".to_vec()).await.unwrap();
    match s.put_if_match(&format!("{p}missing"), b"x".to_vec(), &v).await {
        Err(Error::Precondition { .. }) => {}
        other => panic!("updating a missing key must be Precondition, got {other:?}"),
    }
}

/// Every key and prefix goes through the core's one key check: a key that
/// could leave the store's root (or nest without bound, or hide a file) is
/// refused as invalid input by every operation, before any request.
async fn hostile_keys(store: Arc<dyn ConditionalStore>, p: String) {
    let s = store.as_ref();
    let invalid = |what: &str, r: Result<(), Error>| match r {
        Err(e) if e.kind() == oxiflow_core::ErrorKind::Invalid => {}
        other => panic!("{what} must be refused as invalid input, got {other:?}"),
    };
    let deep = format!("{p}{}x", "d/".repeat(2000));
    let long = format!("{p}{}", "k".repeat(300));
    for key in [
        "../outside/secret.txt",
        "/etc/hosts",
        &format!("{p}../x"),
        &format!("{p}.hidden"),
        &format!("{p}a//b"),
        &format!("{p}a%2Fb"),
        &format!("{p}a\0b"),
        &deep,
        &long,
    ] {
        invalid(&format!("get {key:.40}"), s.get(key, 1024).await.map(drop));
        invalid(&format!("create {key:.40}"), s.put_if_absent(key, b"x".to_vec()).await.map(drop));
        invalid(&format!("update {key:.40}"), s.put_if_match(key, b"x".to_vec(), &oxiflow_core::Version::default()).await.map(drop));
        invalid(&format!("delete {key:.40}"), s.delete(key).await);
    }
    for prefix in ["../outside/", "../../../etc/host", "/", &format!("{p}../"), &format!("{p}a//")] {
        invalid(&format!("list {prefix:.40}"), s.list(prefix).await.map(drop));
    }
    assert!(s.list(&p).await.unwrap().is_empty(), "a refused write must not land");
}

async fn put_listing_keys(s: &dyn ConditionalStore, p: &str) {
    for k in ["a/x/1", "a/x/2", "a/y/1", "ab/1"] {
        s.put_if_absent(&format!("{p}{k}"), k.as_bytes().to_vec()).await.unwrap();
    }
}

async fn list_by_prefix(store: Arc<dyn ConditionalStore>, p: String) {
    let s = store.as_ref();
    put_listing_keys(s, &p).await;
    let strip =
        |keys: Vec<crate::Listed>| keys.into_iter().map(|k| k.key.strip_prefix(&p).unwrap_or(&k.key).to_string()).collect::<Vec<_>>();
    assert_eq!(strip(s.list(&format!("{p}a/x/")).await.unwrap()), ["a/x/1", "a/x/2"], "list a/x/");
    assert_eq!(strip(s.list(&format!("{p}a/")).await.unwrap()), ["a/x/1", "a/x/2", "a/y/1"], "list a/");
    assert_eq!(strip(s.list(&format!("{p}a")).await.unwrap()), ["a/x/1", "a/x/2", "a/y/1", "ab/1"], "list a");
    assert!(s.list(&format!("{p}nothing/")).await.unwrap().is_empty(), "list of an empty prefix");
}

/// A version in a listing is the one a GET returns: readers skip the GET
/// of a document whose listed version they hold.
async fn listed_versions(store: Arc<dyn ConditionalStore>, p: String) {
    let s = store.as_ref();
    put_listing_keys(s, &p).await;
    let listed = s.list(&format!("{p}a")).await.unwrap();
    assert!(listed.iter().all(|l| l.version.is_some()), "a listing without versions: {listed:?}");
    for item in listed {
        assert_eq!(item.version, body_of(s, &item.key).await.map(|b| b.1), "listed and read versions of {}", item.key);
    }
}

async fn large_body(store: Arc<dyn ConditionalStore>, p: String) {
    let (s, big) = (store.as_ref(), format!("{p}large"));
    let large: Vec<u8> = (0..LARGE).map(|i| (i % 251) as u8).collect();
    s.put_if_absent(&big, large.clone()).await.unwrap_or_else(|e| panic!("4 MiB create failed: {e}"));
    assert!(body_of(s, &big).await.unwrap().0 == large, "4 MiB body must round-trip");
    match s.get(&big, 1024).await {
        Err(Error::Core(oxiflow_core::Error::TooLarge { size, limit: 1024, .. })) if size == LARGE => {}
        other => panic!("a read over the limit must be TooLarge, got {:?}", other.map(|o| o.map(|o| o.body.len()))),
    }
}

async fn delete(store: Arc<dyn ConditionalStore>, p: String) {
    let (s, key) = (store.as_ref(), format!("{p}doc"));
    s.put_if_absent(&key, b"one".to_vec()).await.unwrap();
    s.delete(&key).await.unwrap();
    assert!(body_of(s, &key).await.is_none(), "deleted key must be gone");
    s.delete(&key).await.unwrap_or_else(|e| panic!("deleting a missing key must succeed: {e}"));
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
