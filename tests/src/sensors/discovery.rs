//! Finding gateways: by command line at start-up, by exec of a candidate executable
//! later, and by their `openclaw-gateway*.service` cgroup.

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{ensure, Context as _};
use serde_json::Value;

use crate::{
    support::{helper_bin, GuardProcess, Scratch, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![
        no_arguments_finds_gateway_protects_env_flags_shells,
        gateway_started_later_found_at_exec,
        gateway_unit_cgroup_tracked,
    ]
}

fn exec_with<'a>(events: &'a [Value], arg: &str) -> Option<&'a Value> {
    events.iter().find(|e| {
        e["kind"] == "exec"
            && e["argv"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == arg))
    })
}

/// `openclaw-guard run` with nothing configured: the running stand-in gateway (titled
/// like OpenClaw's) is found, its children cannot read `.env`, and their shells are
/// flagged.
fn no_arguments_finds_gateway_protects_env_flags_shells() -> TestResult {
    let dir = Scratch::new("discover-noargs")?;
    let home = dir.path("home");
    std::fs::create_dir_all(home.join(".openclaw"))?;
    std::fs::write(home.join(".openclaw/.env"), "TOKEN=sk-ant-noargs\n")?;
    let d = dir.0.display().to_string();
    let script = format!(
        "\"$SHELL\" --noprofile --norc -c \"cat '{h}/.openclaw/.env'; sh -c 'true; true'; true\" > '{d}/out' 2>&1\n",
        h = home.display()
    );
    let gateway =
        StandInGateway::start_env(&dir, "", &script, &[("HOME", home.display().to_string())])?;
    let gw = u64::from(gateway.pid());
    // Only what every test passes (output, record and status in the scratch dir).
    let guard = GuardProcess::start(&dir, &[])?;
    ensure!(
        guard
            .startup
            .iter()
            .any(|l| l.contains("tracking") && l.contains(&gw.to_string())),
        "the gateway {gw} was not discovered:\n{}",
        guard.startup.join("\n")
    );
    let blocks = guard.program_attached("file_open") || guard.program_attached("sys_exit_openat");
    gateway.release_and_wait()?;
    let events = guard.stop()?;
    let out = std::fs::read_to_string(dir.path("out"))?;
    if blocks {
        ensure!(
            !out.contains("sk-ant-noargs"),
            "the child read .env: {out:?}"
        );
    }
    let sh = events
        .iter()
        .find(|e| e["kind"] == "exec" && e["comm"] == "sh" && e["root"] == gw)
        .with_context(|| format!("no exec of sh in the gateway's tree: {events:?}"))?;
    ensure!(
        sh["alert"]["rule"] == "shell-spawn" && sh["alert"]["priority"] == "critical",
        "sh not flagged: {sh}"
    );
    Ok(Outcome::Passed)
}

/// A gateway exec'd after the guard started (`node .../openclaw/openclaw.mjs gateway`)
/// is recognised from that exec, and its children are followed.
fn gateway_started_later_found_at_exec() -> TestResult {
    let dir = Scratch::new("discover-later")?;
    let node = dir.path("node");
    std::fs::copy(helper_bin(), &node).context("copying the test binary as `node`")?;
    let script = dir.path("late.sh");
    std::fs::write(&script, "/bin/true late-child\n")?;
    let guard = GuardProcess::start(&dir, &[])?;
    let mut child = Command::new(&node)
        .args([
            "/usr/lib/node_modules/openclaw/openclaw.mjs",
            "gateway",
            "--port",
            "18789",
        ])
        .env("OCG_STANDIN_SCRIPT", &script)
        .spawn()
        .context("starting the late gateway")?;
    let gw = u64::from(child.id());
    child.wait()?;
    let events = guard.stop()?;
    let late = exec_with(&events, "late-child")
        .with_context(|| format!("the late gateway's child was not seen: {events:?}"))?;
    // node (the gateway) -> bash (its script) -> /bin/true
    ensure!(
        late["root"] == gw && late["depth"] == 2 && late["lineage"][0]["pid"] == gw,
        "late child: {late}"
    );
    Ok(Outcome::Passed)
}

/// A cgroup v2 directory for a test unit, removed on drop (processes moved back out).
struct UnitCgroup(PathBuf);

impl UnitCgroup {
    fn new() -> anyhow::Result<Option<Self>> {
        let mounts = std::fs::read_to_string("/proc/mounts")?;
        let Some(root) = mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        }) else {
            return Ok(None);
        };
        let dir = root.join(format!(
            "openclaw-gateway-ocgtest{}.service",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Some(Self(dir)))
    }

    fn add(&self, pid: u32) -> anyhow::Result<()> {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", self.0.display()))
    }
}

impl Drop for UnitCgroup {
    fn drop(&mut self) {
        let root = self.0.parent().map(|p| p.join("cgroup.procs"));
        if let (Ok(procs), Some(root)) =
            (std::fs::read_to_string(self.0.join("cgroup.procs")), root)
        {
            for pid in procs.lines() {
                let _ = std::fs::write(&root, pid);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Processes of an `openclaw-gateway*.service` cgroup (made by hand: these machines
/// have no systemd) are gateways: one there before the guard starts, and one that
/// enters it later and execs.
fn gateway_unit_cgroup_tracked() -> TestResult {
    let Some(cg) = UnitCgroup::new()? else {
        return Ok(Outcome::Skipped("no cgroup2 mount".into()));
    };
    let dir = Scratch::new("discover-cgroup")?;
    let first = spawn_waiting(&dir, "go1", "cg-first")?;
    cg.add(first.id())?;
    let guard = GuardProcess::start(&dir, &[])?;
    // Enters the unit's cgroup after the guard started, then execs.
    let second = spawn_waiting(&dir, "go2", "cg-second")?;
    cg.add(second.id())?;
    let p1 = u64::from(first.id());
    let p2 = u64::from(second.id());
    for (go, mut child) in [("go1", first), ("go2", second)] {
        std::fs::write(dir.path(go), "go\n")?;
        child.wait()?;
    }
    std::thread::sleep(Duration::from_millis(200));
    let events = guard.stop()?;
    let a = exec_with(&events, "cg-first")
        .with_context(|| format!("no event from the unit's first process: {events:?}"))?;
    ensure!(a["root"] == p1, "first: {a}");
    let b = exec_with(&events, "cg-second")
        .with_context(|| format!("no event from the process that entered the unit: {events:?}"))?;
    // Its child exec'd inside the unit's cgroup: a tracked root from that exec on,
    // unless the guard's scan of the unit found the process that entered it first
    // (a root itself, the child then at depth 1 under it; seen on a 5.10 guest).
    ensure!(
        (b["root"] == b["tgid"] && b["depth"] == 0) || (b["root"] == p2 && b["depth"] == 1),
        "second: {b}"
    );
    Ok(Outcome::Passed)
}

/// A bash that waits for `go`, then runs `/bin/true TAG` as its child.
fn spawn_waiting(dir: &Scratch, go: &str, tag: &str) -> anyhow::Result<std::process::Child> {
    let fifo = dir.path(go);
    Command::new("mkfifo").arg(&fifo).status()?;
    Command::new("bash")
        .args([
            "--noprofile",
            "--norc",
            "-c",
            &format!("read -r _ < '{}'; /bin/true {tag}; true", fifo.display()),
        ])
        .spawn()
        .context("spawning a waiting bash")
}
