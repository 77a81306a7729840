//! DNS answers (openclaw-guard-ebpf/src/dns.rs): what the resolvers told the tree,
//! learned in the kernel so egress rules can name hosts.

use std::net::Ipv6Addr;

use openclaw_guard_common::dns::DnsEvent;

use crate::events::{Decision, DecodeError, Dns, Payload};

/// A `dns` record.
pub(super) fn decode(bytes: &[u8]) -> Result<(Payload, Option<Decision>), DecodeError> {
    let ev: DnsEvent = super::record(bytes)?;
    let ip = |a: &[u8; 16]| {
        let v6 = Ipv6Addr::from(*a);
        v6.to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string())
    };
    let n = (ev.naddrs as usize).min(ev.addrs.len());
    Ok((
        Payload::Dns(Dns {
            name: qname_text(&ev.qname),
            addrs: ev.addrs[..n].iter().map(ip).collect(),
            naddrs: ev.naddrs,
            ttl: ev.ttl,
            resolver: ip(&ev.resolver),
            name_hash: ev.name,
        }),
        None,
    ))
}

/// A question name in wire form (length-prefixed labels) as dotted text, lowercase
/// (the kernel hashes it case-folded); bytes outside printable ASCII are escaped.
pub fn qname_text(wire: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < wire.len() {
        let n = usize::from(wire[i]);
        if n == 0 || n > 63 {
            break;
        }
        if !out.is_empty() {
            out.push('.');
        }
        for &b in wire.iter().skip(i + 1).take(n) {
            match b.to_ascii_lowercase() {
                c @ (b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_') => out.push(char::from(c)),
                c => out.push_str(&format!("\\x{c:02x}")),
            }
        }
        i += n + 1;
    }
    out
}
