//! Posture audit of an OpenClaw host (`openclaw-guard audit`).
//!
//! Reads the host (or a mounted image / fixture tree with `--root`), runs every check
//! of the [`CHECKS`] catalogue, and reports findings with an id, severity, evidence,
//! why it matters and how to fix it. `--fix` applies only the reversible local fixes
//! (modes and ownership inside the state directories). The JSON schema and the check
//! list are documented in `docs/audit.md`.

mod checks;
mod host;
mod perms;
mod procnet;
mod report;
mod rules;
mod sshd;
#[cfg(test)]
mod tests;

use std::{
    io::Write,
    path::{Path, PathBuf},
};

pub use report::{CheckResult, CheckStatus, Finding, FixRecord, Report, Severity, Summary};

/// Version of the `--json` output. Bumped on any change to its key set or meaning.
pub const SCHEMA_VERSION: u32 = 2;

/// Default `--fail-on`: medium. Everything except hygiene items (a missing brute-force
/// blocker, loose modes on non-secret files in an already closed state dir) fails.
pub const DEFAULT_FAIL_ON: Severity = Severity::Medium;

/// What `openclaw-guard audit` was asked to do; `openclaw-guard audit --help` (the
/// command line, in `cli::audit`) documents each option.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The home directory to audit; `None`: every one found.
    pub home: Option<PathBuf>,
    /// An offline root to audit instead of this host.
    pub root: Option<PathBuf>,
    pub json: bool,
    /// Apply the safe fixes, then audit again.
    pub fix: bool,
    /// The lowest severity that fails the audit.
    pub fail_on: Severity,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            home: None,
            root: None,
            json: false,
            fix: false,
            fail_on: DEFAULT_FAIL_ON,
        }
    }
}

/// One check of the catalogue: stable id, fixed severity and the explanation shown
/// with each finding.
#[derive(Debug, Clone, Copy)]
pub struct CheckDef {
    /// Stable identifier (`area.name`); never reused for another meaning.
    pub id: &'static str,
    /// Severity of a finding of this check.
    pub severity: Severity,
    /// One-line statement of the problem.
    pub title: &'static str,
    /// Why it matters.
    pub why: &'static str,
    /// How to fix it.
    pub fix: &'static str,
    /// Whether `--fix` can fix it.
    pub fixable: bool,
}

macro_rules! check {
    ($id:literal, $sev:ident, $fixable:literal, $title:literal, $why:literal, $fix:literal) => {
        CheckDef {
            id: $id,
            severity: Severity::$sev,
            title: $title,
            why: $why,
            fix: $fix,
            fixable: $fixable,
        }
    };
}

/// Every check, in report order. Ids are stable (see docs/audit.md).
pub const CHECKS: &[CheckDef] = &[
    check!("net.listen", Critical, false,
        "Gateway port listening beyond loopback",
        "A socket on a gateway port bound to 0.0.0.0, ::, a public address or an IPv4-mapped one is reachable from the network: thousands of exposed gateways were found this way, and the gateway token/WebSocket hijack CVE used that port.",
        "Set gateway.bind to \"loopback\" and restart the gateway; reach it through SSH port forwarding or a tailnet. Stop whatever else listens on these ports."),
    check!("net.nat", High, false,
        "Gateway port published through NAT (container port mapping)",
        "A container runtime publishes ports with DNAT rules, not with a bind: the gateway listens on the container's own interface, no host socket shows up, and the host forwards outside traffic to it.",
        "Publish on loopback only (docker run -p 127.0.0.1:18789:18789) or drop the mapping."),
    check!("gateway.bind", High, false,
        "gateway.bind is not loopback",
        "Any bind other than loopback exposes the Control UI and the WebSocket API, which runs shell commands, to the network.",
        "Set \"gateway\": { \"bind\": \"loopback\" } in openclaw.json (and drop --bind from the service) and restart the gateway."),
    check!("gateway.auth", High, false,
        "Gateway authentication token not set",
        "Without a token (or password) any local process or forwarded connection can drive the agent.",
        "Set gateway.auth.mode \"token\" and a long random gateway.auth.token (or OPENCLAW_GATEWAY_TOKEN in ~/.openclaw/.env)."),
    check!("channels.dm-open", Medium, false,
        "A channel accepts DMs from anyone (dmPolicy \"open\")",
        "Anyone who finds the bot can talk to an agent that runs commands on this host; one crafted message is enough for prompt injection.",
        "Use dmPolicy \"pairing\" or \"allowlist\" with explicit allowFrom entries; keep \"open\" only for a bot meant to be public, with sandboxing on."),
    check!("session.dm-scope", Medium, false,
        "Several people can reach the bot but DMs share one session",
        "With the default session.dmScope every sender shares one conversation: one user's messages, files and secrets show up in another's context.",
        "Set \"session\": { \"dmScope\": \"per-channel-peer\" }."),
    check!("sandbox.off", Medium, false,
        "Agent sandboxing is off",
        "With agents.defaults.sandbox.mode \"off\" (the default) every exec tool command runs directly on the host as the gateway's user.",
        "Set agents.defaults.sandbox.mode to \"non-main\" or \"all\" (needs Docker)."),
    check!("guard.attribution", Low, false,
        "openclaw-guard's attribution plugin is not loaded",
        "Without it the guard cannot say which session, run and tool call of the agent a process, a refused read or a refused connect belongs to: every tool command is recorded as unattributed.",
        "Run `openclaw-guard plugin write DIR` and merge the lines it prints into openclaw.json (plugins.load.paths, plugins.entries.openclaw-guard), then restart the gateway."),
    check!("config.invalid", Medium, false,
        "openclaw.json cannot be parsed",
        "The config checks cannot run, and OpenClaw may fall back to defaults you did not choose.",
        "Fix the syntax (openclaw.json is JSON5) and re-run the audit."),
    check!("config.secrets", High, false,
        "API keys or tokens stored in openclaw.json",
        "The config is read, copied and pasted far more often than .env; infostealers and malicious skills grab it first, and agents have been tricked into printing it.",
        "Move the value into ~/.openclaw/.env and reference it as \"${VAR_NAME}\" in openclaw.json; rotate the key if the file was ever shared."),
    check!("gateway.root", High, false,
        "Gateway running as root",
        "Every command the agent runs, including injected ones, runs as root.",
        "Run the gateway as an unprivileged user (systemd --user unit openclaw-gateway.service) and move the state dir to that user."),
    check!("perms.state-dir", Medium, true,
        "State directory accessible to group or others",
        "~/.openclaw holds API keys, channel credentials and transcripts; it should be mode 700.",
        "chmod 700 the state directory (openclaw-guard audit --fix)."),
    check!("perms.secret-files", High, true,
        "Secret file readable by group or others",
        ".env, openclaw.json, gateway.env, credentials/ and auth-profiles.json hold keys that let anyone on the host impersonate you to model providers and chat apps.",
        "chmod 600 the files (700 the credentials directory) (openclaw-guard audit --fix)."),
    check!("perms.state-files", Low, true,
        "State file accessible to group or others",
        "Transcripts, memory and skills in the state dir are sensitive; loose modes expose them as soon as the state dir's own mode slips.",
        "chmod go-rwx the files (openclaw-guard audit --fix)."),
    check!("perms.owner", Medium, true,
        "State file not owned by the gateway's user",
        "A file owned by another user can be rewritten by that user (agent memory is a known persistence spot) or is unreadable to the gateway.",
        "chown the files to the gateway's user (openclaw-guard audit --fix, as root)."),
    check!("ssh.root-login", Medium, false,
        "SSH allows root login",
        "A host running an agent with shell access is a target; direct root login skips the per-user audit trail and sudo.",
        "Set PermitRootLogin no in /etc/ssh/sshd_config (or a drop-in read before others) and reload sshd."),
    check!("ssh.password-auth", High, false,
        "SSH allows password authentication",
        "Internet-facing sshd is brute-forced constantly; passwords are the weak point.",
        "Set PasswordAuthentication no (and KbdInteractiveAuthentication no) and use keys."),
    check!("firewall.missing", Medium, false,
        "No host firewall",
        "Without a default-deny input policy, anything that binds beyond loopback (a gateway misconfiguration, a browser instance) is reachable.",
        "Enable ufw (ufw default deny incoming; ufw allow OpenSSH; ufw enable) or an nftables input chain with policy drop."),
    check!("firewall.gateway-allowed", High, false,
        "Firewall allows gateway ports from outside",
        "An allow rule for a gateway port defeats the firewall for exactly the service that must stay local.",
        "Delete the rule (ufw delete allow 18789) and use SSH forwarding or a tailnet instead."),
    check!("updates.auto", Medium, false,
        "Automatic security updates not enabled",
        "Node, OpenSSL and the kernel get remotely exploitable bugs; an always-on agent host needs them patched without waiting for a human.",
        "apt install unattended-upgrades && dpkg-reconfigure -plow unattended-upgrades (or dnf-automatic)."),
    check!("kernel.bpf-lsm", Medium, false,
        "BPF LSM is not active",
        "Without bpf in the kernel's active LSM list openclaw-guard cannot refuse an open, a connect or an exec: it kills the process after the syscall (io_uring opens, hard links and renames unseen), and the agent's tree can signal, ptrace or reconfigure the guard.",
        "Append bpf to the boot parameter lsm= (keep the current list from /sys/kernel/security/lsm, e.g. lsm=lockdown,capability,landlock,yama,apparmor,bpf in GRUB_CMDLINE_LINUX), update-grub, reboot."),
    check!("kernel.ftrace-off", High, false,
        "Function tracing is switched off (kernel.ftrace_enabled = 0)",
        "BPF LSM programs run through ftrace trampolines: with function tracing off none of them decides, and every rule openclaw-guard enforces with BPF LSM is lost.",
        "sysctl -w kernel.ftrace_enabled=1, and remove kernel.ftrace_enabled from /etc/sysctl.conf and /etc/sysctl.d."),
    check!("kernel.ptrace-open", Medium, false,
        "Any process may trace others of its user (Yama ptrace_scope 0 or no Yama)",
        "A tool command can attach to the gateway, or to a process that holds a secret, and read its memory; without BPF LSM openclaw-guard cannot refuse ptrace.",
        "sysctl -w kernel.yama.ptrace_scope=1 (only ancestors may trace), persisted in /etc/sysctl.d/10-ptrace.conf; 2 or 3 is stricter."),
    check!("kernel.unprivileged-bpf", Low, false,
        "Unprivileged users may load BPF programs (kernel.unprivileged_bpf_disabled = 0)",
        "BPF from an unprivileged tool command widens the kernel's attack surface (Spectre gadgets, verifier bugs); openclaw-guard refuses bpf() to the tree only with BPF LSM.",
        "sysctl -w kernel.unprivileged_bpf_disabled=2 (1 cannot be undone until reboot), persisted in /etc/sysctl.d."),
    check!("kernel.io-uring-unwatched", Medium, false,
        "io_uring is available while BPF LSM is not",
        "Opens submitted through io_uring do not pass the open syscall tracepoints the guard falls back to without BPF LSM: a secret read that way is not seen.",
        "Enable BPF LSM (see kernel.bpf-lsm), or on 6.6+ sysctl -w kernel.io_uring_disabled=2 (persisted in /etc/sysctl.d)."),
    check!("bruteforce.blocker", Low, false,
        "No brute-force blocker installed",
        "fail2ban, sshguard or crowdsec slow down password and token guessing against SSH and exposed services.",
        "apt install fail2ban (or sshguard)."),
];

/// The catalogue entry for `id`.
pub fn check_def(id: &str) -> Option<&'static CheckDef> {
    CHECKS.iter().find(|c| c.id == id)
}

/// Runs the audit (and the fixes, with `--fix`) without printing.
pub fn audit(args: &AuditOptions) -> Result<Report, UsageError> {
    let opts = host::Options::from_args(args)?;
    let first = checks::run_all(&opts);
    if !args.fix {
        return Ok(first.into_report(&opts, args.fail_on, Vec::new()));
    }
    let fixes = perms::apply_fixes(&first.fix_plan);
    let second = checks::run_all(&opts);
    Ok(second.into_report(&opts, args.fail_on, fixes))
}

/// A usage error: exit status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Runs the audit and returns the process exit status: 0 clean, 1 findings at or above
/// `--fail-on`, 2 usage error.
pub fn run(args: &AuditOptions) -> anyhow::Result<i32> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_to(args, &mut out)
}

/// [`run`], writing the report to `out`.
pub fn run_to(args: &AuditOptions, out: &mut dyn Write) -> anyhow::Result<i32> {
    let report = match audit(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("openclaw-guard audit: {e}");
            return Ok(2);
        }
    };
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        report::render_human(&report, out)?;
    }
    Ok(report.summary.exit_code)
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
