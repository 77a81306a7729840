//! The policy file: TOML read into span-carrying raw structs (unknown fields
//! rejected), then validated into the model with every semantic error collected,
//! each located at `line:column` with its dotted field path, what was expected and a
//! hint.

use std::{collections::HashMap, fmt, ops::Range, path::PathBuf};

use serde::Deserialize;
use toml::{de::DeValue, Spanned};

use super::{
    glob::glob_problem,
    model::{
        rule_index, shell_kind, valid_env_name, Action, BindRule, EgressRule, EnvRule, Exception,
        ExecRule, FilesRule, Mode, PathBase, PathPattern, Policy, Rule, RuleKind, Severity,
        ShellMatcher, Targets, DEFAULT_UNIT_GLOB, ENV_NAME_MAX, SHELL_KINDS,
    },
    net::{parse_dest, parse_ports, Dest, DestTarget, PortSpec},
};

/// The only policy format version.
pub const VERSION: i64 = 1;

// ---------------------------------------------------------------------------------
// Raw file shape
// ---------------------------------------------------------------------------------

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: S<toml::Value>,
    mode: Option<S<String>>,
    targets: Option<RawTargets>,
    #[serde(default)]
    rules: Vec<S<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargets {
    discover: Option<bool>,
    #[serde(default)]
    pids: Vec<S<i64>>,
    #[serde(default)]
    cgroups: Vec<S<String>>,
    systemd_units: Option<Vec<S<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: S<String>,
    #[serde(default)]
    description: String,
    action: S<String>,
    mode: Option<S<String>>,
    severity: S<String>,
    files: Option<S<RawFiles>>,
    egress: Option<S<RawEgress>>,
    exec: Option<S<RawExec>>,
    bind: Option<S<RawBind>>,
    env: Option<S<RawEnv>>,
    #[serde(default)]
    exceptions: Vec<S<RawException>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    paths: S<Vec<S<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    #[serde(default)]
    allow: Vec<S<String>>,
    deny: Option<S<Vec<S<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExec {
    #[serde(default)]
    shells: Vec<S<String>>,
    #[serde(default)]
    custom_shells: Vec<S<RawCustomShell>>,
    #[serde(default)]
    deny: Vec<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomShell {
    exe: S<Vec<S<String>>>,
    #[serde(default)]
    args: Vec<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBind {
    ports: S<Vec<S<toml::Value>>>,
    #[serde(default)]
    allow: Vec<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnv {
    from_files: Option<bool>,
    #[serde(default)]
    names: Vec<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawException {
    name: Option<S<String>>,
    #[serde(default)]
    description: String,
    parent_is_gateway: Option<bool>,
    #[serde(default)]
    comm: Vec<S<String>>,
    #[serde(default)]
    exe: Vec<S<String>>,
    #[serde(default)]
    args: Vec<S<String>>,
    #[serde(default)]
    paths: Vec<S<String>>,
    #[serde(default)]
    dest: Vec<S<String>>,
    stdio_socket: Option<bool>,
    #[serde(default)]
    role: Vec<S<String>>,
    interactive: Option<bool>,
    after_denial: Option<bool>,
    severity: Option<S<String>>,
}

// ---------------------------------------------------------------------------------
// Diagnostics
// ---------------------------------------------------------------------------------

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line and column (in characters) of the offending text.
    pub line: usize,
    pub column: usize,
    /// Dotted field path (`rules[3].egress.deny[1]`); empty for the document itself.
    pub field: String,
    pub message: String,
    /// What would have been valid.
    pub expected: Option<String>,
    pub hint: Option<String>,
}

impl Diagnostic {
    /// `FILE:LINE:COL: FIELD: MESSAGE; expected X` then an indented hint line.
    pub fn render(&self, file: &str) -> String {
        let mut s = format!("{file}:{}:{}: ", self.line, self.column);
        if !self.field.is_empty() {
            s.push_str(&self.field);
            s.push_str(": ");
        }
        s.push_str(&self.message);
        if let Some(e) = &self.expected {
            s.push_str("; expected ");
            s.push_str(e);
        }
        if let Some(h) = &self.hint {
            s.push_str("\n  hint: ");
            s.push_str(h);
        }
        s
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render("<policy>"))
    }
}

/// 1-based (line, column) of a byte offset; columns count characters.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

struct Diags<'t> {
    text: &'t str,
    out: Vec<Diagnostic>,
}

impl Diags<'_> {
    fn push(
        &mut self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
        expected: Option<&str>,
        hint: Option<&str>,
    ) {
        let (line, column) = line_col(self.text, span.start);
        self.out.push(Diagnostic {
            line,
            column,
            field: field.into(),
            message: message.into(),
            expected: expected.map(str::to_owned),
            hint: hint.map(str::to_owned),
        });
    }
}

fn one_of(names: &[&str]) -> String {
    format!("one of {}", names.join(", "))
}

// ---------------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------------

/// Parses and validates a policy. On failure, every problem found: all TOML syntax
/// errors, else the first shape error (serde stops there), else every semantic error.
pub fn parse_policy(text: &str) -> Result<Policy, Vec<Diagnostic>> {
    let mut d = Diags {
        text,
        out: Vec::new(),
    };
    let (doc, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            d.push(
                span,
                "",
                format!("TOML syntax: {}", e.message().trim()),
                None,
                Some("see https://toml.io for the syntax; strings need double quotes"),
            );
        }
        return Err(d.out);
    }
    let raw: RawPolicy = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let field = field_at(doc.get_ref(), span.start);
            let msg = e.message().trim().to_owned();
            let hint = shape_hint(&msg);
            d.push(span, field, msg, None, Some(hint));
            return Err(d.out);
        }
    };
    let policy = validate(raw, &mut d);
    if d.out.is_empty() {
        Ok(policy)
    } else {
        d.out.sort_by_key(|x| (x.line, x.column));
        Err(d.out)
    }
}

fn shape_hint(msg: &str) -> &'static str {
    if msg.starts_with("unknown field") {
        "check the spelling; `openclaw-guard policy default` shows every field in use"
    } else if msg.starts_with("missing field `version`") {
        "start the file with `version = 1`"
    } else if msg.starts_with("missing field") {
        "add the field; `openclaw-guard policy default` has an example of each rule kind"
    } else if msg.starts_with("invalid type") {
        "strings are quoted, lists are `[...]`, tables are `[name]` or `{ k = v }`"
    } else {
        "compare with `openclaw-guard policy default`"
    }
}

/// The dotted path of the innermost key or value whose span holds `offset`. Table
/// spans cover only their `[header]`, so every node is visited, not just containing ones.
fn field_at(doc: &toml::de::DeTable<'_>, offset: usize) -> String {
    fn walk(v: &DeValue<'_>, offset: usize, path: &str, best: &mut (usize, String), depth: usize) {
        let hit = |p: String, best: &mut (usize, String)| {
            if depth + 1 > best.0 {
                *best = (depth + 1, p);
            }
        };
        match v {
            DeValue::Table(t) => {
                for (k, val) in t.iter() {
                    let p = if path.is_empty() {
                        k.get_ref().to_string()
                    } else {
                        format!("{path}.{}", k.get_ref())
                    };
                    let leaf = !matches!(val.get_ref(), DeValue::Table(_) | DeValue::Array(_));
                    if k.span().contains(&offset) || (leaf && val.span().contains(&offset)) {
                        hit(p.clone(), best);
                    }
                    walk(val.get_ref(), offset, &p, best, depth + 1);
                }
            }
            DeValue::Array(a) => {
                for (i, val) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    if !matches!(val.get_ref(), DeValue::Table(_)) && val.span().contains(&offset) {
                        hit(p.clone(), best);
                    }
                    walk(val.get_ref(), offset, &p, best, depth + 1);
                }
            }
            _ => {}
        }
    }
    let mut best = (0, String::new());
    walk(&DeValue::Table(doc.clone()), offset, "", &mut best, 0);
    best.1
}

// ---------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------

fn validate(raw: RawPolicy, d: &mut Diags<'_>) -> Policy {
    match raw.version.get_ref() {
        toml::Value::Integer(VERSION) => {}
        toml::Value::Integer(v) => d.push(
            raw.version.span(),
            "version",
            format!("unsupported policy version {v}"),
            Some("1"),
            Some("this guard reads version 1 policies; `openclaw-guard policy default` prints one"),
        ),
        other => d.push(
            raw.version.span(),
            "version",
            format!("version must be an integer, not a {}", other.type_str()),
            Some("version = 1"),
            Some("write it without quotes"),
        ),
    }
    let mode = raw
        .mode
        .as_ref()
        .and_then(|m| parse_mode(m, "mode", d))
        .unwrap_or_default();
    let targets = raw
        .targets
        .map(|t| validate_targets(t, d))
        .unwrap_or_default();

    let mut rules = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut seen_index: HashMap<u32, String> = HashMap::new();
    for (i, r) in raw.rules.into_iter().enumerate() {
        let at = format!("rules[{i}]");
        let span = r.span();
        let r = r.into_inner();
        if let Some(prev) = seen.get(r.id.get_ref()) {
            d.push(
                r.id.span(),
                format!("{at}.id"),
                format!(
                    "duplicate rule id `{}` (first used by rules[{prev}])",
                    r.id.get_ref()
                ),
                Some("a unique id"),
                Some("rule ids name decisions in events and alerts: give each rule its own"),
            );
        } else {
            seen.insert(r.id.get_ref().clone(), i);
        }
        if let Some(rule) = validate_rule(r, &at, span, d) {
            if let Some(other) = seen_index.get(&rule.index) {
                if *other != rule.id {
                    d.push(
                        0..0,
                        format!("{at}.id"),
                        format!(
                            "rule ids `{other}` and `{}` hash to the same number",
                            rule.id
                        ),
                        Some("distinct ids"),
                        Some("rename one of the two rules"),
                    );
                }
            }
            seen_index.insert(rule.index, rule.id.clone());
            rules.push(rule);
        }
    }
    Policy {
        version: 1,
        mode,
        targets,
        rules,
    }
}

fn parse_mode(m: &S<String>, field: &str, d: &mut Diags<'_>) -> Option<Mode> {
    let r = Mode::parse(m.get_ref());
    if r.is_none() {
        d.push(
            m.span(),
            field,
            format!("unknown mode `{}`", m.get_ref()),
            Some(&one_of(Mode::NAMES)),
            Some("`monitor` reports only; `enforce` blocks and kills as the rules say"),
        );
    }
    r
}

fn parse_severity(s: &S<String>, field: &str, d: &mut Diags<'_>) -> Option<Severity> {
    let r = Severity::parse(s.get_ref());
    if r.is_none() {
        d.push(
            s.span(),
            field,
            format!("unknown severity `{}`", s.get_ref()),
            Some(&one_of(Severity::NAMES)),
            Some("these are Falco's priorities, lower case; for \"high\" use `critical`"),
        );
    }
    r
}

fn validate_targets(t: RawTargets, d: &mut Diags<'_>) -> Targets {
    let mut out = Targets {
        discover: t.discover.unwrap_or(true),
        ..Targets::default()
    };
    for (i, p) in t.pids.iter().enumerate() {
        match u32::try_from(*p.get_ref()) {
            Ok(v) if v > 0 => out.pids.push(v),
            _ => d.push(
                p.span(),
                format!("targets.pids[{i}]"),
                format!("`{}` is not a process id", p.get_ref()),
                Some("a positive integer"),
                None,
            ),
        }
    }
    for (i, c) in t.cgroups.iter().enumerate() {
        let f = format!("targets.cgroups[{i}]");
        if c.get_ref().is_empty() {
            d.push(
                c.span(),
                f,
                "empty cgroup path",
                Some("an absolute path"),
                Some("e.g. `/sys/fs/cgroup/system.slice/openclaw.service`"),
            );
        } else if !c.get_ref().starts_with('/') {
            d.push(
                c.span(),
                f,
                format!("cgroup path `{}` is relative", c.get_ref()),
                Some("an absolute path"),
                Some("cgroup directories start with the cgroup2 mount, e.g. `/sys/fs/cgroup/...`"),
            );
        } else {
            out.cgroups.push(PathBuf::from(c.get_ref()));
        }
    }
    if let Some(units) = t.systemd_units {
        out.systemd_units.clear();
        for (i, u) in units.iter().enumerate() {
            let f = format!("targets.systemd_units[{i}]");
            let v = u.get_ref();
            if let Some(p) = glob_problem(v) {
                d.push(
                    u.span(),
                    f,
                    format!("invalid glob: {p}"),
                    Some("a unit name with `*` or `?`"),
                    Some("only `*` and `?` are wildcards"),
                );
            } else if v.is_empty() || v.contains('/') || !v.contains('.') {
                d.push(
                    u.span(),
                    f,
                    format!("`{v}` is not a systemd unit name"),
                    Some(&format!("a name like `{DEFAULT_UNIT_GLOB}`")),
                    Some("user and system units are both searched"),
                );
            } else {
                out.systemd_units.push(v.clone());
            }
        }
    }
    out
}

fn valid_id(id: &str) -> bool {
    let mut b = id.bytes();
    id.len() <= 64
        && b.next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        })
}

fn validate_rule(r: RawRule, at: &str, span: Range<usize>, d: &mut Diags<'_>) -> Option<Rule> {
    let before = d.out.len();
    let id = r.id.get_ref().clone();
    if !valid_id(&id) {
        d.push(
            r.id.span(),
            format!("{at}.id"),
            format!("invalid rule id `{id}`"),
            Some("1-64 characters of a-z, 0-9, `-`, `_`, `.`, starting with a letter or digit"),
            Some("e.g. `secrets` or `shell-spawn`"),
        );
    }
    let action = Action::parse(r.action.get_ref());
    if action.is_none() {
        d.push(
            r.action.span(),
            format!("{at}.action"),
            format!("unknown action `{}`", r.action.get_ref()),
            Some(&one_of(Action::NAMES)),
            Some("`block` denies with EPERM, `kill` sends SIGKILL, `alert` only reports"),
        );
    }
    let mode = r
        .mode
        .as_ref()
        .and_then(|m| parse_mode(m, &format!("{at}.mode"), d));
    let severity = parse_severity(&r.severity, &format!("{at}.severity"), d);

    let kinds = [
        r.files.as_ref().map(|x| ("files", x.span())),
        r.egress.as_ref().map(|x| ("egress", x.span())),
        r.exec.as_ref().map(|x| ("exec", x.span())),
        r.bind.as_ref().map(|x| ("bind", x.span())),
        r.env.as_ref().map(|x| ("env", x.span())),
    ];
    let present: Vec<_> = kinds.iter().flatten().collect();
    let kind_hint = Some("a rule has exactly one of [rules.files], [rules.egress], [rules.exec], [rules.bind], [rules.env]; split it into several rules");
    let kind = match present.as_slice() {
        [] => {
            d.push(
                span.clone(),
                at.to_owned(),
                format!("rule `{id}` matches nothing"),
                Some("one of files, egress, exec, bind, env"),
                kind_hint,
            );
            None
        }
        [_] => {
            if let Some(f) = r.files {
                validate_files(f, at, d).map(RuleKind::Files)
            } else if let Some(e) = r.egress {
                validate_egress(e, at, d).map(RuleKind::Egress)
            } else if let Some(x) = r.exec {
                validate_exec(x, at, (action, r.action.span()), d).map(RuleKind::Exec)
            } else if let Some(v) = r.env {
                validate_env(v, at, (action, r.action.span()), d).map(RuleKind::Env)
            } else {
                r.bind
                    .and_then(|b| validate_bind(b, at, d))
                    .map(RuleKind::Bind)
            }
        }
        [_, (second, s), ..] => {
            d.push(
                s.clone(),
                format!("{at}.{second}"),
                format!("rule `{id}` has more than one kind"),
                Some("exactly one of files, egress, exec, bind, env"),
                kind_hint,
            );
            None
        }
    };

    let mut exceptions = Vec::new();
    let kind_name = present.first().map(|(k, _)| *k);
    for (j, e) in r.exceptions.into_iter().enumerate() {
        let xat = format!("{at}.exceptions[{j}]");
        if let Some(kind) = kind_name {
            check_exception_fields(kind, e.get_ref(), e.span(), &xat, d);
        }
        if let Some(x) = validate_exception(e.into_inner(), &xat, j, d) {
            exceptions.push(x);
        }
    }
    if d.out.len() != before {
        return None;
    }
    Some(Rule {
        index: rule_index(&id),
        id,
        description: r.description,
        action: action?,
        mode,
        severity: severity?,
        kind: kind?,
        exceptions,
    })
}

const PATH_HINT: &str =
    "paths start with `/`, `~/` or `$OPENCLAW_STATE_DIR/`; `*` and `?` match within one component";

fn parse_path(p: &S<String>, field: &str, d: &mut Diags<'_>) -> Option<PathPattern> {
    let s = p.get_ref();
    let bad = |d: &mut Diags<'_>, msg: String, exp: &str| {
        d.push(p.span(), field, msg, Some(exp), Some(PATH_HINT));
        None
    };
    if s.trim().is_empty() {
        return bad(d, "empty path".into(), "an absolute path");
    }
    let (base, rest) = if let Some(r) = s.strip_prefix("$OPENCLAW_STATE_DIR") {
        (PathBase::StateDir, r)
    } else if let Some(r) = s.strip_prefix("$HOME").or_else(|| s.strip_prefix('~')) {
        (PathBase::Home, r)
    } else if let Some(v) = s.strip_prefix('$') {
        let var: String = v
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        return bad(
            d,
            format!("unknown variable `${var}` in path"),
            "`~`, `$HOME` or `$OPENCLAW_STATE_DIR`",
        );
    } else if s.starts_with('/') {
        (PathBase::Root, s.as_str())
    } else {
        return bad(d, format!("relative path `{s}`"), "an absolute path");
    };
    if !rest.is_empty() && !rest.starts_with('/') {
        return bad(
            d,
            format!("`{s}`: expected `/` after the variable"),
            "`~/...` or `$OPENCLAW_STATE_DIR/...`",
        );
    }
    let mut components = Vec::new();
    for c in rest.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if c == ".." {
            return bad(d, format!("`..` in path `{s}`"), "a path without `..`");
        }
        if let Some(g) = glob_problem(c) {
            return bad(d, format!("invalid glob: {g}"), "`*` and `?` only");
        }
        components.push(c.to_owned());
    }
    if base == PathBase::Root && components.is_empty() {
        return bad(
            d,
            "protecting `/` would stop the whole tree".into(),
            "a narrower path",
        );
    }
    Some(PathPattern {
        raw: s.clone(),
        base,
        components,
    })
}

fn validate_files(f: S<RawFiles>, at: &str, d: &mut Diags<'_>) -> Option<FilesRule> {
    let span = f.span();
    let f = f.into_inner();
    if f.paths.get_ref().is_empty() {
        d.push(
            f.paths.span(),
            format!("{at}.files.paths"),
            "no paths",
            Some("at least one path"),
            Some(PATH_HINT),
        );
        return None;
    }
    let _ = span;
    let mut paths = Vec::new();
    for (i, p) in f.paths.get_ref().iter().enumerate() {
        if let Some(x) = parse_path(p, &format!("{at}.files.paths[{i}]"), d) {
            paths.push(x);
        }
    }
    Some(FilesRule { paths })
}

fn parse_dests(list: &[S<String>], field: &str, d: &mut Diags<'_>) -> Vec<Dest> {
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        match parse_dest(s.get_ref()) {
            Ok(x) => out.push(x),
            Err(p) => d.push(s.span(), format!("{field}[{i}]"), p.message, Some("a prefix, address, host name, `loopback`, `any` or `$providers`, with optional `:PORT` or `:LO-HI`"), Some(p.hint)),
        }
    }
    out
}

fn validate_egress(e: S<RawEgress>, at: &str, d: &mut Diags<'_>) -> Option<EgressRule> {
    let e = e.into_inner();
    let allow = parse_dests(&e.allow, &format!("{at}.egress.allow"), d);
    let deny = match &e.deny {
        None => vec![Dest {
            target: DestTarget::Any,
            ports: PortSpec::Any,
        }],
        Some(list) if list.get_ref().is_empty() => {
            d.push(
                list.span(),
                format!("{at}.egress.deny"),
                "empty deny list",
                Some("at least one destination"),
                Some("leave `deny` out to mean `any`"),
            );
            Vec::new()
        }
        Some(list) => parse_dests(list.get_ref(), &format!("{at}.egress.deny"), d),
    };
    // The same destination both allowed and denied has no clear meaning.
    if let Some(list) = &e.deny {
        for (i, s) in list.get_ref().iter().enumerate() {
            if let Ok(x) = parse_dest(s.get_ref()) {
                if allow.contains(&x) {
                    d.push(
                        s.span(),
                        format!("{at}.egress.deny[{i}]"),
                        format!("`{x}` is both allowed and denied"),
                        Some("each destination in one list"),
                        Some("allow wins over deny: remove it from one of the lists"),
                    );
                }
            }
        }
    }
    Some(EgressRule { allow, deny })
}

fn validate_exec(
    x: S<RawExec>,
    at: &str,
    (action, action_span): (Option<Action>, Range<usize>),
    d: &mut Diags<'_>,
) -> Option<ExecRule> {
    let span = x.span();
    let x = x.into_inner();
    let mut shells: Vec<ShellMatcher> = Vec::new();
    for (i, s) in x.shells.iter().enumerate() {
        match shell_kind(s.get_ref()) {
            Some(m) => shells.push(m),
            None => d.push(s.span(), format!("{at}.exec.shells[{i}]"), format!("unknown shell kind `{}`", s.get_ref()), Some(&one_of(SHELL_KINDS)), Some("for another program use `custom_shells = [{ exe = [\"name\"], args = [\"-c\"] }]`")),
        }
    }
    for (i, c) in x.custom_shells.iter().enumerate() {
        let f = format!("{at}.exec.custom_shells[{i}]");
        let c = c.get_ref();
        if c.exe.get_ref().is_empty() {
            d.push(
                c.exe.span(),
                format!("{f}.exe"),
                "no executable names",
                Some("at least one base name"),
                None,
            );
        }
        for (j, e) in c.exe.get_ref().iter().enumerate() {
            let v = e.get_ref();
            if v.is_empty() || v.contains('/') {
                d.push(
                    e.span(),
                    format!("{f}.exe[{j}]"),
                    format!("`{v}` is not an executable base name"),
                    Some("a name like `tclsh` (globs allowed)"),
                    Some("use exec.deny for full paths"),
                );
            } else if let Some(g) = glob_problem(v) {
                d.push(
                    e.span(),
                    format!("{f}.exe[{j}]"),
                    format!("invalid glob: {g}"),
                    Some("`*` and `?` only"),
                    None,
                );
            }
        }
        for (j, a) in c.args.iter().enumerate() {
            if let Some(g) = glob_problem(a.get_ref()) {
                d.push(
                    a.span(),
                    format!("{f}.args[{j}]"),
                    format!("invalid glob: {g}"),
                    Some("`*` and `?` only"),
                    None,
                );
            }
        }
        shells.push(ShellMatcher {
            name: "custom".into(),
            exe: c
                .exe
                .get_ref()
                .iter()
                .map(|e| e.get_ref().clone())
                .collect(),
            args: c.args.iter().map(|a| a.get_ref().clone()).collect(),
            applets: Vec::new(),
        });
    }
    let mut deny = Vec::new();
    for (i, p) in x.deny.iter().enumerate() {
        let f = format!("{at}.exec.deny[{i}]");
        let v = p.get_ref();
        if v.is_empty() {
            d.push(
                p.span(),
                f,
                "empty path",
                Some("an absolute executable path"),
                Some("e.g. `/usr/bin/nc`"),
            );
        } else if !v.starts_with('/') {
            d.push(p.span(), f, format!("relative path `{v}`"), Some("an absolute executable path"), Some("the deny list matches the executable the kernel loads, by full path; shells go in `shells`"));
        } else if let Some(g) = glob_problem(v) {
            d.push(
                p.span(),
                f,
                format!("invalid glob: {g}"),
                Some("`*` and `?` only"),
                None,
            );
        } else {
            deny.push(v.clone());
        }
    }
    if shells.is_empty()
        && deny.is_empty()
        && x.shells.is_empty()
        && x.custom_shells.is_empty()
        && x.deny.is_empty()
    {
        d.push(
            span.clone(),
            format!("{at}.exec"),
            "exec rule matches nothing",
            Some("`shells`, `custom_shells` or `deny`"),
            None,
        );
    }
    // Arguments of the new image are not readable at bprm_check: such a rule cannot deny
    // the exec, only report or kill after it.
    if action == Some(Action::Block)
        && shells
            .iter()
            .any(|s| !s.args.is_empty() || !s.applets.is_empty())
    {
        d.push(action_span, format!("{at}.action"), "`block` cannot apply to shells matched by their arguments (`python -c`, busybox applets)", Some("`alert` or `kill`"), Some("the kernel decides an exec before the new arguments are readable; put argument matches in an alert or kill rule"));
    }
    Some(ExecRule { shells, deny })
}

fn validate_bind(b: S<RawBind>, at: &str, d: &mut Diags<'_>) -> Option<BindRule> {
    let b = b.into_inner();
    let mut ports = Vec::new();
    if b.ports.get_ref().is_empty() {
        d.push(
            b.ports.span(),
            format!("{at}.bind.ports"),
            "no ports",
            Some("at least one port, range or `gateway`"),
            None,
        );
    }
    for (i, p) in b.ports.get_ref().iter().enumerate() {
        let f = format!("{at}.bind.ports[{i}]");
        let r = match p.get_ref() {
            toml::Value::Integer(n) => parse_ports(&n.to_string()),
            toml::Value::String(s) => parse_ports(s),
            other => {
                d.push(
                    p.span(),
                    f,
                    format!("a port cannot be a {}", other.type_str()),
                    Some("a number, `\"LO-HI\"` or `\"gateway\"`"),
                    None,
                );
                continue;
            }
        };
        match r {
            Ok(x) => ports.push(x),
            Err(e) => d.push(
                p.span(),
                f,
                e.message,
                Some("1-65535, `\"LO-HI\"` or `\"gateway\"`"),
                Some(e.hint),
            ),
        }
    }
    let allow = parse_dests(&b.allow, &format!("{at}.bind.allow"), d);
    Some(BindRule { ports, allow })
}

fn validate_env(
    v: S<RawEnv>,
    at: &str,
    (action, action_span): (Option<Action>, Range<usize>),
    d: &mut Diags<'_>,
) -> Option<EnvRule> {
    let span = v.span();
    let v = v.into_inner();
    let from_files = v.from_files.unwrap_or(true);
    let mut names: Vec<String> = Vec::new();
    for (i, n) in v.names.iter().enumerate() {
        let s = n.get_ref();
        if valid_env_name(s) {
            if !names.contains(s) {
                names.push(s.clone());
            }
        } else if s.len() > ENV_NAME_MAX {
            d.push(
                n.span(),
                format!("{at}.env.names[{i}]"),
                format!("environment variable name `{s}` is {} bytes long", s.len()),
                Some(&format!("at most {ENV_NAME_MAX} bytes")),
                Some("the guard compares names of up to 63 bytes"),
            );
        } else {
            d.push(
                n.span(),
                format!("{at}.env.names[{i}]"),
                format!("`{s}` is not an environment variable name"),
                Some("a name matching `[A-Za-z_][A-Za-z0-9_]*`"),
                Some("give the bare name, without `$` or `=value`, e.g. `ANTHROPIC_API_KEY`"),
            );
        }
    }
    if !from_files && v.names.is_empty() {
        d.push(
            span,
            format!("{at}.env"),
            "env rule protects nothing",
            Some("`from_files = true` or at least one name in `names`"),
            Some(
                "`from_files` (default true) protects the names the gateway's secrets files define",
            ),
        );
    }
    // The values are blanked before the new image runs; there is no offending process
    // to kill.
    if action == Some(Action::Kill) {
        d.push(
            action_span,
            format!("{at}.action"),
            "`kill` does not apply to env rules",
            Some("`block` or `alert`"),
            Some("`block` blanks the values in each new image's environment before it runs; `alert` only reports"),
        );
    }
    Some(EnvRule { from_files, names })
}

/// The events a rule of each kind judges, and the exception conditions those events
/// can satisfy. A condition on a field the events never carry (`stdio_socket` on a
/// file open, `paths` on an exec) could never hold, or would always: it is refused
/// at load, never a silent default.
fn exception_fields(kind: &str) -> (&'static str, &'static [&'static str]) {
    match kind {
        "files" => ("file_open", &["parent_is_gateway", "paths", "role"]),
        "egress" => (
            "net connect/sendmsg",
            &["parent_is_gateway", "dest", "role"],
        ),
        "bind" => ("net bind", &["parent_is_gateway", "dest", "role"]),
        "exec" => (
            "exec",
            &[
                "parent_is_gateway",
                "comm",
                "exe",
                "args",
                "stdio_socket",
                "role",
                "interactive",
                "after_denial",
            ],
        ),
        // Judged by the daemon at exec, not event by event: no exceptions.
        _ => ("no event", &[]),
    }
}

fn check_exception_fields(
    kind: &str,
    e: &RawException,
    span: Range<usize>,
    at: &str,
    d: &mut Diags<'_>,
) {
    let set = [
        ("parent_is_gateway", e.parent_is_gateway.is_some()),
        ("comm", !e.comm.is_empty()),
        ("exe", !e.exe.is_empty()),
        ("args", !e.args.is_empty()),
        ("paths", !e.paths.is_empty()),
        ("dest", !e.dest.is_empty()),
        ("stdio_socket", e.stdio_socket.is_some()),
        ("role", !e.role.is_empty()),
        ("interactive", e.interactive.is_some()),
        ("after_denial", e.after_denial.is_some()),
    ];
    let (events, fields) = exception_fields(kind);
    for (name, _) in set.iter().filter(|(n, on)| *on && !fields.contains(n)) {
        d.push(
            span.clone(),
            format!("{at}.{name}"),
            format!(
                "`{name}` is not a field of what a `{kind}` rule judges ({events}): the condition could never be checked"
            ),
            Some(&if fields.is_empty() {
                "no exceptions on this kind of rule".to_owned()
            } else {
                fields.join(", ")
            }),
            None,
        );
    }
}

fn validate_exception(e: RawException, at: &str, j: usize, d: &mut Diags<'_>) -> Option<Exception> {
    let before = d.out.len();
    let severity = e
        .severity
        .as_ref()
        .and_then(|s| parse_severity(s, &format!("{at}.severity"), d));
    let globs = |list: &[S<String>], name: &str, d: &mut Diags<'_>| -> Vec<String> {
        let mut out = Vec::new();
        for (i, g) in list.iter().enumerate() {
            match glob_problem(g.get_ref()) {
                Some(p) => d.push(
                    g.span(),
                    format!("{at}.{name}[{i}]"),
                    format!("invalid glob: {p}"),
                    Some("`*` and `?` only"),
                    None,
                ),
                None if g.get_ref().is_empty() => d.push(
                    g.span(),
                    format!("{at}.{name}[{i}]"),
                    "empty pattern",
                    Some("a non-empty pattern"),
                    None,
                ),
                None => out.push(g.get_ref().clone()),
            }
        }
        out
    };
    let comm = globs(&e.comm, "comm", d);
    let exe = globs(&e.exe, "exe", d);
    let args = globs(&e.args, "args", d);
    let mut paths = Vec::new();
    for (i, p) in e.paths.iter().enumerate() {
        if let Some(x) = parse_path(p, &format!("{at}.paths[{i}]"), d) {
            paths.push(x);
        }
    }
    let dest = parse_dests(&e.dest, &format!("{at}.dest"), d);
    let mut role = Vec::new();
    for (i, r) in e.role.iter().enumerate() {
        if crate::machinery::Role::NAMES.contains(&r.get_ref().as_str()) {
            role.push(r.get_ref().clone());
        } else {
            d.push(
                r.span(),
                format!("{at}.role[{i}]"),
                format!("unknown role {:?}", r.get_ref()),
                Some("gateway, broker, exec-tool, tool, helper or other"),
                None,
            );
        }
    }
    if d.out.len() != before {
        return None;
    }
    Some(Exception {
        name: e
            .name
            .map_or_else(|| format!("exception-{j}"), Spanned::into_inner),
        description: e.description,
        parent_is_gateway: e.parent_is_gateway,
        comm,
        exe,
        args,
        paths,
        dest,
        stdio_socket: e.stdio_socket,
        role,
        interactive: e.interactive,
        after_denial: e.after_denial,
        severity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("", 0), (1, 1));
        assert_eq!(line_col("é\nx", 3), (2, 1));
    }

    /// The `stdio_socket` class: a condition on a field no event of the rule's kind
    /// carries is refused at load, naming the file's line and the field.
    #[test]
    fn exception_fields_no_event_carries_are_refused() {
        let text = "version = 1\n[[rules]]\nid = \"f\"\naction = \"alert\"\nseverity = \"warning\"\n[rules.files]\npaths = [\"/etc/x\"]\n[[rules.exceptions]]\nstdio_socket = false\n[[rules]]\nid = \"x\"\naction = \"alert\"\nseverity = \"warning\"\n[rules.exec]\nshells = [\"bash\"]\n[[rules.exceptions]]\npaths = [\"/tmp/*\"]\n[[rules]]\nid = \"e\"\naction = \"block\"\nseverity = \"warning\"\n[rules.egress]\ndeny = [\"any\"]\n[[rules.exceptions]]\ncomm = [\"curl\"]\n";
        let errs = parse_policy(text).expect_err("refused");
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "rules[0].exceptions[0].stdio_socket",
                "rules[1].exceptions[0].paths",
                "rules[2].exceptions[0].comm"
            ],
            "{errs:?}"
        );
        assert_eq!(errs[0].line, 8, "{errs:?}");
        assert!(errs[0].message.contains("file_open"), "{errs:?}");
        // The same conditions where the events carry them load.
        let ok = "version = 1\n[[rules]]\nid = \"x\"\naction = \"alert\"\nseverity = \"warning\"\n[rules.exec]\nshells = [\"bash\"]\n[[rules.exceptions]]\nstdio_socket = false\ncomm = [\"bash\"]\n[[rules]]\nid = \"f\"\naction = \"alert\"\nseverity = \"warning\"\n[rules.files]\npaths = [\"/etc/x\"]\n[[rules.exceptions]]\npaths = [\"/etc/x\"]\n";
        assert!(parse_policy(ok).is_ok(), "{:?}", parse_policy(ok).err());
    }

    #[test]
    fn several_errors_at_once() {
        let text = "version = 1\n[[rules]]\nid = \"a\"\naction = \"blok\"\nseverity = \"high\"\n[rules.egress]\ndeny = [\"10.0.0.0/40\", \"1.2.3.4:70000\"]\n";
        let errs = parse_policy(text).expect_err("invalid");
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "rules[0].action",
                "rules[0].severity",
                "rules[0].egress.deny[0]",
                "rules[0].egress.deny[1]"
            ]
        );
        assert_eq!((errs[0].line, errs[0].column), (4, 10));
    }

    const ENV_HEAD: &str =
        "version = 1\n[[rules]]\nid = \"e\"\naction = \"ACTION\"\nseverity = \"warning\"\n[rules.env]\n";

    fn env_policy(action: &str, body: &str) -> String {
        format!("{}{body}", ENV_HEAD.replace("ACTION", action))
    }

    #[test]
    fn env_rule_parses() {
        let p = parse_policy(&env_policy(
            "block",
            "names = [\"ANTHROPIC_API_KEY\", \"_x1\", \"ANTHROPIC_API_KEY\"]\n",
        ))
        .expect("valid");
        assert_eq!(p.rules[0].kind.name(), "env");
        assert_eq!(
            p.rules[0].kind,
            RuleKind::Env(EnvRule {
                from_files: true,
                names: vec!["ANTHROPIC_API_KEY".into(), "_x1".into()],
            })
        );
        let p = parse_policy(&env_policy(
            "alert",
            "from_files = false\nnames = [\"K\"]\n",
        ))
        .expect("valid");
        assert_eq!(p.rules[0].action, Action::Alert);
        assert!(matches!(&p.rules[0].kind, RuleKind::Env(e) if !e.from_files));
        // An empty section means `from_files = true`.
        let p = parse_policy(&env_policy("block", "")).expect("valid");
        assert!(matches!(&p.rules[0].kind, RuleKind::Env(e) if e.from_files && e.names.is_empty()));
    }

    #[test]
    fn env_bad_names_are_located() {
        let long = "A".repeat(64);
        let ok63 = "B".repeat(63);
        let text = env_policy(
            "block",
            &format!(
                "names = [\"OK\", \"1ABC\", \"$HOME\", \"A=B\", \"\", \"{long}\", \"{ok63}\"]\n"
            ),
        );
        let errs = parse_policy(&text).expect_err("invalid");
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "rules[0].env.names[1]",
                "rules[0].env.names[2]",
                "rules[0].env.names[3]",
                "rules[0].env.names[4]",
                "rules[0].env.names[5]",
            ]
        );
        assert_eq!((errs[0].line, errs[0].column), (7, 16));
        assert!(errs[0]
            .message
            .contains("`1ABC` is not an environment variable name"));
        assert!(errs[4].message.contains("64 bytes"), "{}", errs[4].message);
    }

    #[test]
    fn env_kill_and_nothing_rejected() {
        let errs = parse_policy(&env_policy("kill", "")).expect_err("kill");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "rules[0].action");
        assert_eq!((errs[0].line, errs[0].column), (4, 10));
        assert!(errs[0].message.contains("`kill`"), "{}", errs[0].message);
        let errs = parse_policy(&env_policy("block", "from_files = false\nnames = []\n"))
            .expect_err("empty");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "rules[0].env");
        assert!(errs[0].message.contains("protects nothing"));
        let errs = parse_policy(&env_policy("block", "from_files = false\n")).expect_err("empty");
        assert_eq!(errs[0].field, "rules[0].env");
        // env is one kind among the others.
        let errs = parse_policy(&env_policy("block", "[rules.files]\npaths = [\"~/.x\"]\n"))
            .expect_err("two kinds");
        assert!(
            errs[0].message.contains("more than one kind"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn unknown_field_is_located() {
        let text = "version = 1\n[targets]\ndiscovr = true\n";
        let errs = parse_policy(text).expect_err("invalid");
        assert_eq!(errs.len(), 1);
        assert_eq!((errs[0].line, errs[0].column), (3, 1));
        assert_eq!(errs[0].field, "targets.discovr");
        assert!(
            errs[0].message.contains("unknown field `discovr`"),
            "{}",
            errs[0].message
        );
    }
}
