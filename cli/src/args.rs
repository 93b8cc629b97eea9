//! Command-line arguments (clap derive), all in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Pipeline state for Oxide Flow: checkpoints and leases in object storage.
///
/// Exit codes: 0 ok, 1 failure, 2 invalid input or config, 3 not found,
/// 4 conflict, 5 lease held by someone else, 6 fenced (you lost the lease;
/// nothing was written), 7 corrupt state, 8 store unavailable, 9 not ready
/// (upstream steps unfinished; nothing ready yet), 10 nothing left to claim,
/// 11 saved, then stopped (a stop was requested; the lease is released).
#[derive(Debug, Parser)]
#[command(name = "oxiflow", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Store: a path, file:///path, s3://bucket/prefix, gs://…, az://…,
    /// redis://host:6379/0, http(s)://host:port (oxiflow serve), memory://
    /// (default: .oxiflow/state on the local disk).
    #[arg(long, global = true, env = "OXIFLOW_BACKEND", value_name = "URL")]
    pub backend: Option<String>,
    /// Config file (default: .oxiflow/config.yaml here or above).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Machine-readable JSON on stdout (errors as JSON on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging on stderr: -v info, -vv debug (a worker's script lines, each write).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a small extract → transform → load pipeline with several workers,
    /// a crash and a takeover, on the configured store.
    Demo(DemoArgs),
    /// Inspect and manage pipeline state.
    #[command(subcommand)]
    State(StateCommand),
    /// Claim a step (or `step@shard`), or with --next whatever is ready,
    /// for a worker: prints its checkpoint.
    Claim(ClaimArgs),
    /// Record progress for a step the worker holds (one read + one CAS).
    Checkpoint(CheckpointArgs),
    /// Give a held step back unfinished.
    Release(HolderArgs),
    /// Run or manage workers.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Leases.
    #[command(subcommand)]
    Lock(LockCommand),
    /// Check that the store honours conditional writes, and show the settings.
    Doctor,
    /// Serve the state over HTTP (REST API with bearer-token auth) and the dashboard.
    Serve(ServeArgs),
    /// Print a shell completion script: `oxiflow completions bash > /etc/bash_completion.d/oxiflow`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// File holding the bearer token (else OXIFLOW_SERVE_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Close a connection that has not sent a complete request head this
    /// long after it opened or after the first byte of its next request, or
    /// whose request body stops coming for this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: std::time::Duration,
    /// Close a keep-alive connection that has had no request this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// Connections served at once; one more is answered 503 with Retry-After and closed.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Shards of the extract and transform steps.
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    /// Records in the generated dataset.
    #[arg(long, default_value_t = 20_000)]
    pub records: u64,
    /// Workers running at once.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StateCommand {
    /// Create a pipeline and its steps (idempotent for the same plan).
    ///
    /// Each step waits for all of the step before it, unless --after says
    /// otherwise: `--after transform=extract:aligned` (shard i waits for
    /// extract@i), `--after load=transform,index` (fan-in), `--after
    /// index=extract` (fan-out), `--after side=` (waits for nothing).
    Create {
        /// The pipeline id.
        pipeline: String,
        /// Steps in order; `name:N` splits a step into N shards.
        #[arg(long = "step", value_name = "STEP[:SHARDS]", required_unless_present = "from", conflicts_with = "from")]
        steps: Vec<String>,
        /// What a step waits for: `STEP=DEP[,DEP…]`, a DEP being `step` or
        /// `step:aligned`. Repeatable, once per step.
        #[arg(long = "after", value_name = "STEP=DEPS", conflicts_with = "from")]
        after: Vec<String>,
        /// Read steps, shards and dependencies from a pipeline.yaml.
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// The id of the pipeline's first run.
        #[arg(long, default_value = "run-1")]
        run_id: String,
    },
    /// List pipelines.
    List {
        /// Only pipelines with a step running or a live lease.
        #[arg(long)]
        active: bool,
    },
    /// Show a pipeline: steps, progress, leases, recent errors.
    Show {
        /// The pipeline id.
        pipeline: String,
    },
    /// Kept versions of a step's document (needs history.keep_last > 0).
    History {
        /// The pipeline id.
        pipeline: String,
        /// `step` (all its shards) or `step@shard` (default: every partition).
        #[arg(long)]
        step: Option<String>,
    },
    /// Write a pipeline's documents as JSON.
    Export {
        /// The pipeline id.
        pipeline: String,
        /// Write to FILE instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Load a pipeline from an export (refuses to overwrite unless --replace).
    ///
    /// A replace puts every lease above any epoch it had (holders of the old
    /// state are fenced), is refused while a lease is live unless --force,
    /// and reports the acknowledged progress it discards.
    Import {
        /// The pipeline id (must match the export's).
        pipeline: String,
        /// The export file (`state export -o FILE`).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Replace the pipeline if it exists (epochs continue above both copies).
        #[arg(long)]
        replace: bool,
        /// With --replace: even while workers hold live leases (they are fenced).
        #[arg(long, requires = "replace")]
        force: bool,
    },
    /// Copy pipelines (default: all) to another store.
    Copy {
        /// The target store URL.
        #[arg(long, value_name = "URL")]
        to: String,
        /// Pipeline ids to copy (default: every pipeline).
        pipelines: Vec<String>,
        /// Replace pipelines that exist in the target.
        #[arg(long)]
        replace: bool,
        /// With --replace: even while workers hold live leases there (they are fenced).
        #[arg(long, requires = "replace")]
        force: bool,
    },
    /// Release leases whose holders are dead (expired past the skew allowance).
    Cleanup {
        /// Release the leases of dead workers (required: the only cleanup there is).
        #[arg(long, required = true)]
        stale_workers: bool,
        /// Only list what would be released.
        #[arg(long)]
        dry_run: bool,
        /// Only this pipeline (default: every pipeline).
        #[arg(long, value_name = "PIPELINE")]
        pipeline: Option<String>,
    },
    /// Set steps back to pending in this run: records, bytes, failures and
    /// attempts zeroed; the bookmark and batch number kept.
    Reset {
        /// The pipeline id.
        pipeline: String,
        /// One step (every shard of it; resets are per step); default: every step.
        #[arg(long)]
        step: Option<String>,
        /// Start a new run (a new run id) instead: every step pending,
        /// counters zeroed as above; bookmarks and batch numbers kept.
        #[arg(long, conflicts_with = "step")]
        new_run: bool,
    },
    /// Delete a pipeline: its documents and kept history.
    ///
    /// Refused (exit 5) while a worker holds a live lease on it, unless --force.
    Delete {
        /// The pipeline id.
        pipeline: String,
        /// Even while workers hold live leases (their next write fails: not found).
        #[arg(long)]
        force: bool,
    },
    /// Put a kept history copy of a partition back (needs history.keep_last > 0).
    ///
    /// Epochs continue above both copies (a holder of either is fenced);
    /// refused (exit 5) while a live lease is held, unless --force. Reports
    /// the acknowledged records it discards.
    Restore {
        /// The pipeline id.
        pipeline: String,
        /// `step` or `step@shard`: one partition.
        step: String,
        /// The document version to restore (`state history` lists them);
        /// default: the latest kept copy older than the stored document.
        #[arg(long, value_name = "N")]
        version: Option<u64>,
        /// Rewind to batch N: the newest kept copy whose batch number is at
        /// most N (its bookmark and counters; the batches after it run again).
        #[arg(long, value_name = "N", conflicts_with = "version")]
        to_batch: Option<u64>,
        /// Even while a worker holds a live lease (it is fenced).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct HolderArgs {
    /// The pipeline id.
    pub pipeline: String,
    /// `step` or `step@shard`.
    pub step: String,
    /// The worker holding the lease.
    #[arg(long, env = "OXIFLOW_WORKER_ID")]
    pub worker: String,
}

#[derive(Debug, Args)]
pub(crate) struct ClaimArgs {
    /// The pipeline id.
    pub pipeline: String,
    /// `step` or `step@shard`; omit it with --next.
    #[arg(required_unless_present = "next", conflicts_with = "next")]
    pub step: Option<String>,
    /// The worker claiming (a worker id must not be used by two processes at once).
    #[arg(long, env = "OXIFLOW_WORKER_ID")]
    pub worker: String,
    /// Claim whatever the scheduler says is ready (exit 9 when nothing is
    /// ready yet, 10 when nothing is left).
    #[arg(long)]
    pub next: bool,
    /// Claim STEP even though its upstream steps are unfinished (an operator
    /// re-running a step on purpose).
    #[arg(long, conflicts_with = "next")]
    pub force: bool,
    /// Lease time to live (default from config, 30s); the heartbeat interval
    /// and safety margin scale with it.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub(crate) struct CheckpointArgs {
    #[command(flatten)]
    pub holder: HolderArgs,
    /// The bookmark: the last id processed.
    #[arg(long)]
    pub last_id: Option<String>,
    /// Records processed since the last checkpoint (added to the count).
    #[arg(long, default_value_t = 0)]
    pub add_records: u64,
    /// Records that failed since the last checkpoint (added).
    #[arg(long, default_value_t = 0)]
    pub add_failed: u64,
    /// Bytes processed since the last checkpoint (added).
    #[arg(long, default_value_t = 0)]
    pub add_bytes: u64,
    /// The batch number now (never backwards).
    #[arg(long)]
    pub batch: Option<u64>,
    /// A user field, `key=value` (empty value removes it). Repeatable.
    #[arg(long = "extra", value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
    /// Mark the step completed and release it.
    #[arg(long, conflicts_with = "fail")]
    pub complete: bool,
    /// Mark the step failed with this message and release it.
    #[arg(long, value_name = "MESSAGE")]
    pub fail: Option<String>,
    /// With --fail: a later claim may retry the step.
    #[arg(long, requires = "fail")]
    pub retryable: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum WorkerCommand {
    /// Claim free or expired steps of a pipeline and run CMD for each batch.
    Start {
        /// The pipeline to work on.
        #[arg(long)]
        pipeline: String,
        /// This worker's id (default: worker-<pid>-<random>).
        #[arg(long, env = "OXIFLOW_WORKER_ID")]
        worker_id: Option<String>,
        /// Run per batch with the checkpoint in OXIFLOW_* variables; prints
        /// JSON lines of progress; `{"done": true}` completes the step.
        #[arg(long, value_name = "CMD")]
        exec: String,
    },
    /// Workers holding leases now.
    List {
        /// Only this pipeline (default: every pipeline).
        #[arg(long)]
        pipeline: Option<String>,
    },
    /// Ask a worker to release its leases and stop.
    Stop {
        /// The worker to stop.
        #[arg(long)]
        worker_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum LockCommand {
    /// Leases of a pipeline's steps.
    Status {
        /// The pipeline id.
        pipeline: String,
    },
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
