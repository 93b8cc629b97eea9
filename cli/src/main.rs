//! The `oxiflow` command. `main` only maps `run`'s result to an exit code.

mod args;
mod commands;
mod exit;
mod output;
mod plan;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command, LockCommand, StateCommand, WorkerCommand};
use crate::commands::{demo, doctor, lease, repair, serve, state, transfer, worker, Ctx};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "oxiflow", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if !matches!(cli.command, Command::Worker(WorkerCommand::Start { .. })) {
        // Like other Unix tools: a reader that went away (`| head`, `| true`)
        // ends the command quietly, by SIGPIPE. Not a worker: it holds leases
        // and must release them, so it ignores SIGPIPE (Rust's default) and
        // writes its log lines without failing on a closed pipe.
        // SAFETY: restores the default disposition of one signal before any
        // thread is started; no handler runs Rust code.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let json = cli.json;
    // -v and -vv raise oxiflow's own logging (a worker's checkpoints, then
    // its script's other lines); -vvv everything's.
    let level = match cli.verbose {
        0 => "warn",
        1 => "warn,oxiflow=info,oxiflow_backends=info",
        2 => "warn,oxiflow=debug,oxiflow_backends=debug",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("OXIFLOW_LOG").unwrap_or_else(|_| level.into()))
        .with_writer(|| commands::live::Log)
        // Colour codes only for a person reading a terminal, not in a log file or pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // Like other Unix tools: a reader that went away (`| head`) is not an error.
        Err(e) if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = exit::code(&e);
            if json {
                let body = serde_json::json!({ "error": { "kind": exit::name(code), "exit_code": code, "message": format!("{e:#}") } });
                eprintln!("{body}");
            } else {
                eprintln!("oxiflow: {e:#}");
            }
            exit::exit(code)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cwd = std::env::current_dir()?;
    let settings = oxiflow_backends::config::load(&cwd, cli.config.as_deref(), cli.backend.as_deref(), &|k| std::env::var(k).ok())?;
    let mut ctx = Ctx { settings, json: cli.json };
    match &cli.command {
        Command::Demo(a) => demo::run(&mut ctx, a).await,
        Command::State(s) => match s {
            StateCommand::Create { pipeline, steps, after, from, run_id } => {
                let plan = match from {
                    Some(file) => plan::from_file(file, pipeline)?,
                    None => plan::from_flags(steps, after)?,
                };
                state::create(&ctx, pipeline, &plan, run_id).await
            }
            StateCommand::List { active } => state::list(&ctx, *active).await,
            StateCommand::Show { pipeline } => state::show(&ctx, pipeline).await,
            StateCommand::History { pipeline, step } => state::history(&ctx, pipeline, step.as_deref()).await,
            StateCommand::Export { pipeline, output } => transfer::export(&ctx, pipeline, output.as_deref()).await,
            StateCommand::Import { pipeline, from, replace, force } => transfer::import(&ctx, pipeline, from, *replace, *force).await,
            StateCommand::Copy { to, pipelines, replace, force } => transfer::copy(&ctx, to, pipelines, *replace, *force).await,
            StateCommand::Cleanup { dry_run, pipeline, .. } => repair::cleanup(&ctx, pipeline.as_deref(), *dry_run).await,
            StateCommand::Reset { pipeline, step, new_run } => state::reset(&ctx, pipeline, step.as_deref(), *new_run).await,
            StateCommand::Delete { pipeline, force } => repair::delete(&ctx, pipeline, *force).await,
            StateCommand::Restore { pipeline, step, version, to_batch, force } => {
                let pick = match (version, to_batch) {
                    (Some(v), _) => repair::Pick::Version(*v),
                    (_, Some(b)) => repair::Pick::Batch(*b),
                    _ => repair::Pick::Latest,
                };
                repair::restore(&ctx, pipeline, step, pick, *force).await
            }
        },
        Command::Claim(a) => lease::claim(&mut ctx, a).await,
        Command::Checkpoint(a) => lease::checkpoint(&ctx, a).await,
        Command::Release(a) => lease::release(&ctx, a).await,
        Command::Worker(w) => match w {
            WorkerCommand::Start { pipeline, worker_id, exec } => worker::start(&ctx, pipeline, worker_id.as_deref(), exec).await,
            WorkerCommand::List { pipeline } => lease::worker_list(&ctx, pipeline.as_deref()).await,
            WorkerCommand::Stop { worker_id } => lease::worker_stop(&ctx, worker_id).await,
        },
        Command::Lock(LockCommand::Status { pipeline }) => lease::lock_status(&ctx, pipeline).await,
        Command::Doctor => doctor::run(&ctx).await,
        Command::Serve(a) => serve::run(&ctx, a).await,
        Command::Completions { .. } => unreachable!("handled before the runtime starts"),
    }
}
