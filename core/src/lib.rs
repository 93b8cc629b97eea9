//! # oxiflow-core
//!
//! Pipeline state for Oxide Flow: the documents, the step state machine,
//! leases with fencing, the codec, and sans-I/O protocol drivers.
//!
//! **The contract: no I/O, no clock, no randomness.** Nothing in this crate
//! opens a file or a socket, reads the time or draws a random number. Time is
//! a [`Timestamp`] argument, randomness a `u64` argument, and I/O is a
//! [`Request`] the caller performs and answers with a [`Response`]. That is
//! why the same code runs in a Lambda, a CLI, a browser (wasm32) and a
//! deterministic simulation. `core/clippy.toml` bans clocks and RNGs, and CI
//! builds the crate for `wasm32-unknown-unknown`.
//!
//! ## Driving an operation
//!
//! Every operation is an [`Update`] of one document by one [`Mutation`]. The
//! driver loop is the same for all of them:
//!
//! ```
//! use oxiflow_core::*;
//! use std::collections::HashMap;
//!
//! // A toy conditional store, standing in for S3.
//! let mut store: HashMap<String, (Vec<u8>, u64)> = HashMap::new();
//! let mut serve = |req: Request| -> Response {
//!     match req {
//!         Request::Get { key } => Response::Object(store.get(&key).map(|(body, n)| Object {
//!             body: body.clone(),
//!             version: Version { e_tag: Some(n.to_string()), version: None },
//!         })),
//!         Request::PutIfAbsent { key, body } => {
//!             if store.contains_key(&key) { return Response::AlreadyExists; }
//!             store.insert(key, (body, 1));
//!             Response::Written(Version { e_tag: Some("1".into()), version: None })
//!         }
//!         Request::PutIfMatch { key, body, version } => match store.get_mut(&key) {
//!             Some((b, n)) if Some(n.to_string()) == version.e_tag => {
//!                 *b = body;
//!                 *n += 1;
//!                 Response::Written(Version { e_tag: Some(n.to_string()), version: None })
//!             }
//!             _ => Response::Precondition,
//!         },
//!     }
//! };
//! fn run<M: Mutation>(mut op: Update<M>, now: Timestamp, serve: &mut impl FnMut(Request) -> Response)
//!     -> Result<Committed<M::Doc>, Error> {
//!     let mut action = op.start(now);
//!     loop {
//!         action = match action {
//!             Action::Send(req) => op.handle(serve(req), now, 42),
//!             Action::Sleep(_) => op.wake(now),
//!             Action::Done(result) => return result,
//!         };
//!     }
//! }
//!
//! let config = Config::default();
//! let now = Timestamp::from_millis(1_700_000_000_000);
//! let pipeline = PipelineId::new("orders").unwrap();
//! let part = PartitionId::step(StepId::new("extract").unwrap());
//! let key = keys::partition_doc(&pipeline, &part);
//! let doc = PartitionDoc::new(pipeline, part, RunId::new("run-1").unwrap(), now);
//! run(Update::new(&key, Create(doc), config), now, &mut serve).unwrap();
//!
//! // Claim: GET + conditional PUT. The returned version is cached...
//! let worker = WorkerId::new("worker-1").unwrap();
//! let claim: Claim<PartitionDoc> = Claim::new(worker, 1);
//! let claimed = run(Update::new(&key, claim, config), now, &mut serve).unwrap();
//! assert_eq!(claimed.requests, 2);
//!
//! // ...so a checkpoint is one conditional PUT, and it extends the lease.
//! let holder = Holder::of(claimed.doc.lease.as_ref().unwrap());
//! let progress = Progress { last_processed_id: Some("order-1000".into()), add_records: 1000, ..Progress::default() };
//! let write = Write::checkpoint(holder, 2, progress);
//! let saved = run(Update::from_cached(&key, write, config, claimed.doc, claimed.version), now, &mut serve).unwrap();
//! assert_eq!((saved.requests, saved.doc.records_processed), (1, 1000));
//! ```

extern crate alloc;

pub mod codec;
pub mod deadline;
pub mod doc;
mod error;
#[cfg(feature = "testing")]
pub mod fixture;
pub mod generation;
pub mod id;
pub mod keys;
pub mod lease;
pub mod ops;
pub mod plan;
pub mod protocol;
pub mod schedule;
pub mod session;
pub mod step;
pub mod time;
#[cfg(feature = "testing")]
pub mod vectors;
pub mod view;

pub use deadline::{Deadline, Distrust, Pace, MAX_INVOCATION};
pub use doc::{Document, ErrorLog, ErrorRecord, Limits, PartitionDoc, PipelineDoc, StatusKind, StepStatus, FORMAT_VERSION};
pub use error::{Error, ErrorKind};
pub use generation::{check_claim, Adoption, ClaimCheck, CommitReset, ResetScope};
pub use id::{IdKind, IdRule, PartitionId, PipelineId, RunId, StepId, WorkerId};
pub use lease::{Holder, Lease, LeaseConfig, LeaseStatus, StopRequest, MAX_LEASE_TTL};
pub use ops::{Claim, Create, Operator, PipelineProgress, RequestStop, Restore, Work, Write};
pub use plan::{Dependency, DependencyKind, StepPlan};
pub use protocol::{Action, Committed, Config, Context, Drive, Mutation, Object, Request, Response, RetryPolicy, Update, Version};
pub use schedule::{handoff, schedule, PartitionReadiness, Readiness, Schedule, SchedulePolicy, StepReadiness};
pub use session::{Session, SessionWrite, Written};
pub use step::{Finish, Progress, StepAction, MAX_COUNTER};
pub use time::Timestamp;
pub use view::{aggregate, LeaseView, PartitionState, PipelineState, StepError, StepState};
