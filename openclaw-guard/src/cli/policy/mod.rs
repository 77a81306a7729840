//! `openclaw-guard policy`: print the default, check a file, and review a policy
//! against the record (`replay`, `suggest`). Apart from the policy itself, which the
//! daemon's pipeline uses: these commands read the record through the pipeline's own
//! merge, so the policy module must not depend on them.

pub mod replay;
pub mod suggest;

use std::path::PathBuf;

use crate::policy::{load_file, summary, PolicyError, DEFAULT_POLICY};

/// Arguments of `openclaw-guard policy`.
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file: every error with file:line:column, field, what was
    /// expected and a hint. Exit 0 if valid, 2 if not.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
    },
    /// Print the embedded default policy (what a bare `run` enforces), with comments.
    Default,
    /// Run a policy over the recorded events: what it would have alerted, blocked or
    /// killed, beside what the guard did then, and a summary of the differences.
    Replay(replay::ReplayArgs),
    /// Print the policy with an egress rule's `allow` list extended by the destinations
    /// the gateway's descendants reached in the record that the rule would flag, each
    /// with its counts; a summary on stderr. Review it, then switch the rule to block.
    Suggest(suggest::SuggestArgs),
}

/// Runs `policy ...`; returns the exit code (0 ok, 2 invalid policy).
pub fn run_cli(args: &PolicyArgs) -> anyhow::Result<i32> {
    match &args.command {
        PolicyCommand::Default => {
            print!("{DEFAULT_POLICY}");
            Ok(0)
        }
        PolicyCommand::Check { file } => match load_file(file) {
            Ok(p) => {
                println!("{}: {}", file.display(), summary(&p));
                Ok(0)
            }
            Err(e @ PolicyError::Invalid { .. }) => {
                eprintln!("{e}");
                Ok(2)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(2)
            }
        },
        PolicyCommand::Replay(a) => replay::run(a),
        PolicyCommand::Suggest(a) => suggest::run(a),
    }
}
