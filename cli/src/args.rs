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
pub struct Cli {
    /// Store URL: file:///path, s3://bucket/prefix, gs://…, az://…, memory://
    /// (default: .oxiflow/state on the local disk).
    #[arg(long, global = true, env = "OXIFLOW_BACKEND", value_name = "URL")]
    pub backend: Option<String>,
    /// Config file (default: .oxiflow/config.yaml here or above).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Machine-readable JSON on stdout (errors as JSON on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Serve the state over HTTP (REST API with bearer-token auth).
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// File holding the bearer token (else OXIFLOW_SERVE_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
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
pub enum StateCommand {
    /// Create a pipeline and its steps (idempotent for the same plan).
    ///
    /// Each step waits for all of the step before it, unless --after says
    /// otherwise: `--after transform=extract:aligned` (shard i waits for
    /// extract@i), `--after load=transform,index` (fan-in), `--after
    /// index=extract` (fan-out), `--after side=` (waits for nothing).
    Create {
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
    Show { pipeline: String },
    /// Kept versions of a step's document (needs history.keep_last > 0).
    History {
        pipeline: String,
        /// `step` or `step@shard` (default: every partition).
        #[arg(long)]
        step: Option<String>,
    },
    /// Write a pipeline's documents as JSON.
    Export {
        pipeline: String,
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Load a pipeline from an export (refuses to overwrite unless --replace).
    ///
    /// A replace puts every lease above any epoch it had (holders of the old
    /// state are fenced), is refused while a lease is live unless --force,
    /// and reports the acknowledged progress it discards.
    Import {
        pipeline: String,
        /// The export file (`state export -o FILE`).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// Replace the pipeline if it exists.
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
        #[arg(long, required = true)]
        stale_workers: bool,
    },
    /// Set steps back to pending (counters zeroed, bookmarks kept).
    Reset {
        pipeline: String,
        #[arg(long)]
        step: Option<String>,
        /// Start a new run (new run id) instead of resetting within this one.
        #[arg(long, conflicts_with = "step")]
        new_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct HolderArgs {
    pub pipeline: String,
    /// `step` or `step@shard`.
    pub step: String,
    #[arg(long, env = "OXIFLOW_WORKER_ID")]
    pub worker: String,
}

#[derive(Debug, Args)]
pub struct ClaimArgs {
    pub pipeline: String,
    /// `step` or `step@shard`; omit it with --next.
    #[arg(required_unless_present = "next", conflicts_with = "next")]
    pub step: Option<String>,
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
    /// Lease time to live (default from config, 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    pub holder: HolderArgs,
    /// The bookmark: the last id processed.
    #[arg(long)]
    pub last_id: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub add_records: u64,
    #[arg(long, default_value_t = 0)]
    pub add_failed: u64,
    #[arg(long, default_value_t = 0)]
    pub add_bytes: u64,
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
pub enum WorkerCommand {
    /// Claim free or expired steps of a pipeline and run CMD for each batch.
    Start {
        #[arg(long)]
        pipeline: String,
        #[arg(long, env = "OXIFLOW_WORKER_ID")]
        worker_id: Option<String>,
        /// Run per batch with the checkpoint in OXIFLOW_* variables; prints
        /// JSON lines of progress; `{"done": true}` completes the step.
        #[arg(long, value_name = "CMD")]
        exec: String,
    },
    /// Workers holding leases now.
    List {
        #[arg(long)]
        pipeline: Option<String>,
    },
    /// Ask a worker to release its leases and stop.
    Stop {
        #[arg(long)]
        worker_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Leases of a pipeline's steps.
    Status { pipeline: String },
}
