//! The guard protects itself: its tree, even as root, cannot signal or ptrace it, use
//! bpf(), or change its binary, policy, state or pins (BPF LSM).

use anyhow::{ensure, Context as _};

use crate::{
    support::{guard_bin, helper_bin, unload, GuardProcess, Scratch, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![
        tree_cannot_kill_ptrace_or_bpf,
        kernel_knobs_refused_and_lsm_loss_reported,
        guard_controls_refused,
    ]
}

/// A script line: `cmd` in a shell of its own (as an agent's tool would run it), its
/// stderr and exit code to `NAME.err` and `NAME.rc` in `d`.
fn attempt(d: &str, name: &str, cmd: &str) -> String {
    format!("bash --noprofile --norc -c \"{cmd}\" 2> '{d}/{name}.err'; echo $? > '{d}/{name}.rc'\n")
}

/// A script line: the test binary's helper `args`, its stderr and exit code (the
/// errno) to `NAME.err` and `NAME.rc` in `d`.
fn helper_attempt(d: &str, name: &str, args: &str) -> String {
    let h = helper_bin();
    format!("'{h}' helper {args} 2> '{d}/{name}.err'; echo $? > '{d}/{name}.rc'\n")
}

fn tree_cannot_kill_ptrace_or_bpf() -> TestResult {
    let dir = Scratch::new("tamper")?;
    let d = dir.0.display().to_string();
    let bin = guard_bin().display().to_string();
    let pin_dir = format!("/sys/fs/bpf/ocg-test-tamper-{}", std::process::id());
    let policy = dir.path("policy.toml");
    std::fs::write(
        &policy,
        crate::support::run_guard_cli(&["policy", "default"])?,
    )?;
    let p = policy.display();
    let state = dir.path("state");
    let s = state.display();
    // Each attempt in a shell of its own, as an agent's tool would run it; the
    // binary's move is undone at once should it succeed (a failed test must not
    // break the ones after it).
    let attempt = |name: &str, cmd: &str| attempt(&d, name, cmd);
    let script = [
        "G=$(cat '".to_string() + &d + "/guard.pid')\n",
        attempt("kill", "kill -9 $G"),
        helper_attempt(&d, "ptrace", "ptrace-attach $G"),
        helper_attempt(&d, "bpf", "bpf-map-create"),
        attempt("rm-policy", &format!("rm -f '{p}'")),
        attempt("write-policy", &format!("echo '[rules]' >> '{p}'")),
        attempt("truncate-policy", &format!("truncate -s 0 '{p}'")),
        attempt("move-policy", &format!("mv '{p}' '{p}.moved'")),
        attempt("rm-pins", &format!("rm -rf '{pin_dir}'")),
        attempt("create-state", &format!("touch '{s}/planted'")),
        attempt("rm-state", &format!("rm -rf '{s}/record'")),
        attempt(
            "move-binary",
            &format!("mv '{bin}' '{bin}.moved' && mv '{bin}.moved' '{bin}'"),
        ),
        attempt("umount-bpffs", "umount /sys/fs/bpf"),
    ]
    .concat();
    let gateway = StandInGateway::start(&dir, &script)?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gw.to_string(),
            "--no-discover".into(),
            "--policy".into(),
            p.to_string(),
            "--pin-dir".into(),
            pin_dir.clone(),
        ],
    )?;
    let result = check(&dir, gateway, guard);
    unload(&pin_dir)?;
    result
}

fn check(dir: &Scratch, gateway: StandInGateway, guard: GuardProcess) -> TestResult {
    if let Some(why) = guard.program_unavailable("task_kill") {
        return Ok(Outcome::Skipped(format!("BPF LSM not loadable on this kernel ({why}): self-protection is reported as not enforced")));
    }
    std::fs::write(dir.path("guard.pid"), guard.pid().to_string())?;
    gateway.release_and_wait()?;
    // The guard must still be running: stop() fails if it died.
    let events = guard.stop().context("the guard did not survive")?;
    let attempts = [
        "kill",
        "ptrace",
        "bpf",
        "rm-policy",
        "write-policy",
        "truncate-policy",
        "move-policy",
        "rm-pins",
        "create-state",
        "rm-state",
        "move-binary",
        "umount-bpffs",
    ];
    for name in attempts {
        let rc = std::fs::read_to_string(dir.path(&format!("{name}.rc")))?;
        let err = std::fs::read_to_string(dir.path(&format!("{name}.err")))?;
        ensure!(rc.trim() != "0", "{name} by the tree succeeded");
        ensure!(err.contains("not permitted"), "{name}: {err:?}");
    }
    for name in ["ptrace", "bpf"] {
        let rc = std::fs::read_to_string(dir.path(&format!("{name}.rc")))?;
        ensure!(
            rc.trim() == "1",
            "{name}: exit {}, expected EPERM",
            rc.trim()
        );
    }
    ensure!(
        dir.path("policy.toml").exists() && !dir.path("state/planted").exists(),
        "the policy is gone or a file was planted in the state directory"
    );
    for op in [
        "signal", "ptrace", "bpf", "unlink", "write", "rename", "create", "umount",
    ] {
        ensure!(
            events.iter().any(|e| e["kind"] == "tamper"
                && e["op"] == op
                && e["decision"]["rule"] == "guard-self-protection"
                && e["decision"]["action"] == "deny"
                && (e["op"] == "signal"
                    || e["op"] == "ptrace"
                    || e["op"] == "bpf"
                    || e["guarded"].is_string())),
            "no {op} decision recorded: {:?}",
            events
                .iter()
                .filter(|e| e["kind"] == "tamper")
                .collect::<Vec<_>>()
        );
    }
    Ok(Outcome::Passed)
}

const FTRACE_ENABLED: &str = "/proc/sys/kernel/ftrace_enabled";

/// Issue 18: a root tree may not write the kernel controls that switch BPF LSM off or
/// run commands outside the tree, nor load modules; and when BPF LSM stops deciding
/// anyway (the test itself, outside the tree, writes `ftrace_enabled`), the daemon says
/// NOT enforced within 2 s, in `status` and with a critical health record.
fn kernel_knobs_refused_and_lsm_loss_reported() -> TestResult {
    let dir = Scratch::new("knobs")?;
    let d = dir.0.display().to_string();
    let attempt = |name: &str, cmd: &str| attempt(&d, name, cmd);
    // Only where BPF LSM refuses them (`lsm` written by the test before release):
    // elsewhere these writes would change the machine.
    let script = [
        format!("[ -e '{d}/lsm' ] || exit 0\n"),
        attempt("ftrace", &format!("echo 0 > {FTRACE_ENABLED}")),
        attempt(
            "core-pattern",
            "echo '|/tmp/ocg-evil %p' > /proc/sys/kernel/core_pattern",
        ),
        attempt("modprobe", "echo /tmp/ocg-evil > /proc/sys/kernel/modprobe"),
        attempt("sysrq", "echo i > /proc/sysrq-trigger"),
        helper_attempt(&d, "module", "finit-module /bin/true"),
    ]
    .concat();
    let gateway = StandInGateway::start(&dir, &script)?;
    let gw = gateway.pid();
    let status_file = dir.path("status.json");
    let guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gw.to_string(),
            "--no-discover".into(),
            "--status-file".into(),
            status_file.display().to_string(),
        ],
    )?;
    if let Some(why) = guard.program_unavailable("file_open") {
        gateway.release_and_wait()?;
        return Ok(Outcome::Skipped(format!(
            "BPF LSM not loadable on this kernel ({why}): self-protection, knobs included, is reported as not enforced"
        )));
    }
    let before_ftrace = std::fs::read_to_string(FTRACE_ENABLED).unwrap_or_default();
    let before_core = std::fs::read_to_string("/proc/sys/kernel/core_pattern")?;
    std::fs::write(dir.path("lsm"), "")?;
    gateway.release_and_wait()?;
    let mut failures = Vec::new();
    for name in ["ftrace", "core-pattern", "modprobe", "sysrq"] {
        let rc = std::fs::read_to_string(dir.path(&format!("{name}.rc")))?;
        let err = std::fs::read_to_string(dir.path(&format!("{name}.err")))?;
        if rc.trim() == "0" || !err.contains("not permitted") {
            failures.push(format!("{name}: exit {}, {err:?}", rc.trim()));
        }
    }
    let module = std::fs::read_to_string(dir.path("module.rc"))?;
    if module.trim() != "1" {
        failures.push(format!(
            "finit_module: exit {} (EPERM expected)",
            module.trim()
        ));
    }
    if std::fs::read_to_string(FTRACE_ENABLED).unwrap_or_default() != before_ftrace
        || std::fs::read_to_string("/proc/sys/kernel/core_pattern")? != before_core
    {
        failures.push("a kernel control changed".into());
    }
    // Now BPF LSM is switched off from outside the tree: the daemon must notice.
    let loss = if before_ftrace.trim() == "1" && std::fs::write(FTRACE_ENABLED, "0").is_ok() {
        let t0 = std::time::Instant::now();
        let mut seen = None;
        while t0.elapsed() < std::time::Duration::from_secs(5) {
            let st = std::fs::read_to_string(&status_file).unwrap_or_default();
            if st.contains("\"bpf-lsm\"") && st.contains("NOT enforced") {
                seen = Some(t0.elapsed());
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // The posture audit says it too.
        let audit = std::process::Command::new(guard_bin())
            .args(["audit", "--json", "--fail-on", "critical"])
            .output()?;
        let audit_says = String::from_utf8_lossy(&audit.stdout).contains("\"kernel.ftrace-off\"");
        let restored = std::fs::write(FTRACE_ENABLED, "1");
        // Back on: the next check clears it.
        std::thread::sleep(std::time::Duration::from_millis(2500));
        restored?;
        if !audit_says {
            failures.push("audit --json has no kernel.ftrace-off finding with ftrace off".into());
        }
        Some(seen)
    } else {
        None
    };
    let events = guard.stop().context("the guard did not survive")?;
    for op in ["kernel-knob", "kernel-load"] {
        if !events
            .iter()
            .any(|e| e["kind"] == "tamper" && e["op"] == op && e["decision"]["action"] == "deny")
        {
            failures.push(format!("no {op} decision recorded"));
        }
    }
    match loss {
        Some(Some(after)) => {
            println!("    BPF LSM off (ftrace_enabled=0) reported in status after {after:?}");
            if after > std::time::Duration::from_secs(2) {
                failures.push(format!(
                    "the loss was reported after {after:?} (2 s at most)"
                ));
            }
            let health: Vec<&serde_json::Value> =
                events.iter().filter(|e| e["kind"] == "health").collect();
            if !health.iter().any(|e| e["alert"]["priority"] == "critical") {
                failures.push(format!("no critical health record: {health:?}"));
            }
            if !health
                .iter()
                .any(|e| e["detail"].as_str().is_some_and(|s| s.contains("again")))
            {
                failures.push(format!("no recovery record once restored: {health:?}"));
            }
        }
        Some(None) => failures.push(
            "with ftrace_enabled=0 the status did not say BPF LSM is NOT enforced within 5 s"
                .into(),
        ),
        None => println!("    ftrace_enabled not writable here: the loss check was not run"),
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(Outcome::Passed)
}

/// Issue 18: controls that act on the daemon without a signal, from a root tree: its
/// cgroup (moved into a cgroup the test made, frozen, killed), its OOM score, its
/// scheduling (nice, SCHED_IDLE), its fd limit (prlimit), a mount over its state
/// directory, its unit file, drop-ins and enablement link (`--guard-path`). Each
/// refused with EPERM and recorded as a tamper decision; the guard still runs.
fn guard_controls_refused() -> TestResult {
    let dir = Scratch::new("controls")?;
    let d = dir.0.display().to_string();
    let cg = format!("/sys/fs/cgroup/ocg-test-controls-{}", std::process::id());
    let state = dir.path("state");
    let s = state.display().to_string();
    // What starts the guard, as `--guard-path` names it (systemd's own paths are
    // found by the daemon itself, from its unit; these guests run no systemd).
    let unit = dir.path("openclaw-guard.service");
    let dropins = dir.path("openclaw-guard.service.d");
    let wants = dir.path("multi-user.target.wants");
    std::fs::write(
        &unit,
        "[Service]\nExecStart=/usr/local/bin/openclaw-guard run\n",
    )?;
    std::fs::create_dir_all(&dropins)?;
    std::fs::create_dir_all(&wants)?;
    let link = wants.join("openclaw-guard.service");
    std::os::unix::fs::symlink(&unit, &link)?;
    let (u, dd, l) = (unit.display(), dropins.display(), link.display());
    let attempt = |name: &str, cmd: &str| attempt(&d, name, cmd);
    let helper = |name: &str, args: &str| helper_attempt(&d, name, args);
    // Only where BPF LSM refuses them (`lsm` written by the test before release).
    let script = [
        format!("[ -e '{d}/lsm' ] || exit 0\nG=$(cat '{d}/guard.pid')\n"),
        attempt("cgroup-move", &format!("echo $G > {cg}/cgroup.procs")),
        attempt("cgroup-freeze", &format!("echo 1 > {cg}/cgroup.freeze")),
        attempt("cgroup-kill", &format!("echo 1 > {cg}/cgroup.kill")),
        attempt("oom", "echo 1000 > /proc/$G/oom_score_adj"),
        helper("renice", "renice $G"),
        helper("sched-idle", "sched-idle $G"),
        helper("prlimit", "prlimit-nofile $G"),
        helper("mount", &format!("mount-tmpfs '{s}'")),
        attempt("unit-edit", &format!("echo ExecStart= >> '{u}'")),
        attempt("unit-dropin", &format!("echo x > '{dd}/override.conf'")),
        attempt("unit-disable", &format!("rm -f '{l}'")),
    ]
    .concat();
    let gateway = StandInGateway::start(&dir, &script)?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gw.to_string(),
            "--no-discover".into(),
            "--state-dir".into(),
            s.clone(),
            "--guard-path".into(),
            u.to_string(),
            "--guard-path".into(),
            dd.to_string(),
            "--guard-path".into(),
            l.to_string(),
        ],
    )?;
    if let Some(why) = guard.program_unavailable("guard_sb_mount") {
        gateway.release_and_wait()?;
        return Ok(Outcome::Skipped(format!(
            "BPF LSM not loadable on this kernel ({why}): self-protection is reported as not enforced"
        )));
    }
    let made_cgroup = std::fs::create_dir(&cg).is_ok();
    std::fs::write(dir.path("guard.pid"), guard.pid().to_string())?;
    std::fs::write(dir.path("lsm"), "")?;
    gateway.release_and_wait()?;
    let mut failures = Vec::new();
    let mut names = vec![
        "oom",
        "renice",
        "sched-idle",
        "prlimit",
        "mount",
        "unit-edit",
        "unit-dropin",
        "unit-disable",
    ];
    if made_cgroup {
        names.extend(["cgroup-move", "cgroup-freeze"]);
        // cgroup.kill exists from 5.14.
        if std::path::Path::new(&cg).join("cgroup.kill").exists() {
            names.push("cgroup-kill");
        }
    } else {
        println!("    no cgroup2 at /sys/fs/cgroup: the cgroup attempts were not run");
    }
    for name in &names {
        let rc = std::fs::read_to_string(dir.path(&format!("{name}.rc")))?;
        let err = std::fs::read_to_string(dir.path(&format!("{name}.err")))?;
        if rc.trim() == "0" || !(err.contains("not permitted") || rc.trim() == "1") {
            failures.push(format!("{name}: exit {}, {err:?}", rc.trim()));
        }
    }
    let cgroup_of_guard = std::fs::read_to_string(format!("/proc/{}/cgroup", guard.pid()))?;
    if made_cgroup {
        let _ = std::fs::remove_dir(&cg);
    }
    if cgroup_of_guard.contains("ocg-test-controls") {
        failures.push(format!("the guard was moved: {cgroup_of_guard}"));
    }
    if std::fs::read_to_string(&unit)?.contains("ExecStart=\n")
        || dropins.join("override.conf").exists()
        || link.symlink_metadata().is_err()
    {
        failures.push("the unit file, its drop-ins or its enablement link changed".into());
    }
    let events = guard.stop().context("the guard did not survive")?;
    let mut ops = vec![
        "kernel-knob",
        "sched",
        "rlimit",
        "mount",
        "write",
        "create",
        "unlink",
    ];
    if !made_cgroup {
        ops.retain(|o| *o != "kernel-knob");
    }
    for op in ops {
        if !events.iter().any(|e| {
            e["kind"] == "tamper"
                && e["op"] == op
                && e["decision"]["rule"] == "guard-self-protection"
                && e["decision"]["action"] == "deny"
        }) {
            failures.push(format!("no {op} decision recorded"));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(Outcome::Passed)
}
