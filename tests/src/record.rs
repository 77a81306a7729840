//! The forensic record under a real daemon: durable decisions and a verifiable chain
//! across a `kill -9` in the middle of an event storm.

use std::{collections::HashSet, process::Command, time::Duration};

use anyhow::ensure;
use serde_json::Value;

use crate::{
    support::{guard_bin, helper_bin, GuardProcess, Scratch, StandInGateway},
    Outcome, Test, TestResult,
};

pub(crate) fn tests() -> Vec<Test> {
    crate::named_tests![kill9_during_storm_keeps_decisions_and_chain,]
}

fn decisions(lines: &str) -> HashSet<(u64, u64)> {
    lines
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["decision"].is_object() && e["kind"] == "file_open")
        .filter_map(|e| Some((e["ktime_ns"].as_u64()?, e["tgid"].as_u64()?)))
        .collect()
}

fn kill9_during_storm_keeps_decisions_and_chain() -> TestResult {
    let dir = Scratch::new("record-kill9")?;
    let home = dir.path("home");
    std::fs::create_dir_all(home.join(".openclaw"))?;
    std::fs::write(home.join(".openclaw/.env"), "TOKEN=sk-ant-record\n")?;
    let noise = dir.path("noise");
    std::fs::write(&noise, "x")?;
    let e = home.join(".openclaw/.env");
    // Denied reads (decisions) interleaved with a storm of plain opens, until killed.
    let script = format!(
        "'{h}' helper open-loop 300000 '{n}' &\n\
         while true; do bash --noprofile --norc -c \"cat '{e}'\" >/dev/null 2>&1; done\n",
        h = helper_bin(),
        n = noise.display(),
        e = e.display()
    );
    let gateway =
        StandInGateway::start_env(&dir, "", &script, &[("HOME", home.display().to_string())])?;
    let gw = gateway.pid();
    let state = dir.path("state");
    // Not folded: the storm is to be a storm of events.
    let guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gw.to_string(),
            "--no-discover".into(),
            "--fold-ms".into(),
            "0".into(),
        ],
    )?;
    if !guard.program_attached("file_open") && !guard.program_attached("sys_exit_openat") {
        return Ok(Outcome::Skipped(
            "no file enforcement loads here: no decisions to record".into(),
        ));
    }
    gateway.release()?;
    // Long enough for denied reads to be reported even under TCG emulation.
    for _ in 0..60 {
        std::thread::sleep(Duration::from_millis(500));
        if decisions(&std::fs::read_to_string(dir.path("events.jsonl")).unwrap_or_default()).len()
            >= 5
        {
            break;
        }
    }
    // What the outputs reported before the kill: each of these decisions was recorded
    // (fsynced) before the sink let it out.
    let reported =
        decisions(&std::fs::read_to_string(dir.path("events.jsonl")).unwrap_or_default());
    guard.kill9()?;
    drop(gateway);
    ensure!(
        !reported.is_empty(),
        "no decisions were reported before the kill"
    );

    let verify = Command::new(guard_bin())
        .args(["events", "verify", "--state-dir"])
        .arg(&state)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // SIGKILL can cut the frame being written at a page boundary (the kernel stops a
    // write between pages for a fatal signal): a torn tail, named as such, is the only
    // failure allowed here; the restart below cuts it and the chain must then verify.
    let torn = text.contains("a torn tail from a crash");
    ensure!(
        verify.status.success() || torn,
        "events verify failed after kill -9: {text}"
    );
    if torn {
        println!("    after kill -9: {}", text.trim());
    }
    let dump = Command::new(guard_bin())
        .args(["events", "--json", "--state-dir"])
        .arg(&state)
        .output()?;
    let recorded = decisions(&String::from_utf8_lossy(&dump.stdout));
    let missing: Vec<_> = reported.difference(&recorded).collect();
    ensure!(
        missing.is_empty(),
        "{} of {} reported decisions are not in the record: {missing:?}",
        missing.len(),
        reported.len()
    );
    println!(
        "    {} decisions reported before the kill, all recorded; chain verified",
        reported.len()
    );

    // A restarted daemon opens the same record (cutting and reporting a torn tail, if
    // any) and the chain still verifies.
    let dir2 = Scratch::new("record-kill9-restart")?;
    let again = GuardProcess::start(
        &dir2,
        &[
            "--no-discover".into(),
            "--state-dir".into(),
            state.display().to_string(),
        ],
    )?;
    again.stop()?;
    let verify = Command::new(guard_bin())
        .args(["events", "verify", "--state-dir"])
        .arg(&state)
        .output()?;
    ensure!(
        verify.status.success(),
        "events verify failed after the restart"
    );
    Ok(Outcome::Passed)
}
