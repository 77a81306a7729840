//! Hot reload: a broken policy is rejected and the one in force stays; a valid one is
//! swapped in without an unprotected moment.

use std::time::Duration;

use anyhow::{ensure, Context as _};

use crate::{
    support::{wait_file, GuardProcess, Scratch, StandInGateway, WindowReader},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![
        broken_policy_rejected_valid_one_applied,
        protection_added_inside_a_fold_window_applies_at_once,
    ]
}

fn policy(action: &str) -> String {
    policy_for(action, "~/.openclaw/.env")
}

/// A policy whose one rule, `secrets`, applies `action` to reads of `path`.
pub(super) fn policy_for(action: &str, path: &str) -> String {
    format!(
        "version = 1\n\n[targets]\ndiscover = false\n\n[[rules]]\nid = \"secrets\"\ndescription = \"secrets\"\naction = \"{action}\"\nseverity = \"critical\"\n[rules.files]\npaths = [\"{path}\"]\n"
    )
}

/// A thread reopening one file has a fold window in the kernel, and its reopens skip
/// the checks while the window lasts (they are allowed repeats). A reload that protects
/// the file must end that: the next reopen is refused (or killed, on the tracepoint
/// tier), even inside a window (here 10 minutes long).
fn protection_added_inside_a_fold_window_applies_at_once() -> TestResult {
    let dir = Scratch::new("reload-fold")?;
    let home = dir.path("home");
    std::fs::create_dir_all(home.join(".openclaw"))?;
    let env = home.join(".openclaw/.env");
    std::fs::write(&env, "TOKEN=sk-ant-fold\n")?;
    let p = dir.path("policy.toml");
    std::fs::write(&p, policy_for("block", "~/.openclaw/credentials"))?;
    let (mut reader, script) = WindowReader::new(&dir)?;
    let gateway =
        StandInGateway::start_env(&dir, "", &script, &[("HOME", home.display().to_string())])?;
    let mut guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gateway.pid().to_string(),
            "--no-discover".into(),
            "--policy".into(),
            p.display().to_string(),
            "--fold-ms".into(),
            "600000".into(),
        ],
    )?;
    if !guard.program_attached("file_open") && !guard.program_attached("sys_exit_openat") {
        return Ok(Outcome::Skipped("no file enforcement loads here".into()));
    }
    gateway.release()?;
    for _ in 0..3 {
        reader.read(&env)?;
    }
    let before = reader.results(3);
    ensure!(
        before.len() == 3 && before.iter().all(|l| l.contains("sk-ant-fold")),
        "reads before the reload: {before:?}"
    );

    std::fs::write(&p, policy_for("block", "~/.openclaw/.env"))?;
    // SAFETY: signalling the daemon we started.
    unsafe { libc::kill(guard.pid() as libc::pid_t, libc::SIGHUP) };
    guard.wait_for_line("policy reloaded", Duration::from_secs(60))?;
    reader.read(&env)?;
    let after = reader.results(4);
    reader.stop();
    gateway.wait()?;
    let events = guard.stop()?;
    ensure!(
        !after.iter().skip(3).any(|l| l.contains("sk-ant-fold")),
        "a reopen inside the fold window read the newly protected file: {after:?}"
    );
    let decided = events
        .iter()
        .filter(|e| {
            e["kind"] == "file_open"
                && e["path"]
                    .as_str()
                    .is_none_or(|p| p.is_empty() || p.ends_with(".env"))
        })
        .filter(|e| e["decision"]["rule"] == "secrets")
        .count();
    ensure!(
        decided == 1,
        "decisions on .env after the reload: {decided}"
    );
    let folded: u64 = events
        .iter()
        .filter(|e| e["kind"] == "repeat")
        .filter_map(|e| e["count"].as_u64())
        .sum();
    println!("    before the reload: 3 reads (1 event + {folded} folded); after: {after:?}");
    ensure!(
        folded >= 2,
        "the reads before the reload were not folded ({folded})"
    );
    Ok(Outcome::Passed)
}

fn broken_policy_rejected_valid_one_applied() -> TestResult {
    let dir = Scratch::new("reload")?;
    let d = dir.0.display().to_string();
    let home = dir.path("home");
    std::fs::create_dir_all(home.join(".openclaw"))?;
    let env = home.join(".openclaw/.env");
    std::fs::write(&env, "TOKEN=sk-ant-reload\n")?;
    let p = dir.path("policy.toml");
    std::fs::write(&p, policy("block"))?;
    // `tick` paces the reader loop (a read that times out: no process per round).
    for f in ["step2", "step3", "tick"] {
        std::process::Command::new("mkfifo")
            .arg(dir.path(f))
            .status()?;
    }
    let e = env.display();
    let read = |n: &str| {
        format!("bash --noprofile --norc -c \"cat '{e}'\" > '{d}/{n}.out' 2>&1; echo $? > '{d}/{n}.rc'\n")
    };
    let script = format!(
        "{r1}( while [ ! -e '{d}/stop' ]; do read -r x < '{e}' && echo \"$x\"; read -t 0.02 -r _ <> '{d}/tick'; done > '{d}/during' 2>/dev/null ) &\n\
         read -r _ < '{d}/step2'\nwait\n{r2}read -r _ < '{d}/step3'\n{r3}",
        r1 = read("r1"),
        r2 = read("r2"),
        r3 = read("r3"),
    );
    let gateway =
        StandInGateway::start_env(&dir, "", &script, &[("HOME", home.display().to_string())])?;
    let gw = gateway.pid();
    let mut guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gw.to_string(),
            "--no-discover".into(),
            "--policy".into(),
            p.display().to_string(),
        ],
    )?;
    if !guard.program_attached("file_open") && !guard.program_attached("sys_exit_openat") {
        return Ok(Outcome::Skipped("no file enforcement loads here".into()));
    }
    gateway.release()?;
    let r1 = wait_file(&dir.path("r1.rc"))?;
    ensure!(r1.trim() != "0", "the first read was not blocked");

    // A broken policy, announced by SIGHUP, while a child keeps reading.
    std::fs::write(&p, "version = 1\n[[rules]]\nid = 3\naction = \"explode\"\n")?;
    // SAFETY: signalling the daemon we started.
    unsafe { libc::kill(guard.pid() as libc::pid_t, libc::SIGHUP) };
    let (line, _) = guard.wait_for_line("REJECTED", Duration::from_secs(60))?;
    println!("    {line}");
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(dir.path("stop"), "")?;
    std::fs::write(dir.path("step2"), "go\n")?;
    let r2 = wait_file(&dir.path("r2.rc"))?;
    ensure!(
        r2.trim() != "0",
        "a read after the rejected reload was not blocked"
    );
    let during = std::fs::read_to_string(dir.path("during")).unwrap_or_default();
    ensure!(
        during.is_empty(),
        "a child read the secret around the rejected reload: {during:?}"
    );

    // A valid policy turning the block into an alert: picked up from the file change.
    std::fs::write(&p, policy("alert"))?;
    let (_, took) = guard.wait_for_line("policy reloaded", Duration::from_secs(60))?;
    println!("    valid policy applied {took:?} after the file changed (polled every second)");
    std::fs::write(dir.path("step3"), "go\n")?;
    let t = std::time::Instant::now();
    gateway.wait()?;
    println!("    gateway finished in {:?}", t.elapsed());
    let r3 = std::fs::read_to_string(dir.path("r3.out")).context("r3")?;
    ensure!(
        r3.contains("sk-ant-reload"),
        "the new policy (alert) did not take effect: {r3:?}"
    );
    let t = std::time::Instant::now();
    let events = guard.stop()?;
    println!("    daemon stopped in {:?}", t.elapsed());
    let results: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "policy")
        .filter_map(|e| e["result"].as_str())
        .collect();
    ensure!(
        results == ["rejected", "applied"],
        "policy records: {results:?}"
    );
    Ok(Outcome::Passed)
}
