//! `openclaw-guard-bench`: the workloads and the side-by-side driver behind
//! `cargo xtask bench` (run on the host, or as the command of a QEMU guest).
//!
//! - `suite --out FILE [--rounds N] [--scale F] [--configs a,b] [--command TEXT]`: every
//!   configuration (baseline, openclaw-guard monitor/enforce, auditd, bpftrace) x every
//!   workload x {untracked, tracked}, alternating configurations within each round
//!   (A B C A B C ...); then the pipeline's throughput and loss, alert latency and the
//!   daemon's CPU and memory. Writes one JSON document (also printed as one line after
//!   `OCG-BENCH-JSON `, which is how a guest hands it to the host).
//! - `render FILE [--recorder FILE]`: the BENCHMARKS.md section for a suite's JSON.
//! - internal, run as child processes: `gateway` (the tracked stand-in gateway: runs the
//!   commands it reads on stdin as its children), `work KIND N DIR`, `storm KIND RATE
//!   SECS DIR`, `probe KIND N OUTPUT DIR`, `flood-probe N OUTPUT DIR` (in `bench/flood.rs`).
//!
//! Timings here are reports, never assertions.

use std::{
    collections::BTreeMap,
    ffi::CString,
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

// A dependency of the integration runner (one package, one dependency list).
use anyhow::{bail, Context as _, Result};
use jiff as _;
use serde_json::{json, Value};

/// Audit login uid given to the stand-in gateway: it is inherited by every descendant,
/// so `-F auid=` scopes the auditd rules to the tracked tree as the guard scopes its own.
const BENCH_AUID: u32 = 4242;

#[path = "bench/configs.rs"]
mod configs;
#[path = "bench/flood.rs"]
mod flood;
#[path = "bench/gateway.rs"]
mod gateway;
#[path = "bench/render.rs"]
mod render;
#[path = "bench/suite.rs"]
mod suite;
#[path = "bench/workloads.rs"]
mod workloads;

use self::{configs::*, gateway::*, render::*, suite::*, workloads::*};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("suite") => suite(&args[1..]),
        Some("render") => render_cmd(&args[1..]),
        Some("gateway") => gateway(),
        Some("work") => work(&args[1..]),
        Some("storm") => storm(&args[1..]),
        Some("probe") => probe(&args[1..]),
        Some("flood-probe") => flood::probe(&args[1..]),
        Some("flood") => flood::standalone(&args[1..]),
        _ => Err(anyhow::anyhow!(
            "usage: openclaw-guard-bench suite --out FILE [--rounds N] [--scale F] [--configs LIST] | render FILE [--recorder FILE]"
        )),
    };
    if let Err(err) = result {
        eprintln!("openclaw-guard-bench: error: {err:#}");
        std::process::exit(1);
    }
}
