//! The checks: each reads the host through [`Options`] and records pass, fail (with
//! evidence) or skip (with a reason) under its catalogue id.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use serde_json::Value;

use super::{
    display,
    host::{self, GatewayProc, Install, Options},
    perms::{self, ExpectedOwner, FixAction, PermScan},
    procnet,
    report::{CheckResult, CheckStatus, Finding, Report, Severity, Summary},
    rules, sshd, CHECKS, SCHEMA_VERSION,
};
use crate::openclaw::{self, GatewayPorts};

/// At most this many evidence lines per finding.
const MAX_EVIDENCE: usize = 50;

#[derive(Debug, Default)]
struct CheckState {
    ran: bool,
    evidence: Vec<String>,
    skip: Vec<String>,
}

/// Everything one audit pass found.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    states: BTreeMap<&'static str, CheckState>,
    pub(super) fix_plan: Vec<FixAction>,
    state_dirs: Vec<String>,
    ports: Vec<GatewayPorts>,
    kernel: super::report::KernelFacts,
}

impl Outcome {
    fn state(&mut self, id: &'static str) -> &mut CheckState {
        debug_assert!(super::check_def(id).is_some(), "unknown check {id}");
        self.states.entry(id).or_default()
    }
    fn pass(&mut self, id: &'static str) {
        self.state(id).ran = true;
    }
    fn fail(&mut self, id: &'static str, evidence: impl IntoIterator<Item = String>) {
        let s = self.state(id);
        s.ran = true;
        s.evidence.extend(evidence);
    }
    /// Pass when `evidence` is empty, fail otherwise.
    fn verdict(&mut self, id: &'static str, evidence: Vec<String>) {
        self.fail(id, evidence);
    }
    fn skip(&mut self, id: &'static str, reason: impl Into<String>) {
        let r = reason.into();
        let s = self.state(id);
        if !s.skip.contains(&r) {
            s.skip.push(r);
        }
    }

    pub(super) fn into_report(
        self,
        opts: &Options,
        fail_on: Severity,
        fixes: Vec<super::FixRecord>,
    ) -> Report {
        let mut findings = Vec::new();
        let mut checks = Vec::new();
        for def in CHECKS {
            let st = self.states.get(def.id);
            let (status, detail) = match st {
                Some(s) if !s.evidence.is_empty() => {
                    let mut ev = s.evidence.clone();
                    if ev.len() > MAX_EVIDENCE {
                        let more = ev.len() - MAX_EVIDENCE;
                        ev.truncate(MAX_EVIDENCE);
                        ev.push(format!("... and {more} more"));
                    }
                    findings.push(Finding {
                        id: def.id,
                        severity: def.severity,
                        title: def.title,
                        evidence: ev,
                        why: def.why,
                        fix: def.fix,
                        fixable: def.fixable,
                    });
                    (CheckStatus::Fail, None)
                }
                Some(s) if s.ran => (CheckStatus::Pass, None),
                Some(s) if !s.skip.is_empty() => (CheckStatus::Skip, Some(s.skip.join("; "))),
                _ => (CheckStatus::Skip, Some("not applicable".to_owned())),
            };
            checks.push(CheckResult {
                id: def.id,
                status,
                detail,
            });
        }
        // Stable: catalogue order within a severity.
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        let mut s = Summary {
            total: findings.len(),
            ..Summary::default()
        };
        for f in &findings {
            match f.severity {
                Severity::Critical => s.critical += 1,
                Severity::High => s.high += 1,
                Severity::Medium => s.medium += 1,
                Severity::Low => s.low += 1,
                Severity::Info => s.info += 1,
            }
        }
        s.failing = findings.iter().filter(|f| f.severity >= fail_on).count();
        s.passed = checks
            .iter()
            .filter(|c| c.status == CheckStatus::Pass)
            .count();
        s.skipped = checks
            .iter()
            .filter(|c| c.status == CheckStatus::Skip)
            .count();
        s.exit_code = i32::from(s.failing > 0);
        let mut ports: Vec<String> = self.ports.iter().map(ToString::to_string).collect();
        ports.dedup();
        Report {
            schema_version: SCHEMA_VERSION,
            tool: "openclaw-guard",
            tool_version: env!("CARGO_PKG_VERSION"),
            root: display(&opts.root),
            state_dirs: self.state_dirs,
            gateway_ports: ports,
            fail_on,
            summary: s,
            findings,
            checks,
            fixes,
            kernel: self.kernel,
        }
    }
}

/// Runs every check once.
pub(super) fn run_all(opts: &Options) -> Outcome {
    let mut o = Outcome::default();
    let gateways = host::gateway_processes(opts);
    let installs = host::installs(opts, &gateways);

    check_gateway_root(opts, &gateways, &mut o);
    if installs.is_empty() {
        let why = "no OpenClaw state directory found (use --home DIR)";
        for id in STATE_CHECKS {
            o.skip(id, why);
        }
        o.ports.push(GatewayPorts::default());
    }
    for inst in &installs {
        check_install(inst, &mut o);
    }
    check_sockets(opts, &mut o);
    check_rules(opts, &mut o);
    check_sshd(opts, &mut o);
    check_packages(opts, &mut o);
    check_kernel(opts, &mut o);
    o
}

/// What the kernel gives the guard: BPF LSM in the active LSM list, function tracing
/// on (BPF LSM programs run through its trampolines), lockdown, BTF.
fn check_kernel(opts: &Options, o: &mut Outcome) {
    let read = |p: &str| opts.read(p).map(|s| s.trim().to_owned());
    let lsm: Option<Vec<String>> = read("/sys/kernel/security/lsm")
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(str::to_owned).collect());
    let facts = super::report::KernelFacts {
        release: read("/proc/sys/kernel/osrelease"),
        bpf_lsm: lsm.as_ref().map(|l| l.iter().any(|m| m == "bpf")),
        lsm,
        lockdown: read("/sys/kernel/security/lockdown").and_then(|s| {
            s.split('[')
                .nth(1)
                .and_then(|m| m.split(']').next())
                .map(str::to_owned)
        }),
        ftrace_enabled: read("/proc/sys/kernel/ftrace_enabled").map(|s| s != "0"),
        btf: opts.path("/sys/kernel/btf/vmlinux").exists(),
        ptrace_scope: read("/proc/sys/kernel/yama/ptrace_scope").and_then(|s| s.parse().ok()),
        unprivileged_bpf_disabled: read("/proc/sys/kernel/unprivileged_bpf_disabled")
            .and_then(|s| s.parse().ok()),
        io_uring_disabled: read("/proc/sys/kernel/io_uring_disabled").and_then(|s| s.parse().ok()),
    };
    match facts.bpf_lsm {
        Some(true) => o.pass("kernel.bpf-lsm"),
        Some(false) => o.fail(
            "kernel.bpf-lsm",
            [format!(
                "/sys/kernel/security/lsm: {}",
                facts.lsm.as_deref().unwrap_or_default().join(",")
            )],
        ),
        None => o.skip(
            "kernel.bpf-lsm",
            "securityfs not mounted (mount -t securityfs none /sys/kernel/security to check)",
        ),
    }
    match facts.ftrace_enabled {
        Some(true) => o.pass("kernel.ftrace-off"),
        Some(false) => o.fail(
            "kernel.ftrace-off",
            ["/proc/sys/kernel/ftrace_enabled: 0".to_owned()],
        ),
        None => o.skip("kernel.ftrace-off", "no /proc/sys/kernel/ftrace_enabled"),
    }
    match facts.ptrace_scope {
        Some(0) => o.fail(
            "kernel.ptrace-open",
            ["/proc/sys/kernel/yama/ptrace_scope: 0".to_owned()],
        ),
        Some(_) => o.pass("kernel.ptrace-open"),
        None => o.fail(
            "kernel.ptrace-open",
            ["no Yama (/proc/sys/kernel/yama/ptrace_scope missing)".to_owned()],
        ),
    }
    match facts.unprivileged_bpf_disabled {
        Some(0) => o.fail(
            "kernel.unprivileged-bpf",
            ["/proc/sys/kernel/unprivileged_bpf_disabled: 0".to_owned()],
        ),
        Some(_) => o.pass("kernel.unprivileged-bpf"),
        None => o.skip(
            "kernel.unprivileged-bpf",
            "no kernel.unprivileged_bpf_disabled",
        ),
    }
    // io_uring opens bypass the open tracepoints: it matters only without BPF LSM.
    match (facts.bpf_lsm, facts.io_uring_disabled) {
        (Some(true), _) => o.pass("kernel.io-uring-unwatched"),
        (_, Some(n)) if n > 0 => o.pass("kernel.io-uring-unwatched"),
        (Some(false), v) => o.fail(
            "kernel.io-uring-unwatched",
            [match v {
                Some(_) => "/proc/sys/kernel/io_uring_disabled: 0, no BPF LSM".to_owned(),
                None => "io_uring always on (no kernel.io_uring_disabled), no BPF LSM".to_owned(),
            }],
        ),
        (None, _) => o.skip(
            "kernel.io-uring-unwatched",
            "BPF LSM state unknown (securityfs)",
        ),
    }
    o.kernel = facts;
}

const STATE_CHECKS: [&str; 11] = [
    "config.invalid",
    "gateway.bind",
    "gateway.auth",
    "channels.dm-open",
    "session.dm-scope",
    "sandbox.off",
    "config.secrets",
    "perms.state-dir",
    "perms.secret-files",
    "perms.state-files",
    "perms.owner",
];

const CONFIG_CHECKS: [&str; 7] = [
    "gateway.bind",
    "gateway.auth",
    "channels.dm-open",
    "session.dm-scope",
    "sandbox.off",
    "guard.attribution",
    "config.secrets",
];

fn is_dir(p: &Path) -> bool {
    p.symlink_metadata().is_ok_and(|m| m.is_dir())
}

fn check_gateway_root(opts: &Options, gateways: &[GatewayProc], o: &mut Outcome) {
    if gateways.is_empty() {
        o.skip(
            "gateway.root",
            format!(
                "no gateway process found in {}",
                display(&opts.path("/proc"))
            ),
        );
        return;
    }
    let ev = gateways
        .iter()
        .filter(|g| g.uid == 0 || g.euid == 0)
        .map(|g| {
            format!(
                "pid {} uid {} euid {}: {}",
                g.pid,
                g.uid,
                g.euid,
                g.cmdline()
            )
        })
        .collect();
    o.verdict("gateway.root", ev);
}

fn check_install(inst: &Install, o: &mut Outcome) {
    let dirs: Vec<&Path> = inst.loc.all_state_dirs().filter(|p| is_dir(p)).collect();
    let Some(&main_dir) = dirs.first() else {
        let why = format!("no state directory at {}", display(&inst.loc.state_dir));
        for id in STATE_CHECKS {
            o.skip(id, why.clone());
        }
        o.ports.push(GatewayPorts::default());
        return;
    };
    o.state_dirs.extend(dirs.iter().map(|d| display(d)));

    // The environment that applies: the gateway's, then .env and gateway.env.
    let mut env = inst.env.clone();
    for d in &dirs {
        for f in [".env", "gateway.env"] {
            if let Ok(t) = std::fs::read_to_string(d.join(f)) {
                for (k, v) in host::parse_dotenv(&t) {
                    env.entry(k).or_insert(v);
                }
            }
        }
    }

    // Config.
    let config_path = &inst.loc.config_path;
    let config = match std::fs::read_to_string(config_path) {
        Ok(t) => match openclaw::parse_config(&t) {
            Ok(v) => {
                o.pass("config.invalid");
                Some(v)
            }
            Err(e) => {
                o.fail("config.invalid", [format!("{}: {e}", display(config_path))]);
                for id in CONFIG_CHECKS {
                    o.skip(id, format!("{} does not parse", display(config_path)));
                }
                None
            }
        },
        // No config: OpenClaw runs on defaults, which the checks below judge.
        Err(_) => {
            o.skip("config.invalid", format!("no {}", display(config_path)));
            Some(Value::Object(serde_json::Map::new()))
        }
    };

    let gw_argv: &[String] = inst.gateway.as_ref().map_or(&[], |g| g.argv.as_slice());
    let port = openclaw::cmdline_gateway_port(gw_argv)
        .or_else(|| config.as_ref().and_then(openclaw::config_gateway_port))
        .or_else(|| {
            env.get(openclaw::GATEWAY_PORT_ENV)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(openclaw::DEFAULT_GATEWAY_PORT);
    o.ports.push(GatewayPorts::new(port));

    if let Some(cfg) = &config {
        let cfg_name = display(config_path);
        check_bind(cfg, &cfg_name, inst.gateway.as_ref(), o);
        check_auth(cfg, &cfg_name, &env, o);
        check_channels(cfg, o);
        check_sandbox(cfg, o);
        check_attribution(cfg, o);
        let mut secrets = Vec::new();
        scan_secrets(cfg, &mut String::new(), &mut |path, what| {
            secrets.push(format!("{cfg_name}: {path}: {what}"));
        });
        o.verdict("config.secrets", secrets);
    }
    // Legacy config files hold the same keys; a broken one is reported too.
    for d in dirs.iter().filter(|d| **d != inst.loc.state_dir) {
        for name in openclaw::LEGACY_CONFIG_FILE_NAMES {
            let p = d.join(name);
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            match openclaw::parse_config(&text) {
                Ok(v) => {
                    let mut secrets = Vec::new();
                    scan_secrets(&v, &mut String::new(), &mut |path, what| {
                        secrets.push(format!("{}: {path}: {what}", display(&p)));
                    });
                    o.verdict("config.secrets", secrets);
                }
                Err(e) => o.fail("config.invalid", [format!("{}: {e}", display(&p))]),
            }
        }
    }

    // Permissions and ownership.
    let expected = match &inst.gateway {
        Some(g) => ExpectedOwner {
            uid: g.uid,
            gid: g.gid,
            source: format!("the gateway's user, pid {}", g.pid),
        },
        None => {
            let (uid, gid) = host::owner(main_dir).unwrap_or((0, 0));
            ExpectedOwner {
                uid,
                gid,
                source: format!("owner of {}", display(main_dir)),
            }
        }
    };
    let mut scan = PermScan::default();
    for d in &dirs {
        perms::scan(d, &expected, &mut scan);
    }
    if scan.truncated {
        scan.state_files
            .push("(walk stopped after 100000 entries; run again on a smaller tree)".to_owned());
    }
    o.verdict("perms.state-dir", scan.state_dir);
    o.verdict("perms.secret-files", scan.secret_files);
    o.verdict("perms.state-files", scan.state_files);
    o.verdict("perms.owner", scan.owner);
    o.fix_plan.extend(scan.plan);
}

fn check_bind(cfg: &Value, cfg_name: &str, gw: Option<&GatewayProc>, o: &mut Outcome) {
    if let Some((g, bind)) =
        gw.and_then(|g| openclaw::cmdline_gateway_bind(&g.argv).map(|b| (g, b)))
    {
        let ev = (!openclaw::bind_is_loopback(bind))
            .then(|| format!("pid {}: --bind {bind}: {}", g.pid, g.cmdline()));
        o.verdict("gateway.bind", ev.into_iter().collect());
        return;
    }
    let ev = match openclaw::config_str(cfg, &["gateway", "bind"]) {
        None => None,
        Some("custom") => {
            let host = openclaw::config_str(cfg, &["gateway", "customBindHost"]).unwrap_or("");
            (!openclaw::bind_is_loopback(host)).then(|| {
                format!("{cfg_name}: gateway.bind = \"custom\", gateway.customBindHost = {host:?}")
            })
        }
        Some(b) => {
            (!openclaw::bind_is_loopback(b)).then(|| format!("{cfg_name}: gateway.bind = {b:?}"))
        }
    };
    o.verdict("gateway.bind", ev.into_iter().collect());
}

fn non_empty(v: Option<&Value>) -> bool {
    match v {
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Object(m)) => !m.is_empty(), // a SecretRef
        _ => false,
    }
}

fn check_auth(cfg: &Value, cfg_name: &str, env: &BTreeMap<String, String>, o: &mut Outcome) {
    let mode = openclaw::config_str(cfg, &["gateway", "auth", "mode"]);
    if mode == Some("none") {
        o.fail(
            "gateway.auth",
            [format!("{cfg_name}: gateway.auth.mode = \"none\"")],
        );
        return;
    }
    let token = non_empty(openclaw::config_get(cfg, &["gateway", "auth", "token"]));
    let password = mode == Some("password")
        && non_empty(openclaw::config_get(cfg, &["gateway", "auth", "password"]));
    let from_env = ["OPENCLAW_GATEWAY_TOKEN", "OPENCLAW_GATEWAY_PASSWORD"]
        .iter()
        .any(|k| env.get(*k).is_some_and(|v| !v.trim().is_empty()));
    let ev = (!(token || password || from_env)).then(|| {
        format!("{cfg_name}: no gateway.auth.token; no OPENCLAW_GATEWAY_TOKEN in .env, gateway.env or the gateway's environment")
    });
    o.verdict("gateway.auth", ev.into_iter().collect());
}

/// Each channel and each of its accounts, with a display path.
fn channel_scopes(cfg: &Value) -> Vec<(String, &serde_json::Map<String, Value>)> {
    let mut out = Vec::new();
    let Some(chans) = cfg.get("channels").and_then(Value::as_object) else {
        return out;
    };
    for (name, ch) in chans {
        let Some(ch) = ch.as_object() else { continue };
        if ch.get("enabled") == Some(&Value::Bool(false)) {
            continue;
        }
        out.push((format!("channels.{name}"), ch));
        if let Some(accts) = ch.get("accounts").and_then(Value::as_object) {
            for (id, a) in accts {
                if let Some(a) = a.as_object() {
                    if a.get("enabled") != Some(&Value::Bool(false)) {
                        out.push((format!("channels.{name}.accounts.{id}"), a));
                    }
                }
            }
        }
    }
    out
}

/// DM scopes that keep each sender in a separate session.
const ISOLATING_DM_SCOPES: &[&str] = &["per-channel-peer", "per-account-channel-peer"];

fn check_channels(cfg: &Value, o: &mut Outcome) {
    let mut open = Vec::new();
    let mut multi = Vec::new();
    for (path, scope) in channel_scopes(cfg) {
        let dm = scope.get("dm");
        let (policy, policy_key) = match scope.get("dmPolicy").and_then(Value::as_str) {
            Some(p) => (Some(p), "dmPolicy"),
            None => (
                dm.and_then(|d| d.get("policy")).and_then(Value::as_str),
                "dm.policy",
            ),
        };
        if policy == Some("open") {
            open.push(format!("{path}.{policy_key} = \"open\""));
            multi.push(format!("{path}.{policy_key} = \"open\""));
        }
        let allow = scope
            .get("allowFrom")
            .or_else(|| dm.and_then(|d| d.get("allowFrom")))
            .and_then(Value::as_array);
        if let Some(list) = allow {
            let distinct: BTreeSet<String> = list.iter().map(ToString::to_string).collect();
            if distinct.contains("\"*\"") && policy != Some("open") {
                multi.push(format!("{path}.allowFrom contains \"*\""));
            } else if distinct.len() > 1 {
                multi.push(format!("{path}.allowFrom has {} senders", distinct.len()));
            }
        }
    }
    o.verdict("channels.dm-open", open);
    let scope = openclaw::config_str(cfg, &["session", "dmScope"]);
    let ev = if multi.is_empty() || scope.is_some_and(|s| ISOLATING_DM_SCOPES.contains(&s)) {
        Vec::new()
    } else {
        let mut ev = vec![match scope {
            Some(s) => format!("session.dmScope = {s:?}"),
            None => "session.dmScope not set (default \"main\": one shared DM session)".to_owned(),
        }];
        ev.extend(multi);
        ev
    };
    o.verdict("session.dm-scope", ev);
}

fn check_sandbox(cfg: &Value, o: &mut Outcome) {
    let mut ev = Vec::new();
    match openclaw::config_str(cfg, &["agents", "defaults", "sandbox", "mode"]) {
        None => ev.push("agents.defaults.sandbox.mode not set (default \"off\")".to_owned()),
        Some("off") => ev.push("agents.defaults.sandbox.mode = \"off\"".to_owned()),
        Some(_) => {}
    }
    if let Some(list) = openclaw::config_get(cfg, &["agents", "list"]).and_then(Value::as_array) {
        for (i, a) in list.iter().enumerate() {
            if openclaw::config_str(a, &["sandbox", "mode"]) == Some("off") {
                let id = a
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| i.to_string(), str::to_owned);
                ev.push(format!("agents.list[{id}].sandbox.mode = \"off\""));
            }
        }
    }
    o.verdict("sandbox.off", ev);
}

/// The guard's plugin (`openclaw-guard plugin write`) is enabled: plugins on, its
/// entry enabled, and allowed where an allow list is kept.
fn check_attribution(cfg: &Value, o: &mut Outcome) {
    const ID: &str = "openclaw-guard";
    let mut ev = Vec::new();
    if openclaw::config_get(cfg, &["plugins", "enabled"]) == Some(&Value::Bool(false)) {
        ev.push("plugins.enabled = false".to_owned());
    }
    match openclaw::config_get(cfg, &["plugins", "entries", ID, "enabled"]) {
        Some(Value::Bool(true)) => {}
        Some(v) => ev.push(format!("plugins.entries.{ID}.enabled = {v}")),
        None => ev.push(format!("plugins.entries.{ID} not set")),
    }
    if let Some(allow) = openclaw::config_get(cfg, &["plugins", "allow"]).and_then(Value::as_array)
    {
        if !allow.iter().any(|a| a == ID) {
            ev.push(format!("plugins.allow does not list {ID}"));
        }
    }
    if openclaw::config_get(cfg, &["plugins", "deny"])
        .and_then(Value::as_array)
        .is_some_and(|d| d.iter().any(|a| a == ID))
    {
        ev.push(format!("plugins.deny lists {ID}"));
    }
    o.verdict("guard.attribution", ev);
}

fn is_token_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Recognises a credential by its shape; returns its kind and how many leading
/// characters may be shown.
pub(super) fn secret_kind(s: &str) -> Option<(&'static str, usize)> {
    let s = s.trim();
    if s.contains(char::is_whitespace) || s.len() < 16 {
        return None;
    }
    let prefixed: &[(&str, &str, usize)] = &[
        ("sk-ant-", "Anthropic API key", 20),
        ("sk-", "API key (sk-)", 20),
        ("xoxb-", "Slack bot token", 15),
        ("xoxp-", "Slack user token", 15),
        ("xapp-", "Slack app token", 15),
        ("xoxa-", "Slack token", 15),
        ("github_pat_", "GitHub token", 30),
        ("ghp_", "GitHub token", 30),
        ("gho_", "GitHub token", 30),
        ("ghs_", "GitHub token", 30),
        ("ghu_", "GitHub token", 30),
        ("AIza", "Google API key", 39),
    ];
    for (prefix, kind, min_len) in prefixed {
        if s.starts_with(prefix) && s.len() >= *min_len && is_token_chars(s) {
            return Some((kind, prefix.len()));
        }
    }
    // Telegram bot token: digits ':' 35 url-safe characters.
    if let Some((id, rest)) = s.split_once(':') {
        if !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && rest.len() == 35
            && is_token_chars(rest)
        {
            return Some(("Telegram bot token", 3.min(id.len())));
        }
    }
    // Discord bot token: three base64url parts joined by dots.
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() == 3
        && parts[0].len() >= 24
        && parts[1].len() == 6
        && parts[2].len() >= 27
        && parts.iter().all(|p| is_token_chars(p))
    {
        return Some(("Discord bot token", 4));
    }
    None
}

/// `prefix… (N chars)`: never more than the recognised prefix.
pub(super) fn mask(s: &str, shown: usize) -> String {
    let s = s.trim();
    let head: String = s.chars().take(shown).collect();
    format!("{head}… ({} chars)", s.chars().count())
}

fn scan_secrets(v: &Value, path: &mut String, hit: &mut dyn FnMut(&str, String)) {
    match v {
        Value::String(s) => {
            if let Some((kind, shown)) = secret_kind(s) {
                hit(path, format!("{kind} {}", mask(s, shown)));
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                scan_secrets(x, path, hit);
                path.truncate(len);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                scan_secrets(x, path, hit);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn check_sockets(opts: &Options, o: &mut Outcome) {
    let mut ports = o.ports.clone();
    ports.sort_by_key(GatewayPorts::gateway);
    ports.dedup();
    let mut read_any = false;
    let mut ev = Vec::new();
    for (table, proto) in procnet::TABLES {
        let path = opts.path(format!("/proc/net/{table}"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        read_any = true;
        for s in procnet::parse_table(&text, proto) {
            if ports.iter().any(|p| p.contains(s.port)) && !procnet::is_loopback(s.addr) {
                ev.push(format!("{s} ({})", display(&path)));
            }
        }
    }
    if read_any {
        o.verdict("net.listen", ev);
    } else {
        o.skip(
            "net.listen",
            format!("cannot read {}", display(&opts.path("/proc/net/tcp"))),
        );
    }
}

fn check_rules(opts: &Options, o: &mut Outcome) {
    let (sources, notes) = rules::collect(opts);
    let ufw = rules::ufw_enabled(opts);
    let mut ports = o.ports.clone();
    ports.dedup();
    let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    if sources.is_empty() {
        let why = if opts.live {
            format!("no NAT/filter rules readable ({})", notes.join("; "))
        } else {
            format!(
                "no rule dumps under {} nor saved rules in /etc",
                display(&opts.path(rules::DUMP_DIR))
            )
        };
        o.skip("net.nat", why.clone());
        o.skip("firewall.gateway-allowed", why);
    } else {
        let mut nat = Vec::new();
        let mut allowed = Vec::new();
        for p in &ports {
            nat.extend(rules::nat_exposures(&sources, p));
            allowed.extend(rules::gateway_allowed(&sources, p));
        }
        nat.dedup();
        allowed.dedup();
        o.verdict("net.nat", nat);
        o.verdict("firewall.gateway-allowed", allowed);
    }
    let present = rules::firewall_evidence(&sources, ufw);
    if present.is_empty() {
        let mut ev = vec![format!(
            "ufw not enabled; no input drop policy in: {}",
            if names.is_empty() {
                "(no rule sources found)".to_owned()
            } else {
                names.join(", ")
            }
        )];
        ev.extend(notes.into_iter().map(|n| format!("not read: {n}")));
        o.fail("firewall.missing", ev);
    } else {
        o.pass("firewall.missing");
    }
}

fn check_sshd(opts: &Options, o: &mut Outcome) {
    let Some(cfg) = sshd::load(opts) else {
        let why = format!("no {}", display(&opts.path("/etc/ssh/sshd_config")));
        o.skip("ssh.root-login", why.clone());
        o.skip("ssh.password-auth", why);
        return;
    };
    for (id, key, default) in [
        ("ssh.root-login", "PermitRootLogin", "prohibit-password"),
        ("ssh.password-auth", "PasswordAuthentication", "yes"),
    ] {
        let ev = match cfg.get(key) {
            Some((v, _)) if v.eq_ignore_ascii_case("no") => None,
            Some((v, at)) => Some(format!("{key} {v} ({at})")),
            None => Some(format!(
                "{key} not set (sshd default: {default}) in {}",
                cfg.files.join(", ")
            )),
        };
        o.verdict(id, ev.into_iter().collect());
    }
}

/// Installed packages from the dpkg status file.
fn dpkg_installed(opts: &Options) -> Option<BTreeSet<String>> {
    let text = opts.read("/var/lib/dpkg/status")?;
    let mut out = BTreeSet::new();
    for para in text.split("\n\n") {
        let mut name = None;
        let mut installed = false;
        for l in para.lines() {
            if let Some(n) = l.strip_prefix("Package:") {
                name = Some(n.trim().to_owned());
            } else if let Some(s) = l.strip_prefix("Status:") {
                installed = s.trim().ends_with(" installed");
            }
        }
        if let (Some(n), true) = (name, installed) {
            out.insert(n);
        }
    }
    Some(out)
}

/// The effective `APT::Periodic::Unattended-Upgrade` value (files in lexical order,
/// last one wins), with where it was set.
fn apt_unattended_setting(opts: &Options) -> Option<(String, String)> {
    let dir = opts.path("/etc/apt/apt.conf.d");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut found = None;
    for f in files {
        let Ok(t) = std::fs::read_to_string(&f) else {
            continue;
        };
        for l in t.lines() {
            let l = l.trim();
            if let Some(rest) = l.strip_prefix("APT::Periodic::Unattended-Upgrade") {
                let v = rest
                    .trim()
                    .trim_end_matches(';')
                    .trim()
                    .trim_matches('"')
                    .to_owned();
                found = Some((v, display(&f)));
            }
        }
    }
    found
}

fn check_packages(opts: &Options, o: &mut Outcome) {
    let pkgs = dpkg_installed(opts);
    let has = |p: &str| pkgs.as_ref().is_some_and(|s| s.contains(p));
    let exists = |p: &str| opts.path(p).exists();
    let dpkg_note = if pkgs.is_some() {
        "/var/lib/dpkg/status"
    } else {
        "no /var/lib/dpkg/status"
    };

    // Automatic security updates.
    let ev = if has("unattended-upgrades") {
        match apt_unattended_setting(opts) {
            Some((v, _)) if v != "0" && !v.is_empty() => None,
            Some((v, at)) => Some(format!("unattended-upgrades installed but APT::Periodic::Unattended-Upgrade \"{v}\" ({at})")),
            None => Some("unattended-upgrades installed but APT::Periodic::Unattended-Upgrade not set in /etc/apt/apt.conf.d".to_owned()),
        }
    } else if has("dnf-automatic") || exists("/etc/dnf/automatic.conf") {
        None
    } else {
        Some(format!(
            "neither unattended-upgrades ({dpkg_note}) nor dnf-automatic (/etc/dnf/automatic.conf) found"
        ))
    };
    o.verdict("updates.auto", ev.into_iter().collect());

    // Brute-force blocker.
    let found = ["fail2ban", "sshguard", "crowdsec"].iter().any(|p| has(p))
        || [
            "/etc/fail2ban/jail.conf",
            "/etc/fail2ban/jail.local",
            "/etc/sshguard/sshguard.conf",
            "/etc/sshguard.conf",
            "/etc/crowdsec/config.yaml",
        ]
        .iter()
        .any(|p| exists(p));
    let ev = (!found).then(|| {
        format!("no fail2ban, sshguard or crowdsec ({dpkg_note}, /etc/fail2ban, /etc/sshguard, /etc/crowdsec)")
    });
    o.verdict("bruteforce.blocker", ev.into_iter().collect());
}
