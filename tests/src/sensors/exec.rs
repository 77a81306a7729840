//! Tests of the exec sensor (`tp_btf/sched_process_exec`).

use anyhow::{ensure, Context as _};
use serde_json::Value;

use crate::{
    support::{GuardProcess, Scratch, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![child_of_gateway_reported_with_lineage,]
}

/// A known binary run by the gateway's child arrives as an exec event with the right
/// pid, parent and root; the same binary run outside the tree produces nothing.
fn child_of_gateway_reported_with_lineage() -> TestResult {
    let dir = Scratch::new("exec")?;
    let gateway = StandInGateway::start(&dir, "/bin/true\n")?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(&dir, &["--pid".into(), gw.to_string()])?;
    let outsider = std::process::Command::new("/bin/true")
        .spawn()
        .context("running /bin/true outside the tree")?;
    let outsider_pid = outsider.id();
    let _ = outsider.wait_with_output();
    let code = gateway.release_and_wait()?;
    ensure!(code == 0, "stand-in gateway exited with {code}");
    let events = guard.stop()?;

    let execs: Vec<&Value> = events.iter().filter(|e| e["kind"] == "exec").collect();
    let hit = execs
        .iter()
        .find(|e| e["filename"] == "/bin/true")
        .with_context(|| {
            format!(
                "no exec event for /bin/true among {} events: {events:?}",
                events.len()
            )
        })?;
    ensure!(hit["comm"] == "true", "comm: {}", hit["comm"]);
    ensure!(hit["ppid"] == gw, "ppid {} != gateway {gw}", hit["ppid"]);
    ensure!(hit["root"] == gw, "root {} != gateway {gw}", hit["root"]);
    ensure!(hit["depth"] == 1, "depth {}", hit["depth"]);
    ensure!(
        hit["pid"] == hit["tgid"],
        "exec reported by a non-leader thread: {hit}"
    );
    ensure!(
        !events.iter().any(|e| e["tgid"] == outsider_pid),
        "an untracked process produced an event: {events:?}"
    );
    Ok(Outcome::Passed)
}
