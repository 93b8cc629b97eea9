//! # oxiflow-lambda
//!
//! One AWS Lambda per pipeline step, with its state in S3 (or any oxiflow
//! store). Each invocation is a holder with a hard deadline
//! ([`oxiflow_core::deadline`]):
//!
//! - it claims the event's partition (or the scheduler's next) with a lease
//!   that ends at the invocation's deadline, so if the platform kills it the
//!   partition is claimable again `skew_allowance` later — not a whole
//!   configured lease later;
//! - it resumes from the bookmark and calls the [`Step`] once per batch
//!   while the time left exceeds the longest batch so far plus a margin,
//!   storing each batch with one conditional PUT;
//! - out of time, it releases with its progress and sends a continuation
//!   ([`StepOutcome::Continue`]); on the last batch it completes and hands
//!   off exactly the partitions that became ready ([`Handoff`]);
//! - a duplicate delivery finds the lease held ([`StepOutcome::AlreadyRunning`],
//!   nothing written); a completed partition answers
//!   [`StepOutcome::AlreadyDone`].
//!
//! A deadline that is missing, past, or more than 15 minutes ahead (local
//! emulators send a duration) is not trusted: the lease lasts the
//! configured ttl from the start of the invocation, and the log says so.
//!
//! ```no_run
//! use oxiflow_lambda::{Batch, BatchError, BatchInput, Runner, Step};
//!
//! struct Extract;
//!
//! #[async_trait::async_trait]
//! impl Step for Extract {
//!     async fn batch(&self, input: BatchInput) -> Result<Batch, BatchError> {
//!         let after: u64 = input.bookmark.as_deref().unwrap_or("0").parse()?;
//!         // … read and write the records after `after` …
//!         let batch = Batch::new((after + 100).to_string(), 100);
//!         Ok(if after + 100 >= 10_000 { batch.last() } else { batch })
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), lambda_runtime::Error> {
//!     let manager = oxiflow_lambda::manager_from_env()?;
//!     Runner::new(manager, Extract).serve().await
//! }
//! ```

mod error;
mod event;
mod handoff;
mod runner;
mod step;

pub use error::Error;
pub use event::{StepEvent, StepOutcome};
pub use handoff::{Handoff, ReturnOnly};
pub use runner::{Invocation, Runner, DEFAULT_RELEASE_MARGIN};
pub use step::{Batch, BatchError, BatchInput, Permanent, Step};

/// The state manager the CLI would use here: `OXIFLOW_*` variables (in a
/// function, `OXIFLOW_BACKEND=s3://bucket/prefix` and the lease settings) and
/// `.oxiflow/config.yaml` if the package has one.
pub fn manager_from_env() -> Result<oxiflow_backends::StateManager, Error> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| std::path::PathBuf::from("."));
    let settings = oxiflow_backends::config::load(&cwd, None, None, &|var| std::env::var(var).ok())?;
    Ok(settings.open()?)
}
