//! `openclaw-guard audit --json` on this kernel: its kernel facts agree with what the
//! guard itself finds when it loads (issue 18): BPF LSM in effect (the calibration saw
//! `file_open` fire), function tracing on, BTF, the release `uname` gives.

use anyhow::{ensure, Context as _};
use serde_json::Value;

use crate::{
    support::{guard_bin, GuardProcess, Scratch, StandInGateway},
    Outcome, Test, TestResult,
};

pub(crate) fn tests() -> Vec<Test> {
    crate::named_tests![kernel_facts_match_the_guard,]
}

fn kernel_facts_match_the_guard() -> TestResult {
    let dir = Scratch::new("audit-kernel")?;
    let out = std::process::Command::new(guard_bin())
        .args(["audit", "--json", "--fail-on", "critical"])
        .output()
        .context("running openclaw-guard audit")?;
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "audit --json output: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let k = &v["kernel"];
    // What the guard finds by loading its programs.
    let gateway = StandInGateway::start(&dir, "true")?;
    let guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gateway.pid().to_string(),
            "--no-discover".into(),
        ],
    )?;
    let status: Value = serde_json::from_str(&std::fs::read_to_string(dir.path("status.json"))?)?;
    gateway.release_and_wait()?;
    guard.stop()?;
    let fired = status["calibration"]["lsm_file_open_fired"].as_bool();
    // SAFETY: uname fills the struct we pass.
    let release = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        libc::uname(&mut u);
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    };
    let mut failures = Vec::new();
    if k["release"] != release.as_str() {
        failures.push(format!("release {} (uname: {release})", k["release"]));
    }
    if k["btf"] != true {
        failures.push("btf not reported (the guard loaded with it)".into());
    }
    if k["ftrace_enabled"] != true {
        failures.push(format!("ftrace_enabled {}", k["ftrace_enabled"]));
    }
    match (k["bpf_lsm"].as_bool(), fired) {
        (Some(a), Some(g)) if a != g => failures.push(format!(
            "audit says bpf_lsm {a}, the guard's calibration says file_open fired: {g}"
        )),
        (None, _) => println!(
            "    securityfs not mounted: bpf_lsm unknown to the audit (check {})",
            v["checks"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["id"] == "kernel.bpf-lsm"))
                .map(|c| c["status"].to_string())
                .unwrap_or_default()
        ),
        _ => {}
    }
    // Each sysctl as the kernel has it (null where this kernel lacks it).
    for (field, file) in [
        ("ptrace_scope", "/proc/sys/kernel/yama/ptrace_scope"),
        (
            "unprivileged_bpf_disabled",
            "/proc/sys/kernel/unprivileged_bpf_disabled",
        ),
        ("io_uring_disabled", "/proc/sys/kernel/io_uring_disabled"),
    ] {
        let want: Option<u64> = std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        if k[field].as_u64() != want {
            failures.push(format!("{field} {} ({file}: {want:?})", k[field]));
        }
    }
    let finding = |id: &str| {
        v["findings"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x["id"] == id))
    };
    if k["bpf_lsm"] == false && !finding("kernel.bpf-lsm") {
        failures.push("no kernel.bpf-lsm finding without BPF LSM".into());
    }
    if k["bpf_lsm"] == true && finding("kernel.bpf-lsm") {
        failures.push("a kernel.bpf-lsm finding with BPF LSM active".into());
    }
    let scope = k["ptrace_scope"].as_u64();
    if finding("kernel.ptrace-open") != matches!(scope, None | Some(0)) {
        failures.push(format!(
            "kernel.ptrace-open finding does not follow ptrace_scope {scope:?}"
        ));
    }
    let uring_on = k["io_uring_disabled"].as_u64().is_none_or(|n| n == 0);
    if k["bpf_lsm"] == false && finding("kernel.io-uring-unwatched") != uring_on {
        failures.push("kernel.io-uring-unwatched finding does not follow io_uring_disabled".into());
    }
    ensure!(failures.is_empty(), "{}\n{k}", failures.join("\n"));
    println!("    kernel: {k}");
    Ok(Outcome::Passed)
}
