//! Tests of the network sensor (`lsm/socket_connect`, `socket_sendmsg`, `socket_bind`).

use std::net::{TcpListener, UdpSocket};

use anyhow::{ensure, Context as _};
use serde_json::Value;

use crate::{
    support::{ensure_folded, helper_bin, GuardProcess, Scratch, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![
        connect_sendto_bind_reported_ipv4_mapped_folded,
        gateway_port_bind_beyond_loopback_alerts,
        repeated_sends_folded_and_counted,
    ]
}

/// A thread sending to one destination over and over is reported once in full, then
/// by `repeat` counts; another destination in between is reported and breaks the run.
/// Every send is accounted for.
fn repeated_sends_folded_and_counted() -> TestResult {
    const N: u64 = 1000;
    let dir = Scratch::new("net-fold")?;
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    let port = udp.local_addr()?.port();
    let other = UdpSocket::bind("127.0.0.1:0")?;
    let other_port = other.local_addr()?.port();
    let h = helper_bin();
    let script = format!(
        "'{h}' helper udp-loop {half} 127.0.0.1 {port}; '{h}' helper udp-loop 1 127.0.0.1 {other_port}; '{h}' helper udp-loop {half} 127.0.0.1 {port}\n",
        half = N / 2
    );
    let gateway = StandInGateway::start(&dir, &script)?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(&dir, &["--pid".into(), gw.to_string()])?;
    if !guard.program_attached("socket_sendmsg") && !guard.program_attached("cgroup_sendmsg4") {
        let why = guard
            .program_unavailable("socket_sendmsg")
            .unwrap_or_default();
        return Ok(Outcome::Skipped(format!(
            "no network sensor loads here ({why})"
        )));
    }
    let code = gateway.release_and_wait()?;
    ensure!(code == 0, "helper failed with {code}");
    let events = guard.stop()?;
    let to = |e: &Value, p: u16| e["port"] == p && e["addr"] == "127.0.0.1";
    let full = events
        .iter()
        .filter(|e| e["kind"] == "net" && e["op"] == "sendmsg" && to(e, port))
        .count() as u64;
    let folded: u64 = events
        .iter()
        .filter(|e| e["kind"] == "repeat" && e["of"] == "net" && e["op"] == "sendmsg")
        .filter(|e| to(e, port))
        .filter_map(|e| e["count"].as_u64())
        .sum();
    ensure_folded("sends", N, full, folded, &events)?;
    ensure!(
        events
            .iter()
            .any(|e| e["kind"] == "net" && e["op"] == "sendmsg" && to(e, other_port)),
        "the send to the other port was not reported"
    );
    drop((udp, other));
    Ok(Outcome::Passed)
}

fn net<'a>(events: &'a [Value], op: &str, port: u16) -> Option<&'a Value> {
    events
        .iter()
        .find(|e| e["kind"] == "net" && e["op"] == op && e["port"] == port)
}

/// An IPv4-mapped IPv6 connect reports the IPv4 address; a UDP sendto without connect
/// and a bind are reported with their addresses.
fn connect_sendto_bind_reported_ipv4_mapped_folded() -> TestResult {
    let dir = Scratch::new("net")?;
    let tcp = TcpListener::bind("127.0.0.1:0")?;
    let tport = tcp.local_addr()?.port();
    std::thread::spawn(move || {
        for s in tcp.incoming() {
            drop(s);
        }
    });
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    let uport = udp.local_addr()?.port();
    let free = TcpListener::bind("0.0.0.0:0")?;
    let bport = free.local_addr()?.port();
    drop(free);
    let h = helper_bin();
    let script = format!(
        "'{h}' helper connect ::ffff:127.0.0.1 {tport}\n\
         '{h}' helper udp-sendto 127.0.0.1 {uport}\n\
         bash --noprofile --norc -c 'exec 3<>/dev/tcp/127.0.0.1/{tport}'\n\
         '{h}' helper bind 0.0.0.0 {bport}\n"
    );
    let gateway = StandInGateway::start(&dir, &script)?;
    let gw = u64::from(gateway.pid());
    let guard = GuardProcess::start(&dir, &["--pid".into(), gw.to_string()])?;
    // BPF LSM socket hooks, or the cgroup socket programs of the fallback tier.
    if !guard.program_attached("socket_connect") && !guard.program_attached("cgroup_connect4") {
        let why = guard
            .program_unavailable("socket_connect")
            .unwrap_or_default();
        return Ok(Outcome::Skipped(format!(
            "no network sensor loads here ({why})"
        )));
    }
    gateway.release_and_wait()?;
    let events = guard.stop()?;

    let mapped = events
        .iter()
        .find(|e| {
            e["kind"] == "net"
                && e["op"] == "connect"
                && e["port"] == tport
                && e["family"] == "inet6"
        })
        .with_context(|| format!("no IPv6 connect to port {tport} among {events:?}"))?;
    ensure!(
        mapped["addr"] == "127.0.0.1" && mapped["ipv4_mapped"] == true,
        "mapped connect: {mapped}"
    );
    ensure!(
        mapped["protocol"] == "tcp" && mapped["depth"] == 1 && mapped["root"] == gw,
        "mapped connect: {mapped}"
    );
    let v4 = events
        .iter()
        .find(|e| {
            e["kind"] == "net"
                && e["op"] == "connect"
                && e["port"] == tport
                && e["family"] == "inet"
        })
        .with_context(|| format!("no IPv4 connect from bash among {events:?}"))?;
    ensure!(
        v4["addr"] == "127.0.0.1" && v4["ipv4_mapped"] == false,
        "v4 connect: {v4}"
    );
    let send = net(&events, "sendmsg", uport)
        .with_context(|| format!("no sendto to {uport} among {events:?}"))?;
    ensure!(
        send["protocol"] == "udp" && send["addr"] == "127.0.0.1",
        "sendto: {send}"
    );
    let bind = net(&events, "bind", bport)
        .with_context(|| format!("no bind of {bport} among {events:?}"))?;
    ensure!(bind["addr"] == "0.0.0.0", "bind: {bind}");
    drop(udp);
    Ok(Outcome::Passed)
}

/// The live exposure finding: a bind of the gateway's port beyond loopback is a
/// critical `gateway-exposed` alert; the same port on loopback is not.
fn gateway_port_bind_beyond_loopback_alerts() -> TestResult {
    let dir = Scratch::new("net-exposed")?;
    let h = helper_bin();
    // The default gateway port list (18789..18793); bound only for a moment.
    let script = format!("'{h}' helper bind 127.0.0.1 18791\n'{h}' helper bind 0.0.0.0 18792\n");
    let gateway = StandInGateway::start(&dir, &script)?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &dir,
        &["--pid".into(), gw.to_string(), "--no-discover".into()],
    )?;
    if !guard.program_attached("socket_bind") && !guard.program_attached("cgroup_bind4") {
        let why = guard.program_unavailable("socket_bind").unwrap_or_default();
        return Ok(Outcome::Skipped(format!(
            "no bind sensor loads here ({why})"
        )));
    }
    gateway.release_and_wait()?;
    let events = guard.stop()?;
    let exposed = net(&events, "bind", 18792)
        .with_context(|| format!("no bind of 18792 among {events:?}"))?;
    ensure!(
        exposed["alert"]["rule"] == "gateway-exposed" && exposed["alert"]["priority"] == "critical",
        "bind beyond loopback not flagged: {exposed}"
    );
    let local = net(&events, "bind", 18791)
        .with_context(|| format!("no bind of 18791 among {events:?}"))?;
    ensure!(
        local["alert"]["rule"] != "gateway-exposed",
        "a loopback bind was flagged: {local}"
    );
    Ok(Outcome::Passed)
}
