//! Shell spawns in the tree: flagged with lineage; with a kill rule the shell and its
//! process group die (userspace, after exec: the new image's argv is only readable then).

use anyhow::{ensure, Context as _};
use serde_json::Value;

use crate::{
    support::{lineage_pids, GuardProcess, Scratch, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![
        shell_from_tree_alerts_with_lineage,
        kill_rule_kills_shell_and_its_group,
        deny_list_refuses_executable_before_it_runs,
        kill_flood_degrades_to_deny_not_alert,
    ]
}

fn shell_exec<'a>(events: &'a [Value], comm: &str, depth: u64) -> Option<&'a Value> {
    events
        .iter()
        .find(|e| e["kind"] == "exec" && e["comm"] == comm && e["depth"] == depth)
}

/// Default policy: the exec tool's shell (the gateway's oom_score_adj shim and the
/// `--noprofile --norc -c` wrapper it execs, on a terminal as node-pty starts it) is an
/// informational alert; an interactive shell it starts is a critical one, with the
/// full lineage.
fn shell_from_tree_alerts_with_lineage() -> TestResult {
    let dir = Scratch::new("exec-alert")?;
    let script = format!(
        "'{}' helper pty-exec /bin/sh -c 'echo 1000 > /proc/self/oom_score_adj 2>/dev/null; exec \"$0\" \"$@\"' /bin/bash --noprofile --norc -c \"sh -i -c 'true; true'; true\"\n",
        crate::support::helper_bin()
    );
    let script = script.as_str();
    let gateway = StandInGateway::start(&dir, script)?;
    let gw = u64::from(gateway.pid());
    let guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gw.to_string(),
            "--no-discover".into(),
            "--no-record".into(),
        ],
    )?;
    gateway.release_and_wait()?;
    let events = guard.stop()?;
    let tool = shell_exec(&events, "bash", 1)
        .with_context(|| format!("no exec of the exec tool's shell: {events:?}"))?;
    ensure!(
        tool["role"] == "exec-tool",
        "the wrapper's role: {}",
        tool["role"]
    );
    ensure!(
        tool["alert"]["rule"] == "shell-spawn" && tool["alert"]["priority"] == "informational",
        "exec tool shell: {}",
        tool["alert"]
    );
    let sh = shell_exec(&events, "sh", 2)
        .with_context(|| format!("no exec of sh under the exec tool: {events:?}"))?;
    ensure!(
        sh["role"] == "tool",
        "the nested shell's role: {}",
        sh["role"]
    );
    ensure!(
        sh["alert"]["rule"] == "shell-spawn" && sh["alert"]["priority"] == "critical",
        "nested shell: {}",
        sh["alert"]
    );
    let lineage = lineage_pids(sh);
    ensure!(
        lineage.len() == 3 && lineage[0] == gw && lineage[1] == tool["tgid"],
        "lineage: {}",
        sh["lineage"]
    );
    Ok(Outcome::Passed)
}

const KILL_POLICY: &str = r#"version = 1
mode = "enforce"

[targets]
discover = false

[[rules]]
id = "no-shells"
description = "No shells in the agent's tree beyond the exec tool"
action = "kill"
severity = "critical"
[rules.exec]
shells = ["sh", "bash", "dash", "busybox-sh"]
[[rules.exceptions]]
name = "exec-tool"
description = "the exec tool's own shell"
parent_is_gateway = true
exe = ["sh", "bash"]
args = ["-c"]
stdio_socket = false
severity = "informational"
"#;

/// A shell started in its own process group by the exec tool's shell is killed, and
/// the group's other members (background sleeps) with it; the exec tool's own shell
/// (the exception) lives on.
fn kill_rule_kills_shell_and_its_group() -> TestResult {
    let dir = Scratch::new("exec-kill")?;
    let policy = dir.path("policy.toml");
    std::fs::write(&policy, KILL_POLICY)?;
    let d = dir.0.display().to_string();
    // `set -m`: job control, so `sh` leads its own process group, as the exec tool's
    // commands do.
    let script = format!(
        "\"$SHELL\" --noprofile --norc -c \"set -m; sh -c 'sleep 30.5 & sleep 31.5; echo survived > {d}/survived'; echo \\$? > {d}/sh.rc\"\n"
    );
    let gateway = StandInGateway::start(&dir, &script)?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gw.to_string(),
            "--no-discover".into(),
            "--no-record".into(),
            "--policy".into(),
            policy.display().to_string(),
        ],
    )?;
    gateway.release_and_wait()?;
    let events = guard.stop()?;
    ensure!(
        !dir.path("survived").exists(),
        "the shell ran to completion"
    );
    let rc = std::fs::read_to_string(dir.path("sh.rc"))
        .context("the exec tool's shell did not finish")?;
    ensure!(
        rc.trim() == "137",
        "sh exit status {} (expected 137, SIGKILL)",
        rc.trim()
    );
    let sleepers: Vec<u32> = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("30.5"))
        })
        .collect();
    ensure!(
        sleepers.is_empty(),
        "members of the shell's process group survived: {sleepers:?}"
    );
    let killed = events
        .iter()
        .find(|e| e["kind"] == "exec" && e["comm"] == "sh" && e["decision"]["action"] == "kill")
        .with_context(|| format!("no kill decision recorded: {events:?}"))?;
    ensure!(
        killed["decision"]["rule"] == "no-shells",
        "decision: {}",
        killed["decision"]
    );
    Ok(Outcome::Passed)
}

/// A copy of the test binary as an "exfiltration tool", and a policy file whose exec
/// rule `id` denies it with `action`.
fn exfil_tool_rule(
    dir: &Scratch,
    id: &str,
    action: &str,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let tool = dir.path("exfil-tool");
    std::fs::copy(crate::support::helper_bin(), &tool).context("copying the test binary")?;
    let policy = dir.path("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "version = 1\n\n[targets]\ndiscover = false\n\n[[rules]]\nid = \"{id}\"\ndescription = \"the exfiltration tool\"\naction = \"{action}\"\nseverity = \"critical\"\n[rules.exec]\ndeny = [\"{}\"]\n",
            tool.display()
        ),
    )?;
    Ok((tool, policy))
}

/// An exec rule's `deny` list: the tree cannot run the listed executable (EPERM before
/// it runs, BPF LSM `bprm_check_security`); an unrelated process can.
fn deny_list_refuses_executable_before_it_runs() -> TestResult {
    let dir = Scratch::new("exec-deny")?;
    let (tool, policy) = exfil_tool_rule(&dir, "no-exfil-tool", "block")?;
    let d = dir.0.display().to_string();
    let script = format!(
        "'{t}' helper noop 2> '{d}/err'; echo \\$? > '{d}/rc'\n",
        t = tool.display()
    );
    let gateway = StandInGateway::start(
        &dir,
        &format!(
            "bash --noprofile --norc -c \"{}\"\n",
            script.trim().replace('"', "\\\"")
        ),
    )?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gw.to_string(),
            "--no-discover".into(),
            "--policy".into(),
            policy.display().to_string(),
        ],
    )?;
    if let Some(why) = guard.program_unavailable("bprm_check_security") {
        return Ok(Outcome::Skipped(format!(
            "BPF LSM not loadable on this kernel ({why}); exec deny acts from userspace there"
        )));
    }
    gateway.release_and_wait()?;
    let outsider = std::process::Command::new(&tool)
        .args(["helper", "noop"])
        .status()?;
    let events = guard.stop()?;
    let rc = std::fs::read_to_string(dir.path("rc"))?;
    let err = std::fs::read_to_string(dir.path("err"))?;
    ensure!(
        rc.trim() != "0" && err.contains("Operation not permitted"),
        "the tree ran the denied tool: rc {} {err:?}",
        rc.trim()
    );
    ensure!(
        outsider.success(),
        "an unrelated process could not run the tool"
    );
    let decision = events
        .iter()
        .find(|e| e["op"] == "exec" && e["decision"]["rule"] == "no-exfil-tool")
        .with_context(|| format!("no exec decision recorded: {events:?}"))?;
    ensure!(
        decision["decision"]["action"] == "deny",
        "decision: {decision}"
    );
    Ok(Outcome::Passed)
}

/// A kill rule fired in a flood kills up to `--kill-limit` times a second, then denies
/// (EPERM, never alert-only), each refusal a decision event saying it was degraded.
fn kill_flood_degrades_to_deny_not_alert() -> TestResult {
    const LIMIT: usize = 5;
    const ATTEMPTS: usize = 60;
    let dir = Scratch::new("exec-kill-flood")?;
    let (tool, policy) = exfil_tool_rule(&dir, "kill-exfil-tool", "kill")?;
    let d = dir.0.display().to_string();
    // Each attempt is a forked subshell exec'ing the tool: killed -> 137, refused -> 126.
    // The loop's start and end bound how many one-second windows it straddles.
    let script = format!(
        "echo $EPOCHREALTIME > '{d}/t0'; for i in $(seq {ATTEMPTS}); do ( exec '{t}' helper noop ) 2>/dev/null; echo $? >> '{d}/rcs'; done; echo $EPOCHREALTIME > '{d}/t1'\n",
        t = tool.display()
    );
    let gateway = StandInGateway::start(
        &dir,
        &format!(
            "bash --noprofile --norc -c \"{}\"\n",
            script.trim().replace('"', "\\\"").replace('$', "\\$")
        ),
    )?;
    let guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gateway.pid().to_string(),
            "--no-discover".into(),
            "--policy".into(),
            policy.display().to_string(),
            "--kill-limit".into(),
            LIMIT.to_string(),
        ],
    )?;
    if let Some(why) = guard.program_unavailable("bprm_check_security") {
        return Ok(Outcome::Skipped(format!(
            "BPF LSM not loadable on this kernel ({why}); the kill limit needs a hook that can refuse"
        )));
    }
    gateway.release_and_wait()?;
    let events = guard.stop()?;
    let rcs: Vec<String> = std::fs::read_to_string(dir.path("rcs"))?
        .lines()
        .map(str::to_owned)
        .collect();
    ensure!(rcs.len() == ATTEMPTS, "{} attempts ran: {rcs:?}", rcs.len());
    ensure!(
        rcs.iter().all(|rc| rc == "137" || rc == "126"),
        "an attempt neither killed nor refused (the tool ran?): {rcs:?}"
    );
    let killed = rcs.iter().filter(|rc| *rc == "137").count();
    // A window opens at the first kill after the last one ended: a loop of `secs`
    // seconds sees at most floor(secs) + 1 of them (under TCG it takes 1-3 s).
    let stamp = |f: &str| -> anyhow::Result<f64> {
        let text = std::fs::read_to_string(dir.path(f))?;
        text.trim()
            .parse()
            .with_context(|| format!("{f}: {text:?}"))
    };
    let secs = stamp("t1")? - stamp("t0")?;
    let windows = secs.floor() as usize + 1;
    println!("    {ATTEMPTS} attempts in {secs:.2}s: {killed} killed, limit {LIMIT}/s over at most {windows} window(s)");
    ensure!(
        (1..=windows * LIMIT).contains(&killed),
        "{killed} of {ATTEMPTS} attempts killed in {secs:.2}s with a limit of {LIMIT}/s: {rcs:?}"
    );
    ensure!(
        killed < ATTEMPTS,
        "no attempt was refused: the loop ({secs:.2}s) was too slow to reach the limit"
    );
    let decisions: Vec<&Value> = events
        .iter()
        .filter(|e| e["decision"]["rule"] == "kill-exfil-tool")
        .collect();
    let kills = decisions
        .iter()
        .filter(|e| e["decision"]["action"] == "kill")
        .count();
    let degraded = decisions
        .iter()
        .filter(|e| e["decision"]["action"] == "deny" && e["decision"]["degraded_from"] == "kill")
        .count();
    ensure!(
        kills == killed && degraded == ATTEMPTS - killed,
        "decisions: {kills} kills, {degraded} degraded denies; the processes saw {killed} kills of {ATTEMPTS}"
    );
    Ok(Outcome::Passed)
}
