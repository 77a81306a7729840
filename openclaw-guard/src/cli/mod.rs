//! The command line: one module per subcommand (`run`, `audit`, `events`, `policy`,
//! `plugin`, `status`, `unload`), each with its clap arguments. Nothing below `cli`
//! knows clap: `run` and `audit` hand their domain options to `crate::daemon` and
//! `crate::audit`.

pub mod audit;
pub mod events;
pub mod plugin;
pub mod policy;
pub mod run;
pub mod status;
pub mod unload;
