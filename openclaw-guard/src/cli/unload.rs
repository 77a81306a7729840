//! `openclaw-guard unload`: detach the pinned programs and maps of a guard.

use std::path::PathBuf;

use crate::kernel::pins::{unload, DEFAULT_PIN_DIR};

/// Command-line arguments of `openclaw-guard unload`.
#[derive(Debug, clap::Args)]
pub struct UnloadArgs {
    /// The pin directory of the guard to unload.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

pub fn run(args: &UnloadArgs) -> anyhow::Result<i32> {
    let n = unload(&args.pin_dir)?;
    println!(
        "openclaw-guard: unloaded {n} generation(s) from {}; enforcement stopped",
        args.pin_dir.display()
    );
    Ok(0)
}
