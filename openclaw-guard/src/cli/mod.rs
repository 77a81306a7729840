//! The command line: one module per subcommand that is not the daemon itself
//! (`events`, `policy`, `plugin`, `status`, `unload`), each with its clap arguments and
//! what it runs. The daemon's own arguments (`run`) stay with the daemon, which
//! consumes them whole.

pub mod events;
pub mod plugin;
pub mod policy;
pub mod status;
pub mod unload;
