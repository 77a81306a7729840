//! The compiled policy: flat lists the daemon turns into kernel map entries, and a
//! userspace matcher over JSON events (the same decisions, for `policy replay` and for
//! events the kernel only reports).

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::events::{Event, Payload};

use super::{
    glob::glob_match,
    model::{
        effective_action, Action, Exception, Mode, PathPattern, Policy, Rule, RuleKind, Severity,
        ShellMatcher,
    },
    net::{fold, Dest, DestTarget, IpNet, PortRange},
};
use crate::openclaw::GatewayPorts;

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for Severity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What compilation needs to know about the hosts' gateways (the daemon's host
/// knowledge: `crate::host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileContext {
    /// The port lists of the gateways found (for `gateway` port specs).
    pub gateway_ports: Vec<GatewayPorts>,
    /// Model provider host names (or address literals) from `openclaw.json` (for
    /// `$providers`).
    pub providers: Vec<String>,
    /// The DNS resolvers the gateways use (for `$resolvers`).
    pub resolvers: Vec<IpAddr>,
}

impl Default for CompileContext {
    fn default() -> Self {
        Self {
            gateway_ports: vec![GatewayPorts::default()],
            providers: Vec::new(),
            resolvers: Vec::new(),
        }
    }
}

/// Allow or deny side of an egress/bind entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum List {
    Allow,
    Deny,
}

/// A protected path of one rule (expanded per gateway user by the daemon with
/// [`PathPattern::resolve`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ProtectedPath {
    pub rule: u32,
    pub action: Action,
    pub pattern: PathPattern,
}

/// One LPM entry: prefix plus optional port range. `ports: None` is every port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressEntry {
    pub rule: u32,
    pub action: Action,
    pub list: List,
    pub net: IpNet,
    pub ports: Option<PortRange>,
}

/// A name the daemon resolves, then adds as [`EgressEntry`]s (kept until TTL expiry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressHost {
    pub rule: u32,
    pub action: Action,
    pub list: List,
    pub host: String,
    pub ports: Option<PortRange>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecDeny {
    pub rule: u32,
    pub action: Action,
    /// Absolute path glob of the executable.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellEntry {
    pub rule: u32,
    pub action: Action,
    pub matcher: ShellMatcher,
}

/// A watched port range for binds; a bind there to an address outside `allow` matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindEntry {
    pub rule: u32,
    pub action: Action,
    pub ports: PortRange,
    pub allow: Vec<IpNet>,
}

/// The secret environment variables of one `env` rule: their values are blanked in
/// the new image's environment of each process the gateway (or its spawn broker)
/// starts, while it is held at its exec (`Block`), or only reported (`Alert`). The
/// daemon adds the names the gateway users' secrets files define when `from_files` is
/// set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEnv {
    pub rule: u32,
    /// After modes: `Block` or `Alert` (never `Kill`, which the policy rejects).
    pub action: Action,
    /// Also the names defined in `.env`, `gateway.env` of each gateway user's state
    /// directory and the `env` block of `openclaw.json`.
    pub from_files: bool,
    /// The names the rule gives itself (validated, deduplicated).
    pub names: Vec<String>,
}

/// Per-rule summary for `status` and start-up reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleSummary {
    pub id: String,
    pub index: u32,
    pub kind: &'static str,
    /// The configured action.
    pub action: Action,
    /// After `monitor` modes.
    pub effective_action: Action,
    pub severity: Severity,
}

/// A policy ready for the kernel maps and the userspace matcher.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub policy: Policy,
    /// The global mode in force (`run --mode`, else the file's).
    pub mode: Mode,
    pub rules: Vec<RuleSummary>,
    pub protected_paths: Vec<ProtectedPath>,
    pub egress: Vec<EgressEntry>,
    pub egress_hosts: Vec<EgressHost>,
    /// Whether some rule names `$providers` (the daemon then reads `openclaw.json`).
    pub uses_providers: bool,
    pub exec_deny: Vec<ExecDeny>,
    pub shells: Vec<ShellEntry>,
    /// Every shell executable base name (glob) of any rule, deduplicated, for a
    /// kernel-side pre-filter.
    pub shell_names: Vec<String>,
    pub binds: Vec<BindEntry>,
    /// One entry per `env` rule.
    pub secret_env: Vec<SecretEnv>,
    pub context: CompileContext,
}

impl Policy {
    /// Compiles with the file's own mode and default gateway ports.
    pub fn compile(&self) -> CompiledPolicy {
        CompiledPolicy::new(self, None, &CompileContext::default())
    }
}

fn ranges(d: &Dest, ctx: &CompileContext) -> Vec<Option<PortRange>> {
    match d.port_ranges(&ctx.gateway_ports) {
        None => vec![None],
        Some(v) => v.into_iter().map(Some).collect(),
    }
}

impl CompiledPolicy {
    /// Flattens `policy`; `mode` overrides the file's global mode.
    pub fn new(policy: &Policy, mode: Option<Mode>, ctx: &CompileContext) -> Self {
        let mode = mode.unwrap_or(policy.mode);
        let mut c = Self {
            policy: policy.clone(),
            mode,
            rules: Vec::new(),
            protected_paths: Vec::new(),
            egress: Vec::new(),
            egress_hosts: Vec::new(),
            uses_providers: false,
            exec_deny: Vec::new(),
            shells: Vec::new(),
            shell_names: Vec::new(),
            binds: Vec::new(),
            secret_env: Vec::new(),
            context: ctx.clone(),
        };
        for r in &policy.rules {
            let action = effective_action(r, mode);
            c.rules.push(RuleSummary {
                id: r.id.clone(),
                index: r.index,
                kind: r.kind.name(),
                action: r.action,
                effective_action: action,
                severity: r.severity,
            });
            let rule = r.index;
            match &r.kind {
                RuleKind::Files(f) => {
                    c.protected_paths
                        .extend(f.paths.iter().map(|p| ProtectedPath {
                            rule,
                            action,
                            pattern: p.clone(),
                        }))
                }
                RuleKind::Egress(e) => {
                    // Destination exceptions are allow entries: the kernel can honour them.
                    let exc = r
                        .exceptions
                        .iter()
                        .filter(|x| only_dest(x))
                        .flat_map(|x| x.dest.iter());
                    let lists = e
                        .allow
                        .iter()
                        .chain(exc)
                        .map(|d| (List::Allow, d))
                        .chain(e.deny.iter().map(|d| (List::Deny, d)));
                    for (list, d) in lists {
                        // Address literals among the providers, and the resolvers, are
                        // prefixes; provider names go by name.
                        let mut nets = d.nets();
                        let hosts: Vec<String> = match &d.target {
                            DestTarget::Host(h) => vec![h.clone()],
                            DestTarget::Providers => {
                                c.uses_providers = true;
                                let (literal, named): (Vec<&String>, Vec<&String>) = ctx
                                    .providers
                                    .iter()
                                    .partition(|h| h.parse::<IpAddr>().is_ok());
                                nets.extend(
                                    literal
                                        .into_iter()
                                        .filter_map(|h| h.parse::<IpAddr>().ok())
                                        .map(IpNet::host),
                                );
                                named.into_iter().cloned().collect()
                            }
                            DestTarget::Resolvers => {
                                nets.extend(ctx.resolvers.iter().map(|a| IpNet::host(*a)));
                                Vec::new()
                            }
                            _ => Vec::new(),
                        };
                        for ports in ranges(d, ctx) {
                            for net in nets.iter().copied() {
                                c.egress.push(EgressEntry {
                                    rule,
                                    action,
                                    list,
                                    net,
                                    ports,
                                });
                            }
                            c.egress_hosts
                                .extend(hosts.iter().cloned().map(|host| EgressHost {
                                    rule,
                                    action,
                                    list,
                                    host,
                                    ports,
                                }));
                        }
                    }
                }
                RuleKind::Exec(x) => {
                    c.exec_deny.extend(x.deny.iter().map(|p| ExecDeny {
                        rule,
                        action,
                        path: p.clone(),
                    }));
                    for m in &x.shells {
                        c.shell_names.extend(m.exe.iter().cloned());
                        c.shells.push(ShellEntry {
                            rule,
                            action,
                            matcher: m.clone(),
                        });
                    }
                }
                RuleKind::Bind(b) => {
                    let allow: Vec<IpNet> = b.allow.iter().flat_map(Dest::nets).collect();
                    for p in &b.ports {
                        let d = Dest {
                            target: DestTarget::Any,
                            ports: p.clone(),
                        };
                        for ports in ranges(&d, ctx).into_iter().flatten() {
                            c.binds.push(BindEntry {
                                rule,
                                action,
                                ports,
                                allow: allow.clone(),
                            });
                        }
                    }
                }
                RuleKind::Env(e) => c.secret_env.push(SecretEnv {
                    rule,
                    action,
                    from_files: e.from_files,
                    names: e.names.clone(),
                }),
            }
        }
        c.shell_names.sort();
        c.shell_names.dedup();
        c
    }

    /// Evaluates one recorded JSON event with no knowledge of the host (homes are
    /// guessed from the path, names are not resolved).
    pub fn evaluate(&self, event: &Value) -> Vec<Verdict> {
        self.evaluate_with(event, &EvalEnv::default())
    }

    /// Evaluates one JSON event (the daemon's event schema): every rule that matches,
    /// with its effective action, or an exception's lower severity.
    pub fn evaluate_with(&self, event: &Value, env: &EvalEnv) -> Vec<Verdict> {
        self.judge(&EventView::new(event), env)
    }

    /// [`Self::evaluate_with`] on the daemon's decoded event, read in place.
    pub fn evaluate_event(&self, event: &Event, env: &EvalEnv) -> Vec<Verdict> {
        self.judge(&EventView::of_event(event), env)
    }

    fn judge(&self, ev: &EventView<'_>, env: &EvalEnv) -> Vec<Verdict> {
        let mut out = Vec::new();
        for r in &self.policy.rules {
            let Some(what) = self.match_rule(r, ev, env) else {
                continue;
            };
            let exc = r
                .exceptions
                .iter()
                .find(|x| exception_matches(x, ev, env, &self.context));
            let action = effective_action(r, self.mode);
            let v = match exc {
                Some(x) => match x.severity {
                    None => continue,
                    Some(sev) => Verdict {
                        action: Action::Alert,
                        severity: sev,
                        exception: Some(x.name.clone()),
                        ..Verdict::new(r, action, what)
                    },
                },
                None => Verdict::new(r, action, what),
            };
            out.push(v);
        }
        out
    }

    fn match_rule(&self, r: &Rule, ev: &EventView<'_>, env: &EvalEnv) -> Option<String> {
        match (&r.kind, ev.kind) {
            (RuleKind::Exec(x), "exec") => {
                let file = ev.filename();
                if let Some(p) = x.deny.iter().find(|p| glob_match(p, file)) {
                    return Some(format!("exec of denied `{file}` (matches `{p}`)"));
                }
                // A renamed copy, a fileless image or `ld.so SHELL` is matched as the
                // shell it is; the exceptions still see the name it was run by.
                let real = ev.shell_identity().unwrap_or(file);
                x.shells
                    .iter()
                    .find(|m| {
                        (m.name == "fileless" && ev.exec_flags().fileless)
                            || m.matches(real, ev.argv())
                    })
                    .map(|m| {
                        let parent = if ev.parent_is_gateway() {
                            "the gateway"
                        } else {
                            "a process in the tree"
                        };
                        let mut what = m.name.clone();
                        if real != file {
                            what = format!("{what}, really `{real}`");
                        }
                        format!(
                            "shell `{}` ({what}) started by {parent} (ppid {}, depth {}): {}",
                            file,
                            ev.ppid(),
                            ev.depth().unwrap_or(0),
                            ev.argv().join(" ")
                        )
                    })
            }
            (RuleKind::Files(f), "file_open") if ev.depth() != Some(0) => {
                if let Some(d) = ev.decision_rule() {
                    if d == r.id || d == r.index.to_string() {
                        return Some(format!("open of protected `{}`", ev.path()));
                    }
                }
                let path = Path::new(ev.path());
                if path.as_os_str().is_empty() {
                    return None;
                }
                let homes = env.homes_for(path);
                f.paths
                    .iter()
                    .find(|p| homes.iter().any(|(h, s)| p.matches(path, h, s)))
                    .map(|p| format!("open of `{}` (protected by `{p}`)", path.display()))
            }
            (RuleKind::Egress(e), "connect" | "sendmsg") if ev.depth() != Some(0) => {
                let (ip, port) = ev.dest()?;
                let name = ev.dest_name();
                let hit = |d: &Dest| dest_matches(d, ip, port, name, env, &self.context);
                (e.deny.iter().any(hit) && !e.allow.iter().any(hit)).then(|| {
                    let to = match name {
                        Some(n) => format!("{} ({n})", fold(ip)),
                        None => fold(ip).to_string(),
                    };
                    format!("{} to {to} port {port}", ev.kind)
                })
            }
            (RuleKind::Bind(b), "bind") => {
                let (ip, port) = ev.dest()?;
                let gw = &self.context.gateway_ports;
                let watched = b.ports.iter().any(|p| {
                    Dest {
                        target: DestTarget::Any,
                        ports: p.clone(),
                    }
                    .matches(ip, port, gw, &|_| Vec::new())
                });
                let allowed = b
                    .allow
                    .iter()
                    .any(|d| d.matches(ip, port, gw, &|_| Vec::new()));
                (watched && !allowed)
                    .then(|| format!("bind of gateway port {port} on {}", fold(ip)))
            }
            // Acted on by the daemon at exec; no event is judged by it here.
            (RuleKind::Env(_), _) => None,
            _ => None,
        }
    }
}

/// Only destination conditions: such an exception compiles to kernel allow entries.
fn only_dest(x: &Exception) -> bool {
    !x.dest.is_empty()
        && x.severity.is_none()
        && x.parent_is_gateway.is_none()
        && x.comm.is_empty()
        && x.exe.is_empty()
        && x.args.is_empty()
        && x.paths.is_empty()
        && x.stdio_socket.is_none()
        && x.role.is_empty()
        && x.interactive.is_none()
        && x.after_denial.is_none()
}

fn exception_matches(
    x: &Exception,
    ev: &EventView<'_>,
    env: &EvalEnv,
    ctx: &CompileContext,
) -> bool {
    let name_glob = |p: &str, full: &str| {
        if p.contains('/') {
            glob_match(p, full)
        } else {
            glob_match(p, full.rsplit('/').next().unwrap_or(full))
        }
    };
    x.parent_is_gateway
        .is_none_or(|want| ev.parent_is_gateway() == want)
        && (x.comm.is_empty() || x.comm.iter().any(|p| glob_match(p, ev.comm())))
        && (x.exe.is_empty() || x.exe.iter().any(|p| name_glob(p, ev.filename())))
        && (x.args.is_empty()
            || ev
                .argv()
                .iter()
                .skip(1)
                .any(|a| x.args.iter().any(|p| glob_match(p, a))))
        && (x.paths.is_empty() || {
            let path = Path::new(ev.path());
            let homes = env.homes_for(path);
            x.paths
                .iter()
                .any(|p| homes.iter().any(|(h, s)| p.matches(path, h, s)))
        })
        && (x.dest.is_empty()
            || ev.dest().is_some_and(|(ip, port)| {
                x.dest
                    .iter()
                    .any(|d| dest_matches(d, ip, port, ev.dest_name(), env, ctx))
            }))
        && x.stdio_socket.is_none_or(|want| ev.stdio_socket() == want)
        && (x.role.is_empty() || x.role.iter().any(|r| r == ev.role()))
        && x.interactive.is_none_or(|want| ev.interactive() == want)
        && x.after_denial
            .is_none_or(|want| ev.exec_flags().after_denial == want)
}

/// Whether an egress entry matches a destination: by its address (literal, or among
/// those `env` knows for a name), or by the name the address was learned under.
fn dest_matches(
    d: &Dest,
    ip: IpAddr,
    port: u16,
    name: Option<&str>,
    env: &EvalEnv,
    ctx: &CompileContext,
) -> bool {
    d.matches(ip, port, &ctx.gateway_ports, &|t| env.resolve(t, ctx))
        || name.is_some_and(|n| d.matches_name(n, port, &ctx.gateway_ports, &ctx.providers))
}

/// What evaluation knows about the host.
#[derive(Debug, Clone, Default)]
pub struct EvalEnv {
    /// (home, state dir) of each gateway user; empty: guessed from the event's path.
    pub homes: Vec<(PathBuf, PathBuf)>,
    /// Addresses known for host names (and provider names).
    pub resolved: HashMap<String, Vec<IpAddr>>,
}

impl EvalEnv {
    fn homes_for(&self, path: &Path) -> Vec<(PathBuf, PathBuf)> {
        if !self.homes.is_empty() {
            return self.homes.clone();
        }
        // Replay without host knowledge: `/root/...` or `/home/<user>/...`, with the
        // default state dir and any `.openclaw-<profile>` the path goes through.
        let parts: Vec<&str> = path.iter().filter_map(|c| c.to_str()).collect();
        let (home, next) = match parts.as_slice() {
            ["/", "root", rest @ ..] => (PathBuf::from("/root"), rest.first()),
            ["/", "home", user, rest @ ..] => (Path::new("/home").join(user), rest.first()),
            _ => return Vec::new(),
        };
        let mut v = vec![(home.clone(), home.join(crate::openclaw::STATE_DIR_NAME))];
        if let Some(n) = next.filter(|n| n.starts_with(".openclaw-")) {
            v.push((home.clone(), home.join(n)));
        }
        v
    }

    fn resolve(&self, t: &DestTarget, ctx: &CompileContext) -> Vec<IpAddr> {
        match t {
            DestTarget::Host(h) => self.resolved.get(h).cloned().unwrap_or_default(),
            DestTarget::Resolvers => ctx.resolvers.clone(),
            // An address literal among the providers (a local model) is its address.
            DestTarget::Providers => ctx
                .providers
                .iter()
                .flat_map(|h| match h.parse::<IpAddr>() {
                    Ok(a) => vec![a],
                    Err(_) => self.resolved.get(h).cloned().unwrap_or_default(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// One rule's decision about one event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub rule: String,
    pub rule_index: u32,
    pub kind: &'static str,
    /// After modes; `alert` when an exception lowered the severity.
    pub action: Action,
    pub severity: Severity,
    pub description: String,
    /// One readable line about what matched.
    pub output: String,
    /// The exception that applied, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
}

impl Verdict {
    fn new(r: &Rule, action: Action, output: String) -> Self {
        Self {
            rule: r.id.clone(),
            rule_index: r.index,
            kind: r.kind.name(),
            action,
            severity: r.severity,
            description: r.description.clone(),
            output,
            exception: None,
        }
    }
}

/// An [`EventView`] accessor of a string field of one payload kind: the decoded
/// event's own field (a name the schema lacks does not compile), or the same serde
/// name in a JSON record; empty when the event is of another kind.
macro_rules! str_field {
    ($name:ident, $variant:ident, $json:literal, |$x:ident| $get:expr) => {
        fn $name(&self) -> &str {
            match &self.src {
                Src::Event(Event {
                    payload: Payload::$variant($x),
                    ..
                }) => $get,
                Src::Event(_) => "",
                Src::Json(v, _) => v.get($json).and_then(Value::as_str).unwrap_or(""),
            }
        }
    };
}

/// An exec's boolean findings, as rules read them.
#[derive(Clone, Copy, Default)]
struct ExecFlags {
    stdio_socket: bool,
    fileless: bool,
    after_denial: bool,
}

/// Read access to an event's fields, tolerant of missing ones: a JSON event (a record
/// replayed, a test) or the daemon's decoded [`Event`], read in place (the hot path:
/// no JSON value is built for an event no rule matches).
struct EventView<'a> {
    src: Src<'a>,
    kind: &'a str,
}

enum Src<'a> {
    Json(&'a Value, Vec<String>),
    Event(&'a Event),
}

impl<'a> EventView<'a> {
    fn new(v: &'a Value) -> Self {
        let argv = v
            .get("argv")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let kind = match v.get("kind").and_then(Value::as_str).unwrap_or("") {
            // The daemon reports connect/sendmsg/bind as kind `net` with `op`; rules
            // (and older records) name the operation itself.
            "net" => v.get("op").and_then(Value::as_str).unwrap_or(""),
            k => k,
        };
        Self {
            src: Src::Json(v, argv),
            kind,
        }
    }

    fn of_event(ev: &'a Event) -> Self {
        let kind = match &ev.payload {
            Payload::Net(n) => n.op,
            _ => ev.kind,
        };
        Self {
            src: Src::Event(ev),
            kind,
        }
    }

    /// A string field of a JSON record (missing: empty).
    fn json_str(&self, k: &str) -> Option<&str> {
        match &self.src {
            Src::Json(v, _) => Some(v.get(k).and_then(Value::as_str).unwrap_or("")),
            Src::Event(_) => None,
        }
    }

    // One accessor per field a rule reads: the decoded event's own field (a name the
    // schema lacks does not compile), or the same serde name in a JSON record.

    fn role(&self) -> &str {
        match &self.src {
            Src::Event(ev) => ev.role.unwrap_or(""),
            Src::Json(..) => self.json_str("role").unwrap_or(""),
        }
    }

    str_field!(path, FileOpen, "path", |f| &f.path);
    str_field!(comm, Exec, "comm", |x| &x.comm);
    // The exec's `filename` field as reported (see [`Self::filename`]).
    str_field!(exec_filename, Exec, "filename", |x| &x.filename);
    str_field!(shell, Exec, "shell", |x| x.shell.as_deref().unwrap_or(""));
    str_field!(addr, Net, "addr", |n| &n.addr);
    str_field!(dest_name_field, Net, "dest_name", |n| n
        .dest_name
        .as_deref()
        .unwrap_or(""));

    fn port(&self) -> u64 {
        match &self.src {
            Src::Event(Event {
                payload: Payload::Net(n),
                ..
            }) => n.port.into(),
            Src::Event(_) => 0,
            Src::Json(v, _) => v.get("port").and_then(Value::as_u64).unwrap_or(0),
        }
    }

    fn ppid(&self) -> u64 {
        match &self.src {
            Src::Event(Event {
                payload: Payload::Exec(x),
                ..
            }) => x.ppid.into(),
            Src::Event(_) => 0,
            Src::Json(v, _) => v.get("ppid").and_then(Value::as_u64).unwrap_or(0),
        }
    }

    /// The exec's boolean fields (enrichment's findings): `stdio_socket`, `fileless`,
    /// `after_denial`.
    fn exec_flags(&self) -> ExecFlags {
        match &self.src {
            Src::Event(Event {
                payload: Payload::Exec(x),
                ..
            }) => ExecFlags {
                stdio_socket: x.stdio_socket,
                fileless: x.fileless,
                after_denial: x.after_denial,
            },
            Src::Event(_) => ExecFlags::default(),
            Src::Json(v, _) => {
                let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
                ExecFlags {
                    stdio_socket: b("stdio_socket"),
                    fileless: b("fileless"),
                    after_denial: b("after_denial"),
                }
            }
        }
    }

    fn depth(&self) -> Option<u64> {
        match &self.src {
            Src::Json(v, _) => v.get("depth").and_then(Value::as_u64),
            Src::Event(ev) => Some(ev.depth.into()),
        }
    }

    /// The executable: `filename`, else argv[0], else comm.
    fn filename(&self) -> &str {
        [
            self.exec_filename(),
            self.argv().first().map_or("", String::as_str),
            self.comm(),
        ]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or("")
    }

    fn argv(&self) -> &[String] {
        match &self.src {
            Src::Json(_, argv) => argv,
            Src::Event(ev) => match &ev.payload {
                Payload::Exec(x) => &x.argv,
                _ => &[],
            },
        }
    }

    /// Depth 1, or (without depth) the parent is the root.
    fn parent_is_gateway(&self) -> bool {
        match (self.depth(), &self.src) {
            (Some(d), _) => d == 1,
            (None, Src::Json(v, _)) => v.get("ppid").is_some() && v.get("ppid") == v.get("root"),
            (None, Src::Event(_)) => false,
        }
    }

    /// A network socket on stdio (enrichment reads it from /proc at the exec).
    fn stdio_socket(&self) -> bool {
        self.exec_flags().stdio_socket
    }

    /// The shell the image really is, when its name does not say so.
    fn shell_identity(&self) -> Option<&str> {
        Some(self.shell()).filter(|s| !s.is_empty())
    }

    /// A shell asked to be interactive: `-i`, or a cluster holding `i` (`-ic`, `-il`)
    /// among the options before the first operand. Shells only: `perl -pi` edits
    /// in place.
    fn interactive(&self) -> bool {
        let real = self.shell_identity().unwrap_or(self.filename());
        crate::machinery::is_shell_name(real.rsplit('/').next().unwrap_or(real))
            && self
                .argv()
                .iter()
                .skip(1)
                .take_while(|a| a.starts_with('-'))
                .any(|a| !a.starts_with("--") && a.contains('i'))
    }

    fn decision_rule(&self) -> Option<String> {
        match &self.src {
            Src::Json(v, _) => match v.get("decision")?.get("rule")? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            },
            Src::Event(ev) => ev.decision.as_ref().map(|d| d.rule.clone()),
        }
    }

    /// The DNS name the destination address was learned under, when known.
    fn dest_name(&self) -> Option<&str> {
        Some(self.dest_name_field()).filter(|s| !s.is_empty())
    }

    fn dest(&self) -> Option<(IpAddr, u16)> {
        let ip: IpAddr = self.addr().trim_matches(['[', ']']).parse().ok()?;
        let port = u16::try_from(self.port()).ok()?;
        Some((ip, port))
    }
}

/// Host names of the model providers `openclaw.json` uses: the `baseUrl` of each
/// configured provider, and the public API host of each provider named in a model id
/// (`anthropic/claude-...`).
pub fn providers_from_config(config: &Value) -> Vec<String> {
    const KNOWN: &[(&str, &str)] = &[
        ("anthropic", "api.anthropic.com"),
        ("openai", "api.openai.com"),
        ("google", "generativelanguage.googleapis.com"),
        ("openrouter", "openrouter.ai"),
        ("mistral", "api.mistral.ai"),
        ("groq", "api.groq.com"),
        ("xai", "api.x.ai"),
        ("deepseek", "api.deepseek.com"),
    ];
    let mut out = Vec::new();
    if let Some(ps) =
        crate::openclaw::config_get(config, &["models", "providers"]).and_then(Value::as_object)
    {
        for (name, p) in ps {
            match p.get("baseUrl").and_then(Value::as_str).and_then(url_host) {
                Some(h) => out.push(h),
                None => out.extend(
                    KNOWN
                        .iter()
                        .filter(|(n, _)| n == name)
                        .map(|(_, h)| (*h).to_owned()),
                ),
            }
        }
    }
    // Model ids anywhere in the config (`provider/model`), e.g. agents.defaults.model.
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => {
                if let Some((p, _)) = s.split_once('/') {
                    out.extend(
                        KNOWN
                            .iter()
                            .filter(|(n, _)| *n == p)
                            .map(|(_, h)| (*h).to_owned()),
                    );
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    if let Some(m) = crate::openclaw::config_get(config, &["agents"]) {
        walk(m, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

fn url_host(u: &str) -> Option<String> {
    let rest = u.split_once("://").map_or(u, |(_, r)| r);
    let hostport = rest.split(['/', '?', '#']).next()?;
    let host = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
    let host = if let Some(h) = host.strip_prefix('[') {
        h.split(']').next()?
    } else {
        host.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::policy::{default_policy, load_str};

    fn verdicts(c: &CompiledPolicy, ev: Value) -> Vec<(String, Action, Severity)> {
        c.evaluate(&ev)
            .into_iter()
            .map(|v| (v.rule, v.action, v.severity))
            .collect()
    }

    #[test]
    fn shells_by_role_and_mark() {
        let c = default_policy().compile();
        let exec = |role: &str, file: &str, argv: Value| json!({"kind": "exec", "filename": file, "argv": argv, "role": role, "ppid": 101, "root": 100, "depth": 2});
        let wrapper = exec(
            "exec-tool",
            "/bin/bash",
            json!(["/bin/bash", "--noprofile", "--norc", "-c", "ls"]),
        );
        assert_eq!(
            verdicts(&c, wrapper.clone()),
            [("shell-spawn".into(), Action::Alert, Severity::Informational)]
        );
        assert_eq!(
            c.evaluate(&wrapper)[0].exception.as_deref(),
            Some("exec-tool")
        );

        // A tool call's nested shells and inline interpreters: normal work.
        for (f, a) in [
            ("/bin/sh", json!(["sh", "-c", "node build.js"])),
            ("/usr/bin/python3.11", json!(["python3", "-c", "print(1)"])),
            ("/usr/bin/perl", json!(["perl", "-pi", "-e", "s/a/b/", "f"])),
        ] {
            let v = c.evaluate(&exec("tool", f, a));
            assert_eq!(v.len(), 1);
            assert_eq!(
                (v[0].severity, v[0].exception.as_deref()),
                (Severity::Informational, Some("tool-command"))
            );
        }
        let critical = [("shell-spawn".into(), Action::Alert, Severity::Critical)];
        // The same shell elsewhere in the tree (a node child of the gateway).
        assert_eq!(
            verdicts(&c, exec("other", "/bin/sh", json!(["sh", "-c", "id"]))),
            critical
        );
        // Interactive, on a network socket, after a denial, renamed, fileless.
        let i = exec("tool", "/bin/bash", json!(["bash", "-i"]));
        assert_eq!(verdicts(&c, i), critical);
        let ic = exec("tool", "/bin/bash", json!(["bash", "-ic", "x"]));
        assert_eq!(verdicts(&c, ic), critical);
        let mut rev = exec("tool", "/bin/sh", json!(["sh", "-c", "x"]));
        rev["stdio_socket"] = json!(true);
        assert_eq!(verdicts(&c, rev), critical);
        let mut rev = wrapper.clone();
        rev["stdio_socket"] = json!(true);
        assert_eq!(verdicts(&c, rev), critical);
        let mut after = exec("tool", "/bin/sh", json!(["sh", "-c", "x"]));
        after["after_denial"] = json!(true);
        assert_eq!(verdicts(&c, after), critical);
        let mut renamed = exec("tool", "/tmp/x", json!(["x", "-c", "id"]));
        assert!(
            c.evaluate(&renamed).is_empty(),
            "an unknown program is no shell"
        );
        renamed["shell"] = json!("bash");
        assert_eq!(verdicts(&c, renamed), critical);
        let mut fileless = exec("tool", "/dev/fd/3", json!(["x"]));
        fileless["fileless"] = json!(true);
        assert_eq!(verdicts(&c, fileless), critical);

        // A script run is normal work; git is not a shell.
        for (f, a) in [
            ("/usr/bin/python3", json!(["python3", "skills/x/run.py"])),
            ("/usr/bin/git", json!(["git", "status"])),
        ] {
            assert!(c.evaluate(&exec("other", f, a)).is_empty());
        }
    }

    #[test]
    fn secrets_blocked_for_children_only() {
        let c = default_policy().compile();
        let ev =
            |path: &str, depth: u64| json!({"kind": "file_open", "path": path, "depth": depth});
        assert_eq!(
            verdicts(&c, ev("/home/u/.openclaw/.env", 2)),
            [("secrets".into(), Action::Block, Severity::Critical)]
        );
        assert_eq!(
            verdicts(
                &c,
                ev("/home/u/.openclaw/agents/main/agent/auth-profiles.json", 1)
            )
            .len(),
            1
        );
        assert_eq!(
            verdicts(&c, ev("/root/.openclaw-work/credentials/wa/creds.json", 1)).len(),
            1
        );
        assert_eq!(
            verdicts(&c, ev("/home/u/.clawdbot/clawdbot.json", 1)).len(),
            1
        );
        assert!(
            verdicts(&c, ev("/home/u/.openclaw/.env", 0)).is_empty(),
            "the gateway keeps access"
        );
        assert!(verdicts(&c, ev("/home/u/.openclaw/workspace/AGENTS.md", 1)).is_empty());
        // The kernel's decision names the rule even when the path is unknown.
        let k = json!({"kind": "file_open", "dev": "8:1", "ino": 42, "depth": 1, "decision": {"rule": "secrets", "action": "deny"}});
        assert_eq!(verdicts(&c, k).len(), 1);
        let mon = CompiledPolicy::new(
            &default_policy(),
            Some(Mode::Monitor),
            &CompileContext::default(),
        );
        assert_eq!(
            verdicts(&mon, ev("/home/u/.openclaw/.env", 2))[0].1,
            Action::Alert
        );
        assert!(mon
            .protected_paths
            .iter()
            .all(|p| p.action == Action::Alert));
    }

    #[test]
    fn egress_and_gateway_ports() {
        let c = default_policy().compile();
        let ev = |addr: &str, port: u64, depth: u64| json!({"kind": "connect", "family": "inet6", "addr": addr, "port": port, "protocol": "tcp", "depth": depth});
        assert_eq!(
            verdicts(&c, ev("203.0.113.9", 443, 1)),
            [("egress".into(), Action::Block, Severity::Error)]
        );
        assert_eq!(
            verdicts(&c, ev("::ffff:203.0.113.9", 443, 3))[0].0,
            "egress"
        );
        assert_eq!(verdicts(&c, ev("2001:db8::1", 53, 1))[0].0, "egress");
        assert!(verdicts(&c, ev("127.0.0.1", 8080, 1)).is_empty());
        assert!(
            verdicts(&c, ev("203.0.113.9", 443, 0)).is_empty(),
            "gateway exempt"
        );
        assert_eq!(
            verdicts(&c, ev("::ffff:127.0.0.1", 18789, 1)),
            [("child-to-gateway".into(), Action::Alert, Severity::Error)]
        );
        assert_eq!(verdicts(&c, ev("::1", 18850, 2))[0].0, "child-to-gateway");
        // Providers allowed once resolved.
        let ctx = CompileContext {
            providers: vec!["api.anthropic.com".into()],
            ..CompileContext::default()
        };
        let c2 = CompiledPolicy::new(&default_policy(), None, &ctx);
        assert!(c2.uses_providers);
        let env = EvalEnv {
            resolved: HashMap::from([(
                "api.anthropic.com".to_owned(),
                vec!["160.79.104.10".parse().expect("ip")],
            )]),
            ..EvalEnv::default()
        };
        assert!(c2
            .evaluate_with(&ev("160.79.104.10", 443, 1), &env)
            .is_empty());
        assert!(c2
            .egress_hosts
            .iter()
            .any(|h| h.host == "api.anthropic.com" && h.list == List::Allow));
    }

    #[test]
    fn egress_names_match_the_learned_dest_name() {
        let p = load_str(
            r#"
version = 1
[[rules]]
id = "egress"
action = "block"
severity = "warning"
[rules.egress]
allow = ["loopback", "$providers", "api.example.com:443"]
[[rules.exceptions]]
name = "mirror"
dest = ["mirror.example.org"]
severity = "informational"
[[rules]]
id = "no-paste"
action = "alert"
severity = "error"
[rules.egress]
deny = ["paste.example.net"]
"#,
            "t",
        )
        .expect("valid");
        let ctx = CompileContext {
            providers: vec!["api.anthropic.com".into()],
            ..CompileContext::default()
        };
        let c = CompiledPolicy::new(&p, None, &ctx);
        let ev = |name: Option<&str>, port: u64| {
            let mut v = json!({"kind": "net", "op": "connect", "family": "inet", "addr": "203.0.113.9", "port": port, "depth": 2});
            if let Some(n) = name {
                v["dest_name"] = json!(n);
            }
            v
        };
        let rules =
            |v: Value| -> Vec<String> { c.evaluate(&v).into_iter().map(|v| v.rule).collect() };
        // Allowed by name: case and the root's trailing dot do not matter; the port does.
        assert!(rules(ev(Some("api.example.com"), 443)).is_empty());
        assert!(rules(ev(Some("API.Example.COM."), 443)).is_empty());
        assert_eq!(rules(ev(Some("api.example.com"), 80)), ["egress"]);
        // Without the name the address alone is judged (nothing resolved here).
        assert_eq!(rules(ev(None, 443)), ["egress"]);
        assert_eq!(rules(ev(Some("other.example.com"), 443)), ["egress"]);
        // `$providers` by name, any port.
        assert!(rules(ev(Some("api.anthropic.com"), 8443)).is_empty());
        // A destination exception by name lowers the severity; a deny entry by name flags.
        let m = c.evaluate(&ev(Some("mirror.example.org"), 443));
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].exception.as_deref(), m[0].severity),
            (Some("mirror"), Severity::Informational)
        );
        let paste = c.evaluate(&ev(Some("paste.example.net"), 443));
        assert_eq!(
            paste.iter().map(|v| v.rule.as_str()).collect::<Vec<_>>(),
            ["egress", "no-paste"]
        );
        assert_eq!(
            paste[1].output,
            "connect to 203.0.113.9 (paste.example.net) port 443"
        );
        // The daemon's decoded event is read the same way.
        let typed = |name: Option<&str>| Event {
            time: "2026-05-01T12:00:00Z".into(),
            ktime_ns: 1,
            kind: "net",
            pid: 7,
            tgid: 7,
            root: 1,
            depth: 2,
            cgroup_id: 1,
            lineage: Vec::new(),
            role: None,
            tool_call: None,
            payload: Payload::Net(crate::events::Net {
                op: "connect",
                family: "inet".into(),
                addr: "203.0.113.9".into(),
                port: 443,
                ipv4_mapped: false,
                protocol: "tcp".into(),
                sock_type: "stream".into(),
                ret: 0,
                dest_name: name.map(str::to_owned),
                sockaddr_family: None,
                name_hash: 0,
            }),
            decision: None,
        };
        let env = EvalEnv::default();
        assert!(c
            .evaluate_event(&typed(Some("api.example.com.")), &env)
            .is_empty());
        assert_eq!(c.evaluate_event(&typed(None), &env)[0].rule, "egress");
        let json = serde_json::to_value(typed(Some("api.example.com"))).expect("json");
        assert_eq!(json["dest_name"], "api.example.com");
        assert!(c.evaluate(&json).is_empty());
        let unnamed = serde_json::to_value(typed(None)).expect("json");
        assert!(unnamed.get("dest_name").is_none(), "absent, not null");
    }

    #[test]
    fn bind_beyond_loopback() {
        let c = default_policy().compile();
        let ev =
            |addr: &str, port: u64| json!({"kind": "bind", "addr": addr, "port": port, "depth": 0});
        assert_eq!(
            verdicts(&c, ev("0.0.0.0", 18789)),
            [("gateway-exposed".into(), Action::Alert, Severity::Critical)]
        );
        assert_eq!(verdicts(&c, ev("::", 18800)).len(), 1);
        assert!(verdicts(&c, ev("127.0.0.1", 18789)).is_empty());
        assert!(verdicts(&c, ev("0.0.0.0", 8080)).is_empty());
        assert_eq!(c.binds.len(), 2, "gateway range and browser range");
    }

    #[test]
    fn port_ranges_and_compiled_lists() {
        let p = load_str(
            r#"
version = 1
mode = "monitor"
[[rules]]
id = "lan"
action = "block"
mode = "enforce"
severity = "error"
[rules.egress]
allow = ["10.0.0.0/8:8000-8100"]
deny = ["10.0.0.0/8", "[::ffff:192.168.0.0/112]:22", "[2001:db8::/32]:443"]
[[rules]]
id = "nc"
action = "kill"
severity = "critical"
[rules.exec]
deny = ["/usr/bin/nc*"]
custom_shells = [{ exe = ["tclsh*"], args = ["-c"] }]
"#,
            "t",
        )
        .expect("valid");
        let c = CompiledPolicy::new(&p, Some(Mode::Enforce), &CompileContext::default());
        let lan = c
            .egress
            .iter()
            .filter(|e| e.rule == rule_index_of(&c, "lan"))
            .count();
        assert_eq!(lan, 4);
        let mapped = c
            .egress
            .iter()
            .find(|e| e.ports == Some(PortRange { lo: 22, hi: 22 }))
            .expect("mapped entry");
        assert_eq!(mapped.net.to_string(), "192.168.0.0/16");
        let ev = |addr: &str, port: u64| json!({"kind": "sendmsg", "addr": addr, "port": port, "depth": 1});
        assert!(
            c.evaluate(&ev("10.1.1.1", 8050)).is_empty(),
            "allowed range"
        );
        assert_eq!(c.evaluate(&ev("10.1.1.1", 8101))[0].action, Action::Block);
        assert_eq!(c.evaluate(&ev("::ffff:192.168.3.4", 22))[0].rule, "lan");
        assert!(c.evaluate(&ev("192.168.3.4", 23)).is_empty());
        // The daemon's own shape: kind `net` with the operation in `op`.
        let net =
            json!({"kind": "net", "op": "sendmsg", "addr": "10.1.1.1", "port": 8101, "depth": 1});
        assert_eq!(c.evaluate(&net)[0].output, "sendmsg to 10.1.1.1 port 8101");
        assert_eq!(c.exec_deny[0].action, Action::Kill);
        let nc = json!({"kind": "exec", "filename": "/usr/bin/ncat", "argv": ["ncat"], "depth": 2});
        assert_eq!(c.evaluate(&nc)[0].rule, "nc");
        // The file says monitor: without the override every action is alert.
        let m = p.compile();
        assert!(m.rules.iter().all(|r| r.effective_action == Action::Alert));
        assert!(m.shell_names.contains(&"tclsh*".to_owned()));
    }

    fn rule_index_of(c: &CompiledPolicy, id: &str) -> u32 {
        c.rules.iter().find(|r| r.id == id).map_or(0, |r| r.index)
    }

    #[test]
    fn provider_hosts_from_config() {
        let cfg = json!({
            "agents": {"defaults": {"model": {"primary": "anthropic/claude-opus-4-5", "fallbacks": ["openai/gpt-5"]}}},
            "models": {"providers": {"local": {"baseUrl": "http://LLM.lan:8080/v1"}, "mistral": {}}}
        });
        assert_eq!(
            providers_from_config(&cfg),
            [
                "api.anthropic.com",
                "api.mistral.ai",
                "api.openai.com",
                "llm.lan"
            ]
        );
    }

    #[test]
    fn secret_env_compiles_and_judges_nothing() {
        let p = default_policy();
        let r = p.rule("secret-env").expect("default has secret-env");
        assert_eq!((r.action, r.severity), (Action::Block, Severity::Warning));
        assert_eq!(
            r.kind,
            RuleKind::Env(crate::policy::EnvRule {
                from_files: true,
                names: Vec::new(),
            })
        );
        let c = p.compile();
        assert_eq!(
            c.secret_env,
            [SecretEnv {
                rule: r.index,
                action: Action::Block,
                from_files: true,
                names: Vec::new(),
            }]
        );
        assert_eq!(
            c.rules
                .iter()
                .find(|s| s.id == "secret-env")
                .map(|s| s.kind),
            Some("env")
        );
        // Monitor turns it into a report.
        let mon = CompiledPolicy::new(&p, Some(Mode::Monitor), &CompileContext::default());
        assert_eq!(mon.secret_env[0].action, Action::Alert);
        // No userspace verdict from it, whatever the event.
        for ev in [
            json!({"kind": "exec", "filename": "/usr/bin/env", "argv": ["env"], "role": "tool", "depth": 2}),
            json!({"kind": "exec", "filename": "/bin/sh", "argv": ["sh", "-c", "env"], "depth": 1}),
            json!({"kind": "file_open", "path": "/home/u/.openclaw/.env", "depth": 1}),
        ] {
            assert!(
                c.evaluate(&ev).iter().all(|v| v.rule != "secret-env"),
                "{ev}"
            );
        }
        let only = load_str(
            "version = 1\n[[rules]]\nid = \"e\"\naction = \"alert\"\nseverity = \"warning\"\n[rules.env]\nfrom_files = false\nnames = [\"OPENAI_API_KEY\"]\n",
            "t",
        )
        .expect("valid");
        let c = only.compile();
        assert_eq!(c.secret_env[0].names, ["OPENAI_API_KEY"]);
        assert!(!c.secret_env[0].from_files);
        assert!(c
            .evaluate(
                &json!({"kind": "exec", "filename": "/usr/bin/env", "argv": ["env"], "depth": 1})
            )
            .is_empty());
    }

    #[test]
    fn default_rules_have_stable_distinct_indices() {
        let p = default_policy();
        let mut idx: Vec<u32> = p.rules.iter().map(|r| r.index).collect();
        idx.sort_unstable();
        idx.dedup();
        assert_eq!(idx.len(), p.rules.len());
        assert!(idx.iter().all(|i| *i != 0));
        assert_eq!(
            p.rule("secrets").map(|r| r.index),
            Some(crate::policy::rule_index("secrets"))
        );
    }
}
