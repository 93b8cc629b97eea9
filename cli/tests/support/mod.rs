//! What the CLI test binaries share.

use std::path::Path;
use std::process::Command;

/// `oxiflow` in `dir`, with no inherited OXIFLOW_* settings.
pub fn ox(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oxiflow"));
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("OXIFLOW_") {
            c.env_remove(k);
        }
    }
    c
}
