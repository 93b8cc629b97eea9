//! # oxiflow-backends
//!
//! The stores that hold oxiflow state and the [`StateManager`] that drives
//! the core's sans-I/O protocols over them with tokio.
//!
//! - [`ObjectStoreBackend`]: S3, MinIO, GCS, Azure and memory through the
//!   `object_store` crate (`PutMode::Create` / `PutMode::Update`).
//! - [`LocalDirStore`]: a local directory with real cross-process
//!   compare-and-swap (flock + temp + fsync + rename + fsync dir).
//! - [`RedisStore`]: Redis or Valkey, one Lua script per operation.
//! - [`HttpStore`]: a running `oxiflow serve`.
//!
//! All pass the one conformance suite (`conformance`, feature `testing`).
//!
//! [`config`] reads `.oxiflow/config.yaml` and `OXIFLOW_*` as the `oxiflow`
//! command does, for every program that wants the same store.

mod admin;
mod claims;
pub mod config;
#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(feature = "testing")]
mod counting;
mod error;
#[cfg(feature = "testing")]
mod faults;
mod handoff;
mod history;
mod http;
mod keeper;
mod local;
mod manager;
mod object;
mod open;
mod probe;
mod redis;
mod repair;
mod reset;
mod snapshot;
mod store;
mod transfer;

pub use self::redis::{RedisStore, DEFAULT_PREFIX as REDIS_DEFAULT_PREFIX};
pub use claims::{readiness_reason, Claimed, Next};
#[cfg(feature = "testing")]
pub use counting::{CountingStore, RequestCounts};
pub use error::{chain, Error, Result};
#[cfg(feature = "testing")]
pub use faults::{FaultCounts, Faults, FaultyStore};
pub use http::{HttpStore, GENERATION_HEADER, MAX_BYTES_HEADER, SIZE_HEADER};
pub use keeper::{Ending, Held};
pub use local::LocalDirStore;
pub use manager::{system_clock, system_random, Clock, Random, ReadableView, StateManager};
pub use object::{ObjectStoreBackend, ObjectStoreOptions};
pub use open::{kind_of, known_schemes, open_store, resolve, schemes_of, OpenOptions, KINDS, SCHEMES};
pub use oxiflow_core::StepPlan;
pub use probe::ProbeReport;
pub use repair::Restored;
pub use reset::ResetDone;
pub use snapshot::{Damaged, Refreshed, Snapshot};
pub use store::{ConditionalStore, Listed};
pub use transfer::{Export, Imported};
