//! Enforcement outlives the daemon: pinned programs keep enforcing after `kill -9`, a
//! restarted daemon adopts them without a gap, `unload` removes everything.

use std::time::Duration;

use anyhow::ensure;

use crate::{
    support::{wait_file, GuardProcess, Scratch, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![kill9_keeps_enforcing_restart_adopts_unload_removes,]
}

fn kill9_keeps_enforcing_restart_adopts_unload_removes() -> TestResult {
    let dir = Scratch::new("pinned")?;
    let d = dir.0.display().to_string();
    let pin_dir = format!("/sys/fs/bpf/ocg-test-pinned-{}", std::process::id());
    let home = dir.path("home");
    std::fs::create_dir_all(home.join(".openclaw"))?;
    let state = home.join(".openclaw");
    let env = state.join(".env");
    std::fs::write(&env, "TOKEN=sk-ant-pinned-1\n")?;
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
    // The read while the daemon is dead comes from a process that exec'd under the
    // first daemon: a child the gateway itself starts then would be refused its exec
    // (secret-env cannot hold without a daemon) before it could try the read. Started
    // before r1: the daemon resumes held execs in order, so it is running by the time
    // r1 is done and the daemon is killed.
    std::fs::write(
        dir.path("r2.sh"),
        format!("read -r _ < '{d}/step2'\n{}", read("r2")),
    )?;
    let script = format!(
        "bash --noprofile --norc '{d}/r2.sh' &\n{r1}read -r _ < '{d}/step2'\n\
         ( while [ ! -e '{d}/stop' ]; do read -r x < '{e}' && echo \"$x\"; read -t 0.02 -r _ <> '{d}/tick'; done > '{d}/during' 2>/dev/null ) &\n\
         read -r _ < '{d}/step3'\nwait\n/bin/true after-restart\n",
        r1 = read("r1"),
    );
    let gateway =
        StandInGateway::start_env(&dir, "", &script, &[("HOME", home.display().to_string())])?;
    let gw = gateway.pid();
    let args = |status: &str| -> Vec<String> {
        vec![
            "--pid".into(),
            gw.to_string(),
            "--no-discover".into(),
            "--pin-dir".into(),
            pin_dir.clone(),
            "--status-file".into(),
            format!("{d}/{status}"),
        ]
    };
    let first = GuardProcess::start(&dir, &args("status1.json"))?;
    if !first.program_attached("file_open") && !first.program_attached("sys_exit_openat") {
        let _ = crate::support::unload(&pin_dir);
        return Ok(Outcome::Skipped("no file enforcement loads here".into()));
    }
    if let Some(line) = first
        .startup
        .iter()
        .find(|l| l.contains("pinning: NOT pinned"))
    {
        let _ = crate::support::unload(&pin_dir);
        return Ok(Outcome::Skipped(format!(
            "this kernel refuses to pin BPF links ({line})"
        )));
    }
    // Before 5.15 a syscall tracepoint has no bpf_link: the fallback tier is attached
    // but held by the daemon only, and says so (it cannot outlive it).
    if let Some(line) = first
        .startup
        .iter()
        .find(|l| l.contains("sys_exit_open") && l.contains("NOT pinned"))
    {
        let _ = crate::support::unload(&pin_dir);
        return Ok(Outcome::Skipped(format!(
            "the file programs here cannot be pinned, and the daemon says so: {line}"
        )));
    }
    gateway.release()?;
    ensure!(
        wait_file(&dir.path("r1.rc"))?.trim() != "0",
        "the read under the first daemon was not blocked"
    );

    // The daemon dies; the secret is replaced while it is gone; a child reads.
    first.kill9()?;
    // `status` does not pass the dead daemon's last figures off as current.
    let st = std::process::Command::new(crate::support::guard_bin())
        .args(["status", "--status-file"])
        .arg(dir.path("status1.json"))
        .output()?;
    let text = String::from_utf8_lossy(&st.stdout);
    ensure!(
        st.status.code() == Some(3) && text.contains("NOT running"),
        "status after kill -9: exit {:?}\n{text}",
        st.status.code()
    );
    let tmp = state.join(".env.tmp");
    std::fs::write(&tmp, "TOKEN=sk-ant-pinned-2\n")?;
    std::fs::rename(&tmp, &env)?;
    std::fs::write(dir.path("step2"), "go\n")?;
    let r2 = wait_file(&dir.path("r2.rc"))?;
    let r2_out = std::fs::read_to_string(dir.path("r2.out"))?;
    ensure!(
        r2.trim() != "0" && !r2_out.contains("sk-ant"),
        "with the daemon dead, a child read the replaced secret: {r2_out:?}"
    );

    // A new daemon adopts the pins while a child keeps trying to read.
    std::thread::sleep(Duration::from_millis(300));
    let second = GuardProcess::start(&dir, &args("status2.json"))?;
    ensure!(
        second
            .startup
            .iter()
            .any(|l| l.contains("adopted the pinned maps")),
        "the restarted daemon did not adopt the pinned state:\n{}",
        second.startup.join("\n")
    );
    ensure!(
        second.startup.iter().any(|l| l.contains("retired link")),
        "the first daemon's links were not retired"
    );
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(dir.path("stop"), "")?;
    std::fs::write(dir.path("step3"), "go\n")?;
    gateway.wait()?;
    let events = second.stop()?;
    let during = std::fs::read_to_string(dir.path("during")).unwrap_or_default();
    ensure!(
        during.is_empty(),
        "a child read the secret around the restart: {during:?}"
    );
    ensure!(
        events
            .iter()
            .any(|e| e["kind"] == "exec" && e["argv"][1] == "after-restart"),
        "no events from the tree after the restart"
    );

    // unload: pins gone, programs detached.
    let n = crate::support::unload(&pin_dir)?;
    ensure!(
        n >= 1 && !std::path::Path::new(&pin_dir).exists(),
        "unload left {pin_dir}"
    );
    Ok(Outcome::Passed)
}
