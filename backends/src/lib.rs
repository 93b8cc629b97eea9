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
//! All pass the one [`conformance`] suite.

pub mod conformance;
mod counting;
mod error;
mod faults;
mod http;
mod keeper;
mod local;
mod manager;
mod object;
mod redis;
mod reset;
mod snapshot;
mod store;
mod transfer;

pub use self::redis::{RedisStore, DEFAULT_PREFIX as REDIS_DEFAULT_PREFIX};
pub use counting::{CountingStore, RequestCounts};
pub use error::{Error, Result};
pub use faults::{FaultCounts, Faults, FaultyStore};
pub use http::{HttpStore, GENERATION_HEADER, MAX_BYTES_HEADER, SIZE_HEADER};
pub use keeper::Held;
pub use local::LocalDirStore;
pub use manager::{readiness_reason, system_clock, Claimed, Clock, Next, ProbeReport, StateManager};
pub use object::{ObjectStoreBackend, ObjectStoreOptions};
pub use oxiflow_core::StepPlan;
pub use reset::ResetDone;
pub use snapshot::{Refreshed, Snapshot};
pub use store::{ConditionalStore, Listed};
pub use transfer::{Export, Imported};
