//! The holder session beyond the shared vectors (`core/vectors/session.json`):
//! misuse, one write at a time when a driver is dropped, replays that keep
//! failing, trust and heartbeat timing, resuming, and the one case where a
//! landed write cannot be told from a fenced one.

use std::collections::BTreeMap;

use oxiflow_core::*;

mod support;

const KEY: &str = "pipelines/p/partitions/s.json";

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn worker(name: &str) -> WorkerId {
    WorkerId::new(name).unwrap()
}

fn config() -> Config {
    Config {
        lease: support::short_leases(),
        retry: RetryPolicy { max_transient_failures: 0, ..RetryPolicy::default() },
        ..Config::default()
    }
}

/// A conditional store with one key; `lose` makes the next PUT land and its
/// answer be lost.
#[derive(Default)]
struct Store {
    objects: BTreeMap<String, (Vec<u8>, u64)>,
    next: u64,
    requests: u32,
}

fn tag(n: u64) -> Version {
    Version { e_tag: Some(n.to_string()), version: None }
}

impl Store {
    fn new() -> Self {
        let mut store = Store::default();
        let doc =
            PartitionDoc::new(PipelineId::new("p").unwrap(), PartitionId::step(StepId::new("s").unwrap()), RunId::new("r").unwrap(), at(0));
        store.run(Update::new(KEY, Create(doc), config()), 0).unwrap();
        store
    }

    fn serve(&mut self, request: Request) -> Response {
        self.requests += 1;
        match request {
            Request::Get { key } => Response::Object(self.objects.get(&key).map(|(b, n)| Object { body: b.clone(), version: tag(*n) })),
            Request::PutIfAbsent { key, body } if !self.objects.contains_key(&key) => self.put(key, body),
            Request::PutIfAbsent { .. } => Response::AlreadyExists,
            Request::PutIfMatch { key, body, version } => match self.objects.get(&key) {
                Some((_, n)) if tag(*n) == version => self.put(key, body),
                _ => Response::Precondition,
            },
        }
    }

    fn put(&mut self, key: String, body: Vec<u8>) -> Response {
        self.next += 1;
        self.objects.insert(key, (body, self.next));
        Response::Written(tag(self.next))
    }

    fn doc(&self) -> PartitionDoc {
        codec::decode(KEY, &self.objects[KEY].0, &Limits::default()).unwrap()
    }

    fn run<M: Mutation>(&mut self, mut op: Update<M>, now: i64) -> Result<Committed<M::Doc>, Error> {
        drive(&mut op, now, |r| self.serve(r))
    }

    fn claim(&mut self, who: &str, write_id: u64, now: i64) -> Session {
        let c = self.run(Update::new(KEY, Claim::new(worker(who), write_id), config()), now).unwrap();
        Session::claimed(KEY, c, config(), at(now))
    }
}

fn drive<D: Drive>(op: &mut D, now: i64, mut serve: impl FnMut(Request) -> Response) -> Result<D::Output, Error> {
    let mut action = op.start(at(now));
    loop {
        action = match action {
            Action::Send(r) => op.handle(serve(r), at(now), 0),
            Action::Sleep(_) => op.wake(at(now)),
            Action::Done(result) => return result,
        };
    }
}

fn progress(records: u64) -> Progress {
    Progress { add_records: records, ..Progress::default() }
}

fn write(store: &mut Store, s: &mut Session, records: u64, finish: Option<Finish>, id: u64, now: i64) -> Result<Written, Error> {
    drive(&mut s.write(progress(records), finish, id), now, |r| store.serve(r))
}

/// Begins a write and lets its one PUT land with the answer lost.
fn land_and_lose(store: &mut Store, s: &mut Session, records: u64, finish: Option<Finish>, id: u64, now: i64) {
    let Action::Send(put) = s.begin(progress(records), finish, id, at(now)) else { panic!("a write from a cached document is one PUT") };
    assert!(matches!(store.serve(put), Response::Written(_)));
    let outcome = s.handle(Response::Unavailable { reason: "response lost".into() }, at(now), 0);
    assert!(matches!(outcome, Action::Done(Err(Error::Unavailable { .. }))), "{outcome:?}");
    assert!(s.is_unresolved());
}

#[test]
fn answers_and_wakes_without_a_write_in_flight_are_misuse_not_panics() {
    let mut store = Store::new();
    let mut s = store.claim("w1", 1, 100);
    assert!(matches!(s.handle(Response::Precondition, at(100), 0), Action::Done(Err(Error::Protocol { .. }))));
    assert!(matches!(s.wake(at(100)), Action::Done(Err(Error::Protocol { .. }))));
    let mut w = s.write(Progress::default(), None, 2);
    assert!(matches!(w.start(at(100)), Action::Send(_)));
    assert!(matches!(w.start(at(100)), Action::Done(Err(Error::Protocol { .. }))), "start twice");
}

#[test]
fn a_write_begun_while_another_is_in_flight_settles_the_first_with_its_own_id() {
    let mut store = Store::new();
    let mut s = store.claim("w1", 1, 100);
    // Write 2 is sent and its driver dropped (a cancelled heartbeat): the
    // PUT never arrives.
    let Action::Send(_lost) = s.begin(progress(10), None, 2, at(150)) else { panic!() };
    assert!(s.is_unresolved());
    store.requests = 0;
    let w = write(&mut store, &mut s, 5, None, 3, 200).unwrap();
    assert!(w.landed);
    assert_eq!(store.requests, 3, "GET, the replayed write 2, then write 3");
    assert_eq!(w.requests, 3);
    let doc = store.doc();
    assert_eq!((doc.records_processed, doc.lease.as_ref().unwrap().last_write), (15, 3));
    assert!(!s.is_unresolved());

    // The same, when the dropped write had landed: found, not applied twice.
    let Action::Send(put) = s.begin(progress(100), None, 4, at(250)) else { panic!() };
    store.serve(put);
    store.requests = 0;
    let w = write(&mut store, &mut s, 1, None, 5, 300).unwrap();
    assert!(w.landed);
    assert_eq!(store.requests, 2, "GET finds write 4 landed; write 5");
    assert_eq!(store.doc().records_processed, 116);
}

#[test]
fn a_replay_that_fails_keeps_the_write_unresolved_and_writes_nothing_of_the_new_call() {
    let mut store = Store::new();
    let mut s = store.claim("w1", 1, 100);
    land_and_lose(&mut store, &mut s, 10, None, 2, 150);
    // The store is down for the next call: nothing of it is written, and
    // write 2 is still the one to settle.
    let down = drive(&mut s.write(progress(7), None, 3), 200, |_| Response::Unavailable { reason: "down".into() });
    assert!(matches!(down, Err(Error::Unavailable { .. })), "{down:?}");
    assert!(s.is_unresolved());
    assert_eq!(s.doc().records_processed, 0, "the session knows only what it saw stored");
    let w = write(&mut store, &mut s, 7, None, 4, 250).unwrap();
    assert!(w.landed);
    let doc = store.doc();
    assert_eq!((doc.records_processed, doc.lease.as_ref().unwrap().last_write), (17, 4), "write 2 once, write 3 never, write 4");
}

#[test]
fn trust_ends_at_expiry_minus_the_margin_and_as_soon_as_the_holder_lets_go() {
    let mut store = Store::new();
    let mut s = store.claim("w1", 1, 100);
    // ttl 1000, safety margin 100.
    assert!(s.trusts(at(999)));
    assert!(!s.trusts(at(1_000)));
    assert_eq!(s.heartbeat_due(), at(400));
    write(&mut store, &mut s, 1, None, 2, 350).unwrap();
    assert!(s.trusts(at(1_249)) && !s.trusts(at(1_250)), "a write extends the lease, and the trust");
    assert_eq!(s.heartbeat_due(), at(650));
    // A release whose answer is lost may have landed: no more trust.
    land_and_lose(&mut store, &mut s, 0, Some(Finish::Release), 3, 400);
    assert!(!s.trusts(at(400)));
    assert!(!s.is_released(), "not known to be released either");
    let w = write(&mut store, &mut s, 0, Some(Finish::Release), 4, 450).unwrap();
    assert!(!w.landed, "the first release landed; nothing was left to write");
    assert!(s.is_released());
    let again = write(&mut store, &mut s, 1, None, 5, 460);
    assert!(matches!(again, Err(Error::Fenced { landed: false, .. })), "{again:?}");
}

#[test]
fn a_takeover_fences_the_old_holder_which_then_writes_nothing() {
    let mut store = Store::new();
    let mut old = store.claim("w1", 1, 100);
    // w1's lease (until 1100) expires past the skew allowance (1300).
    let mut new = store.claim("w2", 2, 1_301);
    let stored = store.doc();
    store.requests = 0;
    // Past its trusted time (1100 - 100), the old holder may not write at
    // all: refused before any request, whoever holds the partition now.
    let late = write(&mut store, &mut old, 5, None, 3, 1_302);
    assert!(matches!(late, Err(Error::Expired { epoch: 1, trusted_until, .. }) if trusted_until == at(1_000)), "{late:?}");
    assert!(old.is_released() && !old.trusts(at(1_302)));
    assert!(matches!(write(&mut store, &mut old, 5, None, 4, 1_303), Err(Error::Fenced { .. })));
    assert_eq!(store.requests, 0, "a session that knows it was taken over sends nothing");
    assert_eq!(store.doc(), stored);
    assert!(write(&mut store, &mut new, 5, Some(Finish::Complete), 5, 1_304).unwrap().landed);
}

#[test]
fn a_restarted_holder_resumes_from_a_fresh_read_and_its_old_process_is_fenced_by_a_reclaim() {
    let mut store = Store::new();
    let mut first = store.claim("w1", 1, 100);
    write(&mut store, &mut first, 3, None, 2, 150).unwrap();
    // A short-lived process resumes the same lease from a read.
    let doc = store.doc();
    let version = tag(store.objects[KEY].1);
    let mut resumed = Session::resume(KEY, doc, version, &worker("w1"), config(), at(200)).unwrap();
    assert!(write(&mut store, &mut resumed, 4, None, 3, 200).unwrap().landed);
    // The old process's next write does not clobber it: the holder check
    // sees another process's write under the same worker and epoch.
    let shared = write(&mut store, &mut first, 1, None, 4, 210);
    assert!(matches!(shared, Err(Error::Conflict { .. })), "{shared:?}");
    assert_eq!(store.doc().records_processed, 7);
    // A restarted worker that claims again (its own live lease) fences
    // every older process by the epoch.
    let mut again = store.claim("w1", 5, 220);
    assert_eq!(again.lease().epoch, 2);
    assert!(matches!(write(&mut store, &mut resumed, 1, None, 6, 230), Err(Error::Fenced { .. })));
    assert!(write(&mut store, &mut again, 1, Some(Finish::Complete), 7, 240).unwrap().landed);
    assert_eq!(store.doc().records_processed, 8);
}

#[test]
fn a_write_that_landed_just_before_one_takeover_is_landed_and_the_next_is_fenced() {
    // Settled by the write's own retry.
    let mut store = Store::new();
    let retrying = Config { retry: RetryPolicy { max_transient_failures: 1, ..RetryPolicy::default() }, ..config() };
    let c = store.run(Update::new(KEY, Claim::new(worker("w1"), 1), retrying), 100).unwrap();
    let mut s = Session::claimed(KEY, c, retrying, at(100));
    let Action::Send(put) = s.begin(progress(10), None, 2, at(150)) else { panic!() };
    store.serve(put);
    let Action::Sleep(_) = s.handle(Response::Unavailable { reason: "response lost".into() }, at(150), 0) else { panic!() };
    let _w2 = store.claim("w2", 3, 1_500);
    let mut action = s.wake(at(1_600));
    let outcome = loop {
        action = match action {
            Action::Send(r) => s.handle(store.serve(r), at(1_600), 0),
            Action::Sleep(_) => s.wake(at(1_600)),
            Action::Done(result) => break result,
        };
    };
    // PUT (response lost), then a GET finds it stored.
    assert_eq!(outcome, Ok(Written { landed: true, stop: None, requests: 2 }), "never called fenced: it landed");
    assert!(s.is_released(), "the next write will be fenced");
    assert!(matches!(write(&mut store, &mut s, 1, None, 4, 1_700), Err(Error::Fenced { landed: false, .. })));

    // Settled by the replay before the next write: write 2 landed and is
    // not applied again; the new write is fenced, nothing of it written.
    let mut store = Store::new();
    let mut s = store.claim("w1", 1, 100);
    land_and_lose(&mut store, &mut s, 10, None, 2, 150);
    let _w2 = store.claim("w2", 3, 1_500);
    let w = write(&mut store, &mut s, 1, None, 4, 1_600);
    assert!(matches!(w, Err(Error::Fenced { landed: false, .. })), "{w:?}");
    assert_eq!(store.doc().records_processed, 10);
}

/// A write that landed, followed by two claims before its outcome is
/// settled: the lease remembers the earlier holders (up to eight), so a
/// landed release still counts as done. (With one remembered holder this
/// was reported `Fenced { landed: false }`.)
#[test]
fn a_landed_release_followed_by_two_claims_still_counts_as_done() {
    let mut store = Store::new();
    let mut s = store.claim("w1", 1, 100);
    land_and_lose(&mut store, &mut s, 0, Some(Finish::Release), 2, 150);
    let mut w2 = store.claim("w2", 3, 160);
    write(&mut store, &mut w2, 0, Some(Finish::Release), 4, 170).unwrap();
    let _w3 = store.claim("w3", 5, 180);
    let settled = write(&mut store, &mut s, 0, Some(Finish::Release), 6, 190);
    assert!(matches!(settled, Ok(Written { landed: false, .. })), "the release landed: {settled:?}");
}

#[test]
fn resuming_a_lease_never_held_says_so_and_one_held_before_is_fenced() {
    let mut store = Store::new();
    let mut first = store.claim("w1", 1, 100);
    write(&mut store, &mut first, 0, Some(Finish::Release), 2, 150).unwrap();
    let _second = store.claim("w2", 3, 200);
    let (doc, version) = (store.doc(), tag(store.objects[KEY].1));
    let stranger = Session::resume(KEY, doc.clone(), version.clone(), &worker("w9"), config(), at(210)).unwrap_err();
    assert!(matches!(&stranger, Error::NotHolder { holder: Some(h), .. } if h == &worker("w2")), "{stranger:?}");
    assert!(stranger.to_string().contains("never held"), "{stranger}");
    assert_eq!(stranger.kind(), ErrorKind::Fenced, "nothing written: exit 6 like fenced");
    let former = Session::resume(KEY, doc, version, &worker("w1"), config(), at(210)).unwrap_err();
    assert!(matches!(former, Error::Fenced { .. }), "w1 held it before: {former:?}");
}
