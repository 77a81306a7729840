//! The guard protects itself: its tree, even as root, cannot signal or ptrace it or
//! use bpf() (BPF LSM).

use anyhow::{ensure, Context as _};

use crate::{
    support::{helper_bin, GuardProcess, Scratch, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    vec![Test {
        name: "enforce::tamper::tree_cannot_kill_ptrace_or_bpf",
        run: tamper,
    }]
}

fn tamper() -> TestResult {
    let dir = Scratch::new("tamper")?;
    let d = dir.0.display().to_string();
    let h = helper_bin();
    let script = format!(
        "G=$(cat '{d}/guard.pid')\n\
         bash --noprofile --norc -c \"kill -9 $G\" 2> '{d}/kill.err'; echo $? > '{d}/kill.rc'\n\
         '{h}' helper ptrace-attach $G 2> '{d}/ptrace.err'; echo $? > '{d}/ptrace.rc'\n\
         '{h}' helper bpf-map-create 2> '{d}/bpf.err'; echo $? > '{d}/bpf.rc'\n"
    );
    let gateway = StandInGateway::start(&dir, &script)?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &dir,
        &["--pid".into(), gw.to_string(), "--no-discover".into()],
    )?;
    if let Some(why) = guard.program_unavailable("task_kill") {
        return Ok(Outcome::Skipped(format!("BPF LSM not loadable on this kernel ({why}): self-protection is reported as not enforced")));
    }
    std::fs::write(dir.path("guard.pid"), guard.pid().to_string())?;
    gateway.release_and_wait()?;
    // The guard must still be running: stop() fails if it died.
    let events = guard.stop().context("the guard did not survive")?;
    for (name, errno) in [("kill", "1"), ("ptrace", "1"), ("bpf", "1")] {
        let rc = std::fs::read_to_string(dir.path(&format!("{name}.rc")))?;
        let err = std::fs::read_to_string(dir.path(&format!("{name}.err")))?;
        ensure!(rc.trim() != "0", "{name} by the tree succeeded");
        ensure!(
            name == "kill" || rc.trim() == errno,
            "{name}: exit {} ({err:?}), expected EPERM",
            rc.trim()
        );
        ensure!(err.contains("not permitted"), "{name}: {err:?}");
    }
    for op in ["signal", "ptrace", "bpf"] {
        ensure!(
            events.iter().any(|e| e["kind"] == "tamper"
                && e["op"] == op
                && e["decision"]["rule"] == "guard-self-protection"
                && e["decision"]["action"] == "deny"),
            "no {op} decision recorded: {:?}",
            events
                .iter()
                .filter(|e| e["kind"] == "tamper")
                .collect::<Vec<_>>()
        );
    }
    Ok(Outcome::Passed)
}
