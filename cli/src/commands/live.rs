//! `worker start`'s live line on a terminal: the partition, its records,
//! the rate and the lease's expiry, redrawn in place; log lines print above
//! it. Off a terminal (or with `--json`) there is no live line, only the
//! plain log lines.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static BAR: OnceLock<ProgressBar> = OnceLock::new();

/// Shows the live line when stderr is a terminal and `json` is off.
pub(crate) fn start(json: bool) {
    if json || !std::io::stderr().is_terminal() {
        return;
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    bar.set_message("waiting for work");
    bar.enable_steady_tick(Duration::from_millis(200));
    let _ = BAR.set(bar);
}

/// Clears the live line (the worker ends).
pub(crate) fn finish() {
    if let Some(bar) = BAR.get() {
        bar.finish_and_clear();
    }
}

/// What the live line says now.
pub(crate) fn status(text: impl Into<String>) {
    if let Some(bar) = BAR.get() {
        bar.set_message(text.into());
    }
}

/// One partition's progress for the live line.
pub(crate) struct Partition {
    name: String,
    since: Instant,
    records: u64,
}

impl Partition {
    pub(crate) fn new(name: String) -> Self {
        status(format!("{name}: claimed"));
        Partition { name, since: Instant::now(), records: 0 }
    }

    /// After a checkpoint: records so far, their rate, and when the lease
    /// expires (`expires_at`, Unix ms) unless renewed.
    pub(crate) fn checkpointed(&mut self, added: u64, expires_at: Option<i64>) {
        self.records += added;
        let rate = self.records as f64 / self.since.elapsed().as_secs_f64().max(0.001);
        let now = std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_millis() as i64);
        let lease = expires_at.map(|t| format!(", lease expires in {}s", (t - now).max(0) / 1000)).unwrap_or_default();
        status(format!("{}: {} records ({rate:.0}/s){lease}", self.name, self.records));
    }
}

/// Writes a log line to stderr, above the live line if there is one; a
/// failed write (a closed pipe) is dropped: the worker keeps working.
pub(crate) fn line(text: &str) {
    let write = || {
        let _ = writeln!(std::io::stderr(), "{text}");
    };
    match BAR.get() {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// stderr for the log (`tracing`), above the live line.
pub(crate) struct Log;

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match BAR.get() {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
