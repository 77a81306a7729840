//! The guard protects itself: its tree, even as root, cannot signal or ptrace it, use
//! bpf(), or change its binary, policy, state or pins (BPF LSM).

use anyhow::{ensure, Context as _};

use crate::{
    support::{guard_bin, helper_bin, unload, GuardProcess, Scratch, StandInGateway},
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
    let attempt = |name: &str, cmd: &str| {
        format!(
            "bash --noprofile --norc -c \"{cmd}\" 2> '{d}/{name}.err'; echo $? > '{d}/{name}.rc'\n"
        )
    };
    let script = [
        "G=$(cat '".to_string() + &d + "/guard.pid')\n",
        attempt("kill", "kill -9 $G"),
        format!("'{h}' helper ptrace-attach $G 2> '{d}/ptrace.err'; echo $? > '{d}/ptrace.rc'\n"),
        format!("'{h}' helper bpf-map-create 2> '{d}/bpf.err'; echo $? > '{d}/bpf.rc'\n"),
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
