//! Tests of the ring-buffer transport: nothing lost silently, memory bounded.

use anyhow::{ensure, Context as _};

use crate::{
    support::{helper_bin, GuardProcess, Scratch, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![open_storm_accounted_and_memory_bounded,]
}

/// Opens the storm makes.
const STORM_OPENS: u64 = 200_000;
/// The daemon's peak RSS must stay under this (its caches and queues are bounded).
const RSS_BOUND_KIB: u64 = 256 * 1024;

/// 200k opens from the tree in a few seconds: every event the kernel submitted is
/// received, the rest is counted as lost, and the daemon's peak RSS stays bounded.
fn open_storm_accounted_and_memory_bounded() -> TestResult {
    let dir = Scratch::new("storm")?;
    let target = dir.path("target");
    std::fs::write(&target, "x")?;
    let script = format!(
        "'{}' helper open-loop {STORM_OPENS} '{}'\n",
        helper_bin(),
        target.display()
    );
    let gateway = StandInGateway::start(&dir, &script)?;
    let gw = gateway.pid();
    // Not folded: one event per open is the point here.
    let guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gw.to_string(),
            "--fold-ms".into(),
            "0".into(),
        ],
    )?;
    if !guard.program_attached("file_open") && !guard.program_attached("sys_exit_openat") {
        let why = guard.program_unavailable("file_open").unwrap_or_default();
        return Ok(Outcome::Skipped(format!(
            "no open sensor loads here ({why}); no open events to storm with"
        )));
    }
    let code = gateway.release_and_wait()?;
    ensure!(code == 0, "storm helper failed with {code}");
    let (records, stats) = guard.stop_with_stats()?;
    ensure!(!stats.is_null(), "the daemon printed no final-stats line");
    // Records the JSON-lines output dropped under load (bounded queue), counted.
    let dropped: u64 = stats["sink"]["outputs"]["sinks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["sink"].as_str().is_some_and(|n| n.starts_with("jsonl")))
        .filter_map(|s| s["dropped"].as_u64())
        .sum();
    let c = &stats["counters"];
    let submitted = c["kernel_submitted"].as_u64().context("kernel_submitted")?;
    let lost = c["kernel_lost"].as_u64().context("kernel_lost")?;
    let received = c["received"].as_u64().context("received")?;
    // Opens the daemon folded into `summary` records (the gateway's own ordinary
    // activity, library loads) are counted there, per directory.
    let summarised: u64 = records
        .iter()
        .filter(|r| r["kind"] == "summary" && r["of"] == "file_open")
        .filter_map(|r| r["opens"].as_u64())
        .sum();
    let opens = records.iter().filter(|r| r["kind"] == "file_open").count() as u64 + summarised;
    let rss = stats["peak_rss_kib"].as_u64().context("peak_rss_kib")?;
    println!("    storm: {STORM_OPENS} opens; kernel submitted {submitted}, lost {lost}, received {received}, open events written {opens} (summarised {summarised}), output drops {dropped}; peak RSS {rss} KiB");
    ensure!(
        received == submitted,
        "received {received} != submitted {submitted}: events vanished after the ring buffer"
    );
    ensure!(
        submitted + lost >= STORM_OPENS,
        "submitted {submitted} + lost {lost} < {STORM_OPENS} opens: events vanished uncounted"
    );
    ensure!(
        opens + lost + dropped >= STORM_OPENS,
        "open events written {opens} + lost in the kernel {lost} + dropped by the output {dropped} < {STORM_OPENS}"
    );
    ensure!(
        rss < RSS_BOUND_KIB,
        "peak RSS {rss} KiB over the {RSS_BOUND_KIB} KiB bound"
    );
    Ok(Outcome::Passed)
}
