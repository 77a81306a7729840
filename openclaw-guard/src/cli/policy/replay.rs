//! `openclaw-guard policy replay`: runs a candidate policy over the recorded events
//! and shows, per event, what it would have done beside what the guard did then (the
//! recorded `decision` and `findings`), with a summary of the differences.

use std::{
    io::{BufWriter, Write as _},
    path::PathBuf,
};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

use crate::policy::{Action, CompiledPolicy};
use crate::{
    cli::events::QueryArgs,
    recorder::{Reader, RecordedEvent, DEFAULT_STATE_DIR},
};

/// Arguments of `openclaw-guard policy replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The policy to try (TOML), e.g. the running one with egress switched to block.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// State directory of the guard; the record is in its `record/` subdirectory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// List only the events whose outcome would change.
    #[arg(long)]
    pub changed: bool,
    #[command(flatten)]
    pub query: QueryArgs,
}

/// The strongest outcome for an event, in policy words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Alert,
    Block,
    Kill,
}

impl Outcome {
    fn of_policy(a: Action) -> Self {
        match a {
            Action::Alert => Self::Alert,
            Action::Block => Self::Block,
            Action::Kill => Self::Kill,
        }
    }

    /// A recorded action (`alert`, `deny`, `kill`).
    fn of_recorded(a: &str) -> Self {
        match a {
            "deny" | "block" => Self::Block,
            "kill" => Self::Kill,
            _ => Self::Alert,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Block => "block",
            Self::Kill => "kill",
        }
    }
}

/// An outcome and the rules behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Side {
    pub action: Outcome,
    pub rules: Vec<String>,
}

impl Side {
    fn add(side: &mut Option<Side>, action: Outcome, rule: &str) {
        match side {
            Some(s) => {
                s.action = s.action.max(action);
                if !s.rules.iter().any(|r| r == rule) {
                    s.rules.push(rule.to_owned());
                }
            }
            None => {
                *side = Some(Side {
                    action,
                    rules: vec![rule.to_owned()],
                });
            }
        }
    }

    fn show(side: Option<&Side>) -> String {
        side.map_or_else(
            || "-".to_owned(),
            |s| format!("{}({})", s.action.as_str(), s.rules.join(",")),
        )
    }
}

/// One replayed event that either side has something to say about.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayLine {
    pub record_seq: u64,
    pub time: String,
    pub kind: String,
    pub process: String,
    /// What the event was, in a few words.
    pub what: String,
    pub would: Option<Side>,
    pub did: Option<Side>,
    /// `newly blocked`, `no longer blocked`, `newly killed`, `no longer killed`,
    /// `new alert`, `no longer alerted`, `changed` (other rules) or `same`.
    pub change: &'static str,
}

/// Counts over the replayed events (each counted once, at its strongest outcome).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub would_alert: u64,
    pub would_block: u64,
    pub would_kill: u64,
    pub did_alert: u64,
    pub did_block: u64,
    pub did_kill: u64,
    pub newly_blocked: u64,
    pub no_longer_blocked: u64,
    pub newly_killed: u64,
    pub no_longer_killed: u64,
    pub new_alerts: u64,
    pub no_longer_alerted: u64,
}

/// What the guard did, as recorded: the kernel's (or a userspace kill's)
/// `decision`, a `userspace_decision`, and the sink's `findings`.
pub fn recorded_side(ev: &Value) -> Option<Side> {
    let mut side = None;
    for key in ["decision", "userspace_decision"] {
        if let Some(d) = ev.get(key).and_then(Value::as_object) {
            let rule = match d.get("rule") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => "?".to_owned(),
            };
            let action = d.get("action").and_then(Value::as_str).unwrap_or("alert");
            Side::add(&mut side, Outcome::of_recorded(action), &rule);
        }
    }
    for f in ev
        .get("findings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let rule = f.get("rule").and_then(Value::as_str).unwrap_or("?");
        let action = f.get("action").and_then(Value::as_str).unwrap_or("alert");
        Side::add(&mut side, Outcome::of_recorded(action), rule);
    }
    side
}

/// What `policy` would do with the event.
pub fn candidate_side(policy: &CompiledPolicy, ev: &Value) -> Option<Side> {
    let mut side = None;
    for v in policy.evaluate(ev) {
        Side::add(&mut side, Outcome::of_policy(v.action), &v.rule);
    }
    side
}

fn change(would: Option<&Side>, did: Option<&Side>) -> &'static str {
    let w = would.map(|s| s.action);
    let d = did.map(|s| s.action);
    let is = |x: Option<Outcome>, o| x == Some(o);
    if is(w, Outcome::Block) && !is(d, Outcome::Block) {
        "newly blocked"
    } else if is(d, Outcome::Block) && !is(w, Outcome::Block) {
        "no longer blocked"
    } else if is(w, Outcome::Kill) && !is(d, Outcome::Kill) {
        "newly killed"
    } else if is(d, Outcome::Kill) && !is(w, Outcome::Kill) {
        "no longer killed"
    } else if d.is_none() && w.is_some() {
        "new alert"
    } else if w.is_none() && d.is_some() {
        "no longer alerted"
    } else {
        let rules = |s: Option<&Side>| {
            let mut r = s.map(|s| s.rules.clone()).unwrap_or_default();
            r.sort();
            r
        };
        if rules(would) == rules(did) {
            "same"
        } else {
            "changed"
        }
    }
}

impl Summary {
    fn count(&mut self, line: &ReplayLine) {
        match line.would.as_ref().map(|s| s.action) {
            Some(Outcome::Alert) => self.would_alert += 1,
            Some(Outcome::Block) => self.would_block += 1,
            Some(Outcome::Kill) => self.would_kill += 1,
            None => {}
        }
        match line.did.as_ref().map(|s| s.action) {
            Some(Outcome::Alert) => self.did_alert += 1,
            Some(Outcome::Block) => self.did_block += 1,
            Some(Outcome::Kill) => self.did_kill += 1,
            None => {}
        }
        match line.change {
            "newly blocked" => self.newly_blocked += 1,
            "no longer blocked" => self.no_longer_blocked += 1,
            "newly killed" => self.newly_killed += 1,
            "no longer killed" => self.no_longer_killed += 1,
            "new alert" => self.new_alerts += 1,
            "no longer alerted" => self.no_longer_alerted += 1,
            _ => {}
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} event(s) replayed: would alert {}, block {}, kill {}; did alert {}, block {}, kill {}; \
             newly blocked {}, no longer blocked {}, newly killed {}, no longer killed {}, \
             new alerts {}, no longer alerted {}",
            self.events,
            self.would_alert,
            self.would_block,
            self.would_kill,
            self.did_alert,
            self.did_block,
            self.did_kill,
            self.newly_blocked,
            self.no_longer_blocked,
            self.newly_killed,
            self.no_longer_killed,
            self.new_alerts,
            self.no_longer_alerted
        )
    }
}

/// The process of a recorded event, as the alert line named it: `comm[tgid]`, the
/// name from the exec or the lineage.
fn process(ev: &Value) -> String {
    let tgid = ev.get("tgid").and_then(Value::as_u64);
    let lineage = ev.get("lineage").and_then(Value::as_array);
    let comm = ev
        .get("comm")
        .and_then(Value::as_str)
        .or_else(|| {
            let l = lineage?;
            l.iter()
                .find(|e| e.get("pid").and_then(Value::as_u64) == tgid)
                .or_else(|| l.last())
                .and_then(|e| e.get("comm"))
                .and_then(Value::as_str)
        })
        .unwrap_or("?");
    match tgid {
        Some(p) => format!("{comm}[{p}]"),
        None => comm.to_owned(),
    }
}

/// Replays one recorded event; `None` for records that are not events (stats,
/// recorder gaps) or that neither side has anything to say about.
pub fn replay_event(policy: &CompiledPolicy, rec: &RecordedEvent) -> Option<ReplayLine> {
    let ev = &rec.event;
    let s = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or("");
    let kind = s("kind");
    if matches!(kind, "stats" | "recorder_gap") {
        return None;
    }
    let would = candidate_side(policy, ev);
    let did = recorded_side(ev);
    if would.is_none() && did.is_none() {
        return None;
    }
    let port = ev.get("port").and_then(Value::as_u64).unwrap_or(0);
    let what = match kind {
        "exec" => {
            let argv: Vec<&str> = ev
                .get("argv")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!("exec {}", argv.join(" "))
        }
        "file_open" => format!("open {}", s("path")),
        "net" | "connect" | "sendmsg" | "bind" => {
            let op = if kind == "net" { s("op") } else { kind };
            let addr = s("addr");
            if addr.contains(':') {
                format!("{op} [{addr}]:{port}")
            } else {
                format!("{op} {addr}:{port}")
            }
        }
        other => other.to_owned(),
    };
    let change = change(would.as_ref(), did.as_ref());
    Some(ReplayLine {
        record_seq: rec.seq,
        time: s("time").to_owned(),
        kind: kind.to_owned(),
        process: process(ev),
        what: crate::outputs::one_line(&what),
        would,
        did,
        change,
    })
}

fn text_line(l: &ReplayLine) -> String {
    let mut what = l.what.clone();
    if what.chars().count() > 60 {
        what = format!("{}...", what.chars().take(57).collect::<String>());
    }
    format!(
        "{:>8} {:<30} {:<20} {:<60} {:<24} {:<24} {}",
        l.record_seq,
        l.time,
        l.process,
        what,
        Side::show(l.would.as_ref()),
        Side::show(l.did.as_ref()),
        l.change
    )
}

/// `policy` compiled for the record under `state_dir`, as it was then: with the host
/// knowledge the record kept (`host` records: providers, resolvers, the gateways'
/// ports). Homes are guessed from paths, and a named destination matches the
/// `dest_name` an event carries.
pub fn compile_for_record(
    policy: &crate::policy::Policy,
    state_dir: &std::path::Path,
) -> anyhow::Result<CompiledPolicy> {
    let record = state_dir.join(crate::recorder::segment::RECORD_DIR);
    if !record.is_dir() {
        anyhow::bail!(
            "no record at {}: pass the --state-dir the guard runs with",
            record.display()
        );
    }
    let ctx = crate::host::Recorded::read(state_dir)?;
    Ok(CompiledPolicy::new(policy, None, &ctx))
}

/// Runs `policy replay`; exit 0, or 2 when the policy is invalid.
pub fn run(args: &ReplayArgs) -> anyhow::Result<i32> {
    let policy = match crate::policy::load_file(&args.policy) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    let compiled = compile_for_record(&policy, &args.state_dir)?;
    let filter = args.query.filter(jiff::Timestamp::now())?;
    let reader = Reader::open(&args.state_dir)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut summary = Summary::default();
    let mut write_err = None;
    if !args.query.json {
        let _ = writeln!(
            out,
            "{:>8} {:<30} {:<20} {:<60} {:<24} {:<24} CHANGE",
            "SEQ", "TIME", "PROCESS", "EVENT", "WOULD (policy)", "DID (recorded)"
        );
    }
    reader.events(
        filter.since,
        |rec| {
            if !filter.matches(&rec.event) {
                return;
            }
            if matches!(
                rec.event.get("kind").and_then(Value::as_str),
                Some("stats" | "recorder_gap")
            ) {
                return;
            }
            summary.events += 1;
            let Some(line) = replay_event(&compiled, &rec) else {
                return;
            };
            summary.count(&line);
            if write_err.is_some() || (args.changed && line.change == "same") {
                return;
            }
            let text = if args.query.json {
                serde_json::to_string(&line).unwrap_or_default()
            } else {
                text_line(&line)
            };
            if let Err(e) = writeln!(out, "{text}") {
                write_err = Some(e);
            }
        },
        |p| p.warn(),
    )?;
    let tail = if args.query.json {
        serde_json::json!({ "summary": summary }).to_string()
    } else {
        format!("{}: {summary}", args.policy.display())
    };
    let res = match write_err {
        Some(e) => Err(e),
        None => writeln!(out, "{tail}").and_then(|()| out.flush()),
    };
    match res {
        // `replay | head` closing the pipe is a normal way to stop reading.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e).context("failed to write the replay to stdout"),
        Ok(()) => Ok(0),
    }
}
