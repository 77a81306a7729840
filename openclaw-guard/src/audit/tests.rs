//! Audit tests on fixture trees generated in temporary directories (modes and owners
//! are set at test time), on the host's real socket tables, and on the JSON schema.
//!
//! Every check has a failing case (the hardened tree with one problem added: exactly
//! that finding appears) and a passing case (the hardened tree, plus alternative
//! hardened forms). The bad tree has every problem at once and yields every finding.

use std::{
    collections::BTreeSet,
    fs,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::{audit, checks, run_to, AuditOptions, Report, Severity, CHECKS};

const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
const UDP_HEADER: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n";

/// A secret that must never appear in full in any output.
const ANTHROPIC_KEY: &str = "sk-ant-api03-AAAABBBBCCCCDDDDEEEEFFFFGGGGHHHH";
const TELEGRAM_TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawX";

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The uid that owns the fixture's state dir and runs its gateway: 1000 when the
/// tests run as root (so the gateway is not root), else the current user.
fn owner_uid() -> u32 {
    match euid() {
        0 => 1000,
        u => u,
    }
}

fn tcp_line(i: usize, hex_addr: &str, port: u16, state: &str) -> String {
    format!(
        "  {i:3}: {hex_addr}:{port:04X} {}:0000 {state} 00000000:00000000 00:00000000 00000000  1000        0 {} 1 0000000000000000 100 0 0 10 0\n",
        "0".repeat(hex_addr.len()),
        9000 + i
    )
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    state: PathBuf,
}

impl Fixture {
    fn write(&self, rel: &str, content: &str, mode: u32) -> PathBuf {
        let p = self.root.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&p, content).expect("write");
        chmod(&p, mode);
        p
    }

    fn remove(&self, rel: &str) {
        fs::remove_file(self.root.join(rel)).expect("remove");
    }

    fn state_path(&self, rel: &str) -> PathBuf {
        self.state.join(rel)
    }

    fn config(&self, text: &str) {
        fs::write(self.state_path("openclaw.json"), text).expect("write config");
    }

    fn args(&self) -> AuditOptions {
        AuditOptions {
            home: Some(self.home.clone()),
            root: Some(self.root.clone()),
            ..AuditOptions::default()
        }
    }

    fn report(&self) -> Report {
        audit(&self.args()).expect("audit runs")
    }

    /// A tree that passes every check.
    fn hardened() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let home = root.join("home/alice");
        let state = home.join(".openclaw");
        let fx = Fixture {
            _tmp: tmp,
            root,
            home,
            state,
        };
        let uid = owner_uid();

        // Sockets: the gateway on loopback (v4 and v6), sshd on 0.0.0.0:22.
        fx.write(
            "proc/net/tcp",
            &format!(
                "{TCP_HEADER}{}{}",
                tcp_line(0, "0100007F", 18789, "0A"),
                tcp_line(1, "00000000", 22, "0A")
            ),
            0o444,
        );
        fx.write(
            "proc/net/tcp6",
            &format!(
                "{TCP_HEADER}{}",
                tcp_line(0, "00000000000000000000000001000000", 18791, "0A")
            ),
            0o444,
        );
        fx.write("proc/net/udp", UDP_HEADER, 0o444);
        fx.write("proc/net/udp6", UDP_HEADER, 0o444);
        // A kernel with BPF LSM and function tracing on.
        fx.write(
            "sys/kernel/security/lsm",
            "lockdown,capability,landlock,yama,apparmor,bpf",
            0o444,
        );
        fx.write(
            "sys/kernel/security/lockdown",
            "[none] integrity confidentiality\n",
            0o444,
        );
        fx.write("proc/sys/kernel/ftrace_enabled", "1\n", 0o444);
        fx.write("proc/sys/kernel/osrelease", "6.12.0-test\n", 0o444);
        fx.write("proc/sys/kernel/yama/ptrace_scope", "1\n", 0o444);
        fx.write("proc/sys/kernel/unprivileged_bpf_disabled", "2\n", 0o444);
        fx.write("proc/sys/kernel/io_uring_disabled", "2\n", 0o444);
        // The gateway process, as the unprivileged owner.
        fx.write(
            "proc/4242/cmdline",
            "openclaw\0gateway\0--port\x0018789\0",
            0o444,
        );
        fx.write(
            "proc/4242/status",
            &format!("Name:\topenclaw\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
            0o444,
        );
        fx.write(
            "proc/4242/environ",
            "HOME=/home/alice\0PATH=/usr/bin\0",
            0o400,
        );
        // An unrelated process.
        fx.write("proc/77/cmdline", "/usr/sbin/sshd\0-D\0", 0o444);
        fx.write("proc/77/status", "Name:\tsshd\nUid:\t0\t0\t0\t0\n", 0o444);

        // sshd: main file plus a drop-in found through Include.
        fx.write(
            "etc/ssh/sshd_config",
            "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin no\nMatch User backup\n  PasswordAuthentication yes\n",
            0o644,
        );
        fx.write(
            "etc/ssh/sshd_config.d/50-hardening.conf",
            "PasswordAuthentication no\n",
            0o644,
        );
        // Firewall: nftables with a drop policy, only ssh allowed.
        fx.write(
            "etc/nftables.conf",
            "#!/usr/sbin/nft -f\nflush ruleset\ntable inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tiif lo accept\n\t\tct state established,related accept\n\t\ttcp dport 22 accept\n\t}\n}\n",
            0o644,
        );
        // Captured rules: Docker publishing the gateway on loopback only.
        fx.write(
            "var/lib/openclaw-guard/audit/iptables-save.txt",
            "*nat\n:PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n-A DOCKER -i docker0 -j RETURN\n-A DOCKER -d 127.0.0.1/32 ! -i docker0 -p tcp -m tcp --dport 18789 -j DNAT --to-destination 172.17.0.2:18789\nCOMMIT\n",
            0o644,
        );
        fx.write(
            "var/lib/dpkg/status",
            "Package: openssh-server\nStatus: install ok installed\n\nPackage: unattended-upgrades\nStatus: install ok installed\nVersion: 2.9\n\nPackage: fail2ban\nStatus: install ok installed\n\nPackage: sshguard\nStatus: deinstall ok config-files\n",
            0o644,
        );
        fx.write(
            "etc/apt/apt.conf.d/20auto-upgrades",
            "APT::Periodic::Update-Package-Lists \"1\";\nAPT::Periodic::Unattended-Upgrade \"1\";\n",
            0o644,
        );

        // The state dir: 700 dirs, 600 files, config as JSON5 with comments.
        fx.write("home/alice/notes.txt", "not openclaw's\n", 0o644);
        for d in [
            "",
            "credentials",
            "credentials/whatsapp",
            "agents",
            "agents/main",
            "agents/main/agent",
            "agents/main/sessions",
            "workspace",
        ] {
            let p = fx.state.join(d);
            fs::create_dir_all(&p).expect("mkdir");
            chmod(&p, 0o700);
        }
        let files = [
            (
                "openclaw.json",
                r#"// OpenClaw config (JSON5)
{
  gateway: {
    port: 18789,
    bind: "loopback",
    auth: { mode: "token", token: "4f1c2d0e9b8a7f6e5d4c3b2a19081726" },
  },
  channels: {
    telegram: { botToken: "${TELEGRAM_BOT_TOKEN}", dmPolicy: "pairing", allowFrom: ["111", "222"] },
    discord: { enabled: false, dmPolicy: "open" },
  },
  session: { dmScope: "per-channel-peer" },
  agents: { defaults: { sandbox: { mode: "non-main" } }, list: [{ id: "main" }] },
  plugins: { load: { paths: ["/var/lib/openclaw-guard/plugin"] }, entries: { "openclaw-guard": { enabled: true } } },
}
"#,
            ),
            (
                ".env",
                &format!(
                    "TELEGRAM_BOT_TOKEN={TELEGRAM_TOKEN}\nANTHROPIC_API_KEY={ANTHROPIC_KEY}\n"
                ),
            ),
            ("credentials/whatsapp/creds.json", "{}"),
            ("agents/main/agent/auth-profiles.json", "{}"),
            ("agents/main/sessions/s1.jsonl", "{}\n"),
            ("workspace/AGENTS.md", "# agents\n"),
        ];
        for (rel, text) in files {
            let p = fx.state.join(rel);
            fs::write(&p, text).expect("write");
            chmod(&p, 0o600);
        }
        if euid() == 0 {
            chown_tree(&fx.state, uid);
        }
        fx
    }

    /// The hardened tree with every problem the audit knows.
    fn bad() -> Self {
        let fx = Self::hardened();
        for (id, apply) in MUTATIONS {
            if *id == "perms.owner" && euid() != 0 {
                continue;
            }
            apply(&fx);
        }
        fx
    }
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).expect("stat").mode() & 0o7777
}

fn chown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).expect("chown");
    if p.is_dir() && !p.is_symlink() {
        for e in fs::read_dir(p).expect("readdir").flatten() {
            chown_tree(&e.path(), uid);
        }
    }
}

const SECRETS_CONFIG: &str = r#"{
  gateway: { port: 18789, bind: "loopback", auth: { mode: "token", token: "4f1c2d0e9b8a7f6e5d4c3b2a19081726" } },
  channels: { telegram: { botToken: "TELEGRAM", dmPolicy: "pairing" } },
  session: { dmScope: "per-channel-peer" },
  models: { providers: { anthropic: { apiKey: "ANTHROPIC" } } },
  agents: { defaults: { sandbox: { mode: "all" } } },
}"#;

type Mutation = fn(&Fixture);

/// One problem per check, applied to the hardened tree.
const MUTATIONS: &[(&str, Mutation)] = &[
    ("net.listen", |fx| {
        fx.write(
            "proc/net/tcp",
            &format!(
                "{TCP_HEADER}{}{}",
                tcp_line(0, "00000000", 18789, "0A"),
                tcp_line(1, "0100007F", 18790, "0A")
            ),
            0o444,
        );
        // [::ffff:0.0.0.0]:18800 (IPv4-mapped any) and [::]:18791.
        fx.write(
            "proc/net/tcp6",
            &format!(
                "{TCP_HEADER}{}{}",
                tcp_line(0, "0000000000000000FFFF000000000000", 18800, "0A"),
                tcp_line(1, "00000000000000000000000000000000", 18791, "0A")
            ),
            0o444,
        );
        fx.write(
            "proc/net/udp",
            &format!("{UDP_HEADER}{}", tcp_line(0, "010200C0", 18792, "07")),
            0o444,
        );
    }),
    ("net.nat", |fx| {
        fx.write(
            "var/lib/openclaw-guard/audit/iptables-save.txt",
            "*nat\n:DOCKER - [0:0]\n-A DOCKER ! -i docker0 -p tcp -m tcp --dport 18789 -j DNAT --to-destination 172.17.0.2:18789\nCOMMIT\n",
            0o644,
        );
    }),
    ("gateway.bind", |fx| {
        let c = fs::read_to_string(fx.state_path("openclaw.json")).expect("read");
        fx.config(&c.replace("bind: \"loopback\"", "bind: \"lan\""));
    }),
    ("gateway.auth", |fx| {
        let c = fs::read_to_string(fx.state_path("openclaw.json")).expect("read");
        fx.config(&c.replace("token: \"4f1c2d0e9b8a7f6e5d4c3b2a19081726\"", "token: \"\""));
    }),
    ("channels.dm-open", |fx| {
        let c = fs::read_to_string(fx.state_path("openclaw.json")).expect("read");
        fx.config(&c.replace("dmPolicy: \"pairing\"", "dmPolicy: \"open\""));
    }),
    ("session.dm-scope", |fx| {
        let c = fs::read_to_string(fx.state_path("openclaw.json")).expect("read");
        fx.config(&c.replace("dmScope: \"per-channel-peer\"", "dmScope: \"main\""));
    }),
    ("sandbox.off", |fx| {
        let c = fs::read_to_string(fx.state_path("openclaw.json")).expect("read");
        fx.config(&c.replace("mode: \"non-main\"", "mode: \"off\""));
    }),
    ("guard.attribution", |fx| {
        let c = fs::read_to_string(fx.state_path("openclaw.json")).expect("read");
        fx.config(&c.replace(
            "\"openclaw-guard\": { enabled: true }",
            "\"openclaw-guard\": { enabled: false }",
        ));
    }),
    ("config.invalid", |fx| {
        // A broken legacy config: the primary config stays readable.
        let legacy = fx.home.join(".clawdbot");
        fs::create_dir_all(&legacy).expect("mkdir");
        chmod(&legacy, 0o700);
        let p = legacy.join("clawdbot.json");
        fs::write(&p, "{ gateway: { port: 18789 ").expect("write");
        chmod(&p, 0o600);
        if euid() == 0 {
            chown_tree(&legacy, owner_uid());
        }
    }),
    ("config.secrets", |fx| {
        let c = fs::read_to_string(fx.state_path("openclaw.json")).expect("read");
        let c = c.replace(
            "agents: {",
            &format!("models: {{ providers: {{ anthropic: {{ apiKey: \"{ANTHROPIC_KEY}\" }} }} }},\n  agents: {{"),
        );
        fx.config(&c.replace("${TELEGRAM_BOT_TOKEN}", TELEGRAM_TOKEN));
    }),
    ("gateway.root", |fx| {
        fx.write(
            "proc/5000/cmdline",
            "/usr/bin/node\0/usr/lib/node_modules/openclaw/openclaw.mjs\0gateway\0",
            0o444,
        );
        fx.write(
            "proc/5000/status",
            "Name:\topenclaw\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n",
            0o444,
        );
    }),
    ("perms.state-dir", |fx| chmod(&fx.state, 0o755)),
    ("perms.secret-files", |fx| {
        chmod(&fx.state_path(".env"), 0o644);
        chmod(&fx.state_path("credentials"), 0o750);
        chmod(
            &fx.state_path("agents/main/agent/auth-profiles.json"),
            0o640,
        );
    }),
    ("perms.state-files", |fx| {
        chmod(&fx.state_path("agents/main/sessions/s1.jsonl"), 0o644);
    }),
    ("perms.owner", |fx| {
        std::os::unix::fs::lchown(fx.state_path("workspace/AGENTS.md"), Some(1234), Some(1234))
            .expect("chown");
    }),
    ("ssh.root-login", |fx| {
        fx.write(
            "etc/ssh/sshd_config.d/01-cloud.conf",
            "PermitRootLogin yes\n",
            0o644,
        );
    }),
    ("ssh.password-auth", |fx| {
        fx.remove("etc/ssh/sshd_config.d/50-hardening.conf")
    }),
    ("firewall.missing", |fx| fx.remove("etc/nftables.conf")),
    ("firewall.gateway-allowed", |fx| {
        fx.write(
            "etc/ufw/user.rules",
            "*filter\n:ufw-user-input - [0:0]\n### tuple ### allow tcp 18789 0.0.0.0/0 any 0.0.0.0/0 in\n-A ufw-user-input -p tcp --dport 18789 -j ACCEPT\nCOMMIT\n",
            0o640,
        );
    }),
    ("updates.auto", |fx| {
        fx.write(
            "etc/apt/apt.conf.d/20auto-upgrades",
            "APT::Periodic::Unattended-Upgrade \"0\";\n",
            0o644,
        );
    }),
    ("bruteforce.blocker", |fx| {
        fx.write(
            "var/lib/dpkg/status",
            "Package: unattended-upgrades\nStatus: install ok installed\n\nPackage: fail2ban\nStatus: deinstall ok config-files\n",
            0o644,
        );
    }),
    ("kernel.bpf-lsm", |fx| {
        fx.write(
            "sys/kernel/security/lsm",
            "lockdown,capability,landlock,yama,apparmor",
            0o444,
        );
    }),
    ("kernel.ftrace-off", |fx| {
        fx.write("proc/sys/kernel/ftrace_enabled", "0\n", 0o444);
    }),
    ("kernel.ptrace-open", |fx| {
        fx.write("proc/sys/kernel/yama/ptrace_scope", "0\n", 0o444);
    }),
    ("kernel.unprivileged-bpf", |fx| {
        fx.write("proc/sys/kernel/unprivileged_bpf_disabled", "0\n", 0o444);
    }),
    ("kernel.io-uring-unwatched", |fx| {
        // Without BPF LSM (its own finding too) io_uring opens go unseen.
        fx.write("proc/sys/kernel/io_uring_disabled", "0\n", 0o444);
        fx.write(
            "sys/kernel/security/lsm",
            "lockdown,capability,landlock,yama,apparmor",
            0o444,
        );
    }),
];

#[test]
fn kernel_facts_reported() {
    let fx = Fixture::hardened();
    let k = fx.report().kernel;
    assert_eq!(k.release.as_deref(), Some("6.12.0-test"));
    assert_eq!(k.bpf_lsm, Some(true));
    assert_eq!(k.lockdown.as_deref(), Some("none"));
    assert_eq!(k.ftrace_enabled, Some(true));
    assert_eq!(k.lsm.map(|l| l.len()), Some(6));
    assert_eq!(k.ptrace_scope, Some(1));
    assert_eq!(k.unprivileged_bpf_disabled, Some(2));
    assert_eq!(k.io_uring_disabled, Some(2));
    // No securityfs: unknown, the check skipped, not passed.
    std::fs::remove_file(fx.root.join("sys/kernel/security/lsm")).expect("rm");
    let r = fx.report();
    assert_eq!(r.kernel.bpf_lsm, None);
    assert!(r
        .checks
        .iter()
        .any(|c| c.id == "kernel.bpf-lsm" && c.status == super::CheckStatus::Skip));
}

#[test]
fn every_check_has_a_mutation() {
    let ids: BTreeSet<&str> = CHECKS.iter().map(|c| c.id).collect();
    let mutated: BTreeSet<&str> = MUTATIONS.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, mutated);
    assert_eq!(CHECKS.len(), ids.len(), "duplicate check id");
}

#[test]
fn hardened_fixture_yields_no_finding() {
    let fx = Fixture::hardened();
    let r = fx.report();
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_eq!(r.summary.exit_code, 0);
    // Every check ran except config.invalid for the legacy file, which is absent...
    let skipped: Vec<_> = r
        .checks
        .iter()
        .filter(|c| c.status == super::CheckStatus::Skip)
        .map(|c| c.id)
        .collect();
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(r.state_dirs, vec![fx.state.display().to_string()]);
    assert_eq!(r.gateway_ports, vec!["18789-18793,18800-18899".to_owned()]);
}

/// For every check: the hardened tree plus that one problem fails exactly that check.
#[test]
fn each_check_fails_alone() {
    for (id, apply) in MUTATIONS {
        if *id == "perms.owner" && euid() != 0 {
            eprintln!("skipping perms.owner: chown needs root");
            continue;
        }
        let fx = Fixture::hardened();
        apply(&fx);
        let r = fx.report();
        let ids: BTreeSet<&str> = r.findings.iter().map(|f| f.id).collect();
        // io_uring matters only without BPF LSM: that one cannot fail alone.
        let mut want = BTreeSet::from([*id]);
        if *id == "kernel.io-uring-unwatched" {
            want.insert("kernel.bpf-lsm");
        }
        assert_eq!(ids, want, "mutation {id}: {:#?}", r.findings);
        let f = r.findings.iter().find(|f| f.id == *id).expect("finding");
        assert!(!f.evidence.is_empty() && !f.why.is_empty() && !f.fix.is_empty());
    }
}

#[test]
fn bad_fixture_yields_every_finding() {
    let fx = Fixture::bad();
    let r = fx.report();
    let got: BTreeSet<&str> = r.findings.iter().map(|f| f.id).collect();
    let mut want: BTreeSet<&str> = CHECKS.iter().map(|c| c.id).collect();
    if euid() != 0 {
        want.remove("perms.owner");
    }
    assert_eq!(got, want);
    assert_eq!(r.summary.exit_code, 1);
    // Findings are sorted by severity, highest first.
    let sev: Vec<Severity> = r.findings.iter().map(|f| f.severity).collect();
    let mut sorted = sev.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(sev, sorted);
    let ev = |id: &str| {
        r.findings
            .iter()
            .find(|f| f.id == id)
            .map(|f| f.evidence.join("\n"))
            .unwrap_or_default()
    };
    let listen = ev("net.listen");
    assert!(listen.contains("tcp LISTEN 0.0.0.0:18789"), "{listen}");
    assert!(listen.contains("[::ffff:0.0.0.0]:18800"), "{listen}");
    assert!(listen.contains("[::]:18791"), "{listen}");
    assert!(listen.contains("udp 192.0.2.1:18792"), "{listen}");
    assert!(!listen.contains("18790"), "loopback listed: {listen}");
    assert!(ev("ssh.root-login").contains("01-cloud.conf:1"));
    assert!(ev("ssh.password-auth").contains("default: yes"));
    assert!(ev("gateway.root").contains("pid 5000"));
    let secrets = ev("perms.secret-files");
    assert!(secrets.contains(".env mode 0644 (want 0600)"), "{secrets}");
    assert!(
        secrets.contains("credentials mode 0750 (want 0700)"),
        "{secrets}"
    );
}

/// Alternative hardened forms still pass.
#[test]
fn passing_variants() {
    let variants: &[(&str, Mutation)] = &[
        (
            "bind 127.0.0.1, dmScope per-account-channel-peer, sandbox all",
            |fx| {
                let c = fs::read_to_string(fx.state_path("openclaw.json")).expect("read");
                fx.config(
                    &c.replace("bind: \"loopback\"", "bind: \"127.0.0.1\"")
                        .replace("per-channel-peer", "per-account-channel-peer")
                        .replace("mode: \"non-main\"", "mode: \"all\""),
                );
            },
        ),
        (
            "plain JSON config, token from .env, single-sender allowlist",
            |fx| {
                fx.config(
                r#"{"gateway":{"bind":"loopback"},"channels":{"slack":{"dmPolicy":"allowlist","allowFrom":["U1"]}},"agents":{"defaults":{"sandbox":{"mode":"all"}}},"plugins":{"allow":["openclaw-guard"],"entries":{"openclaw-guard":{"enabled":true}}}}"#,
            );
                fs::write(
                    fx.state_path(".env"),
                    "OPENCLAW_GATEWAY_TOKEN=abcdef0123456789\n",
                )
                .expect("write");
            },
        ),
        (
            "firewall via ufw instead of nftables, no rule dumps",
            |fx| {
                fx.remove("etc/nftables.conf");
                fx.remove("var/lib/openclaw-guard/audit/iptables-save.txt");
                fx.write(
                    "etc/ufw/ufw.conf",
                    "# ufw\nENABLED=yes\nLOGLEVEL=low\n",
                    0o644,
                );
                fx.write(
                "etc/ufw/user.rules",
                "*filter\n:ufw-user-input - [0:0]\n-A ufw-user-input -p tcp --dport 22 -j ACCEPT\n-A ufw-user-input -i lo -p tcp --dport 18789 -j ACCEPT\nCOMMIT\n",
                0o640,
            );
            },
        ),
        (
            "iptables INPUT DROP dump, sshguard from config dir, root login in Match only",
            |fx| {
                fx.remove("etc/nftables.conf");
                fx.write(
                "var/lib/openclaw-guard/audit/iptables-save.txt",
                "*filter\n:INPUT DROP [0:0]\n-A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n",
                0o644,
            );
                fx.write(
                    "var/lib/dpkg/status",
                    "Package: unattended-upgrades\nStatus: install ok installed\n",
                    0o644,
                );
                fx.write("etc/sshguard/sshguard.conf", "BACKEND=x\n", 0o644);
                fx.write(
                "etc/ssh/sshd_config",
                "PermitRootLogin no\nPasswordAuthentication no\nMatch Address 10.0.0.0/8\n  PermitRootLogin yes\n",
                0o644,
            );
            },
        ),
        ("custom bind on loopback, stricter modes (0400)", |fx| {
            let c = fs::read_to_string(fx.state_path("openclaw.json")).expect("read");
            fx.config(&c.replace(
                "bind: \"loopback\"",
                "bind: \"custom\", customBindHost: \"127.0.0.1\"",
            ));
            chmod(&fx.state_path(".env"), 0o400);
        }),
    ];
    for (name, apply) in variants {
        let fx = Fixture::hardened();
        apply(&fx);
        let r = fx.report();
        assert!(r.findings.is_empty(), "{name}: {:#?}", r.findings);
    }
}

#[test]
fn state_dir_found_without_home_from_gateway_environ() {
    let fx = Fixture::hardened();
    // Move the state dir where OPENCLAW_STATE_DIR in the gateway's environment says.
    let moved = fx.root.join("srv/oc");
    fs::create_dir_all(moved.parent().expect("parent")).expect("mkdir");
    fs::rename(&fx.state, &moved).expect("rename");
    fx.write(
        "proc/4242/environ",
        "HOME=/home/alice\0OPENCLAW_STATE_DIR=/srv/oc\0",
        0o400,
    );
    let r = audit(&AuditOptions {
        root: Some(fx.root.clone()),
        ..AuditOptions::default()
    })
    .expect("audit");
    assert_eq!(r.state_dirs, vec![moved.display().to_string()]);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn gateway_port_from_config_moves_the_port_list() {
    let fx = Fixture::hardened();
    fx.remove("proc/4242/cmdline");
    fs::write(fx.root.join("proc/4242/cmdline"), "openclaw\0").expect("write");
    let c = fs::read_to_string(fx.state_path("openclaw.json")).expect("read");
    fx.config(&c.replace("port: 18789", "port: 20000"));
    // 0.0.0.0:20003 is P+3 for P = 20000.
    fx.write(
        "proc/net/tcp",
        &format!("{TCP_HEADER}{}", tcp_line(0, "00000000", 20003, "0A")),
        0o444,
    );
    let r = fx.report();
    assert_eq!(r.gateway_ports, vec!["20000-20004,18800-18899".to_owned()]);
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    assert!(r.findings[0].evidence[0].contains("0.0.0.0:20003"));
}

#[test]
fn secrets_are_masked_everywhere() {
    let fx = Fixture::hardened();
    fx.config(
        &SECRETS_CONFIG
            .replace("TELEGRAM", TELEGRAM_TOKEN)
            .replace("ANTHROPIC", ANTHROPIC_KEY),
    );
    let r = fx.report();
    let f = r
        .findings
        .iter()
        .find(|f| f.id == "config.secrets")
        .expect("finding");
    let ev = f.evidence.join("\n");
    assert!(
        ev.contains("models.providers.anthropic.apiKey: Anthropic API key sk-ant-… (45 chars)"),
        "{ev}"
    );
    assert!(
        ev.contains("channels.telegram.botToken: Telegram bot token 123… (45 chars)"),
        "{ev}"
    );
    for json in [false, true] {
        let mut out = Vec::new();
        run_to(&AuditOptions { json, ..fx.args() }, &mut out).expect("run");
        let out = String::from_utf8(out).expect("utf8");
        assert!(
            !out.contains(ANTHROPIC_KEY) && !out.contains(&ANTHROPIC_KEY[..12]),
            "{out}"
        );
        assert!(!out.contains(TELEGRAM_TOKEN) && !out.contains(&TELEGRAM_TOKEN[..12]));
    }
    for s in [
        "xoxb-1234567890-abcdefghij",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "sk-proj-abcdefghijklmnopqrstuv",
    ] {
        assert!(checks::secret_kind(s).is_some(), "{s}");
    }
    for s in [
        "${ANTHROPIC_API_KEY}",
        "per-channel-peer",
        "4f1c2d0e9b8a7f6e5d4c3b2a19081726",
        "sk-short",
    ] {
        assert!(checks::secret_kind(s).is_none(), "{s}");
    }
}

#[test]
fn exit_codes_and_fail_on() {
    let code = |fx: &Fixture, fail_on: Severity| {
        let mut out = Vec::new();
        run_to(
            &AuditOptions {
                fail_on,
                ..fx.args()
            },
            &mut out,
        )
        .expect("run")
    };
    let fx = Fixture::hardened();
    assert_eq!(code(&fx, Severity::Info), 0);
    // A low finding only: passes the default (medium), fails --fail-on low.
    chmod(&fx.state_path("workspace/AGENTS.md"), 0o644);
    assert_eq!(code(&fx, super::DEFAULT_FAIL_ON), 0);
    assert_eq!(code(&fx, Severity::Low), 1);
    let bad = Fixture::bad();
    assert_eq!(code(&bad, Severity::Critical), 1);
    // Usage errors.
    let mut out = Vec::new();
    let missing = AuditOptions {
        root: Some(fx.root.join("nope")),
        ..AuditOptions::default()
    };
    assert_eq!(run_to(&missing, &mut out).expect("run"), 2);
}

#[test]
fn human_output_is_grouped_with_summary() {
    let fx = Fixture::bad();
    let mut out = Vec::new();
    run_to(&fx.args(), &mut out).expect("run");
    let out = String::from_utf8(out).expect("utf8");
    let pos = |s: &str| {
        out.find(s)
            .unwrap_or_else(|| panic!("{s} missing in\n{out}"))
    };
    assert!(
        pos("\nCRITICAL (1)") < pos("\nHIGH (")
            && pos("\nHIGH (") < pos("\nMEDIUM (")
            && pos("\nMEDIUM (") < pos("\nLOW (")
    );
    assert!(out.contains("  [net.listen] Gateway port listening beyond loopback"));
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("Summary: ") && last.ends_with("-> exit 1"),
        "{last}"
    );
}

/// Must-show 3: `--fix` on the bad tree, then the permission findings are gone and
/// nothing outside the state dir changed.
#[test]
fn fix_repairs_permissions_and_touches_nothing_outside() {
    let fx = Fixture::bad();
    let sibling = fx.home.join("notes.txt");
    let outside = fx.root.join("etc/outside-secret");
    fs::write(&outside, "x").expect("write");
    chmod(&outside, 0o644);
    // A link from the state dir to a file outside it: must not be followed.
    std::os::unix::fs::symlink(&outside, fx.state_path("link-out")).expect("symlink");
    let before = |p: &Path| {
        let m = fs::symlink_metadata(p).expect("stat");
        (m.mode(), m.uid(), m.gid())
    };
    let (sib0, out0, home0) = (before(&sibling), before(&outside), before(&fx.home));

    let first = fx.report();
    let perm_ids = [
        "perms.state-dir",
        "perms.secret-files",
        "perms.state-files",
        "perms.owner",
    ];
    assert!(first.findings.iter().any(|f| perm_ids.contains(&f.id)));

    let mut out = Vec::new();
    let code = run_to(
        &AuditOptions {
            fix: true,
            ..fx.args()
        },
        &mut out,
    )
    .expect("run");
    let out = String::from_utf8(out).expect("utf8");
    assert_eq!(code, 1, "other findings remain");
    assert!(
        out.contains(&format!("chmod {}: 0755 -> 0700", fx.state.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "chmod {}: 0644 -> 0600",
            fx.state_path(".env").display()
        )),
        "{out}"
    );
    if euid() == 0 {
        let p = fx.state_path("workspace/AGENTS.md");
        let u = owner_uid();
        assert!(
            out.contains(&format!("chown {}: 1234:1234 -> {u}:{u}", p.display())),
            "{out}"
        );
        assert_eq!(fs::metadata(&p).expect("stat").uid(), u);
    }
    assert!(!out.contains("NOT DONE"), "{out}");

    let after = fx.report();
    let left: Vec<&str> = after
        .findings
        .iter()
        .map(|f| f.id)
        .filter(|id| id.starts_with("perms."))
        .collect();
    assert!(left.is_empty(), "{:#?}", after.findings);
    assert_eq!(
        after.findings.len(),
        first.findings.len()
            - (first
                .findings
                .iter()
                .filter(|f| f.id.starts_with("perms."))
                .count())
    );
    assert_eq!(mode_of(&fx.state), 0o700);
    assert_eq!(mode_of(&fx.state_path(".env")), 0o600);
    assert_eq!(mode_of(&fx.state_path("credentials")), 0o700);
    assert_eq!(
        mode_of(&fx.state_path("agents/main/agent/auth-profiles.json")),
        0o600
    );
    assert_eq!(before(&sibling), sib0, "sibling of the state dir changed");
    assert_eq!(before(&outside), out0, "symlink target outside changed");
    assert_eq!(before(&fx.home), home0, "home dir changed");
}

#[test]
fn fix_refuses_hard_links() {
    let fx = Fixture::hardened();
    let outside = fx.home.join("shared.txt");
    fs::write(&outside, "x").expect("write");
    chmod(&outside, 0o644);
    fs::hard_link(&outside, fx.state_path("workspace/shared.txt")).expect("link");
    let r = audit(&AuditOptions {
        fix: true,
        ..fx.args()
    })
    .expect("audit");
    let rec = r
        .fixes
        .iter()
        .find(|f| f.path.ends_with("workspace/shared.txt") && f.action == "chmod")
        .expect("planned");
    assert!(!rec.applied);
    assert!(
        rec.error.as_deref().unwrap_or("").contains("hard link"),
        "{rec:?}"
    );
    assert_eq!(mode_of(&outside), 0o644);
}

/// Must-show 2: the listening-socket check against real sockets on this host.
#[test]
fn real_sockets_any_vs_loopback() {
    // A gateway port P whose list P..=P+5 is free on this host right now.
    let (p, _hold) = (0..200)
        .find_map(|_| {
            let probe = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
            let p = probe.local_addr().ok()?.port();
            drop(probe);
            if p > 65530 {
                return None;
            }
            let held: Vec<TcpListener> = (1..=5)
                .map(|i| TcpListener::bind((Ipv4Addr::LOCALHOST, p + i)).ok())
                .collect::<Option<_>>()?;
            drop(held);
            Some((p, ()))
        })
        .expect("a free port run");
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join(".openclaw");
    fs::create_dir_all(&state).expect("mkdir");
    fs::write(
        state.join("openclaw.json"),
        format!("{{ gateway: {{ port: {p} }} }}"),
    )
    .expect("write");

    let any4 = TcpListener::bind((Ipv4Addr::UNSPECIFIED, p + 2)).expect("bind 0.0.0.0");
    let any6 = TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, p))).ok();
    let lo4 = TcpListener::bind((Ipv4Addr::LOCALHOST, p + 1)).expect("bind 127.0.0.1");
    let lo6 = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, p + 3))).ok();
    let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, p + 4)).expect("bind udp");
    let outside = TcpListener::bind((Ipv4Addr::UNSPECIFIED, p + 5)).ok();

    let r = audit(&AuditOptions {
        home: Some(tmp.path().to_path_buf()),
        ..AuditOptions::default()
    })
    .expect("audit");
    assert!(
        r.gateway_ports
            .contains(&format!("{p}-{},18800-18899", p + 4)),
        "{:?}",
        r.gateway_ports
    );
    let ev: Vec<String> = r
        .findings
        .iter()
        .filter(|f| f.id == "net.listen")
        .flat_map(|f| f.evidence.clone())
        .collect();
    let has = |needle: &str| ev.iter().any(|e| e.contains(needle));
    assert!(has(&format!("tcp LISTEN 0.0.0.0:{}", p + 2)), "{ev:#?}");
    assert!(has(&format!("udp 0.0.0.0:{}", p + 4)), "{ev:#?}");
    if any6.is_some() {
        assert!(has(&format!("tcp LISTEN [::]:{p} ")), "{ev:#?}");
    } else {
        eprintln!("IPv6 unavailable: [::] case not exercised");
    }
    assert!(!has(&format!(":{} ", p + 1)), "127.0.0.1 reported: {ev:#?}");
    assert!(!has(&format!(":{} ", p + 3)), "[::1] reported: {ev:#?}");
    assert!(
        !has(&format!(":{} ", p + 5)),
        "port outside the list reported: {ev:#?}"
    );
    drop((any4, any6, lo4, lo6, udp, outside));

    // With only loopback sockets on the list, none of our ports is reported.
    let lo = TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("bind 127.0.0.1");
    let r = audit(&AuditOptions {
        home: Some(tmp.path().to_path_buf()),
        ..AuditOptions::default()
    })
    .expect("audit");
    let ours = r
        .findings
        .iter()
        .filter(|f| f.id == "net.listen")
        .flat_map(|f| &f.evidence)
        .any(|e| (p..=p + 4).any(|q| e.contains(&format!(":{q} "))));
    assert!(!ours, "{:#?}", r.findings);
    drop(lo);
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(ks: &[&str]) -> BTreeSet<String> {
    ks.iter().map(|s| (*s).to_owned()).collect()
}

/// Must-show 4: the JSON schema (docs/audit.md), exact key sets and types.
#[test]
fn json_schema_is_stable() {
    let fx = Fixture::bad();
    let mut out = Vec::new();
    let code = run_to(
        &AuditOptions {
            json: true,
            fix: true,
            ..fx.args()
        },
        &mut out,
    )
    .expect("run");
    assert_eq!(code, 1);
    let v: Value = serde_json::from_slice(&out).expect("valid JSON");
    assert_eq!(
        keys(&v),
        set(&[
            "schema_version",
            "tool",
            "tool_version",
            "root",
            "state_dirs",
            "gateway_ports",
            "fail_on",
            "summary",
            "findings",
            "checks",
            "fixes",
            "kernel",
        ])
    );
    assert_eq!(v["schema_version"], 2);
    assert_eq!(
        keys(&v["kernel"]),
        set(&[
            "release",
            "lsm",
            "bpf_lsm",
            "lockdown",
            "ftrace_enabled",
            "btf",
            "ptrace_scope",
            "unprivileged_bpf_disabled",
            "io_uring_disabled"
        ])
    );
    assert_eq!(v["tool"], "openclaw-guard");
    assert_eq!(v["fail_on"], "medium");
    assert_eq!(
        keys(&v["summary"]),
        set(&[
            "total",
            "critical",
            "high",
            "medium",
            "low",
            "info",
            "failing",
            "passed",
            "skipped",
            "exit_code"
        ])
    );
    assert_eq!(v["summary"]["exit_code"], 1);
    let sev = set(&["info", "low", "medium", "high", "critical"]);
    let findings = v["findings"].as_array().expect("findings array");
    assert!(!findings.is_empty());
    for f in findings {
        assert_eq!(
            keys(f),
            set(&["id", "severity", "title", "evidence", "why", "fix", "fixable"])
        );
        assert!(sev.contains(f["severity"].as_str().expect("severity string")));
        assert!(f["evidence"]
            .as_array()
            .is_some_and(|e| e.iter().all(Value::is_string)));
        assert!(f["fixable"].is_boolean());
    }
    let checks = v["checks"].as_array().expect("checks array");
    let ids: Vec<&str> = checks.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids, CHECKS.iter().map(|c| c.id).collect::<Vec<_>>());
    for c in checks {
        assert_eq!(keys(c), set(&["id", "status", "detail"]));
        assert!(["pass", "fail", "skip"].contains(&c["status"].as_str().expect("status")));
    }
    let fixes = v["fixes"].as_array().expect("fixes array");
    assert!(!fixes.is_empty());
    for f in fixes {
        assert_eq!(
            keys(f),
            set(&["path", "action", "old", "new", "applied", "error"])
        );
        assert!(["chmod", "chown"].contains(&f["action"].as_str().expect("action")));
    }
    assert!(v["state_dirs"]
        .as_array()
        .is_some_and(|a| a.iter().all(Value::is_string)));
    assert!(v["gateway_ports"]
        .as_array()
        .is_some_and(|a| a.iter().all(Value::is_string)));
}
