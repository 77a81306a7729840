//! Packet-filter and NAT rules: `iptables-save` format (also ufw's `user.rules` and
//! `/etc/iptables/rules.v4`) and `nft list ruleset` format (also `/etc/nftables.conf`).
//!
//! Sources, live: `iptables-save`, `ip6tables-save`, `nft list ruleset` when found
//! (root needed), plus the saved files below. With `--root` no command runs and saved
//! dumps are read instead (see docs/audit.md):
//! - `ROOT/var/lib/openclaw-guard/audit/iptables-save.txt`, `ip6tables-save.txt`,
//!   `nft-ruleset.txt`: captures of the live rules (`iptables-save > ...`);
//! - `ROOT/etc/iptables/rules.v4`, `rules.v6`, `ROOT/etc/sysconfig/iptables`,
//!   `ip6tables` (persisted rules), `ROOT/etc/nftables.conf`;
//! - `ROOT/etc/ufw/ufw.conf` (`ENABLED=yes`), `ROOT/etc/ufw/user.rules`, `user6.rules`.

use std::{path::Path, process::Command};

use super::host::Options;
use crate::openclaw::GatewayPorts;

/// Where fixture trees and captures keep rule dumps, relative to the root.
pub(super) const DUMP_DIR: &str = "/var/lib/openclaw-guard/audit";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Iptables,
    Nft,
}

/// One rule source.
#[derive(Debug, Clone)]
pub(super) struct RuleSource {
    pub(super) name: String,
    pub(super) format: Format,
    pub(super) text: String,
}

fn find_tool(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn run_tool(name: &str, args: &[&str]) -> Result<String, String> {
    let exe = find_tool(name).ok_or_else(|| format!("{name} not installed"))?;
    let out = Command::new(&exe)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} {}: {}",
            name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Every rule source found, and notes on the ones that could not be read.
pub(super) fn collect(opts: &Options) -> (Vec<RuleSource>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    if opts.live {
        for (tool, args, format) in [
            ("iptables-save", &[][..], Format::Iptables),
            ("ip6tables-save", &[][..], Format::Iptables),
            ("nft", &["list", "ruleset"][..], Format::Nft),
        ] {
            match run_tool(tool, args) {
                Ok(text) => out.push(RuleSource {
                    name: format!(
                        "`{tool}{}{}`",
                        if args.is_empty() { "" } else { " " },
                        args.join(" ")
                    ),
                    format,
                    text,
                }),
                Err(e) => notes.push(e),
            }
        }
    } else {
        for (file, format) in [
            ("iptables-save.txt", Format::Iptables),
            ("ip6tables-save.txt", Format::Iptables),
            ("nft-ruleset.txt", Format::Nft),
        ] {
            let p = Path::new(DUMP_DIR).join(file);
            if let Some(text) = opts.read(&p) {
                out.push(RuleSource {
                    name: p.display().to_string(),
                    format,
                    text,
                });
            }
        }
    }
    for (file, format) in [
        ("/etc/iptables/rules.v4", Format::Iptables),
        ("/etc/iptables/rules.v6", Format::Iptables),
        ("/etc/sysconfig/iptables", Format::Iptables),
        ("/etc/sysconfig/ip6tables", Format::Iptables),
        ("/etc/ufw/user.rules", Format::Iptables),
        ("/etc/ufw/user6.rules", Format::Iptables),
        ("/etc/nftables.conf", Format::Nft),
    ] {
        if let Some(text) = opts.read(file) {
            out.push(RuleSource {
                name: file.to_owned(),
                format,
                text,
            });
        }
    }
    (out, notes)
}

/// Whether ufw is enabled (`ENABLED=yes` in `/etc/ufw/ufw.conf`).
pub(super) fn ufw_enabled(opts: &Options) -> bool {
    opts.read("/etc/ufw/ufw.conf").is_some_and(|t| {
        t.lines()
            .map(str::trim)
            .any(|l| l.replace(' ', "").eq_ignore_ascii_case("ENABLED=yes"))
    })
}

/// Port numbers matched by an iptables `--dport`/`--dports` value or an nft `dport`
/// expression element: `N`, `N:M`, `N-M`, comma lists.
fn port_spec_matches(spec: &str, ports: &GatewayPorts) -> bool {
    spec.split(',').any(|item| {
        let item = item.trim().trim_matches(|c| c == '{' || c == '}').trim();
        let (a, b) = item
            .split_once(':')
            .or_else(|| item.split_once('-'))
            .unwrap_or((item, item));
        match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
            (Ok(a), Ok(b)) => ports
                .ranges()
                .iter()
                .any(|r| a <= *r.end() && b >= *r.start()),
            _ => false,
        }
    })
}

fn is_loopback_spec(s: &str) -> bool {
    let s = s.trim_matches('"');
    s.starts_with("127.") || s == "::1" || s == "::1/128" || s == "lo"
}

/// `A:P` or `[A]:P` or `A:P1-P2` from a DNAT target.
fn dnat_target_port(to: &str) -> Option<&str> {
    let to = to.trim().trim_end_matches(';');
    if let Some(rest) = to.strip_prefix('[') {
        return rest.split_once("]:").map(|(_, p)| p);
    }
    if to.matches(':').count() == 1 {
        to.split_once(':').map(|(_, p)| p)
    } else {
        None
    }
}

/// A parsed `-A CHAIN ...` rule.
struct IptRule<'a> {
    table: &'a str,
    chain: &'a str,
    line: &'a str,
    opts: Vec<(&'a str, &'a str, bool)>,
}

impl IptRule<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.opts
            .iter()
            .find(|(k, _, neg)| *k == key && !neg)
            .map(|(_, v, _)| *v)
    }
}

fn ipt_rules(text: &str) -> Vec<IptRule<'_>> {
    let mut table = "filter";
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim();
            continue;
        }
        let Some(rest) = line.strip_prefix("-A ") else {
            continue;
        };
        let toks: Vec<&str> = rest.split_whitespace().collect();
        let Some((chain, args)) = toks.split_first() else {
            continue;
        };
        let mut opts = Vec::new();
        let mut neg = false;
        let mut i = 0;
        while i < args.len() {
            let t = args[i];
            if t == "!" {
                neg = true;
                i += 1;
                continue;
            }
            if t.starts_with('-') {
                let v = args
                    .get(i + 1)
                    .copied()
                    .filter(|v| !v.starts_with('-') && *v != "!");
                opts.push((t, v.unwrap_or(""), neg));
                i += if v.is_some() { 2 } else { 1 };
            } else {
                i += 1;
            }
            neg = false;
        }
        out.push(IptRule {
            table,
            chain,
            line,
            opts,
        });
    }
    out
}

fn ipt_dport_matches(r: &IptRule<'_>, ports: &GatewayPorts) -> bool {
    [
        "--dport",
        "--dports",
        "--destination-port",
        "--destination-ports",
    ]
    .iter()
    .filter_map(|k| r.get(k))
    .any(|v| port_spec_matches(v, ports))
}

/// A line of an nft ruleset with the chain it sits in.
struct NftLine<'a> {
    chain: String,
    input_hook: bool,
    line: &'a str,
}

fn nft_lines(text: &str) -> (Vec<NftLine<'_>>, Vec<String>) {
    let mut out = Vec::new();
    let mut drop_input_chains = Vec::new();
    let mut chain = String::new();
    let mut input_hook = false;
    let mut depth = 0usize;
    let mut chain_depth = None;
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("chain ") {
            chain = rest.trim_end_matches('{').trim().to_owned();
            input_hook = false;
            chain_depth = Some(depth);
        } else if line.contains("hook input") {
            input_hook = true;
            if line.contains("policy drop") || line.contains("policy reject") {
                drop_input_chains.push(format!("chain {chain}: {line}"));
            }
        } else if chain_depth.is_some() && line != "}" {
            out.push(NftLine {
                chain: chain.clone(),
                input_hook,
                line,
            });
        }
        depth += line.matches('{').count();
        depth = depth.saturating_sub(line.matches('}').count());
        if chain_depth.is_some_and(|d| depth <= d) {
            chain_depth = None;
            input_hook = false;
        }
    }
    (out, drop_input_chains)
}

/// The text after `dport` (a number, a range or a `{ ... }` set).
fn nft_dport(line: &str) -> Option<&str> {
    let i = line.find("dport ")?;
    let rest = line[i + 6..].trim_start();
    if rest.starts_with('{') {
        rest.find('}').map(|e| &rest[..=e])
    } else {
        rest.split_whitespace().next()
    }
}

fn nft_is_loopback_only(line: &str) -> bool {
    [
        "iif lo",
        "iifname \"lo\"",
        "iifname lo",
        "daddr 127.",
        "saddr 127.",
        "daddr ::1",
        "saddr ::1",
    ]
    .iter()
    .any(|p| line.contains(p))
}

/// DNAT rules that forward a gateway port (as published port or as target port)
/// and are not limited to loopback.
pub(super) fn nat_exposures(sources: &[RuleSource], ports: &GatewayPorts) -> Vec<String> {
    let mut out = Vec::new();
    for s in sources {
        match s.format {
            Format::Iptables => {
                for r in ipt_rules(&s.text) {
                    if r.table != "nat" || r.get("-j") != Some("DNAT") {
                        continue;
                    }
                    if r.get("-d").is_some_and(is_loopback_spec)
                        || r.get("-i").is_some_and(is_loopback_spec)
                    {
                        continue;
                    }
                    let target = r
                        .get("--to-destination")
                        .and_then(dnat_target_port)
                        .is_some_and(|p| port_spec_matches(p, ports));
                    if target || ipt_dport_matches(&r, ports) {
                        out.push(format!("{}: {}", s.name, r.line));
                    }
                }
            }
            Format::Nft => {
                for l in nft_lines(&s.text).0 {
                    let Some(i) = l.line.find("dnat ") else {
                        continue;
                    };
                    if nft_is_loopback_only(l.line) {
                        continue;
                    }
                    let to = l.line[i..]
                        .split_once(" to ")
                        .and_then(|(_, t)| t.split_whitespace().next())
                        .and_then(dnat_target_port)
                        .is_some_and(|p| port_spec_matches(p, ports));
                    let dport = nft_dport(l.line).is_some_and(|d| port_spec_matches(d, ports));
                    if to || dport {
                        out.push(format!("{}: {}", s.name, l.line));
                    }
                }
            }
        }
    }
    out
}

/// Evidence that a default-deny input firewall is active: ufw enabled, an iptables
/// INPUT policy or rule that drops, or an nft input-hook chain with policy drop.
pub(super) fn firewall_evidence(sources: &[RuleSource], ufw: bool) -> Vec<String> {
    let mut out = Vec::new();
    if ufw {
        out.push("/etc/ufw/ufw.conf: ENABLED=yes".to_owned());
    }
    for s in sources {
        match s.format {
            Format::Iptables => {
                let mut table = "filter";
                for line in s.text.lines().map(str::trim) {
                    if let Some(t) = line.strip_prefix('*') {
                        table = t.trim();
                    } else if table == "filter"
                        && (line.starts_with(":INPUT DROP") || line.starts_with(":INPUT REJECT"))
                    {
                        out.push(format!("{}: {line}", s.name));
                    }
                }
                for r in ipt_rules(&s.text) {
                    if r.table == "filter"
                        && r.chain == "INPUT"
                        && matches!(r.get("-j"), Some("DROP" | "REJECT"))
                        && r.get("-p").is_none()
                        && r.get("-s").is_none()
                    {
                        out.push(format!("{}: {}", s.name, r.line));
                    }
                }
            }
            Format::Nft => {
                for c in nft_lines(&s.text).1 {
                    out.push(format!("{}: {c}", s.name));
                }
            }
        }
    }
    out
}

/// Input-side accept rules that open a gateway port to any source.
pub(super) fn gateway_allowed(sources: &[RuleSource], ports: &GatewayPorts) -> Vec<String> {
    let mut out = Vec::new();
    for s in sources {
        match s.format {
            Format::Iptables => {
                for r in ipt_rules(&s.text) {
                    let input = r.chain == "INPUT" || r.chain.contains("user-input");
                    if r.table != "filter" || !input || r.get("-j") != Some("ACCEPT") {
                        continue;
                    }
                    let any_source = r.get("-s").is_none_or(|s| s == "0.0.0.0/0" || s == "::/0");
                    if !any_source || r.get("-i").is_some_and(is_loopback_spec) {
                        continue;
                    }
                    if ipt_dport_matches(&r, ports) {
                        out.push(format!("{}: {}", s.name, r.line));
                    }
                }
            }
            Format::Nft => {
                for l in nft_lines(&s.text).0 {
                    let input = l.input_hook || l.chain.contains("input");
                    if !input || !l.line.contains("accept") || nft_is_loopback_only(l.line) {
                        continue;
                    }
                    if l.line.contains("saddr") {
                        continue;
                    }
                    if nft_dport(l.line).is_some_and(|d| port_spec_matches(d, ports)) {
                        out.push(format!("{}: {}", s.name, l.line));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(format: Format, text: &str) -> Vec<RuleSource> {
        vec![RuleSource {
            name: "t".into(),
            format,
            text: text.into(),
        }]
    }

    const DOCKER_NAT: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
-A DOCKER -i docker0 -j RETURN\n\
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 18789 -j DNAT --to-destination 172.17.0.2:18789\n\
-A DOCKER -d 127.0.0.1/32 ! -i docker0 -p tcp -m tcp --dport 18790 -j DNAT --to-destination 172.17.0.2:18790\n\
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.3:18800\n\
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8081 -j DNAT --to-destination 172.17.0.3:80\n\
COMMIT\n";

    #[test]
    fn iptables_dnat() {
        let p = GatewayPorts::default();
        let e = nat_exposures(&src(Format::Iptables, DOCKER_NAT), &p);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("--dport 18789"));
        assert!(e[1].contains("172.17.0.3:18800"));
    }

    #[test]
    fn nft_dnat_and_filter() {
        let p = GatewayPorts::default();
        let rs = "table ip nat {\n\tchain DOCKER {\n\t\tiifname != \"docker0\" meta l4proto tcp tcp dport 18789 counter packets 0 bytes 0 dnat to 172.17.0.2:18789\n\t\tip daddr 127.0.0.1 tcp dport 18790 dnat to 172.17.0.2:18790\n\t}\n}\n\
table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tiif lo accept\n\t\ttcp dport { 22, 18789 } accept\n\t\tip saddr 10.0.0.0/8 tcp dport 18791 accept\n\t\ttcp dport 443 accept\n\t}\n}\n";
        let s = src(Format::Nft, rs);
        let nat = nat_exposures(&s, &p);
        assert_eq!(nat.len(), 1, "{nat:?}");
        assert_eq!(firewall_evidence(&s, false).len(), 1);
        let allowed = gateway_allowed(&s, &p);
        assert_eq!(allowed.len(), 1, "{allowed:?}");
        assert!(allowed[0].contains("{ 22, 18789 }"));
        // Debian's stock nftables.conf: an input chain without a drop policy.
        let stock = "table inet filter {\n chain input {\n  type filter hook input priority filter;\n }\n}\n";
        assert!(firewall_evidence(&src(Format::Nft, stock), false).is_empty());
    }

    #[test]
    fn iptables_filter() {
        let p = GatewayPorts::default();
        let ufw = "*filter\n:ufw-user-input - [0:0]\n\
-A ufw-user-input -p tcp --dport 22 -j ACCEPT\n\
-A ufw-user-input -p tcp --dport 18789 -j ACCEPT\n\
-A ufw-user-input -p tcp -s 192.0.2.1 --dport 18790 -j ACCEPT\n\
-A ufw-user-input -p tcp -m multiport --dports 18000:18795 -j ACCEPT\n\
COMMIT\n";
        assert_eq!(gateway_allowed(&src(Format::Iptables, ufw), &p).len(), 2);
        let fw = "*filter\n:INPUT DROP [0:0]\nCOMMIT\n";
        assert_eq!(
            firewall_evidence(&src(Format::Iptables, fw), false).len(),
            1
        );
        let none = "*filter\n:INPUT ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -j RETURN\nCOMMIT\n";
        assert!(firewall_evidence(&src(Format::Iptables, none), false).is_empty());
    }
}
