//! `openclaw-guard audit`: its command line. What it runs is [`crate::audit`].

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use crate::audit::{AuditOptions, Severity, DEFAULT_FAIL_ON};

/// Command-line arguments of `openclaw-guard audit`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Home directory whose OpenClaw state to audit (`DIR/.openclaw`, `DIR/.clawdbot`,
    /// `DIR/.moltbot`). A path as this process sees it. Default: the running gateway's
    /// environment, this user's `$HOME` and environment (live only), and every
    /// `ROOT/root`, `ROOT/home/*` holding a state directory.
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Audit the system mounted at DIR (an image or a fixture tree) instead of this
    /// host: `/proc`, `/etc`, `/var` are read below DIR and no command is run.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print the report as JSON (schema: docs/audit.md).
    #[arg(long)]
    pub json: bool,
    /// Apply the safe fixes (chmod/chown inside the state directories only), print each
    /// change, then audit again.
    #[arg(long)]
    pub fix: bool,
    /// Exit 1 when a finding is at or above this severity.
    #[arg(long, value_name = "SEVERITY", default_value_t = DEFAULT_FAIL_ON, value_parser = severity_parser())]
    pub fail_on: Severity,
}

/// `--fail-on`: one of the severities, lowest first.
fn severity_parser() -> impl TypedValueParser<Value = Severity> {
    let values = Severity::DESCENDING
        .iter()
        .rev()
        .map(|s| PossibleValue::new(s.as_str()).help(s.meaning()));
    PossibleValuesParser::new(values).map(|s| {
        Severity::DESCENDING
            .into_iter()
            .find(|v| v.as_str() == s)
            .unwrap_or(DEFAULT_FAIL_ON)
    })
}

pub fn run(args: &AuditArgs) -> anyhow::Result<i32> {
    crate::audit::run(&AuditOptions {
        home: args.home.clone(),
        root: args.root.clone(),
        json: args.json,
        fix: args.fix,
        fail_on: args.fail_on,
    })
}
