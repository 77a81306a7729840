//! `openclaw-guard-integration bench-e2e ROUNDS CALLS`: a tool call's round trip on the
//! real gateway with the guard (default policy, record kept) and without it, side by
//! side on the same gateway, configurations alternating within each round. Prints a
//! markdown section for BENCHMARKS.md (run by `cargo xtask bench --host`).

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{
    gateway::{Install, Options, RealGateway},
    model::Model,
};
use crate::support::{GuardProcess, Scratch};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `calls` exec tool calls (`echo hi`, pipe mode); returns seconds per call.
fn calls_secs(gw: &RealGateway, calls: usize, tag: &str) -> anyhow::Result<Vec<f64>> {
    (0..calls)
        .map(|i| {
            let t = Instant::now();
            let out = gw.exec(&format!("bench-{tag}"), &format!("echo bench-{i}"), false)?;
            anyhow::ensure!(
                out.contains(&format!("bench-{i}")),
                "tool call failed: {out}"
            );
            Ok(t.elapsed().as_secs_f64())
        })
        .collect()
}

pub(crate) fn run(rounds: usize, calls: usize) -> anyhow::Result<String> {
    let install = Install::find().map_err(anyhow::Error::msg)?;
    let model = Model::start()?;
    let gw = RealGateway::start(&install, &model, &Options::default())?;
    // The first turn after start-up is 10+ s (module loads, snapshot capture).
    calls_secs(&gw, 2, "warm")?;
    let (mut none, mut guarded, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut events, mut bytes, mut guarded_calls) = (0usize, 0u64, 0usize);
    for round in 0..rounds {
        let mut per = [0.0f64; 2];
        // A B, then B A: neither configuration always runs second.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for config in order {
            let secs = if config == 0 {
                calls_secs(&gw, calls, "none")?
            } else {
                let dir = Scratch::new("bench-e2e")?;
                let guard = GuardProcess::start(&dir, &["--pid".into(), gw.pid().to_string()])?;
                std::thread::sleep(Duration::from_millis(300));
                let s = calls_secs(&gw, calls, "guard")?;
                let written = guard.stop()?;
                events += written
                    .iter()
                    .filter(|e| e["kind"] != "stats" && e["kind"] != "host")
                    .count();
                bytes += super::guarded::record_bytes(&dir.0);
                guarded_calls += calls;
                s
            };
            let mut m = secs.clone();
            per[config] = median(&mut m);
            if config == 0 {
                none.extend(secs);
            } else {
                guarded.extend(secs);
            }
        }
        ratios.push(per[1] / per[0]);
    }
    let n = median(&mut none);
    let g = median(&mut guarded);
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(0.0, f64::max);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut s = String::from("## Real gateway: a tool call's round trip (host)\n\n");
    s += &format!(
        "openclaw 2026.9.6 on Node 24.22.3, offline against the scripted model; one `exec` tool call (`echo`, pipe mode) through `openclaw agent`, CLI start included, as a user sees it. Kernel {}; {rounds} rounds of {calls} calls per configuration, alternating; the guard enforcing its default policy with its record on.\n\n",
        kernel.trim()
    );
    s += "| configuration | median s/call | ratio to no guard | per-round ratios |\n|---|---|---|---|\n";
    s += &format!("| no guard | {n:.3} | 1.00 | |\n");
    s += &format!(
        "| openclaw-guard | {g:.3} | {:.3} | {lo:.3} .. {hi:.3} |\n\n",
        g / n
    );
    s += &format!(
        "With the guard: {:.1} events and {:.1} KiB of record per tool call (start-up and stats records included).\n\n",
        events as f64 / guarded_calls.max(1) as f64,
        bytes as f64 / guarded_calls.max(1) as f64 / 1024.0
    );
    Ok(s)
}

/// The runner's `bench-e2e` entry: the section on stdout between markers.
pub(crate) fn main(args: &[String]) -> i32 {
    let rounds = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let calls = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    match run(rounds, calls).context("real-gateway bench") {
        Ok(section) => {
            println!("OCG-E2E-BENCH-BEGIN\n{section}OCG-E2E-BENCH-END");
            0
        }
        Err(e) => {
            eprintln!("bench-e2e: {e:#}");
            1
        }
    }
}
