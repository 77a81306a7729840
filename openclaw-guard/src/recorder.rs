//! The forensic recorder: durable, hash-chained, queryable.

/// Command-line arguments of `openclaw-guard events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {}

/// Runs `openclaw-guard events ...` and returns the process exit status.
pub fn run_cli(_args: &EventsArgs) -> anyhow::Result<i32> {
    anyhow::bail!("events: not implemented yet")
}
