//! Human output: aligned tables, relative times, colour only on a TTY.
//! Machine output: one JSON document on stdout.

use std::io::Write;

use console::{style, Style};
use oxiflow_core::{StatusKind, Timestamp};
use serde::Serialize;

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// "12s ago", "in 18s", "3m ago": how far `t` is from `now`.
pub(crate) fn relative(t: Timestamp, now: Timestamp) -> String {
    let ms = t.as_millis() - now.as_millis();
    let secs = ms.unsigned_abs() / 1000;
    let amount = match secs {
        0 if ms.unsigned_abs() < 1000 => return "now".into(),
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    };
    if ms < 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

pub(crate) fn status(kind: StatusKind) -> String {
    let s = match kind {
        StatusKind::Completed => Style::new().green(),
        StatusKind::Running => Style::new().cyan(),
        StatusKind::Failed => Style::new().red().bold(),
        StatusKind::Paused => Style::new().yellow(),
        StatusKind::Pending => Style::new().dim(),
    };
    s.apply_to(kind.to_string()).to_string()
}

/// Why a partition may or may not be claimed, for people.
pub(crate) fn readiness(r: &oxiflow_core::Readiness, now: oxiflow_core::Timestamp) -> String {
    use oxiflow_core::Readiness as R;
    let names = |on: &[String], count: usize| match count.saturating_sub(on.len()) {
        0 => on.join(", "),
        more => format!("{} +{more}", on.join(", ")),
    };
    match r {
        R::Ready { takeover: false } => style("ready").green().to_string(),
        R::Ready { takeover: true } => style("ready (expired lease)").green().to_string(),
        R::Completed => "completed".into(),
        R::OtherRun => "older run".into(),
        R::Paused => warn("paused"),
        R::Failed { error, failures } => style(format!("failed for good ({failures} failure(s)): {error}")).red().to_string(),
        R::Held { worker_id, until } => format!("held by {worker_id} until {}", relative(*until, now)),
        R::Locked { worker_id, until } => warn(&format!("reset by {worker_id} in progress (ends by {})", relative(*until, now))),
        R::Blocked { by, count } => style(format!("blocked by {}", names(by, *count))).red().to_string(),
        R::Waiting { on, count } => format!("waits on {}", names(on, *count)),
        R::Backoff { until, failures } => warn(&format!("retry {} ({failures} failure(s) so far)", relative(*until, now))),
        R::Missing => warn("missing"),
    }
}

pub(crate) fn warn(text: &str) -> String {
    style(text).yellow().to_string()
}

pub(crate) fn bold(text: &str) -> String {
    style(text).bold().to_string()
}

/// A table whose columns line up, measured without colour codes.
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Self {
        Table { header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn print(&self) {
        let width = |s: &str| console::measure_text_width(s);
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                out.push_str(cell);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(widths[i] - width(cell) + 2));
                }
            }
            println!("{}", out.trim_end());
        };
        line(&self.header.iter().map(|h| style(h).bold().to_string()).collect::<Vec<_>>());
        for row in &self.rows {
            line(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let now = Timestamp::from_millis(1_000_000);
        let at = |d: i64| Timestamp::from_millis(1_000_000 + d);
        assert_eq!(relative(at(-12_000), now), "12s ago");
        assert_eq!(relative(at(18_000), now), "in 18s");
        assert_eq!(relative(at(-180_000), now), "3m ago");
        assert_eq!(relative(at(7_200_000), now), "in 2h");
        assert_eq!(relative(at(300), now), "now");
    }
}
