//! Exfiltration connects denied (BPF LSM `socket_connect`, `socket_sendmsg`).

use anyhow::ensure;

use crate::{
    support::{
        add_loopback_addrs, has_route_out, helper_bin, wait_file, GuardProcess, NetNs, ResolvConf,
        Resolver, Scratch, StandInGateway,
    },
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![
        denied_destinations_get_eperm_by_every_send_path,
        monitor_mode_reports_every_send_and_blocks_none,
        names_follow_dns_answers,
        a_reload_the_kernel_refuses_leaves_the_policy_in_force,
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

/// A reload whose plan the kernel cannot hold (more egress names than its map takes)
/// fails, and the maps hold the policy in force, not the part of the new plan written
/// before the refusal: an address the new policy would allow (its entry goes in ahead
/// of the names) is still refused with EPERM.
fn a_reload_the_kernel_refuses_leaves_the_policy_in_force() -> TestResult {
    let dir = Scratch::new("egress-refused")?;
    let policy = dir.path("policy.toml");
    std::fs::write(&policy, POLICY)?;
    let h = helper_bin();
    let d = dir.0.display().to_string();
    let script =
        format!("'{h}' helper connect 10.1.2.3 443 2> '{d}/after.err'; echo $? > '{d}/after.rc'\n");
    let netns = if has_route_out() {
        Some(NetNs::new("egrefused")?)
    } else {
        None
    };
    let gateway = StandInGateway::start_full(&dir, "", &script, &[], netns.as_ref())?;
    let guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gateway.pid().to_string(),
            "--no-discover".into(),
            "--policy".into(),
            policy.display().to_string(),
        ],
    )?;
    if !guard.program_attached("socket_connect") && !guard.program_attached("cgroup_connect4") {
        return Ok(Outcome::Skipped(
            "neither BPF LSM nor cgroup socket programs load here".into(),
        ));
    }
    // EGRESS_NAMES holds 4096 names.
    let names: Vec<String> = (0..4200)
        .map(|i| format!("\"h{i}.refused.test\""))
        .collect();
    let new = POLICY
        .replace(
            r#"allow = ["loopback"]"#,
            r#"allow = ["loopback", "10.1.2.3"]"#,
        )
        .replace(
            r#"deny = ["10.0.0.0/8", "fd00::/8"]"#,
            &format!(r#"deny = ["10.0.0.0/8", "fd00::/8", {}]"#, names.join(", ")),
        );
    ensure!(
        new.contains("10.1.2.3") && new.contains("h4199"),
        "the new policy"
    );
    // Renamed over, so the file watch never reads it half written.
    std::fs::write(dir.path("new.toml"), new)?;
    std::fs::rename(dir.path("new.toml"), &policy)?;
    let status = super::faults::wait_status(&dir, "the reload failed in the kernel", |v| {
        v["last_reload"]["result"] == "failed"
    })?;
    println!("    reload: {}", status["last_reload"]["error"]);
    gateway.release_and_wait()?;
    let events = guard.stop()?;
    let rc = std::fs::read_to_string(format!("{d}/after.rc"))?;
    let err = std::fs::read_to_string(format!("{d}/after.err")).unwrap_or_default();
    println!(
        "    connect to 10.1.2.3 after the failed reload: exit {} ({})",
        rc.trim(),
        err.trim()
    );
    ensure!(
        rc.trim() == "1",
        "the failed policy's allow entry for 10.1.2.3 stayed in the kernel: exit {} ({})",
        rc.trim(),
        err.trim()
    );
    ensure!(
        events.iter().any(|e| e["kind"] == "net"
            && e["addr"] == "10.1.2.3"
            && e["decision"]["action"] == "deny"),
        "no deny recorded for 10.1.2.3"
    );
    Ok(Outcome::Passed)
}

const NAMES_POLICY: &str = r#"version = 1
mode = "enforce"

[targets]
discover = false

[[rules]]
id = "egress"
description = "Children reach loopback, the resolvers and allowed.test only"
action = "block"
severity = "error"
[rules.egress]
allow = ["loopback", "$resolvers:53", "allowed.test:8080", "v6.test:8080", "10.77.0.9:8080"]
deny = ["any"]
"#;

/// A name's addresses, learned from the resolver's answers as they arrive, decide:
/// the address allowed.test resolved to is reachable, other.test's and an address
/// never named are refused with the name in the event; when the resolver moves
/// allowed.test (its TTL run out), the old address is refused and the new one reached.
/// The tree may not bind the DNS port nor open a packet socket (it could answer as
/// the resolver). dnsmasq is
/// the resolver, on loopback in a namespace of its own (the guest's own network).
fn names_follow_dns_answers() -> TestResult {
    let netns = if has_route_out() {
        Some(NetNs::new("names")?)
    } else {
        None
    };
    let Some(_resolv) = ResolvConf::point_at_loopback(netns.as_ref())? else {
        return Ok(Outcome::Skipped(
            "no route out but not a test guest: the test would rewrite this machine's /etc/resolv.conf".into(),
        ));
    };
    add_loopback_addrs(
        netns.as_ref(),
        &[
            "10.77.0.1",
            "10.77.0.2",
            "10.77.0.3",
            "10.77.0.9",
            "fd77::1",
            "fd77::2",
        ],
    )?;
    let dir = Scratch::new("names")?;
    let Some(resolver) = Resolver::start(
        &dir,
        netns.as_ref(),
        "10.77.0.1 allowed.test\n10.77.0.2 other.test\nfd77::1 v6.test\n",
    )?
    else {
        return Ok(Outcome::Skipped(
            "dnsmasq not installed (cargo xtask installs dnsmasq-base)".into(),
        ));
    };

    let policy = dir.path("policy.toml");
    std::fs::write(&policy, NAMES_POLICY)?;
    let h = helper_bin();
    let d = dir.0.display().to_string();
    // Each connect's exit: 1 is EPERM; anything else (no listener: ECONNREFUSED) is
    // "allowed".
    let step =
        |tag: &str, cmd: &str| format!("{cmd} 2> '{d}/{tag}.err'; echo $? > '{d}/{tag}.rc'\n");
    let mut script = String::new();
    script.push_str(&format!(
        "busybox nslookup allowed.test > '{d}/q1.out' 2>&1\n"
    ));
    script.push_str(&step(
        "named_allowed",
        &format!("'{h}' helper connect 10.77.0.1 8080"),
    ));
    script.push_str(&format!(
        "busybox nslookup other.test > '{d}/q2.out' 2>&1\n"
    ));
    script.push_str(&step(
        "named_denied",
        &format!("'{h}' helper connect 10.77.0.2 8080"),
    ));
    // An allow entry's ports are its own: the name's and the prefix's other ports go
    // on to `any`.
    script.push_str(&step(
        "named_other_port",
        &format!("'{h}' helper connect 10.77.0.1 9090"),
    ));
    script.push_str(&step(
        "prefix_port",
        &format!("'{h}' helper connect 10.77.0.9 8080"),
    ));
    script.push_str(&step(
        "prefix_other_port",
        &format!("'{h}' helper connect 10.77.0.9 9090"),
    ));
    // IPv6: an AAAA answer names its address like an A answer.
    script.push_str(&format!(
        "busybox nslookup -type=AAAA v6.test > '{d}/q6.out' 2>&1\n"
    ));
    script.push_str(&step(
        "v6_named",
        &format!("'{h}' helper connect fd77::1 8080"),
    ));
    script.push_str(&step(
        "v6_unnamed",
        &format!("'{h}' helper connect fd77::2 8080"),
    ));
    script.push_str(&step(
        "unnamed",
        &format!("'{h}' helper connect 10.77.0.3 8080"),
    ));
    script.push_str(&step(
        "bind_dns",
        &format!("'{h}' helper bind 127.0.0.9 53"),
    ));
    // A packet socket could write a resolver's answer with any source.
    script.push_str(&step("packet", &format!("'{h}' helper packet-socket")));
    script.push_str(&format!(
        "echo done > '{d}/phase1'\nn=0; while [ ! -e '{d}/go2' ] && [ $n -lt 900 ]; do sleep 0.1; n=$((n+1)); done\n"
    ));
    script.push_str(&step(
        "expired",
        &format!("'{h}' helper connect 10.77.0.1 8080"),
    ));
    script.push_str(&format!(
        "busybox nslookup allowed.test > '{d}/q3.out' 2>&1\n"
    ));
    script.push_str(&step(
        "moved",
        &format!("'{h}' helper connect 10.77.0.3 8080"),
    ));
    let gateway = StandInGateway::start_full(&dir, "", &script, &[], netns.as_ref())?;
    let args = vec![
        "--pid".to_string(),
        gateway.pid().to_string(),
        "--no-discover".into(),
        "--policy".into(),
        policy.display().to_string(),
    ];
    let guard = GuardProcess::start(&dir, &args)?;
    if !guard.program_attached("dns_answers") {
        let why = guard.program_unavailable("dns_answers").unwrap_or_default();
        anyhow::bail!("the DNS sensor did not attach: {why}");
    }
    gateway.release()?;
    if let Err(e) = wait_file(&dir.path("phase1")) {
        let mut seen = String::new();
        for entry in std::fs::read_dir(&dir.0)?.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            seen.push_str(&format!(
                "{}: {}\n",
                entry.file_name().to_string_lossy(),
                text.trim()
            ));
        }
        anyhow::bail!("{e:#}; the script's files:\n{seen}");
    }
    // The resolver moves allowed.test; its old address's answer (TTL 1 s, kept at
    // least 5 s) runs out meanwhile.
    resolver.answer("10.77.0.3 allowed.test\n10.77.0.2 other.test\n")?;
    std::thread::sleep(std::time::Duration::from_secs(6));
    std::fs::write(dir.path("go2"), "")?;
    gateway.wait()?;
    let events = guard.stop()?;

    let rc = |tag: &str| {
        let rc = std::fs::read_to_string(format!("{d}/{tag}.rc")).unwrap_or_default();
        let err = std::fs::read_to_string(format!("{d}/{tag}.err")).unwrap_or_default();
        (rc.trim().to_string(), err.trim().to_string())
    };
    let mut failures = Vec::new();
    for (tag, eperm) in [
        ("named_allowed", false),
        ("named_denied", true),
        ("named_other_port", true),
        ("prefix_port", false),
        ("prefix_other_port", true),
        ("v6_named", false),
        ("v6_unnamed", true),
        ("unnamed", true),
        ("bind_dns", true),
        ("packet", true),
        ("expired", true),
        ("moved", false),
    ] {
        let (code, err) = rc(tag);
        // Refused: EPERM, or (a packet socket on the fallback tier) killed.
        let refused = code == "1" || (tag == "packet" && code == "137");
        if refused != eperm {
            failures.push(format!(
                "{tag}: exit {code} ({err}), EPERM expected: {eperm}"
            ));
        }
    }
    let q3 = std::fs::read_to_string(dir.path("q3.out")).unwrap_or_default();
    ensure!(
        q3.contains("10.77.0.3"),
        "the resolver did not move allowed.test: {q3}"
    );
    let connects: Vec<String> = events
        .iter()
        .filter(|e| e["kind"] == "net" && e["depth"].as_u64() > Some(0))
        .map(|e| {
            format!(
                "{} {}:{} name={} decision={}",
                e["op"], e["addr"], e["port"], e["dest_name"], e["decision"]["action"]
            )
        })
        .collect();
    ensure!(
        failures.is_empty(),
        "egress by name not as the answers say:\n{}\nevents:\n{}",
        failures.join("\n"),
        connects.join("\n")
    );
    let find = |addr: &str, name: Option<&str>, denied: bool| {
        events.iter().any(|e| {
            e["kind"] == "net"
                && e["op"] == "connect"
                && e["addr"] == addr
                && e["dest_name"].as_str() == name
                && (e["decision"]["action"] == "deny") == denied
        })
    };
    for (addr, name, denied) in [
        ("10.77.0.1", Some("allowed.test"), false),
        ("10.77.0.2", Some("other.test"), true),
        ("10.77.0.3", None, true),
        ("10.77.0.1", None, true),
        ("10.77.0.3", Some("allowed.test"), false),
        ("fd77::1", Some("v6.test"), false),
        ("fd77::2", None, true),
    ] {
        ensure!(
            find(addr, name, denied),
            "no connect event to {addr} named {name:?} (denied: {denied}):\n{}",
            connects.join("\n")
        );
    }
    Ok(Outcome::Passed)
}

fn denied_destinations_get_eperm_by_every_send_path() -> TestResult {
    egress(false)
}

fn monitor_mode_reports_every_send_and_blocks_none() -> TestResult {
    egress(true)
}
