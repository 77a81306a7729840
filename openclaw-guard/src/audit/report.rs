//! The audit report: its JSON shape (docs/audit.md) and its rendering for humans.

use std::io::{self, Write};

use serde::Serialize;

/// Severity of a finding, lowest to highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    // What each means: [`Severity::meaning`].
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Highest first.
    pub const DESCENDING: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];

    /// What the severity means, in a few words (`audit --help`).
    pub fn meaning(self) -> &'static str {
        match self {
            Severity::Info => "Informational",
            Severity::Low => "Hygiene",
            Severity::Medium => "Should be fixed",
            Severity::High => "Exposes secrets or the agent",
            Severity::Critical => "Reachable from the network now",
        }
    }

    /// Lowercase name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Check id from the catalogue.
    pub id: &'static str,
    /// The check's severity.
    pub severity: Severity,
    /// One-line statement of the problem.
    pub title: &'static str,
    /// What was seen, one item per line; secrets only as masked prefixes.
    pub evidence: Vec<String>,
    /// Why it matters.
    pub why: &'static str,
    /// How to fix it.
    pub fix: &'static str,
    /// Whether `--fix` fixes it.
    pub fixable: bool,
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Ran, found nothing.
    Pass,
    /// Ran, produced a finding.
    Fail,
    /// Could not run (nothing to check, or input unreadable); `detail` says why.
    Skip,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Check id.
    pub id: &'static str,
    /// pass, fail or skip.
    pub status: CheckStatus,
    /// Why it was skipped, or null.
    pub detail: Option<String>,
}

/// One change made by `--fix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FixRecord {
    /// The file or directory.
    pub path: String,
    /// `chmod` or `chown`.
    pub action: &'static str,
    /// Mode in octal (`0644`) or `uid:gid` before.
    pub old: String,
    /// Mode or `uid:gid` after.
    pub new: String,
    /// Whether the change was made.
    pub applied: bool,
    /// Why not, or null.
    pub error: Option<String>,
}

/// Counts of findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// All findings.
    pub total: usize,
    /// Per severity.
    pub critical: usize,
    /// Per severity.
    pub high: usize,
    /// Per severity.
    pub medium: usize,
    /// Per severity.
    pub low: usize,
    /// Per severity.
    pub info: usize,
    /// Findings at or above `fail_on`.
    pub failing: usize,
    /// Checks that passed / were skipped.
    pub passed: usize,
    /// See `passed`.
    pub skipped: usize,
    /// The process exit status: 0 clean, 1 failing findings.
    pub exit_code: i32,
}

/// The whole report; `--json` prints exactly this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// [`super::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `openclaw-guard`.
    pub tool: &'static str,
    /// The tool's version.
    pub tool_version: &'static str,
    /// `/` or the `--root` directory.
    pub root: String,
    /// State directories audited (existing ones; legacy included).
    pub state_dirs: Vec<String>,
    /// Gateway port lists checked, as `P-P+4,18800-18899`.
    pub gateway_ports: Vec<String>,
    /// The `--fail-on` severity.
    pub fail_on: Severity,
    /// Counts.
    pub summary: Summary,
    /// Findings, highest severity first, then catalogue order.
    pub findings: Vec<Finding>,
    /// Every check's outcome, catalogue order.
    pub checks: Vec<CheckResult>,
    /// Changes made by `--fix` (empty without it).
    pub fixes: Vec<FixRecord>,
    /// What the kernel offers the guard (`None`: could not be read).
    pub kernel: KernelFacts,
}

/// Kernel facts that decide what the guard can enforce.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct KernelFacts {
    /// `/proc/sys/kernel/osrelease`.
    pub release: Option<String>,
    /// The active LSMs, `/sys/kernel/security/lsm` (needs securityfs mounted).
    pub lsm: Option<Vec<String>>,
    /// `bpf` among them: the guard can refuse (else it kills after the fact).
    pub bpf_lsm: Option<bool>,
    /// Kernel lockdown mode (`none`, `integrity`, `confidentiality`).
    pub lockdown: Option<String>,
    /// `kernel.ftrace_enabled`: BPF LSM programs run only while it is on.
    pub ftrace_enabled: Option<bool>,
    /// `/sys/kernel/btf/vmlinux` exists (the guard needs it).
    pub btf: bool,
    /// `kernel.yama.ptrace_scope` (0: a process may trace any other of its uid).
    pub ptrace_scope: Option<u8>,
    /// `kernel.unprivileged_bpf_disabled` (0: any user may load BPF programs).
    pub unprivileged_bpf_disabled: Option<u8>,
    /// `kernel.io_uring_disabled` (6.6 and later; absent: io_uring is always on).
    pub io_uring_disabled: Option<u8>,
}

/// Human-readable report: findings grouped by severity, the fixes, a summary line.
pub(super) fn render_human(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "openclaw-guard audit of {}", r.root)?;
    if r.state_dirs.is_empty() {
        writeln!(out, "  state dirs: none found")?;
    } else {
        writeln!(out, "  state dirs: {}", r.state_dirs.join(", "))?;
    }
    writeln!(out, "  gateway ports: {}", r.gateway_ports.join("; "))?;
    if !r.fixes.is_empty() {
        writeln!(out, "\nFIXES APPLIED ({})", r.fixes.len())?;
        for f in &r.fixes {
            match (&f.error, f.applied) {
                (None, true) => writeln!(out, "  {} {}: {} -> {}", f.action, f.path, f.old, f.new)?,
                (err, _) => writeln!(
                    out,
                    "  NOT DONE {} {}: {} -> {} ({})",
                    f.action,
                    f.path,
                    f.old,
                    f.new,
                    err.as_deref().unwrap_or("skipped")
                )?,
            }
        }
        writeln!(
            out,
            "  (the findings below are from a fresh audit after the fixes)"
        )?;
    }
    for sev in Severity::DESCENDING {
        let group: Vec<&Finding> = r.findings.iter().filter(|f| f.severity == sev).collect();
        if group.is_empty() {
            continue;
        }
        writeln!(out, "\n{} ({})", sev.as_str().to_uppercase(), group.len())?;
        for f in group {
            let tag = if f.fixable { "  [--fix]" } else { "" };
            writeln!(out, "  [{}] {}{}", f.id, f.title, tag)?;
            for e in &f.evidence {
                writeln!(out, "      - {e}")?;
            }
            writeln!(out, "      why: {}", f.why)?;
            writeln!(out, "      fix: {}", f.fix)?;
        }
    }
    let skipped: Vec<&CheckResult> = r
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Skip)
        .collect();
    if !skipped.is_empty() {
        writeln!(out, "\nSKIPPED ({})", skipped.len())?;
        for c in skipped {
            writeln!(out, "  [{}] {}", c.id, c.detail.as_deref().unwrap_or(""))?;
        }
    }
    let s = &r.summary;
    let counts: Vec<String> = [
        ("critical", s.critical),
        ("high", s.high),
        ("medium", s.medium),
        ("low", s.low),
        ("info", s.info),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{n} {k}"))
    .collect();
    let counts = if counts.is_empty() {
        String::new()
    } else {
        format!(" ({})", counts.join(", "))
    };
    writeln!(
        out,
        "\nSummary: {} finding{}{}; {} checks passed, {} skipped; {} at or above {} -> exit {}",
        s.total,
        if s.total == 1 { "" } else { "s" },
        counts,
        s.passed,
        s.skipped,
        s.failing,
        r.fail_on,
        s.exit_code
    )
}
