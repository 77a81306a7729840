//! openclaw-guard: a runtime guard for OpenClaw agent hosts, built on eBPF.
//!
//! Flow, one way: kernel programs -> ring buffer -> enrichment -> policy ->
//! actions, outputs, recorder.

pub mod audit;
pub mod bpf;
pub mod btf;
pub mod calibrate;
pub mod daemon;
pub mod enforce;
pub mod enrich;
pub mod events;
pub mod openclaw;
pub mod outputs;
pub mod pins;
pub mod policy;
pub mod recorder;
pub mod sink;
pub mod tree;
