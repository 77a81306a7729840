//! Host knowledge: what the policy's words stand for on this host, read from the
//! gateways themselves at each plan (start-up, reload, the periodic re-plan): their
//! ports (`:gateway`), the model providers their `openclaw.json` names (`$providers`)
//! and the DNS resolvers they use (`$resolvers`; the only answers the DNS sensor
//! believes). Host names are not resolved here: the kernel learns their addresses
//! from the answers the host gets (`openclaw-guard-ebpf/src/dns.rs`).

use std::{collections::HashMap, net::IpAddr, path::Path};

use crate::{
    enforce::UserDirs,
    openclaw::{self, GatewayPorts},
    policy::{providers_from_config, CompileContext},
};

/// The compile context for the gateways `roots` with their users' state `users`.
pub fn context(roots: &[u32], users: &[UserDirs]) -> CompileContext {
    let mut ports = Vec::new();
    let mut providers = Vec::new();
    for u in users {
        if let Some(cfg) = read_config_file(&u.state_dir.join(openclaw::CONFIG_FILE_NAME)) {
            providers.extend(providers_from_config(&cfg));
        }
    }
    for &pid in roots {
        let argv = crate::kernel::procfs::read_cmdline(pid).unwrap_or_default();
        let env = crate::kernel::procfs::read_environ(pid).unwrap_or_default();
        // This gateway's own config (its OPENCLAW_CONFIG_PATH or state directory), not
        // another gateway's.
        let own = read_config_file(&crate::kernel::procfs::gateway_location(pid).config_path);
        if let Some(cfg) = &own {
            providers.extend(providers_from_config(cfg));
        }
        let port = openclaw::cmdline_gateway_port(&argv)
            .or_else(|| own.as_ref().and_then(openclaw::config_gateway_port))
            .or_else(|| {
                env.get(openclaw::GATEWAY_PORT_ENV)
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(openclaw::DEFAULT_GATEWAY_PORT);
        ports.push(GatewayPorts::new(port));
    }
    // Gateways started later still get the default ports' protection.
    ports.push(GatewayPorts::default());
    ports.sort_by_key(GatewayPorts::gateway);
    ports.dedup();
    providers.sort();
    providers.dedup();
    CompileContext {
        gateway_ports: ports,
        providers,
        resolvers: resolvers(roots),
    }
}

/// The name servers of the host and of each gateway's own view of `/etc/resolv.conf`
/// (`ip netns exec` and containers give a process another one).
pub fn resolvers(roots: &[u32]) -> Vec<IpAddr> {
    let mut files = vec![std::path::PathBuf::from("/etc/resolv.conf")];
    files.extend(
        roots
            .iter()
            .map(|pid| format!("/proc/{pid}/root/etc/resolv.conf").into()),
    );
    let mut out: Vec<IpAddr> = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| nameservers(&text))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `nameserver` lines of a resolv.conf (an IPv6 zone index is dropped).
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            w.next()?.split('%').next()?.parse().ok()
        })
        .collect()
}

fn read_config_file(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    openclaw::parse_config(&text).ok()
}

/// The record of what the host knowledge said (kind `host`), written when it changes:
/// `policy replay` and `policy suggest` read it back, so `$providers`, `$resolvers`
/// and `:gateway` mean offline what they meant when the events happened.
pub fn record(ctx: &CompileContext) -> HostRecord {
    HostRecord {
        time: jiff::Timestamp::now().to_string(),
        kind: "host",
        providers: ctx.providers.clone(),
        resolvers: ctx.resolvers.iter().map(ToString::to_string).collect(),
        gateway_ports: ctx
            .gateway_ports
            .iter()
            .map(GatewayPorts::gateway)
            .collect(),
    }
}

/// A `host` record.
#[derive(serde::Serialize)]
pub struct HostRecord {
    time: String,
    kind: &'static str,
    providers: Vec<String>,
    resolvers: Vec<String>,
    gateway_ports: Vec<u16>,
}

impl crate::events::OwnRecord for HostRecord {
    fn kind(&self) -> &'static str {
        self.kind
    }
}

/// The host knowledge of the `host` records read: everything any of them named (a
/// replay spans reloads and re-plans), or the defaults when the record has none.
#[derive(Debug, Default)]
pub struct Recorded {
    ctx: Option<CompileContext>,
}

impl Recorded {
    /// Takes a recorded event; only `host` records count.
    pub fn add(&mut self, ev: &serde_json::Value) {
        if ev.get("kind").and_then(serde_json::Value::as_str) != Some("host") {
            return;
        }
        let strings = |k: &str| -> Vec<String> {
            ev.get(k)
                .and_then(serde_json::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(serde_json::Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let ctx = self.ctx.get_or_insert_with(|| CompileContext {
            gateway_ports: Vec::new(),
            ..CompileContext::default()
        });
        ctx.providers.extend(strings("providers"));
        ctx.resolvers.extend(
            strings("resolvers")
                .iter()
                .filter_map(|a| a.parse::<IpAddr>().ok()),
        );
        if let Some(ports) = ev
            .get("gateway_ports")
            .and_then(serde_json::Value::as_array)
        {
            ctx.gateway_ports.extend(
                ports
                    .iter()
                    .filter_map(serde_json::Value::as_u64)
                    .filter_map(|p| u16::try_from(p).ok())
                    .map(GatewayPorts::new),
            );
        }
        ctx.providers.sort();
        ctx.providers.dedup();
        ctx.resolvers.sort();
        ctx.resolvers.dedup();
        ctx.gateway_ports.sort_by_key(GatewayPorts::gateway);
        ctx.gateway_ports.dedup();
    }

    pub fn context(self) -> CompileContext {
        match self.ctx {
            Some(c) if !c.gateway_ports.is_empty() => c,
            Some(c) => CompileContext {
                gateway_ports: CompileContext::default().gateway_ports,
                ..c
            },
            None => CompileContext::default(),
        }
    }

    /// The host records of the record under `state_dir`.
    pub fn read(state_dir: &Path) -> anyhow::Result<CompileContext> {
        let reader = crate::recorder::Reader::open(state_dir)?;
        let mut r = Self::default();
        reader.events(None, |rec| r.add(&rec.event), |_| {})?;
        Ok(r.context())
    }
}

/// IPv4 as IPv4-mapped IPv6, the kernel maps' form.
pub fn mapped(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => openclaw_guard_common::dns::mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The names behind the kernel's name hashes, from the DNS events: what a net
/// event's `dest_name` says. Bounded: past `NAMES_MAX` the oldest half is forgotten
/// (an event whose name is forgotten goes out without one, never with a wrong one).
#[derive(Debug, Default)]
pub struct Names {
    names: HashMap<u64, (String, u64)>,
    learned: u64,
}

const NAMES_MAX: usize = 65536;

impl Names {
    pub fn learn(&mut self, d: &crate::events::Dns) {
        if self.names.len() >= NAMES_MAX {
            let cut = self.learned - (NAMES_MAX as u64) / 2;
            self.names.retain(|_, (_, at)| *at > cut);
        }
        self.learned += 1;
        self.names
            .insert(d.name_hash, (d.name.clone(), self.learned));
    }

    pub fn knows(&self, hash: u64) -> bool {
        self.names.contains_key(&hash)
    }

    /// Fills a net event's `dest_name`.
    pub fn name(&self, ev: &mut crate::events::Event) {
        if let crate::events::Payload::Net(n) = &mut ev.payload {
            if n.name_hash != 0 {
                n.dest_name = self.names.get(&n.name_hash).map(|(s, _)| s.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_lines() {
        let text = "# generated\nsearch lan\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\n nameserver 10.0.0.2\noptions edns0\nnameserver bogus\n";
        assert_eq!(
            nameservers(text),
            vec![
                "127.0.0.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap(),
                "10.0.0.2".parse().unwrap()
            ]
        );
    }

    #[test]
    fn host_records_give_the_context_back() {
        let ctx = CompileContext {
            gateway_ports: vec![GatewayPorts::new(19000)],
            providers: vec!["models.example.test".into()],
            resolvers: vec!["127.0.0.53".parse().expect("ip")],
        };
        let mut r = Recorded::default();
        r.add(&serde_json::json!({"kind": "stats"}));
        // As written and read back.
        let json = |ctx: &CompileContext| serde_json::to_value(record(ctx)).expect("encodes");
        r.add(&json(&ctx));
        r.add(&json(&CompileContext {
            providers: vec!["api.openai.com".into()],
            ..ctx.clone()
        }));
        let got = r.context();
        assert_eq!(got.gateway_ports, ctx.gateway_ports);
        assert_eq!(got.resolvers, ctx.resolvers);
        assert_eq!(got.providers, ["api.openai.com", "models.example.test"]);
        assert_eq!(Recorded::default().context(), CompileContext::default());
    }

    #[test]
    fn name_hash_ignores_case_and_trailing_dot() {
        use openclaw_guard_common::dns::name_hash;
        assert_eq!(name_hash("API.Example.com."), name_hash("api.example.com"));
        assert_ne!(name_hash("example.com"), name_hash("example.org"));
    }
}
