//! `openclaw-guard policy suggest`: the destinations the gateway's descendants reached
//! in the record that an egress rule would flag, written into that rule's `allow` list
//! of the policy text, so the rule can be switched to `block` without breaking them.

use std::{
    collections::HashMap,
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use jiff::Timestamp;
use serde_json::{json, Value};

use crate::policy::{
    fold, is_hostname, parse_dest, CompiledPolicy, DestTarget, Policy, PolicyError, PortSpec,
    RuleKind,
};
use crate::{
    cli::events::QueryArgs,
    recorder::{query::event_time, Filter, Reader, DEFAULT_STATE_DIR},
};

/// Arguments of `openclaw-guard policy suggest`.
#[derive(Debug, clap::Args)]
pub struct SuggestArgs {
    /// The policy to extend (TOML); default: the embedded default policy.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The egress rule whose `allow` list is extended (`--rule` filters the record's
    /// decisions, as in `events`).
    #[arg(long, value_name = "ID", default_value = "egress")]
    pub egress_rule: String,
    /// State directory of the guard; the record is in its `record/` subdirectory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    #[command(flatten)]
    pub query: QueryArgs,
}

/// One destination to allow, with what the record saw of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    /// The allow entry: `name:port`, `1.2.3.4:port` or `[2001:db8::1]:port`.
    pub entry: String,
    pub connections: u64,
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
}

impl Suggestion {
    fn comment(&self) -> String {
        let when =
            |t: Option<Timestamp>| t.map_or_else(|| "unknown".to_owned(), |t| format!("{t:.0}"));
        format!(
            "# {} connection{}, first {}, last {}",
            self.connections,
            if self.connections == 1 { "" } else { "s" },
            when(self.first),
            when(self.last)
        )
    }
}

/// Connections (and sends) read but not suggested, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// To loopback or the unspecified address (this host).
    pub loopback: u64,
    /// The rule already lets them through (allowed, not denied, or dropped by an
    /// exception).
    pub allowed: u64,
    /// By the gateway itself (depth 0), which egress rules do not judge, or of unknown
    /// depth.
    pub gateway: u64,
    /// Port 0, which an allow entry cannot name.
    pub no_port: u64,
}

/// Connections to one destination seen in one event.
#[derive(Debug, Clone)]
struct Seen<'n> {
    ip: IpAddr,
    port: u16,
    name: Option<&'n str>,
    count: u64,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
}

/// A folded `repeat` of connects or sends, judged once the record is read: its
/// destination's name is the one of the full event that opened its window.
#[derive(Debug)]
struct Repeat {
    thread: u64,
    op: String,
    ip: IpAddr,
    port: u16,
    depth: u64,
    count: u64,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
}

/// Gathers the suggestions from recorded events, one [`Collector::add`] per event.
pub struct Collector<'a> {
    policy: &'a CompiledPolicy,
    rule: &'a str,
    groups: HashMap<String, Suggestion>,
    /// (thread, address, port) -> the name its last full event carried.
    names: HashMap<(u64, IpAddr, u16), String>,
    repeats: Vec<Repeat>,
    skipped: Skipped,
}

impl<'a> Collector<'a> {
    /// `rule` is the id of the egress rule of `policy` to extend.
    pub fn new(policy: &'a CompiledPolicy, rule: &'a str) -> Self {
        Self {
            policy,
            rule,
            groups: HashMap::new(),
            names: HashMap::new(),
            repeats: Vec::new(),
            skipped: Skipped::default(),
        }
    }

    /// Takes one recorded event; anything but a connect or send to an IP destination
    /// is ignored.
    pub fn add(&mut self, ev: &Value) {
        let s = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or("");
        let (op, repeat) = match s("kind") {
            "net" => (s("op"), false),
            // Records written before the `net` kind named the operation itself.
            k @ ("connect" | "sendmsg") => (k, false),
            "repeat" if s("of") == "net" => (s("op"), true),
            _ => return,
        };
        if !matches!(op, "connect" | "sendmsg") {
            return;
        }
        let Some(ip) = s("addr").trim_matches(['[', ']']).parse::<IpAddr>().ok() else {
            return;
        };
        let ip = fold(ip);
        let Some(port) = ev
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
        else {
            return;
        };
        let count = if repeat {
            ev.get("count").and_then(Value::as_u64).unwrap_or(1)
        } else {
            1
        };
        let depth = ev.get("depth").and_then(Value::as_u64);
        if depth.is_none_or(|d| d == 0) {
            self.skipped.gateway += count;
            return;
        }
        if ip.is_loopback() || ip.is_unspecified() {
            self.skipped.loopback += count;
            return;
        }
        let thread = ev
            .get("pid")
            .or_else(|| ev.get("tgid"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if repeat {
            let at = |k: &str| ev.get(k).and_then(Value::as_str)?.parse().ok();
            self.repeats.push(Repeat {
                thread,
                op: op.to_owned(),
                ip,
                port,
                depth: depth.unwrap_or(1),
                count,
                first: at("first_time").or_else(|| event_time(ev)),
                last: at("last_time").or_else(|| event_time(ev)),
            });
            return;
        }
        let name = Some(s("dest_name")).filter(|n| !n.is_empty());
        if let Some(n) = name {
            self.names.insert((thread, ip, port), n.to_owned());
        }
        let t = event_time(ev);
        self.judge(
            ev,
            &Seen {
                ip,
                port,
                name,
                count,
                first: t,
                last: t,
            },
        );
    }

    /// Counts `seen` into its destination's group when the rule flags `ev`.
    fn judge(&mut self, ev: &Value, seen: &Seen<'_>) {
        if !self.policy.evaluate(ev).iter().any(|v| v.rule == self.rule) {
            self.skipped.allowed += seen.count;
            return;
        }
        if seen.port == 0 {
            self.skipped.no_port += seen.count;
            return;
        }
        let entry = entry(seen.ip, seen.port, seen.name);
        let g = self
            .groups
            .entry(entry.clone())
            .or_insert_with(|| Suggestion {
                entry,
                connections: 0,
                first: None,
                last: None,
            });
        g.connections += seen.count;
        // `Option`'s order puts `None` first: take the earliest of the known times.
        g.first = match (g.first, seen.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        g.last = g.last.max(seen.last);
    }

    /// The suggestions, most connections first, and what was left out.
    pub fn finish(mut self) -> (Vec<Suggestion>, Skipped) {
        for r in std::mem::take(&mut self.repeats) {
            let name = self.names.get(&(r.thread, r.ip, r.port)).cloned();
            // Judged as the connect it repeats: `repeat` is no kind a rule matches.
            let mut ev = json!({
                "kind": "net", "op": r.op, "addr": r.ip.to_string(), "port": r.port,
                "depth": r.depth,
            });
            if let Some(n) = &name {
                ev["dest_name"] = json!(n);
            }
            let seen = Seen {
                ip: r.ip,
                port: r.port,
                name: name.as_deref(),
                count: r.count,
                first: r.first,
                last: r.last,
            };
            self.judge(&ev, &seen);
        }
        let mut v: Vec<Suggestion> = self.groups.into_values().collect();
        v.sort_by(|a, b| {
            b.connections
                .cmp(&a.connections)
                .then_with(|| a.entry.cmp(&b.entry))
        });
        (v, self.skipped)
    }
}

/// The allow entry for a destination: its name with the port when the name is known
/// (and one the policy accepts), else its address with the port.
fn entry(ip: IpAddr, port: u16, name: Option<&str>) -> String {
    if let Some(n) = name.filter(|n| is_hostname(n)) {
        let n = n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase();
        let e = format!("{n}:{port}");
        if parse_dest(&e).is_ok_and(|d| matches!(d.target, DestTarget::Host(_))) {
            return e;
        }
    }
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Reads the record under `state_dir` through `filter` and gathers the suggestions for
/// `rule` of `policy`.
pub fn from_record(
    state_dir: &Path,
    filter: &Filter,
    policy: &CompiledPolicy,
    rule: &str,
) -> anyhow::Result<(Vec<Suggestion>, Skipped)> {
    let reader = Reader::open(state_dir)?;
    let mut c = Collector::new(policy, rule);
    reader.events(
        filter.since,
        |rec| {
            if filter.matches(&rec.event) {
                c.add(&rec.event);
            }
        },
        |p| p.warn(),
    )?;
    Ok(c.finish())
}

/// Why the policy text could not be extended.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("cannot edit the policy as TOML: {0}")]
    Toml(#[from] toml_edit::TomlError),
    #[error(
        "no `[[rules]]` table with id = \"{0}\" (rules written as an inline array are not edited)"
    )]
    NoRule(String),
    #[error("rule `{0}` has no `egress` table")]
    NoEgress(String),
    #[error("`allow` of rule `{0}` is not an array")]
    AllowNotArray(String),
}

/// `text` with the `allow` list of egress rule `rule` extended by `suggestions`, one
/// per line with its counts as a trailing comment; the rest of the text, comments
/// included, is kept as it was.
pub fn extend_policy(
    text: &str,
    rule: &str,
    suggestions: &[Suggestion],
) -> Result<String, EditError> {
    use toml_edit::{Array, DocumentMut, Item, Value as TomlValue};

    let mut doc: DocumentMut = text.parse()?;
    let table = doc
        .get_mut("rules")
        .and_then(Item::as_array_of_tables_mut)
        .and_then(|rules| {
            rules
                .iter_mut()
                .find(|t| t.get("id").and_then(Item::as_str) == Some(rule))
        })
        .ok_or_else(|| EditError::NoRule(rule.to_owned()))?;
    let egress = table
        .get_mut("egress")
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| EditError::NoEgress(rule.to_owned()))?;
    if egress.get("allow").is_none() {
        egress.insert("allow", Item::Value(TomlValue::Array(Array::new())));
    }
    let allow = egress
        .get_mut("allow")
        .and_then(Item::as_array_mut)
        .ok_or_else(|| EditError::AllowNotArray(rule.to_owned()))?;

    // The list's own indentation when it is already one entry a line, else 4 spaces.
    let indent = allow
        .iter()
        .find_map(|v| {
            let p = v.decor().prefix()?.as_str()?;
            let (_, after) = p.rsplit_once('\n')?;
            after
                .chars()
                .all(|c| c == ' ' || c == '\t')
                .then(|| after.to_owned())
        })
        .unwrap_or_else(|| "    ".to_owned());
    let line = format!("\n{indent}");
    let multiline = allow.iter().any(|v| {
        v.decor()
            .prefix()
            .and_then(|p| p.as_str())
            .is_some_and(|p| p.contains('\n'))
    });
    if !multiline {
        for v in allow.iter_mut() {
            v.decor_mut().set_prefix(line.clone());
            v.decor_mut().set_suffix("");
        }
    }
    // What stood between the last entry and `]` (a comment about it, blank lines)
    // now comes before the first new entry.
    let old_trailing = allow.trailing().as_str().unwrap_or("").to_owned();
    let old_trailing = old_trailing.trim_end_matches([' ', '\t']);
    let mut before = if old_trailing.trim().is_empty() {
        String::new()
    } else if old_trailing.ends_with('\n') {
        old_trailing.trim_end_matches('\n').to_owned()
    } else {
        old_trailing.to_owned()
    };
    before.push_str(&format!(
        "{line}# Seen in the record by `openclaw-guard policy suggest`:{line}"
    ));
    for s in suggestions {
        let mut v = TomlValue::from(s.entry.as_str());
        v.decor_mut().set_prefix(std::mem::take(&mut before));
        v.decor_mut().set_suffix("");
        allow.push_formatted(v);
        // A comment after the comma belongs to what follows it.
        before = format!(" {}{line}", s.comment());
    }
    let last = before.trim_end_matches([' ', '\t']);
    allow.set_trailing(format!("{}\n", last.trim_end_matches('\n')));
    allow.set_trailing_comma(true);
    Ok(doc.to_string())
}

/// The policy to print: `text` extended by `suggestions`, or as it was with a closing
/// comment saying there was nothing to add.
pub fn render(text: &str, rule: &str, suggestions: &[Suggestion]) -> Result<String, EditError> {
    if !suggestions.is_empty() {
        return extend_policy(text, rule, suggestions);
    }
    let sep = if text.ends_with('\n') || text.is_empty() {
        ""
    } else {
        "\n"
    };
    Ok(format!(
        "{text}{sep}\n# openclaw-guard policy suggest: nothing to add to rule `{rule}`: the \
         record holds no connection by the gateway's descendants that it would flag.\n"
    ))
}

/// The policy text of `--policy`, or the embedded default, with a name for messages.
fn policy_text(path: Option<&Path>) -> Result<(String, String), PolicyError> {
    match path {
        None => Ok((
            crate::policy::DEFAULT_POLICY.to_owned(),
            "<default>".to_owned(),
        )),
        Some(p) => {
            let t = std::fs::read_to_string(p).map_err(|source| PolicyError::Read {
                path: p.to_owned(),
                source,
            })?;
            Ok((t, p.display().to_string()))
        }
    }
}

/// Checks that `rule` is an egress rule of `policy`; the message says what is there.
fn check_rule(policy: &Policy, rule: &str) -> Result<(), String> {
    let egress: Vec<&str> = policy
        .rules
        .iter()
        .filter(|r| matches!(r.kind, RuleKind::Egress(_)))
        .map(|r| r.id.as_str())
        .collect();
    match policy.rule(rule).map(|r| &r.kind) {
        Some(RuleKind::Egress(_)) => Ok(()),
        Some(k) => Err(format!(
            "rule `{rule}` is a {} rule; pass an egress rule with --egress-rule ({})",
            k.name(),
            egress.join(", ")
        )),
        None => Err(format!(
            "no rule `{rule}` in the policy; its egress rules: {}",
            egress.join(", ")
        )),
    }
}

/// Runs `policy suggest`: the extended policy on stdout, a summary on stderr. Exit 0,
/// or 2 when the policy or the rule is unusable.
pub fn run(args: &SuggestArgs) -> anyhow::Result<i32> {
    if args.query.json {
        anyhow::bail!("--json does not apply to `policy suggest`: it prints a policy (TOML)");
    }
    let loaded = policy_text(args.policy.as_deref())
        .and_then(|(text, name)| Ok((crate::policy::load_str(&text, &name)?, text, name)));
    let (policy, text, name) = match loaded {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    let rule = args.egress_rule.as_str();
    if let Err(e) = check_rule(&policy, rule) {
        eprintln!("{name}: {e}");
        return Ok(2);
    }
    if let Some(r) = policy.rule(rule) {
        if let RuleKind::Egress(e) = &r.kind {
            let deny_all = e
                .deny
                .iter()
                .any(|d| d.target == DestTarget::Any && d.ports == PortSpec::Any);
            if !deny_all {
                eprintln!(
                    "warning: rule `{rule}` does not deny `any`: the destinations below are ones \
                     it denies on purpose, allowing them undoes that"
                );
            }
        }
    }
    let compiled = super::replay::compile_for_record(&policy, &args.state_dir)?;
    let filter = args.query.filter(Timestamp::now())?;
    let (suggestions, skipped) = from_record(&args.state_dir, &filter, &compiled, rule)?;
    let out = render(&text, rule, &suggestions)?;
    // What is printed must be what `policy check` accepts.
    if let Err(e) = crate::policy::load_str(&out, "<suggested>") {
        anyhow::bail!("the extended policy does not validate (a bug in `policy suggest`):\n{e}");
    }
    let connections: u64 = suggestions.iter().map(|s| s.connections).sum();
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r.context("failed to write the policy to stdout")?,
    }
    eprintln!(
        "policy suggest: {} destination{}, {connections} connection{} to allow in rule `{rule}` \
         (left out: {} to loopback, {} already allowed, {} by the gateway itself, {} to port 0)",
        suggestions.len(),
        if suggestions.len() == 1 { "" } else { "s" },
        if connections == 1 { "" } else { "s" },
        skipped.loopback,
        skipped.allowed,
        skipped.gateway,
        skipped.no_port
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::replay::replay_event;
    use super::*;
    use crate::{
        policy::{load_str, Action, DEFAULT_POLICY},
        recorder::{Options, RecordedEvent, Recorder},
    };

    /// A connect or send of the record, the daemon's shape.
    fn net(
        time: &str,
        pid: u64,
        depth: u64,
        op: &str,
        addr: &str,
        port: u64,
        name: Option<&str>,
    ) -> Value {
        let family = if addr.contains(':') { "inet6" } else { "inet" };
        let mut v = json!({
            "time": time, "kind": "net", "op": op, "family": family, "addr": addr,
            "port": port, "ipv4_mapped": false, "protocol": "tcp", "sock_type": "stream",
            "ret": 0, "pid": pid, "tgid": pid, "root": 100, "depth": depth, "cgroup_id": 1,
        });
        if let Some(n) = name {
            v["dest_name"] = json!(n);
        }
        v
    }

    fn connect(time: &str, depth: u64, addr: &str, port: u64, name: Option<&str>) -> Value {
        net(time, 1200, depth, "connect", addr, port, name)
    }

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    /// A record of what an agent's tree did over a morning.
    fn record() -> Vec<Value> {
        vec![
            json!({"time": "2026-05-01T08:00:00Z", "kind": "exec", "pid": 1200, "depth": 2, "filename": "/usr/bin/git", "argv": ["git", "fetch"]}),
            // github.com over two addresses, out of time order, one name spelled
            // with capitals and the root's dot.
            connect(
                "2026-05-01T09:00:00.5Z",
                2,
                "140.82.112.3",
                443,
                Some("github.com"),
            ),
            connect(
                "2026-05-01T08:00:00.5Z",
                2,
                "140.82.112.3",
                443,
                Some("github.com"),
            ),
            connect(
                "2026-05-01T08:30:00Z",
                3,
                "140.82.112.4",
                443,
                Some("GitHub.com."),
            ),
            // The same name on another port is another entry.
            connect(
                "2026-05-01T08:40:00Z",
                2,
                "140.82.112.3",
                22,
                Some("github.com"),
            ),
            // No name known: by address; IPv4-mapped folds to IPv4.
            net(
                "2026-05-01T08:01:00Z",
                1300,
                1,
                "sendmsg",
                "10.0.0.2",
                53,
                None,
            ),
            net(
                "2026-05-01T08:02:00Z",
                1300,
                1,
                "sendmsg",
                "10.0.0.2",
                53,
                None,
            ),
            connect("2026-05-01T08:03:00Z", 1, "2001:db8::1", 443, None),
            connect("2026-05-01T08:04:00Z", 1, "::ffff:198.51.100.7", 80, None),
            // The kernel folded 5 more connects of pid 1200 to github's first address:
            // they take the name of the full event that opened the window.
            json!({"time": "2026-05-01T09:10:00Z", "kind": "repeat", "of": "net", "op": "connect", "count": 5,
                   "first_time": "2026-05-01T09:00:00.5Z", "last_time": "2026-05-01T09:05:00Z",
                   "family": "inet", "addr": "140.82.112.3", "port": 443, "pid": 1200, "tgid": 1200, "depth": 2}),
            // A repeat nobody's full event names stays an address.
            json!({"time": "2026-05-01T09:20:00Z", "kind": "repeat", "of": "net", "op": "sendmsg", "count": 3,
                   "first_time": "2026-05-01T09:19:00Z", "last_time": "2026-05-01T09:19:30Z",
                   "family": "inet", "addr": "10.0.0.3", "port": 53, "pid": 1400, "tgid": 1400, "depth": 1}),
            // Left out: loopback, the gateway itself, binds and raw sockets, unix sockets,
            // files and counters.
            connect("2026-05-01T08:05:00Z", 1, "127.0.0.1", 8080, None),
            connect("2026-05-01T08:05:01Z", 1, "::1", 3000, Some("localhost")),
            connect(
                "2026-05-01T08:06:00Z",
                0,
                "203.0.113.50",
                443,
                Some("gateway-only.example"),
            ),
            net(
                "2026-05-01T08:07:00Z",
                1200,
                2,
                "bind",
                "0.0.0.0",
                8000,
                None,
            ),
            net("2026-05-01T08:07:01Z", 1200, 2, "socket", "", 0, None),
            json!({"time": "2026-05-01T08:08:00Z", "kind": "net", "op": "connect", "family": "unix", "addr": "/run/docker.sock", "port": 0, "depth": 2}),
            json!({"time": "2026-05-01T08:09:00Z", "kind": "file_open", "path": "/etc/hosts", "depth": 2}),
            json!({"time": "2026-05-01T08:10:00Z", "kind": "stats", "counters": {}}),
        ]
    }

    fn write(dir: &Path, events: &[Value]) {
        let opts = Options {
            fsync_interval: None,
            ..Options::default()
        };
        let (mut r, _) = Recorder::open(dir, opts).expect("open record");
        for ev in events {
            r.append(ev).expect("append");
        }
    }

    fn suggest(dir: &Path, text: &str, rule: &str) -> (Vec<Suggestion>, Skipped) {
        let p = load_str(text, "t").expect("valid policy");
        let c = p.compile();
        from_record(dir, &Filter::default(), &c, rule).expect("read record")
    }

    #[test]
    fn groups_by_name_else_address_with_counts_and_times() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), &record());
        let (s, skipped) = suggest(dir.path(), DEFAULT_POLICY, "egress");
        let got: Vec<(&str, u64)> = s
            .iter()
            .map(|s| (s.entry.as_str(), s.connections))
            .collect();
        assert_eq!(
            got,
            [
                ("github.com:443", 8),
                ("10.0.0.3:53", 3),
                ("10.0.0.2:53", 2),
                ("198.51.100.7:80", 1),
                ("[2001:db8::1]:443", 1),
                ("github.com:22", 1),
            ]
        );
        let gh = &s[0];
        assert_eq!(
            (gh.first, gh.last),
            (
                Some(t("2026-05-01T08:00:00.5Z")),
                Some(t("2026-05-01T09:05:00Z"))
            )
        );
        assert_eq!(
            gh.comment(),
            "# 8 connections, first 2026-05-01T08:00:00Z, last 2026-05-01T09:05:00Z"
        );
        assert_eq!(
            s[3].comment(),
            "# 1 connection, first 2026-05-01T08:04:00Z, last 2026-05-01T08:04:00Z"
        );
        assert_eq!(
            skipped,
            Skipped {
                loopback: 2,
                allowed: 0,
                gateway: 1,
                no_port: 0,
            }
        );
    }

    #[test]
    fn already_allowed_and_other_rules_are_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            &[
                connect(
                    "2026-05-01T08:00:00Z",
                    1,
                    "151.101.0.223",
                    443,
                    Some("pypi.org"),
                ),
                connect("2026-05-01T08:00:01Z", 1, "192.0.2.10", 443, None),
                // Dropped by an exception of the rule.
                connect(
                    "2026-05-01T08:00:02Z",
                    1,
                    "198.51.100.1",
                    443,
                    Some("ntp.example"),
                ),
                // Not denied by the rule at all.
                connect("2026-05-01T08:00:03Z", 1, "203.0.113.1", 25, None),
                connect("2026-05-01T08:00:04Z", 1, "203.0.113.1", 443, None),
            ],
        );
        let text = r#"
version = 1
[[rules]]
id = "web"
action = "block"
severity = "warning"
[rules.egress]
allow = ["loopback", "pypi.org:443", "192.0.2.0/24"]
deny = ["any:443"]
[[rules.exceptions]]
name = "time"
dest = ["ntp.example"]
"#;
        let (s, skipped) = suggest(dir.path(), text, "web");
        assert_eq!(
            s.iter().map(|s| s.entry.as_str()).collect::<Vec<_>>(),
            ["203.0.113.1:443"]
        );
        assert_eq!(skipped.allowed, 4);
    }

    #[test]
    fn since_seven_days_reads_only_the_last_week() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Timestamp::now();
        let ago = |days: i64| {
            let t = now
                .checked_sub(jiff::SignedDuration::from_hours(24 * days))
                .expect("in range");
            format!("{t:.0}")
        };
        write(
            dir.path(),
            &[
                connect(&ago(10), 1, "203.0.113.10", 443, Some("old.example")),
                connect(&ago(1), 1, "203.0.113.11", 443, Some("new.example")),
            ],
        );
        let q = QueryArgs {
            since: Some("7d".into()),
            ..QueryArgs::default()
        };
        let filter = q.filter(now).expect("7d is a duration");
        let c = crate::policy::default_policy().compile();
        let (s, _) = from_record(dir.path(), &filter, &c, "egress").expect("read");
        assert_eq!(
            s.iter().map(|s| s.entry.as_str()).collect::<Vec<_>>(),
            ["new.example:443"]
        );
    }

    /// Every connect and send of the record, repeats judged as the connect they repeat
    /// (named as the collector names them).
    fn as_connects(events: &[Value]) -> Vec<Value> {
        events
            .iter()
            .map(|ev| match ev["kind"].as_str() {
                Some("repeat") => {
                    let mut c = net(
                        ev["last_time"].as_str().unwrap_or(""),
                        ev["pid"].as_u64().unwrap_or(0),
                        ev["depth"].as_u64().unwrap_or(0),
                        ev["op"].as_str().unwrap_or(""),
                        ev["addr"].as_str().unwrap_or(""),
                        ev["port"].as_u64().unwrap_or(0),
                        None,
                    );
                    if ev["addr"] == "140.82.112.3" {
                        c["dest_name"] = json!("github.com");
                    }
                    c
                }
                _ => ev.clone(),
            })
            .collect()
    }

    #[test]
    fn suggested_policy_round_trips_and_still_blocks_the_unseen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events = record();
        write(dir.path(), &events);
        // The default blocks egress.
        let blocking = DEFAULT_POLICY.to_string();
        assert!(
            blocking.contains("id = \"egress\"\ndescription = \"A process started by the agent connected beyond loopback, the model providers and the DNS resolvers\"\naction = \"block\""),
            "the default egress rule blocks"
        );
        let before = load_str(&blocking, "t").expect("valid").compile();
        let (s, _) = suggest(dir.path(), &blocking, "egress");
        let out = render(&blocking, "egress", &s).expect("edit");
        // `policy check` accepts it; the file's comments are kept.
        let after = load_str(&out, "suggested").expect("the output validates");
        assert!(out.contains("# To only watch instead, set `action = \"alert\"`."));
        assert!(out.contains("# Not listed on purpose: workspace/"));
        assert!(out.contains(
            "    \"github.com:443\", # 8 connections, first 2026-05-01T08:00:00Z, last 2026-05-01T09:05:00Z\n"
        ));
        assert_eq!(after.rules.len(), before.policy.rules.len());
        let after = after.compile();
        let egress = |c: &CompiledPolicy, ev: &Value| {
            c.evaluate(ev)
                .into_iter()
                .filter(|v| v.rule == "egress")
                .map(|v| v.action)
                .collect::<Vec<_>>()
        };
        let mut flagged_before = 0;
        for ev in as_connects(&events) {
            if !egress(&before, &ev).is_empty() {
                flagged_before += 1;
            }
            assert!(egress(&after, &ev).is_empty(), "still flagged: {ev}");
        }
        assert_eq!(flagged_before, 10, "the record has work for the test");
        // `policy replay` over the record: nothing newly blocked.
        let (mut seq, mut blocked) = (0, Vec::new());
        crate::recorder::Reader::open(dir.path())
            .expect("reader")
            .events(
                None,
                |rec: RecordedEvent| {
                    seq += 1;
                    if let Some(l) = replay_event(&after, &rec) {
                        if l.change == "newly blocked" {
                            blocked.push(l.what);
                        }
                    }
                },
                |p| panic!("{p:?}"),
            )
            .expect("read");
        assert_eq!(seq, events.len());
        assert!(blocked.is_empty(), "{blocked:?}");
        // What the record never saw is still blocked.
        for unseen in [
            connect("2026-05-02T00:00:00Z", 1, "203.0.113.99", 443, None),
            connect(
                "2026-05-02T00:00:00Z",
                1,
                "140.82.112.3",
                80,
                Some("github.com"),
            ),
            connect(
                "2026-05-02T00:00:00Z",
                1,
                "140.82.112.3",
                443,
                Some("github.com.evil"),
            ),
            connect("2026-05-02T00:00:00Z", 1, "10.0.0.2", 54, None),
            connect("2026-05-02T00:00:00Z", 1, "2001:db8::2", 443, None),
        ] {
            assert_eq!(egress(&after, &unseen), [Action::Block], "{unseen}");
        }
    }

    #[test]
    fn edits_keep_the_file_and_put_one_entry_a_line() {
        let s = |e: &str, n: u64| Suggestion {
            entry: e.into(),
            connections: n,
            first: Some(t("2026-05-01T08:00:00Z")),
            last: Some(t("2026-05-01T09:00:00Z")),
        };
        let new = [s("github.com:443", 3), s("[2001:db8::1]:443", 1)];
        let one_line = "# top\nversion = 1\n[[rules]]\nid = \"egress\"\naction = \"block\"\nseverity = \"warning\"\n[rules.egress]\nallow = [\"loopback\", \"$providers\"] # kept\ndeny = [\"any\"]\n";
        assert_eq!(
            render(one_line, "egress", &new).expect("edit"),
            "# top\nversion = 1\n[[rules]]\nid = \"egress\"\naction = \"block\"\nseverity = \"warning\"\n[rules.egress]\nallow = [\n    \"loopback\",\n    \"$providers\",\n    # Seen in the record by `openclaw-guard policy suggest`:\n    \"github.com:443\", # 3 connections, first 2026-05-01T08:00:00Z, last 2026-05-01T09:00:00Z\n    \"[2001:db8::1]:443\", # 1 connection, first 2026-05-01T08:00:00Z, last 2026-05-01T09:00:00Z\n] # kept\ndeny = [\"any\"]\n"
        );
        // A list already one a line keeps its indentation and its comments.
        let multi = "version = 1\n[[rules]]\nid = \"out\"\naction = \"block\"\nseverity = \"warning\"\n[rules.egress]\nallow = [\n  # local\n  \"loopback\", # this host\n]\n";
        let out = render(multi, "out", &new[..1]).expect("edit");
        assert_eq!(
            out,
            "version = 1\n[[rules]]\nid = \"out\"\naction = \"block\"\nseverity = \"warning\"\n[rules.egress]\nallow = [\n  # local\n  \"loopback\", # this host\n  # Seen in the record by `openclaw-guard policy suggest`:\n  \"github.com:443\", # 3 connections, first 2026-05-01T08:00:00Z, last 2026-05-01T09:00:00Z\n]\n"
        );
        // No allow list yet: one is added to the rule's egress table, the other rules
        // are untouched.
        let none = "version = 1\n[[rules]]\nid = \"a\"\naction = \"alert\"\nseverity = \"warning\"\n[rules.egress]\nallow = [\"10.0.0.0/8\"]\n[[rules]]\nid = \"b\"\naction = \"block\"\nseverity = \"warning\"\n[rules.egress]\ndeny = [\"any\"]\n";
        let out = render(none, "b", &new[..1]).expect("edit");
        assert!(out.starts_with(
            "version = 1\n[[rules]]\nid = \"a\"\naction = \"alert\"\nseverity = \"warning\"\n[rules.egress]\nallow = [\"10.0.0.0/8\"]\n"
        ));
        let p = load_str(&out, "t").expect("valid");
        match &p.rule("b").expect("rule b").kind {
            RuleKind::Egress(e) => assert_eq!(
                e.allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
                ["github.com:443"]
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            extend_policy(none, "c", &new),
            Err(EditError::NoRule(r)) if r == "c"
        ));
    }

    #[test]
    fn nothing_to_suggest_prints_the_policy_and_says_so() {
        let out = render(DEFAULT_POLICY, "egress", &[]).expect("render");
        assert!(out.starts_with(DEFAULT_POLICY));
        assert!(out.trim_end().ends_with(
            "the record holds no connection by the gateway's descendants that it would flag."
        ));
        assert!(load_str(&out, "t").is_ok());
        // An empty record suggests nothing.
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            &[connect("2026-05-01T08:00:00Z", 0, "203.0.113.1", 443, None)],
        );
        assert!(suggest(dir.path(), DEFAULT_POLICY, "egress").0.is_empty());
    }

    #[test]
    fn the_rule_must_be_an_egress_rule() {
        let p = crate::policy::default_policy();
        assert!(check_rule(&p, "egress").is_ok());
        assert!(check_rule(&p, "child-to-gateway").is_ok());
        let e = check_rule(&p, "secrets").expect_err("a files rule");
        assert!(e.contains("is a files rule"), "{e}");
        assert!(
            e.contains("delegation-loopback, egress, child-to-gateway"),
            "{e}"
        );
        let e = check_rule(&p, "nope").expect_err("no such rule");
        assert!(e.starts_with("no rule `nope`"), "{e}");
    }
}
