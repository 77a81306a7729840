#![expect(
    unused_crate_dependencies,
    reason = "the library uses them; this is its CLI"
)]

use clap::{Parser, Subcommand};
use openclaw_guard::cli;

/// Runtime guard for OpenClaw agent hosts: follows the gateway's process tree in the
/// kernel, blocks secret reads and exfiltration, and keeps a tamper-evident record.
#[derive(Debug, Parser)]
#[command(name = "openclaw-guard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the guard: follow the gateways' trees in the kernel, enforce, stream events.
    Run(cli::run::RunArgs),
    /// Show what the running daemon enforces and counts.
    Status(cli::status::StatusArgs),
    /// Detach every pinned program and remove the pinned maps: enforcement stops.
    Unload(cli::unload::UnloadArgs),
    /// Audit this host's OpenClaw posture (bind address, exposed ports, permissions).
    Audit(cli::audit::AuditArgs),
    /// Query and verify the forensic record.
    Events(cli::events::EventsArgs),
    /// Check a policy file or print the embedded default policy.
    Policy(cli::policy::PolicyArgs),
    /// The OpenClaw plugin that tells the guard which tool call each process serves.
    Plugin(cli::plugin::PluginArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    openclaw_guard::logging::init();
    let code = match &cli.command {
        Command::Run(args) => cli::run::run(args)?,
        Command::Status(args) => cli::status::run(args)?,
        Command::Unload(args) => cli::unload::run(args)?,
        Command::Audit(args) => cli::audit::run(args)?,
        Command::Events(args) => cli::events::run(args)?,
        Command::Policy(args) => cli::policy::run_cli(args)?,
        Command::Plugin(args) => cli::plugin::run(args)?,
    };
    std::process::exit(code)
}
