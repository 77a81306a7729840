//! Addresses, prefixes and ports as the policy writes them: `10.0.0.0/8`,
//! `[2001:db8::/32]:443`, `api.anthropic.com:443`, `loopback:gateway`, `any`.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// An IPv4 or IPv6 prefix. IPv4-mapped IPv6 prefixes (`::ffff:a.b.c.d/n`, n >= 96)
/// are folded to IPv4 so one entry covers both spellings of a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// A prefix; host bits of `addr` are cleared. `None` if `prefix` is too long.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
                _ => (IpAddr::V6(v6), prefix),
            },
            v4 => (v4, prefix),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return None;
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a) & mask32(prefix);
                IpAddr::V4(Ipv4Addr::from(bits))
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a) & mask128(prefix);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        };
        Some(Self { addr, prefix })
    }

    /// A single host (/32 or /128), folded like [`IpNet::new`].
    pub fn host(addr: IpAddr) -> Self {
        let p = if addr.is_ipv4() { 32 } else { 128 };
        // A full-length prefix is always valid.
        Self::new(addr, p).unwrap_or(Self { addr, prefix: p })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `ip` (folded if IPv4-mapped) is inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, fold(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & mask32(self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) & mask128(self.prefix) == u128::from(n),
            _ => false,
        }
    }

    /// Whether every address of `self` is inside `other`.
    pub fn within(&self, other: &IpNet) -> bool {
        self.prefix >= other.prefix && other.contains(self.addr)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    }
}

/// Folds an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) to IPv4: the kernel sees both
/// forms for the same destination, the policy keeps one.
pub fn fold(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The loopback prefixes, `127.0.0.0/8` and `::1/128`.
pub fn loopback_nets() -> [IpNet; 2] {
    [
        IpNet {
            addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
            prefix: 8,
        },
        IpNet {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            prefix: 128,
        },
    ]
}

/// Every address, `0.0.0.0/0` and `::/0`.
pub fn any_nets() -> [IpNet; 2] {
    [
        IpNet {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            prefix: 0,
        },
        IpNet {
            addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            prefix: 0,
        },
    ]
}

/// An inclusive port range; a single port is `lo == hi`. Never contains 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Which ports a destination names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortSpec {
    /// No port given: every port.
    Any,
    Range(PortRange),
    /// `gateway`: the gateway's own ports ([`crate::openclaw::GatewayPorts`]), resolved
    /// per gateway.
    Gateway,
}

/// What a destination names, before the daemon resolves names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DestTarget {
    Net(IpNet),
    /// A DNS name, resolved by the daemon (addresses kept until their TTL expires).
    Host(String),
    /// `loopback`: 127.0.0.0/8 and ::1.
    Loopback,
    /// `any`: every address.
    Any,
    /// `$providers`: the model providers `openclaw.json` names, found by the daemon.
    Providers,
    /// `$resolvers`: the DNS resolvers the gateways use (their `/etc/resolv.conf`).
    Resolvers,
}

/// One allow/deny entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dest {
    pub target: DestTarget,
    pub ports: PortSpec,
}

impl Dest {
    /// The prefixes this entry covers without DNS (empty for names and providers).
    pub fn nets(&self) -> Vec<IpNet> {
        match &self.target {
            DestTarget::Net(n) => vec![*n],
            DestTarget::Loopback => loopback_nets().to_vec(),
            DestTarget::Any => any_nets().to_vec(),
            DestTarget::Host(_) | DestTarget::Providers | DestTarget::Resolvers => Vec::new(),
        }
    }

    /// The port ranges, `None` meaning every port; `gateway` expands with `gateway`.
    pub fn port_ranges(&self, gateway: &[crate::openclaw::GatewayPorts]) -> Option<Vec<PortRange>> {
        match &self.ports {
            PortSpec::Any => None,
            PortSpec::Range(r) => Some(vec![*r]),
            PortSpec::Gateway => Some(
                gateway
                    .iter()
                    .flat_map(|g| g.ranges())
                    .map(|r| PortRange {
                        lo: *r.start(),
                        hi: *r.end(),
                    })
                    .collect(),
            ),
        }
    }

    fn port_matches(&self, port: u16, gateway: &[crate::openclaw::GatewayPorts]) -> bool {
        self.port_ranges(gateway)
            .is_none_or(|rs| rs.iter().any(|r| r.contains(port)))
    }

    /// Whether the destination `ip:port` matches, without DNS (names never match here;
    /// `hosts` maps a name to the addresses the caller knows for it).
    pub fn matches(
        &self,
        ip: IpAddr,
        port: u16,
        gateway: &[crate::openclaw::GatewayPorts],
        resolved: &dyn Fn(&DestTarget) -> Vec<IpAddr>,
    ) -> bool {
        if !self.port_matches(port, gateway) {
            return false;
        }
        let ip = fold(ip);
        match &self.target {
            DestTarget::Host(_) | DestTarget::Providers | DestTarget::Resolvers => {
                resolved(&self.target).into_iter().any(|a| fold(a) == ip)
            }
            _ => self.nets().iter().any(|n| n.contains(ip)),
        }
    }

    /// Whether a destination known by name matches: `name` is the DNS name its address
    /// was learned under (an event's `dest_name`). A host entry matches its own name,
    /// `$providers` any of `providers`; addresses, `loopback` and `any` never match by
    /// name (their address is checked with [`Dest::matches`]).
    pub fn matches_name(
        &self,
        name: &str,
        port: u16,
        gateway: &[crate::openclaw::GatewayPorts],
        providers: &[String],
    ) -> bool {
        self.port_matches(port, gateway)
            && match &self.target {
                DestTarget::Host(h) => same_host(h, name),
                DestTarget::Providers => providers.iter().any(|p| same_host(p, name)),
                _ => false,
            }
    }
}

/// DNS names compare without case and without the root's trailing dot.
pub fn same_host(a: &str, b: &str) -> bool {
    fn bare(s: &str) -> &str {
        s.strip_suffix('.').unwrap_or(s)
    }
    bare(a).eq_ignore_ascii_case(bare(b))
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = matches!(&self.target, DestTarget::Net(n) if !n.is_ipv4());
        let t = match &self.target {
            DestTarget::Net(n) => n.to_string(),
            DestTarget::Host(h) => h.clone(),
            DestTarget::Loopback => "loopback".into(),
            DestTarget::Any => "any".into(),
            DestTarget::Providers => "$providers".into(),
            DestTarget::Resolvers => "$resolvers".into(),
        };
        match &self.ports {
            PortSpec::Any => f.write_str(&t),
            p if v6 => write!(f, "[{t}]:{}", port_str(p)),
            p => write!(f, "{t}:{}", port_str(p)),
        }
    }
}

fn port_str(p: &PortSpec) -> String {
    match p {
        PortSpec::Any => String::new(),
        PortSpec::Range(r) => r.to_string(),
        PortSpec::Gateway => "gateway".into(),
    }
}

/// Why a destination or port did not parse: (what was wrong, a hint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseProblem {
    pub message: String,
    pub hint: &'static str,
}

fn problem(message: impl Into<String>, hint: &'static str) -> ParseProblem {
    ParseProblem {
        message: message.into(),
        hint,
    }
}

const PORT_HINT: &str = "ports are 1-65535: a number, a range `LO-HI`, or `gateway`";

/// Parses a port or port range (`443`, `8000-8100`) or `gateway`.
pub fn parse_ports(s: &str) -> Result<PortSpec, ParseProblem> {
    if s == "gateway" {
        return Ok(PortSpec::Gateway);
    }
    let one = |p: &str| -> Result<u16, ParseProblem> {
        let n: u64 = p
            .trim()
            .parse()
            .map_err(|_| problem(format!("`{p}` is not a port number"), PORT_HINT))?;
        if n == 0 || n > 65535 {
            return Err(problem(
                format!("port {n} is out of range 1-65535"),
                PORT_HINT,
            ));
        }
        // In range 1..=65535 checked just above.
        Ok(u16::try_from(n).unwrap_or(u16::MAX))
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => {
            let p = one(s)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(problem(
            format!("port range {lo}-{hi} is reversed"),
            "write the lower port first: `LO-HI`",
        ));
    }
    Ok(PortSpec::Range(PortRange { lo, hi }))
}

const CIDR_HINT: &str =
    "write an address or prefix like `10.0.0.0/8`, `2001:db8::/32`, `[::1]:443` or `host.example:443`";

/// Parses an IP prefix (`10.0.0.0/8`, `::1`, `::ffff:10.0.0.0/104`).
pub fn parse_net(s: &str) -> Result<IpNet, ParseProblem> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| problem(format!("`{a}` is not an IPv4 or IPv6 address"), CIDR_HINT))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        None => max,
        Some(p) => p.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(|| {
            problem(
                format!("prefix length `/{p}` is not 0-{max} for {a}"),
                "IPv4 prefixes are /0 to /32, IPv6 /0 to /128",
            )
        })?,
    };
    IpNet::new(addr, prefix).ok_or_else(|| problem(format!("bad prefix `{s}`"), CIDR_HINT))
}

/// Whether `s` is a syntactically valid DNS host name (RFC 1123 labels).
pub fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // An all-numeric dotted name is a mistyped IPv4 address, not a host.
        && !s.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses one destination: `TARGET[:PORTS]`, TARGET one of a prefix, `[IPv6 prefix]`,
/// a host name, `loopback`, `any`, `$providers`. A bare IPv6 prefix takes no port.
pub fn parse_dest(s: &str) -> Result<Dest, ParseProblem> {
    let s = s.trim();
    if s.is_empty() {
        return Err(problem("empty destination", CIDR_HINT));
    }
    let (target, ports) = if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| problem(format!("`{s}` has `[` without `]`"), CIDR_HINT))?;
        let ports = match after {
            "" => None,
            a => Some(a.strip_prefix(':').ok_or_else(|| {
                problem(format!("expected `:PORT` after `]` in `{s}`"), CIDR_HINT)
            })?),
        };
        (inner, ports)
    } else if s.matches(':').count() >= 2 {
        // Bare IPv6: every colon belongs to the address.
        if s.split_once('/').is_some_and(|(_, p)| p.contains(':')) {
            return Err(problem(
                format!("`{s}`: an IPv6 prefix with a port needs brackets"),
                "write `[2001:db8::/32]:443`",
            ));
        }
        (s, None)
    } else {
        match s.split_once(':') {
            Some((t, p)) => (t, Some(p)),
            None => (s, None),
        }
    };
    let ports = match ports {
        None => PortSpec::Any,
        Some(p) => parse_ports(p)?,
    };
    let target = match target {
        "loopback" => DestTarget::Loopback,
        "any" => DestTarget::Any,
        "$providers" => DestTarget::Providers,
        "$resolvers" => DestTarget::Resolvers,
        t if t.starts_with('$') => {
            return Err(problem(
                format!("unknown destination variable `{t}`"),
                "the variables are `$providers` (model providers from openclaw.json) and `$resolvers` (the gateways' DNS resolvers)",
            ))
        }
        t if t.contains('/') || t.parse::<IpAddr>().is_ok() || t.contains(':') => {
            DestTarget::Net(parse_net(t)?)
        }
        t if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') => DestTarget::Net(parse_net(t)?),
        t if is_hostname(t) => DestTarget::Host(t.to_ascii_lowercase()),
        t => {
            return Err(problem(
                format!("`{t}` is neither an address, a prefix nor a valid host name"),
                CIDR_HINT,
            ))
        }
    };
    Ok(Dest { target, ports })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_folds_to_v4() {
        let n = parse_net("::ffff:10.0.0.0/104").expect("mapped prefix");
        assert_eq!(n.to_string(), "10.0.0.0/8");
        let ip: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
        assert!(n.contains(ip));
        assert_eq!(fold(ip), "10.1.2.3".parse::<IpAddr>().expect("ip"));
        let v4 = parse_net("10.0.0.0/8").expect("v4");
        assert!(v4.contains(ip), "a v4 prefix covers the mapped spelling");
        assert!(!parse_net("2001:db8::/32").expect("v6").contains(ip));
    }

    #[test]
    fn dests() {
        let d = parse_dest("[2001:db8::/32]:443").expect("v6 with port");
        assert_eq!(d.to_string(), "[2001:db8::/32]:443");
        let d = parse_dest("10.1.2.3/8:8000-8100").expect("range");
        assert_eq!(d.to_string(), "10.0.0.0/8:8000-8100");
        assert!(d.matches("10.9.9.9".parse().expect("ip"), 8050, &[], &|_| vec![]));
        assert!(!d.matches("10.9.9.9".parse().expect("ip"), 8101, &[], &|_| vec![]));
        assert_eq!(
            parse_dest("API.Anthropic.com:443").expect("host").target,
            DestTarget::Host("api.anthropic.com".into())
        );
        assert_eq!(parse_dest("::1").expect("bare v6").ports, PortSpec::Any);
        let r = parse_dest("$resolvers:53").expect("resolvers");
        assert_eq!(r.target, DestTarget::Resolvers);
        assert_eq!(r.to_string(), "$resolvers:53");
        let ns = |_: &DestTarget| vec!["10.0.0.2".parse().expect("ip")];
        assert!(r.matches("10.0.0.2".parse().expect("ip"), 53, &[], &ns));
        assert!(!r.matches("10.0.0.2".parse().expect("ip"), 443, &[], &ns));
        assert!(parse_dest("$resolver").is_err());
        let g = parse_dest("loopback:gateway").expect("gateway ports");
        let gw = [crate::openclaw::GatewayPorts::default()];
        assert!(g.matches("127.0.0.1".parse().expect("ip"), 18789, &gw, &|_| vec![]));
        assert!(g.matches(
            "::ffff:127.0.0.1".parse().expect("ip"),
            18850,
            &gw,
            &|_| vec![]
        ));
        assert!(!g.matches("127.0.0.1".parse().expect("ip"), 80, &gw, &|_| vec![]));
        let named = parse_dest("API.Example.com.:443").expect("host with root dot");
        assert!(named.matches_name("api.example.com", 443, &[], &[]));
        assert!(named.matches_name("API.EXAMPLE.COM.", 443, &[], &[]));
        assert!(!named.matches_name("api.example.com", 80, &[], &[]));
        assert!(!named.matches_name("example.com", 443, &[], &[]));
        assert!(!named.matches_name("api.example.com.evil", 443, &[], &[]));
        let providers = parse_dest("$providers").expect("providers");
        let known = ["api.anthropic.com".to_owned()];
        assert!(providers.matches_name("Api.Anthropic.Com", 8443, &[], &known));
        assert!(!providers.matches_name("api.openai.com", 443, &[], &known));
        assert!(!providers.matches_name("api.anthropic.com", 443, &[], &[]));
        // Addresses are never matched by a name, even one that spells them.
        for d in ["any", "loopback", "10.0.0.0/8"] {
            let d = parse_dest(d).expect("dest");
            assert!(!d.matches_name("10.1.2.3", 443, &[], &[]), "{d}");
        }
        for bad in [
            "10.0.0.0/33",
            "300.1.1.1",
            "1.2.3.4:0",
            "1.2.3.4:70000",
            "a_b.com",
            "[::1",
            "$x",
            "1.2.3.4:9-3",
            "::1/128:22",
        ] {
            assert!(parse_dest(bad).is_err(), "{bad}");
        }
    }
}
