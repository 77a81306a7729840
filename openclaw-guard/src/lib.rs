//! openclaw-guard: a runtime guard for OpenClaw agent hosts, built on eBPF.
//!
//! Flow, one way: kernel programs -> ring buffer -> enrichment -> policy ->
//! actions, outputs, recorder.

pub mod attribution;
pub mod audit;
pub mod cli;
pub mod daemon;
pub mod enforce;
pub mod enrich;
pub mod events;
pub mod host;
pub mod kernel;
pub mod logging;
pub mod machinery;
pub mod openclaw;
pub mod outputs;
pub mod policy;
pub mod recorder;
pub mod secret_env;
pub mod sensors;
pub mod sink;
pub mod summary;

/// The daemon allocates and frees a few dozen small objects per event (JSON values,
/// strings): glibc's malloc was about a third of its CPU under load.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
