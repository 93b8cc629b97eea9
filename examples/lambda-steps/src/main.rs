//! One Lambda binary for every step of the example pipeline
//! `extract:4 → transform:4 (aligned) → load (after all of transform)` over
//! generated orders (ids `order-00000000…`), with its state in S3 through
//! `oxiflow-lambda`. Deploy it once per step (or once for all: the event
//! names the partition).
//!
//! Environment: `OXIFLOW_BACKEND=s3://bucket/prefix` and the other `OXIFLOW_*`
//! settings; `LAMBDA_STEPS_RECORDS` (orders in all, default 4,000),
//! `LAMBDA_STEPS_BATCH` (per batch, default 50), `LAMBDA_STEPS_WORK_MS`
//! (simulated work per batch, default 50), `LAMBDA_STEPS_LOG` (a file each
//! batch is appended to, for tests), `OXIFLOW_HANDOFF_URL` (where hand-offs
//! and continuations are sent: the Lambda Invoke API of a local runtime;
//! without it they are only returned).

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use oxiflow_core::PartitionId;
use oxiflow_lambda::{Batch, BatchError, BatchInput, Handoff, Runner, Step, StepEvent};

/// The shards of extract and transform.
pub const SHARDS: u32 = 4;

/// The generated orders, split by range across shards; load reads them all.
struct Orders {
    records: u64,
    batch: u64,
    work: Duration,
    log: Option<std::path::PathBuf>,
}

impl Orders {
    /// The order numbers `[start, end)` of a partition.
    fn range(&self, partition: &PartitionId) -> (u64, u64) {
        match partition.shard {
            Some(i) => {
                let per = self.records.div_ceil(u64::from(SHARDS));
                ((u64::from(i) * per).min(self.records), ((u64::from(i) + 1) * per).min(self.records))
            }
            None => (0, self.records),
        }
    }

    /// A line per batch for the tests: when, which process, what range.
    fn log(&self, partition: &PartitionId, from: u64, to: u64) -> Result<(), BatchError> {
        let Some(path) = &self.log else { return Ok(()) };
        let at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
        let line = serde_json::json!({ "at": at, "pid": std::process::id(), "partition": partition.to_string(), "from": from, "to": to });
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        file.write_all(format!("{line}\n").as_bytes())?;
        Ok(())
    }
}

fn order_id(n: u64) -> String {
    format!("order-{n:08}")
}

#[async_trait]
impl Step for Orders {
    async fn batch(&self, input: BatchInput) -> Result<Batch, BatchError> {
        let (start, end) = self.range(&input.partition);
        let next = match input.bookmark.as_deref() {
            Some(b) => b.strip_prefix("order-").ok_or("bookmark is not an order id")?.parse::<u64>()? + 1,
            None => start,
        };
        // load reads every shard's orders: bigger batches, the same count.
        let size = if input.partition.shard.is_none() { self.batch * u64::from(SHARDS) } else { self.batch };
        let upto = (next + size).min(end);
        if next >= end {
            return Ok(Batch::done());
        }
        self.log(&input.partition, next, upto)?;
        tokio::time::sleep(self.work).await; // … read, transform, write the orders [next, upto) …
        let batch = Batch::new(order_id(upto - 1), upto - next);
        Ok(if upto == end { batch.last() } else { batch })
    }
}

/// Sends each event as an asynchronous invocation (`X-Amz-Invocation-Type:
/// Event`) to a Lambda Invoke API endpoint. On AWS, use the SDK's
/// `Invoke` with `InvocationType::Event` (signed requests) or SQS instead:
/// see docs/lambda.md.
struct InvokeApi {
    client: reqwest::Client,
    url: Option<String>,
}

#[async_trait]
impl Handoff for InvokeApi {
    async fn send(&self, events: &[StepEvent]) -> Result<(), BatchError> {
        let Some(url) = &self.url else { return Ok(()) };
        for event in events {
            let response = self
                .client
                .post(url)
                .header("X-Amz-Invocation-Type", "Event")
                .header("content-type", "application/json")
                .body(serde_json::to_vec(event)?)
                .send()
                .await?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {} to a hand-off", response.status()).into());
            }
        }
        Ok(())
    }
}

fn env_u64(name: &str, default: u64) -> Result<u64, BatchError> {
    match std::env::var(name) {
        Ok(v) => Ok(v.parse().map_err(|e| format!("{name}={v}: {e}"))?),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    let orders = Orders {
        records: env_u64("LAMBDA_STEPS_RECORDS", 4_000)?,
        batch: env_u64("LAMBDA_STEPS_BATCH", 50)?.max(1),
        work: Duration::from_millis(env_u64("LAMBDA_STEPS_WORK_MS", 50)?),
        log: std::env::var_os("LAMBDA_STEPS_LOG").map(Into::into),
    };
    let handoff = InvokeApi { client: reqwest::Client::new(), url: std::env::var("OXIFLOW_HANDOFF_URL").ok() };
    let manager = oxiflow_lambda::manager_from_env()?;
    Runner::new(manager, orders).with_handoff(handoff).serve().await
}
