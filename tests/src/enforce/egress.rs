//! Exfiltration connects denied (BPF LSM `socket_connect`, `socket_sendmsg`).

use anyhow::ensure;

use crate::{
    support::{has_route_out, helper_bin, GuardProcess, NetNs, Scratch, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "enforce::egress::denied_destinations_get_eperm_by_every_send_path",
            run: || egress(false),
        },
        Test {
            name: "enforce::egress::monitor_mode_reports_every_send_and_blocks_none",
            run: || egress(true),
        },
    ]
}

const POLICY: &str = r#"version = 1
mode = "enforce"

[targets]
discover = false

[[rules]]
id = "no-exfil"
description = "Children may not reach the test's denied networks"
action = "block"
severity = "critical"
[rules.egress]
allow = ["loopback"]
deny = ["10.0.0.0/8", "fd00::/8"]
"#;

/// TCP connect, UDP sendto, TCP Fast Open sendto and a raw ICMP send to a denied
/// IPv4, IPv6 and IPv4-mapped IPv6 address fail with EPERM; loopback still works;
/// an unrelated process is not stopped by the guard. (Guests only: the denied
/// networks have no route, so nothing leaves.)
fn egress(monitor: bool) -> TestResult {
    let dir = Scratch::new("egress")?;
    let policy = dir.path("policy.toml");
    std::fs::write(&policy, POLICY)?;
    let h = helper_bin();
    let d = dir.0.display().to_string();
    let cases = [
        ("tcp4", format!("'{h}' helper connect 10.1.2.3 443")),
        ("tcp6", format!("'{h}' helper connect fd00::1 443")),
        (
            "tcp_mapped",
            format!("'{h}' helper connect ::ffff:10.1.2.3 443"),
        ),
        ("udp4", format!("'{h}' helper udp-sendto 10.1.2.3 53")),
        // The sockaddr's family says AF_UNSPEC; an IPv4 socket sends to it anyway.
        (
            "udp4_unspec",
            format!("'{h}' helper udp-sendto-unspec 10.1.2.3 53"),
        ),
        ("udp6", format!("'{h}' helper udp-sendto fd00::1 53")),
        (
            "udp_mapped",
            format!("'{h}' helper udp-sendto ::ffff:10.1.2.3 53"),
        ),
        ("tfo4", format!("'{h}' helper tfo-sendto 10.1.2.3 443")),
        ("tfo6", format!("'{h}' helper tfo-sendto fd00::1 443")),
        ("icmp4", format!("'{h}' helper raw-icmp 10.1.2.3")),
        ("icmp6", format!("'{h}' helper raw-icmp fd00::1")),
    ];
    let mut script = String::new();
    for (name, cmd) in &cases {
        script.push_str(&format!(
            "{cmd} 2> '{d}/{name}.err'; echo $? > '{d}/{name}.rc'\n"
        ));
    }
    script.push_str(&format!(
        "'{h}' helper loopback-roundtrip; echo $? > '{d}/allowed.rc'\n"
    ));
    // The host has routes out: everything runs in a namespace with only loopback, so
    // nothing is sent off the machine even if the guard failed.
    let netns = if has_route_out() {
        Some(NetNs::new("egress")?)
    } else {
        None
    };
    let gateway = StandInGateway::start_full(&dir, "", &script, &[], netns.as_ref())?;
    let gw = gateway.pid();
    let mut args = vec![
        "--pid".to_string(),
        gw.to_string(),
        "--no-discover".into(),
        "--policy".into(),
        policy.display().to_string(),
    ];
    if monitor {
        args.extend(["--mode".into(), "monitor".into()]);
    }
    let guard = GuardProcess::start(&dir, &args)?;
    let lsm = guard.program_attached("socket_connect");
    if !lsm && !guard.program_attached("cgroup_connect4") {
        let why = guard
            .program_unavailable("socket_connect")
            .unwrap_or_default();
        return Ok(Outcome::Skipped(format!(
            "neither BPF LSM nor cgroup socket programs load here ({why})"
        )));
    }
    println!(
        "    tier: {}",
        if lsm {
            "BPF LSM"
        } else {
            "cgroup socket programs"
        }
    );
    gateway.release_and_wait()?;
    // The same from outside the tree: not EPERM (no route instead).
    let mut outsider = match &netns {
        Some(ns) => ns.command(&h),
        None => std::process::Command::new(&h),
    };
    let outsider = outsider
        .args(["helper", "connect", "10.1.2.3", "443"])
        .output()?;
    let events = guard.stop()?;

    let mut failures = Vec::new();
    for (name, _) in &cases {
        let rc = std::fs::read_to_string(format!("{d}/{name}.rc")).unwrap_or_default();
        // EPERM (1) when enforcing; anything but EPERM in monitor mode (no route).
        if (rc.trim() == "1") == monitor {
            let err = std::fs::read_to_string(format!("{d}/{name}.err")).unwrap_or_default();
            failures.push(format!("{name}: exit {} ({})", rc.trim(), err.trim()));
        }
    }
    ensure!(
        failures.is_empty(),
        "sends not handled as the mode says (monitor: {monitor}):\n{}",
        failures.join("\n")
    );
    let allowed = std::fs::read_to_string(format!("{d}/allowed.rc"))?;
    ensure!(
        allowed.trim() == "0",
        "the allowed loopback connect failed: {allowed}"
    );
    ensure!(
        outsider.status.code() != Some(1),
        "an unrelated process got EPERM: {:?}",
        String::from_utf8_lossy(&outsider.stderr)
    );
    let decisions: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "net" && e["decision"]["rule"] == "no-exfil")
        .collect();
    ensure!(
        decisions.len() >= cases.len(),
        "{} decisions for {} attempts: {:?}",
        decisions.len(),
        cases.len(),
        events
            .iter()
            .filter(|e| e["kind"] == "net")
            .map(|e| format!(
                "{} {} {} {}:{} {}",
                e["op"], e["protocol"], e["family"], e["addr"], e["port"], e["decision"]
            ))
            .collect::<Vec<_>>()
    );
    let want = if monitor { "alert" } else { "deny" };
    ensure!(
        decisions.iter().all(|e| e["decision"]["action"] == want),
        "decisions not all {want}: {decisions:?}"
    );
    ensure!(
        decisions
            .iter()
            .filter(|e| e["ipv4_mapped"] == true)
            .all(|e| e["addr"] == "10.1.2.3"),
        "mapped destinations not reported as IPv4: {decisions:?}"
    );
    Ok(Outcome::Passed)
}
