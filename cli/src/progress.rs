//! Progress bars (indicatif) on stderr; they draw nothing when stderr is
//! not a terminal, so scripts and CI logs stay clean.

use indicatif::{ProgressBar, ProgressStyle};

pub(crate) fn style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>14.bold} [{bar:32.cyan/blue}] {pos:>7}/{len:7} {msg}")
        .expect("valid template")
        .progress_chars("=> ")
}

pub(crate) fn bar(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len).with_style(style());
    bar.set_prefix(prefix.to_string());
    bar
}
