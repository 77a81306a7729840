//! Tool-call attribution on every kernel of the matrix: a stand-in gateway that
//! reports its calls like the guard's OpenClaw plugin and starts each command as
//! node-pty does, the tag in its environment. The real gateway's test is
//! `e2e::tool_calls_attributed` (host).

use std::{process::Command, time::Duration};

use anyhow::{ensure, Context as _};
use serde_json::Value;

use crate::{
    support::{helper_bin, GuardProcess, Scratch},
    Outcome, Test, TestResult,
};

pub(crate) fn tests() -> Vec<Test> {
    crate::named_tests![calls_follow_the_kernel_tree, calls_survive_a_daemon_restart,]
}

/// The daemon restarts (an upgrade) while a call runs: the call's shell, which the new
/// daemon finds in /proc, and what it starts afterwards still carry the call (the new
/// daemon takes the call back from the record's `tool_call` record).
fn calls_survive_a_daemon_restart() -> TestResult {
    let dir = Scratch::new("attrib-restart")?;
    let socket = dir.path("attribution.sock").display().to_string();
    let go = dir.path("go");
    let resume = dir.path("resume");
    let marks = dir.path("marks");
    std::fs::create_dir_all(&marks)?;
    let cmd = format!(
        "echo $$ > {m}/1; while [ ! -e {r} ]; do sleep 0.1; done; cat /etc/hostname > /dev/null",
        m = marks.display(),
        r = resume.display()
    );
    let mut gateway = Command::new(helper_bin())
        .args([
            "helper",
            "attrib-gateway",
            &socket,
            &go.display().to_string(),
            &cmd,
        ])
        .spawn()
        .context("starting the stand-in gateway")?;
    let args = [
        "--pid".into(),
        gateway.id().to_string(),
        "--attribution-socket".into(),
        socket.clone(),
    ];
    let first = GuardProcess::start(&dir, &args)?;
    std::fs::write(&go, "go\n")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !marks.join("1").exists() {
        ensure!(
            std::time::Instant::now() < deadline,
            "the call did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    first.stop()?;
    let second = GuardProcess::start(&dir, &args)?;
    let restored = second
        .startup
        .iter()
        .chain(std::iter::once(&String::new()))
        .any(|l| l.contains("taken back from the record"));
    std::fs::write(&resume, "go\n")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while gateway.try_wait()?.is_none() {
        ensure!(std::time::Instant::now() < deadline, "the call did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (events, stats) = second.stop_with_stats()?;
    let cat = events
        .iter()
        .find(|e| e["kind"] == "exec" && e["argv"][0] == "cat")
        .context("no exec of cat after the restart")?;
    ensure!(
        cat["tool_call"]["id"] == "tc-1",
        "after the restart the call's command carries {} (restored line: {restored}, counters {})",
        cat["tool_call"],
        stats["attribution"]
    );
    println!(
        "    after the restart: {} restored, the call's command attributed to tc-1",
        stats["attribution"]["restored"]
    );
    Ok(Outcome::Passed)
}

/// Every event below each call's shell carries that call (the shell's own pid, which
/// it writes down, is the ground truth); a child that sets call 1's tag in its own
/// environment stays in call 2; a report from a tool command is refused and
/// counted.
fn calls_follow_the_kernel_tree() -> TestResult {
    let dir = Scratch::new("attrib")?;
    let socket = dir.path("attribution.sock").display().to_string();
    let go = dir.path("go");
    let marks = dir.path("marks");
    std::fs::create_dir_all(&marks)?;
    let m = marks.display();
    let helper = helper_bin();
    let cmds = [
        format!("echo $$ > {m}/1; cat /etc/hostname > /dev/null; sh -c 'id -u > /dev/null'"),
        format!(
            "echo $$ > {m}/2; OCG_TOOL_CALL=${{OCG_TOOL_CALL%-*}}-1 sh -c 'cat /etc/hostname > /dev/null'; \
             '{helper}' helper attrib-report '{socket}' forged-1 > {m}/forge.out 2>&1; true"
        ),
        format!("echo $$ > {m}/3; (sh -c 'sleep 0.2; cat /etc/hostname > /dev/null' &); sleep 0.5"),
    ];
    let mut gateway = Command::new(&helper);
    gateway
        .args([
            "helper",
            "attrib-gateway",
            &socket,
            &go.display().to_string(),
        ])
        .args(&cmds);
    let mut gateway = gateway.spawn().context("starting the stand-in gateway")?;
    let guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gateway.id().to_string(),
            "--attribution-socket".into(),
            socket.clone(),
        ],
    )?;
    std::fs::write(&go, "go\n")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = gateway.try_wait()? {
            break s;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the stand-in gateway did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    let (events, stats) = guard.stop_with_stats()?;
    ensure!(status.success(), "the stand-in gateway failed: {status}");

    let mut checked = 0;
    for i in 1..=cmds.len() {
        let id = format!("tc-{i}");
        let shell: u64 = std::fs::read_to_string(marks.join(i.to_string()))
            .with_context(|| format!("call {i}: no pid"))?
            .trim()
            .parse()?;
        // From the shell's first exec on: before it, the pid is still the gateway's
        // fork child, which belongs to no call yet (BPF LSM reports its open of the
        // shell's binary).
        let exec_ns = events
            .iter()
            .filter(|e| e["kind"] == "exec" && e["tgid"].as_u64() == Some(shell))
            .filter_map(|e| e["ktime_ns"].as_u64())
            .min()
            .unwrap_or(0);
        let below = |e: &&Value| {
            if e["tgid"].as_u64() == Some(shell) {
                return e["ktime_ns"].as_u64().unwrap_or(0) >= exec_ns;
            }
            e["lineage"]
                .as_array()
                .is_some_and(|l| l.iter().any(|a| a["pid"].as_u64() == Some(shell)))
        };
        let mine: Vec<&Value> = events
            .iter()
            .filter(|e| e["kind"] != "tool_call")
            .filter(below)
            .collect();
        ensure!(mine.len() >= 3, "call {i}: {} events", mine.len());
        for e in &mine {
            ensure!(
                e["tool_call"]["id"] == id.as_str()
                    && e["tool_call"]["session_key"] == "agent:main:matrix",
                "call {i}: an event of its tree carries {} (the shell {shell} first exec'd at {exec_ns}): {e}",
                e["tool_call"]
            );
        }
        checked += mine.len();
    }
    // The re-tagged child and the background job's late exec are their calls'.
    let hostname_reads: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "exec" && e["argv"][0] == "cat")
        .collect();
    ensure!(
        hostname_reads.len() >= 3,
        "{} execs read /etc/hostname",
        hostname_reads.len()
    );
    let forge = std::fs::read_to_string(marks.join("forge.out")).unwrap_or_default();
    ensure!(
        forge.contains("not a tracked gateway"),
        "the tool command's report was not refused: {forge:?}"
    );
    ensure!(
        !events.iter().any(|e| e["tool_call"]["id"] == "forged-1"),
        "the forged report reached the record"
    );
    let counters = &stats["attribution"];
    ensure!(
        counters["starts"] == 3 && counters["rejected_peer"].as_u64() >= Some(1),
        "counters: {counters}"
    );
    println!(
        "    {checked} events of 3 calls attributed by the tree; forged report refused; counters {counters}"
    );
    Ok(Outcome::Passed)
}
