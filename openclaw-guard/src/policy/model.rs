//! The rule model (issue 4): what a rule matches, what it does, and how strongly it
//! is reported. The file format ([`super::parse`]) produces it; the compiler
//! ([`super::compile`]) flattens it for the kernel maps.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use super::{
    glob::{glob_match, is_glob},
    net::{Dest, PortSpec},
};

/// What a rule does when it matches, before modes are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Report only.
    Alert,
    /// Deny the operation (-EPERM) where the kernel hook allows it.
    Block,
    /// SIGKILL the offending task (and, where the rule says so, its process group).
    Kill,
}

impl Action {
    pub const NAMES: &[&str] = &["alert", "block", "kill"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "alert" => Some(Self::Alert),
            "block" => Some(Self::Block),
            "kill" => Some(Self::Kill),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Block => "block",
            Self::Kill => "kill",
        }
    }

    /// The action code in the kernel maps (`openclaw_guard_common::action`).
    pub fn kernel_code(self) -> u32 {
        use openclaw_guard_common::action;
        match self {
            Self::Alert => action::ALERT,
            Self::Block => action::DENY,
            Self::Kill => action::KILL,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `monitor` decides and reports but never blocks or kills; `enforce` acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    Monitor,
    #[default]
    Enforce,
}

impl Mode {
    pub const NAMES: &[&str] = &["monitor", "enforce"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "monitor" => Some(Self::Monitor),
            "enforce" => Some(Self::Enforce),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Monitor => "monitor",
            Self::Enforce => "enforce",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Falco's priorities, highest first, so a Falcosidekick webhook takes our alerts as
/// they are. "High severity" in the docs means `critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Emergency,
    Alert,
    Critical,
    Error,
    Warning,
    Notice,
    Informational,
    Debug,
}

impl Severity {
    pub const NAMES: &[&str] = &[
        "emergency",
        "alert",
        "critical",
        "error",
        "warning",
        "notice",
        "informational",
        "debug",
    ];

    /// Parses a lower-case priority; `info` is accepted as Falco accepts it.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "emergency" => Self::Emergency,
            "alert" => Self::Alert,
            "critical" => Self::Critical,
            "error" => Self::Error,
            "warning" => Self::Warning,
            "notice" => Self::Notice,
            "informational" | "info" => Self::Informational,
            "debug" => Self::Debug,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Emergency => "emergency",
            Self::Alert => "alert",
            Self::Critical => "critical",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Notice => "notice",
            Self::Informational => "informational",
            Self::Debug => "debug",
        }
    }

    /// The `priority` string of a Falcosidekick payload (`Critical`, `Informational`...).
    pub fn falco_priority(self) -> &'static str {
        match self {
            Self::Emergency => "Emergency",
            Self::Alert => "Alert",
            Self::Critical => "Critical",
            Self::Error => "Error",
            Self::Warning => "Warning",
            Self::Notice => "Notice",
            Self::Informational => "Informational",
            Self::Debug => "Debug",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Always 1 for now.
    pub version: u32,
    /// The file's global mode; `run --mode` overrides it.
    pub mode: Mode,
    pub targets: Targets,
    pub rules: Vec<Rule>,
}

impl Policy {
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    pub fn rule_by_index(&self, index: u32) -> Option<&Rule> {
        self.rules.iter().find(|r| r.index == index)
    }
}

/// How gateways are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    /// Discover gateways by executable and command line (see `crate::openclaw`).
    pub discover: bool,
    /// Extra roots by process id.
    pub pids: Vec<u32>,
    /// Extra roots: every process in these cgroup v2 directories (absolute paths).
    pub cgroups: Vec<PathBuf>,
    /// Extra roots: the main processes of systemd units matching these globs.
    pub systemd_units: Vec<String>,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            discover: true,
            pids: Vec::new(),
            cgroups: Vec::new(),
            systemd_units: vec![DEFAULT_UNIT_GLOB.to_owned()],
        }
    }
}

/// The gateway's systemd unit name (`openclaw-gateway[-<profile>].service`).
pub const DEFAULT_UNIT_GLOB: &str = "openclaw-gateway*.service";

/// One rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The rule's name, unique in the policy (`secrets`, `shell-spawn`).
    pub id: String,
    /// Its number in the kernel maps and decision events: a hash of `id`, so it stays
    /// the same when rules are added or reordered. Never 0.
    pub index: u32,
    pub description: String,
    pub action: Action,
    /// `None`: follow the global mode.
    pub mode: Option<Mode>,
    pub severity: Severity,
    pub kind: RuleKind,
    pub exceptions: Vec<Exception>,
}

/// The action actually taken: `monitor` (global, or the rule's own) turns block and
/// kill into alert.
pub fn effective_action(rule: &Rule, global: Mode) -> Action {
    if global == Mode::Monitor || rule.mode == Some(Mode::Monitor) {
        Action::Alert
    } else {
        rule.action
    }
}

/// The stable number of a rule id: FNV-1a, with 0 (meaning "no rule" in the kernel)
/// moved to 1.
pub fn rule_index(id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// What a rule matches; each kind maps to kernel hooks.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// Opens of protected files and directories by the gateway's descendants
    /// (depth >= 1; the gateway itself keeps access).
    Files(FilesRule),
    /// connect/sendmsg from the gateway's descendants.
    Egress(EgressRule),
    /// exec by any process of the tree.
    Exec(ExecRule),
    /// bind by any process of the tree, the gateway included.
    Bind(BindRule),
    /// Secret environment variables: their values are blanked in the new image's
    /// environment of each process the gateway (or its spawn broker) starts, held at
    /// its exec (`block`), or only reported (`alert`). Judges no event in userspace
    /// evaluation; the daemon acts at exec.
    Env(EnvRule),
}

impl RuleKind {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Files(_) => "files",
            Self::Egress(_) => "egress",
            Self::Exec(_) => "exec",
            Self::Bind(_) => "bind",
            Self::Env(_) => "env",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FilesRule {
    /// A directory protects everything below it.
    pub paths: Vec<PathPattern>,
}

/// Where a protected path starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathBase {
    /// An absolute path.
    Root,
    /// `~`: the gateway user's home (`OPENCLAW_HOME` if set).
    Home,
    /// `$OPENCLAW_STATE_DIR`: the gateway's state directory, wherever its environment
    /// puts it (`~/.openclaw` by default).
    StateDir,
}

/// A path as the policy writes it: a base, then components that may hold `*`/`?`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathPattern {
    pub raw: String,
    pub base: PathBase,
    pub components: Vec<String>,
}

impl PathPattern {
    /// The pattern with the base replaced (`~` -> `home`, state dir -> `state_dir`);
    /// wildcards stay.
    pub fn expand(&self, home: &Path, state_dir: &Path) -> PathBuf {
        let mut p = match self.base {
            PathBase::Root => PathBuf::from("/"),
            PathBase::Home => home.to_path_buf(),
            PathBase::StateDir => state_dir.to_path_buf(),
        };
        p.extend(&self.components);
        p
    }

    /// Whether a component holds a wildcard.
    pub fn is_glob(&self) -> bool {
        self.components.iter().any(|c| is_glob(c))
    }

    /// The existing paths this pattern names for one gateway user, wildcards expanded
    /// against the file system (sorted). A pattern without wildcards is returned even if
    /// it does not exist yet: the kernel protects it by (parent, name) when it appears.
    pub fn resolve(&self, home: &Path, state_dir: &Path) -> Vec<PathBuf> {
        if !self.is_glob() {
            return vec![self.expand(home, state_dir)];
        }
        let mut cur = vec![self
            .expand(home, state_dir)
            .ancestors()
            .nth(self.components.len())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"))];
        for c in &self.components {
            let mut next = Vec::new();
            for dir in &cur {
                if is_glob(c) {
                    let Ok(rd) = std::fs::read_dir(dir) else {
                        continue;
                    };
                    for e in rd.flatten() {
                        if e.file_name().to_str().is_some_and(|n| glob_match(c, n)) {
                            next.push(e.path());
                        }
                    }
                } else {
                    next.push(dir.join(c));
                }
            }
            cur = next;
        }
        cur.retain(|p| p.symlink_metadata().is_ok());
        cur.sort();
        cur
    }

    /// Whether `path` is this pattern, or below it, for the given home and state dir.
    pub fn matches(&self, path: &Path, home: &Path, state_dir: &Path) -> bool {
        let pat = self.expand(home, state_dir);
        let pat: Vec<_> = pat.components().collect();
        let got: Vec<_> = path.components().collect();
        got.len() >= pat.len()
            && pat.iter().zip(&got).all(|(p, g)| {
                match (p.as_os_str().to_str(), g.as_os_str().to_str()) {
                    (Some(p), Some(g)) => glob_match(p, g),
                    _ => p == g,
                }
            })
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EgressRule {
    /// Destinations that never match (loopback, providers...).
    pub allow: Vec<Dest>,
    /// Destinations that match unless allowed; `any` when the file gives none.
    pub deny: Vec<Dest>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecRule {
    /// Shell-like programs whose start is reported.
    pub shells: Vec<ShellMatcher>,
    /// Executables (absolute path globs) whose exec is the rule's action.
    pub deny: Vec<String>,
}

/// A shell or interpreter that runs code given on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellMatcher {
    /// The kind's name (`bash`, `python-c`, `custom`).
    pub name: String,
    /// Executable base names (globs).
    pub exe: Vec<String>,
    /// At least one of these arguments must be present (empty: any invocation).
    pub args: Vec<String>,
    /// For multi-call binaries (busybox): argv[1] must be one of these.
    pub applets: Vec<String>,
}

impl ShellMatcher {
    /// Whether an exec of `filename` with `argv` is this shell.
    pub fn matches(&self, filename: &str, argv: &[String]) -> bool {
        let base = filename.rsplit('/').next().unwrap_or(filename);
        if !self.exe.iter().any(|p| glob_match(p, base)) {
            return false;
        }
        let rest = argv.get(1..).unwrap_or(&[]);
        if !self.applets.is_empty() && !rest.first().is_some_and(|a| self.applets.contains(a)) {
            return false;
        }
        self.args.is_empty()
            || rest
                .iter()
                .any(|a| self.args.iter().any(|p| glob_match(p, a)))
    }
}

/// The shell kinds a policy may name. Interpreters count only with their inline-code
/// flag (`python -c`), since running a script file is normal work.
pub fn shell_kind(name: &str) -> Option<ShellMatcher> {
    let (exe, args, applets): (&[&str], &[&str], &[&str]) = match name {
        "sh" => (&["sh"], &[], &[]),
        "bash" => (&["bash", "rbash"], &[], &[]),
        "dash" => (&["dash"], &[], &[]),
        "zsh" => (&["zsh"], &[], &[]),
        "fish" => (&["fish"], &[], &[]),
        "ksh" => (&["ksh", "ksh93", "mksh", "pdksh"], &[], &[]),
        "ash" => (&["ash"], &[], &[]),
        "csh" => (&["csh", "tcsh"], &[], &[]),
        "busybox-sh" => (&["busybox"], &[], &["sh", "ash", "hush"]),
        "python-c" => (&["python", "python2*", "python3*", "pypy*"], &["-c"], &[]),
        "node-e" => (
            &["node", "nodejs", "bun", "deno"],
            &["-e", "--eval", "-p", "--print"],
            &[],
        ),
        "perl-e" => (&["perl", "perl5*"], &["-e", "-E"], &[]),
        "ruby-e" => (&["ruby", "ruby*"], &["-e"], &[]),
        "php-r" => (&["php", "php*"], &["-r"], &[]),
        "lua-e" => (&["lua", "lua5*", "luajit"], &["-e"], &[]),
        // Any image run from memory or a deleted file (matched by the exec's
        // `fileless` flag, not by name).
        "fileless" => (&[], &[], &[]),
        _ => return None,
    };
    let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect();
    Some(ShellMatcher {
        name: name.to_owned(),
        exe: v(exe),
        args: v(args),
        applets: v(applets),
    })
}

/// Every shell kind name, for messages and docs.
pub const SHELL_KINDS: &[&str] = &[
    "sh",
    "bash",
    "dash",
    "zsh",
    "fish",
    "ksh",
    "ash",
    "csh",
    "busybox-sh",
    "python-c",
    "node-e",
    "perl-e",
    "ruby-e",
    "php-r",
    "lua-e",
    "fileless",
];

#[derive(Debug, Clone, PartialEq)]
pub struct BindRule {
    /// Ports watched (`gateway` = the gateway's own ports).
    pub ports: Vec<PortSpec>,
    /// Local addresses a bind may use (normally `loopback`).
    pub allow: Vec<Dest>,
}

/// Secret environment variables (the `env` kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvRule {
    /// Also protect the names defined in the secrets files (`.env`, `gateway.env`) of
    /// every gateway user's state directory and the `env` block of `openclaw.json`
    /// (read by the daemon).
    pub from_files: bool,
    /// Extra names, each `[A-Za-z_][A-Za-z0-9_]*` of at most [`ENV_NAME_MAX`] bytes,
    /// deduplicated in file order.
    pub names: Vec<String>,
}

/// The longest variable name an `env` rule may give, in bytes (with its terminating
/// NUL it fits a 64-byte key).
pub const ENV_NAME_MAX: usize = 63;

/// Whether `name` is a variable name an `env` rule accepts.
pub fn valid_env_name(name: &str) -> bool {
    let mut b = name.bytes();
    name.len() <= ENV_NAME_MAX
        && b.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A case a rule does not apply to. All given conditions must hold. With `severity`
/// the event is still reported, as an alert at that severity (an expected but notable
/// event); without, it is not reported at all.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exception {
    pub name: String,
    pub description: String,
    /// The process's parent is the gateway itself (depth 1).
    pub parent_is_gateway: Option<bool>,
    /// `comm` globs (weak: a process sets its own comm).
    pub comm: Vec<String>,
    /// Executable path globs (exec events).
    pub exe: Vec<String>,
    /// Argument globs: at least one argument matches one of them.
    pub args: Vec<String>,
    /// Paths (files events).
    pub paths: Vec<PathPattern>,
    /// Destinations (egress and bind events).
    pub dest: Vec<Dest>,
    /// Whether stdin, stdout or stderr is a network (inet/inet6) socket (`false`:
    /// none is).
    pub stdio_socket: Option<bool>,
    /// The process's role in its tree (`exec-tool`, `tool`, `helper`, ...): one of.
    pub role: Vec<String>,
    /// Whether the program was asked to be interactive (`-i`, `-ic`, ...).
    pub interactive: Option<bool>,
    /// Whether a rule denied or killed something of this tool call before.
    pub after_denial: Option<bool>,
    /// Report at this severity instead of dropping.
    pub severity: Option<Severity>,
}
