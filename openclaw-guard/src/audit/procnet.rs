//! The kernel's socket tables: `/proc/net/{tcp,tcp6,udp,udp6}`.
//!
//! Each line holds `local_address` as hex: IPv4 as one 32-bit word and IPv6 as four,
//! each printed in host byte order, then `:PORT` in hex. TCP listeners have state
//! `0A`; a bound, unconnected UDP socket has state `07` and remote port 0.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The socket tables, by file name under `/proc/net/`.
pub(super) const TABLES: [(&str, Proto); 4] = [
    ("tcp", Proto::Tcp),
    ("tcp6", Proto::Tcp),
    ("udp", Proto::Udp),
    ("udp6", Proto::Udp),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proto {
    Tcp,
    Udp,
}

/// A listening (TCP) or bound (UDP) socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Socket {
    pub(super) proto: Proto,
    pub(super) addr: IpAddr,
    pub(super) port: u16,
    pub(super) uid: Option<u32>,
    pub(super) inode: Option<u64>,
}

impl std::fmt::Display for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "tcp LISTEN",
            Proto::Udp => "udp",
        };
        match self.addr {
            IpAddr::V4(a) => write!(f, "{proto} {a}:{}", self.port)?,
            IpAddr::V6(a) => write!(f, "{proto} [{a}]:{}", self.port)?,
        }
        if let Some(uid) = self.uid {
            write!(f, " uid {uid}")?;
        }
        if let Some(ino) = self.inode {
            write!(f, " inode {ino}")?;
        }
        Ok(())
    }
}

fn parse_word(hex: &str) -> Option<[u8; 4]> {
    u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes)
}

/// Parses `ADDR:PORT` as printed in `/proc/net/*`.
pub(super) fn parse_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(parse_word(addr)?)),
        32 => {
            let mut b = [0u8; 16];
            for (i, chunk) in b.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&parse_word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// Listening/bound sockets of one table. Malformed lines are skipped.
pub(super) fn parse_table(text: &str, proto: Proto) -> Vec<Socket> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let (Some((addr, port)), Some((_, rport))) = (parse_endpoint(f[1]), parse_endpoint(f[2]))
        else {
            continue;
        };
        let listening = match proto {
            Proto::Tcp => f[3] == "0A",
            Proto::Udp => f[3] == "07" && rport == 0,
        };
        if listening {
            out.push(Socket {
                proto,
                addr,
                port,
                uid: f.get(7).and_then(|v| v.parse().ok()),
                inode: f.get(9).and_then(|v| v.parse().ok()),
            });
        }
    }
    out
}

/// Whether a bound address is reachable only from this host: 127/8, ::1, or an
/// IPv4-mapped loopback. Everything else, including 0.0.0.0, :: and
/// `::ffff:0.0.0.0`, is reachable from the network.
pub(super) fn is_loopback(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tables() {
        // 0.0.0.0:18789 LISTEN, 127.0.0.1:18790 LISTEN, one ESTABLISHED.
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:4965 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0 100 0 0 10 0\n\
   1: 0100007F:4966 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 112 1 0 100 0 0 10 0\n\
   2: 0100007F:4965 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 113 1 0 100 0 0 10 0\n\
   bogus line\n";
        let s = parse_table(tcp, Proto::Tcp);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(s[0].port, 18789);
        assert_eq!(s[0].uid, Some(1000));
        assert_eq!(s[0].inode, Some(111));
        assert!(!is_loopback(s[0].addr));
        assert!(is_loopback(s[1].addr));

        // [::]:18789, [::1]:18790, [::ffff:127.0.0.1]:18791, [::ffff:0.0.0.0]:18792
        let tcp6 = "header\n\
   0: 00000000000000000000000000000000:4965 00000000000000000000000000000000:0000 0A 0 0 0 0 0 5\n\
   1: 00000000000000000000000001000000:4966 00000000000000000000000000000000:0000 0A 0 0 0 0 0 6\n\
   2: 0000000000000000FFFF00000100007F:4967 00000000000000000000000000000000:0000 0A 0 0 0 0 0 7\n\
   3: 0000000000000000FFFF000000000000:4968 00000000000000000000000000000000:0000 0A 0 0 0 0 0 8\n";
        let s = parse_table(tcp6, Proto::Tcp);
        let loop_: Vec<bool> = s.iter().map(|s| is_loopback(s.addr)).collect();
        assert_eq!(loop_, [false, true, true, false]);
        assert_eq!(s[2].addr.to_string(), "::ffff:127.0.0.1");

        let udp = "h\n   1: 00000000:4965 00000000:0000 07 0 0 0 0 0 9\n   2: 0100007F:4965 0200007F:0035 01 0 0 0 0 0 9\n";
        assert_eq!(parse_table(udp, Proto::Udp).len(), 1);
    }
}
