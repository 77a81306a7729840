//! Posture audit of an OpenClaw host (`openclaw-guard audit`).

/// Command-line arguments of `openclaw-guard audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {}

/// Runs the audit and returns the process exit status.
pub fn run(_args: &AuditArgs) -> anyhow::Result<i32> {
    anyhow::bail!("audit: not implemented yet")
}
