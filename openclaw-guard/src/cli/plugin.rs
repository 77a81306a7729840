//! `openclaw-guard plugin write DIR`: the OpenClaw plugin that reports tool calls to
//! the guard ([`crate::attribution`]).

use std::path::PathBuf;

use crate::attribution::{DEFAULT_SOCKET, PLUGIN_FILES};

/// `openclaw-guard plugin`.
#[derive(Debug, clap::Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Write the OpenClaw plugin that reports tool calls to the guard into DIR, and
    /// print what to add to openclaw.json to load it.
    Write {
        dir: PathBuf,
        /// The socket the daemon listens on (its --attribution-socket).
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

/// Runs `openclaw-guard plugin ...`.
pub fn run(args: &PluginArgs) -> anyhow::Result<i32> {
    use anyhow::Context as _;
    match &args.command {
        PluginCommand::Write { dir, socket } => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, text) in PLUGIN_FILES {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            let snippet = serde_json::json!({"plugins": {
                "load": {"paths": [dir]},
                "entries": {"openclaw-guard": {"enabled": true, "config": {"socket": socket}}},
            }});
            println!(
                "wrote the plugin to {}; merge into openclaw.json (and add \"openclaw-guard\" to plugins.allow if you keep that list), then restart the gateway:\n{}",
                dir.display(),
                serde_json::to_string_pretty(&snippet)?
            );
            Ok(0)
        }
    }
}
