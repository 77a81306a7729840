//! What the guard says about one event: the kernel's `decision` merged with the
//! policy's userspace verdicts into [`Finding`]s, and the one [`Alert`] the outputs
//! carry for them.
//!
//! The kernel decides what it can at the hook (deny an open, a connect, an exec by
//! path); userspace decides the rest from the full event (shells by arguments and
//! parent, exceptions, egress/bind alerts). A kernel decision for rule X wins over a
//! userspace verdict for X, so each rule is counted once per event.

use serde::Serialize;

use super::kill::KillReport;
use crate::{
    events::{Attribution, Decision, Event, LineageEntry, Payload, Taken, ToolCall},
    outputs::{Alert, Priority},
    policy::{Action, CompiledPolicy, Rule, Verdict},
};

/// Who decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// At the kernel hook; the event carries the `decision`.
    Kernel,
    /// By the policy in userspace, after the event.
    Userspace,
    /// The guard about itself (a health check of its own record).
    Daemon,
}

/// One rule's finding about one event, after merging.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: String,
    /// What was done.
    pub action: Taken,
    /// What the rule asked for when it was not done: `block` with no kernel decision
    /// on this event (the hook did not enforce it), `kill` in record-only mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wanted: Option<&'static str>,
    pub priority: Priority,
    pub by: By,
    /// What matched, in one line.
    pub output: String,
    /// The policy exception that lowered the finding to an alert, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
}

/// A kill done in userspace, recorded as the event's `decision` (or as its
/// `userspace_decision` when the kernel decided too).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KillDecision {
    pub rule: String,
    pub action: Taken,
    pub by: By,
    pub signal: i32,
    pub scope: &'static str,
    pub pgid: Option<i32>,
    pub result: String,
}

impl KillDecision {
    pub fn new(rule: &str, report: KillReport) -> Self {
        Self {
            rule: rule.to_owned(),
            action: Taken::Kill,
            by: By::Userspace,
            signal: libc::SIGKILL,
            scope: report.scope,
            pgid: report.pgid,
            result: report.result,
        }
    }
}

/// An event (a sensor's, or a record of the daemon's own) with what the guard did and
/// found about it: the form the record and the outputs get, encoded once.
#[derive(Serialize)]
pub struct Judged<'a, E> {
    #[serde(flatten)]
    pub event: &'a E,
    /// A userspace kill of an event the kernel did not decide.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'a KillDecision>,
    /// A userspace kill of an event the kernel decided too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userspace_decision: Option<&'a KillDecision>,
    #[serde(skip_serializing_if = "<[Finding]>::is_empty")]
    pub findings: &'a [Finding],
}

/// Whether a kernel decision's rule name refers to this rule: the daemon names
/// kernel rules by id, and falls back to the number (`rule-N`) for unknown ones.
fn names_rule(name: &str, id: &str, index: u32) -> bool {
    name == id
        || name.parse::<u32>().is_ok_and(|n| n == index)
        || name
            .strip_prefix("rule-")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n == index)
}

fn policy_rule<'a>(policy: &'a CompiledPolicy, name: &str) -> Option<&'a Rule> {
    policy
        .policy
        .rules
        .iter()
        .find(|r| names_rule(name, &r.id, r.index))
}

/// Merges the kernel decision of `event` with the userspace `verdicts` of `policy`.
/// `enforce` is false in record-only mode: userspace kills become alerts.
///
/// Returns the findings strongest first (action, then priority, kernel before
/// userspace); the first is the one the alert is about.
pub fn merge(
    policy: &CompiledPolicy,
    event: &Event,
    verdicts: Vec<Verdict>,
    enforce: bool,
) -> Vec<Finding> {
    let mut out = Vec::with_capacity(verdicts.len() + 1);
    let kernel = event.decision.as_ref();
    if let Some(d) = kernel {
        let rule = policy_rule(policy, &d.rule);
        let verdict = verdicts
            .iter()
            .find(|v| names_rule(&d.rule, &v.rule, v.rule_index));
        // Kernel decisions of rules outside the policy (self-protection, `--protect`)
        // are critical when they acted.
        let priority = rule.map_or(
            if d.action == Taken::Alert {
                Priority::Warning
            } else {
                Priority::Critical
            },
            |r| r.severity.into(),
        );
        out.push(Finding {
            rule: rule.map_or_else(|| d.rule.clone(), |r| r.id.clone()),
            action: d.action,
            wanted: None,
            priority,
            by: By::Kernel,
            output: verdict.map_or_else(|| describe(event, d), |v| v.output.clone()),
            exception: None,
        });
    }
    for v in verdicts {
        if kernel.is_some_and(|d| names_rule(&d.rule, &v.rule, v.rule_index)) {
            continue;
        }
        let (action, wanted) = match v.action {
            Action::Alert => (Taken::Alert, None),
            // Userspace sees the event after the operation: without a kernel
            // decision on this event, the hook did not block it.
            Action::Block => (Taken::Alert, Some("block")),
            Action::Kill if enforce => (Taken::Kill, None),
            Action::Kill => (Taken::Alert, Some("kill")),
        };
        out.push(Finding {
            rule: v.rule,
            action,
            wanted,
            priority: v.severity.into(),
            by: By::Userspace,
            output: v.output,
            exception: v.exception,
        });
    }
    // Strongest first: kill, deny, alert.
    out.sort_by_key(|f| {
        (
            std::cmp::Reverse(f.action),
            f.priority,
            f.by == By::Userspace,
        )
    });
    out
}

/// What a kernel decision did, when no userspace verdict describes the match.
fn describe(event: &Event, d: &Decision) -> String {
    let done = match d.action {
        Taken::Deny => "denied",
        Taken::Kill => "killed",
        Taken::Alert => "reported",
    };
    let what = crate::sensors::decision_target(event).unwrap_or_else(|| event.kind.to_owned());
    let degraded = d
        .degraded_from
        .map(|from| format!(", {from} rule over --kill-limit"))
        .unwrap_or_default();
    match d.errno {
        Some(e) => format!("{what} {done} (errno {e}{degraded})"),
        None => format!("{what} {done}"),
    }
}

/// What an alert line names besides its findings: the process (none for the guard's
/// own records), its lineage and the tool call it served.
#[derive(Default)]
pub struct Subject<'a> {
    pub process: Option<String>,
    pub lineage: &'a [LineageEntry],
    pub call: Option<&'a ToolCall>,
}

impl<'a> Subject<'a> {
    pub fn of(event: &'a Event) -> Self {
        let call = match &event.tool_call {
            Some(Attribution::Call(c) | Attribution::InProcess { call: c, .. }) => Some(&**c),
            _ => None,
        };
        Self {
            process: Some(process(event)),
            lineage: &event.lineage,
            call,
        }
    }
}

/// The process of an event: `comm[tgid]`, the name from the exec or the lineage.
fn process(event: &Event) -> String {
    let comm = match &event.payload {
        Payload::Exec(x) => Some(x.comm.as_str()),
        _ => None,
    }
    .or_else(|| {
        let l = &event.lineage;
        l.iter()
            .find(|e| e.pid == event.tgid)
            .or_else(|| l.last())
            .map(|e| e.comm.as_str())
    })
    .unwrap_or("?");
    format!("{comm}[{}]", event.tgid)
}

/// `openclaw[100] > bash[4200] > curl[4242]`, or empty without a lineage.
fn lineage(l: &[LineageEntry]) -> String {
    l.iter()
        .map(|e| format!("{}[{}]", e.comm, e.pid))
        .collect::<Vec<_>>()
        .join(" > ")
}

/// ` in tool call ID (TOOL, session KEY, run ID): COMMAND` for an alert line, the
/// command cut short (the event has it whole).
fn call_context(call: &ToolCall) -> String {
    let mut out = format!(" in tool call {} ({}", call.id, call.tool);
    if let Some(k) = &call.session_key {
        out.push_str(&format!(", session {k}"));
    }
    if let Some(r) = &call.run_id {
        out.push_str(&format!(", run {r}"));
    }
    out.push(')');
    if let Some(what) = call
        .command
        .as_deref()
        .or(call.path.as_deref())
        .or(call.url.as_deref())
    {
        let cut: String = what.chars().take(120).collect();
        let more = if cut.len() < what.len() { "..." } else { "" };
        out.push_str(&format!(": {cut}{more}"));
    }
    out
}

/// The alert for an event's findings (none without findings): about the strongest,
/// naming the others. One line: rule, what matched, process, lineage.
pub fn alert(policy: &CompiledPolicy, findings: &[Finding], about: &Subject<'_>) -> Option<Alert> {
    let first = findings.first()?;
    let mut output = format!("{}: {}", first.rule, first.output);
    if let Some(p) = &about.process {
        output.push_str(&format!(" by {p}"));
    }
    let lin = lineage(about.lineage);
    if !lin.is_empty() {
        output.push_str(&format!(" (lineage {lin})"));
    }
    match (first.wanted, first.by) {
        (Some("kill"), _) => output.push_str(" [kill not done: record-only]"),
        (Some(w), _) => output.push_str(&format!(" [{w} not enforced in the kernel]")),
        (None, By::Kernel) if first.action != Taken::Alert => output.push_str(" [kernel]"),
        _ => {}
    }
    if let Some(call) = about.call {
        output.push_str(&call_context(call));
    }
    if findings.len() > 1 {
        let others: Vec<&str> = findings[1..].iter().map(|f| f.rule.as_str()).collect();
        output.push_str(&format!("; also {}", others.join(", ")));
    }
    let mut tags = vec!["openclaw".to_owned()];
    if let Some(r) = policy.policy.rule(&first.rule) {
        tags.push(r.kind.name().to_owned());
    }
    tags.push(
        match first.by {
            By::Kernel => "kernel",
            By::Userspace => "userspace",
            By::Daemon => "daemon",
        }
        .to_owned(),
    );
    Some(Alert {
        rule: first.rule.clone(),
        priority: first.priority,
        action: first.action.as_str().to_owned(),
        output: crate::outputs::one_line(&output),
        tags,
    })
}
