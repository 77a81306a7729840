//! The network sensor (openclaw-guard-ebpf/src/net.rs, tests/src/sensors/net.rs):
//! connects, sends and binds by the tree, refused at the BPF LSM socket hooks or the
//! cgroup socket programs.

use std::net::{Ipv4Addr, Ipv6Addr};

use openclaw_guard_common::net::{op, NetEvent};

use super::decision;
use crate::events::{c_string, Decision, DecodeError, Net, Payload};

/// Its BPF LSM programs (program, hook).
pub const LSM_PROGRAMS: &[(&str, &str)] = &[
    ("socket_connect", "socket_connect"),
    ("socket_sendmsg", "socket_sendmsg"),
    ("socket_bind", "socket_bind"),
    ("socket_create", "socket_create"),
];

/// Without BPF LSM: (program, is a `cgroup/sock_create` program).
pub const CGROUP_PROGRAMS: &[(&str, bool)] = &[
    ("cgroup_connect4", false),
    ("cgroup_connect6", false),
    ("cgroup_sendmsg4", false),
    ("cgroup_sendmsg6", false),
    ("cgroup_bind4", false),
    ("cgroup_bind6", false),
    ("cgroup_sock_create", true),
];

/// A `net` record.
pub(super) fn decode(
    bytes: &[u8],
    names: &super::Names,
) -> Result<(Payload, Option<Decision>), DecodeError> {
    let ev: NetEvent = super::record(bytes)?;
    let raw = &ev.sockaddr[..(ev.addr_len as usize).min(ev.sockaddr.len())];
    let (mut family, mut addr, mut port, mut ipv4_mapped) = decode_sockaddr(raw);
    let mut sockaddr_family = None;
    // The kernel reads an IPv4 socket's AF_UNSPEC sockaddr as a sockaddr_in.
    if family == "af0" && i32::from(ev.sock_family as u16) == libc::AF_INET {
        let mut fixed = raw.to_vec();
        fixed[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        sockaddr_family = Some(family);
        (family, addr, port, ipv4_mapped) = decode_sockaddr(&fixed);
    }
    Ok((
        Payload::Net(Net {
            op: match ev.op {
                op::CONNECT => "connect",
                op::SENDMSG => "sendmsg",
                op::BIND => "bind",
                op::SOCKET => "socket",
                _ => "unknown",
            },
            family,
            addr,
            port,
            ipv4_mapped,
            protocol: protocol_name(ev.protocol),
            sock_type: sock_type_name(ev.sock_type),
            ret: ev.ret,
            dest_name: None,
            sockaddr_family,
            name_hash: ev.name,
        }),
        decision(names, ev.action, ev.rule, ev.ret),
    ))
}

/// (family, address, port, ipv4_mapped) of a raw `struct sockaddr`.
pub fn decode_sockaddr(raw: &[u8]) -> (String, String, u16, bool) {
    if raw.len() < 2 {
        return (String::from("unspec"), String::new(), 0, false);
    }
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let port = |r: &[u8]| {
        if r.len() >= 4 {
            u16::from_be_bytes([r[2], r[3]])
        } else {
            0
        }
    };
    match i32::from(family) {
        libc::AF_INET if raw.len() >= 8 => {
            let a = Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
            ("inet".into(), a.to_string(), port(raw), false)
        }
        libc::AF_INET6 if raw.len() >= 24 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&raw[8..24]);
            let a = Ipv6Addr::from(b);
            match a.to_ipv4_mapped() {
                Some(v4) => ("inet6".into(), v4.to_string(), port(raw), true),
                None => ("inet6".into(), a.to_string(), port(raw), false),
            }
        }
        libc::AF_UNIX => {
            let path = &raw[2..];
            let name = if path.first() == Some(&0) {
                format!(
                    "@{}",
                    String::from_utf8_lossy(&path[1..]).trim_end_matches('\0')
                )
            } else {
                c_string(path)
            };
            ("unix".into(), name, 0, false)
        }
        f => (format!("af{f}"), String::new(), 0, false),
    }
}

fn protocol_name(p: u32) -> String {
    match p as i32 {
        libc::IPPROTO_TCP => "tcp".into(),
        libc::IPPROTO_UDP => "udp".into(),
        libc::IPPROTO_ICMP => "icmp".into(),
        libc::IPPROTO_ICMPV6 => "icmpv6".into(),
        libc::IPPROTO_RAW => "raw".into(),
        0 => "default".into(),
        n => n.to_string(),
    }
}

fn sock_type_name(t: u32) -> String {
    match t as i32 {
        libc::SOCK_STREAM => "stream".into(),
        libc::SOCK_DGRAM => "dgram".into(),
        libc::SOCK_RAW => "raw".into(),
        libc::SOCK_SEQPACKET => "seqpacket".into(),
        n => n.to_string(),
    }
}

/// What a decision on this event was about, as an alert line says it (`kind`: `net`,
/// or the operation itself in older records).
pub(super) fn target(n: &Net) -> String {
    format!("{} to {} port {}", n.op, n.addr, n.port)
}

/// How this sensor's rules are enforced on this kernel, in words (start-up, `status`).
pub fn enforcement(attached: &dyn Fn(&str) -> bool, act: crate::policy::Action) -> String {
    use crate::policy::Action;
    if attached("socket_connect") && attached("socket_sendmsg") && attached("socket_create") {
        format!("{act}: EPERM at BPF LSM socket_connect and socket_sendmsg (UDP, TCP Fast Open, ICMP sends; the address read by the socket's own family, others refused); raw and packet sockets refused to the tree at socket_create; binding the DNS port refused to the tree")
    } else if [
        "cgroup_connect4",
        "cgroup_connect6",
        "cgroup_sendmsg4",
        "cgroup_sendmsg6",
        "cgroup_sock_create",
    ]
    .iter()
    .all(|p| attached(p))
    {
        let how = if act == Action::Kill {
            "block (kill configured: cgroup programs cannot send signals)".to_string()
        } else {
            act.to_string()
        };
        let packet = if attached("sys_enter_socket") {
            "packet sockets: the caller killed at the socket syscall"
        } else {
            "packet sockets NOT refused (sys_enter_socket did not attach)"
        };
        format!("{how}: EPERM at cgroup connect4/6 and sendmsg4/6 (TCP incl. Fast Open, UDP); raw and ICMP sockets refused to the tree at creation; {packet}; binding the DNS port refused to the tree (no BPF LSM on this kernel)")
    } else {
        format!("alert only ({act} configured): neither BPF LSM socket hooks nor cgroup socket programs could be attached")
    }
}
