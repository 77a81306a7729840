//! What the guard says about one event: the kernel's `decision` merged with the
//! policy's userspace verdicts into [`Finding`]s, and the one [`Alert`] the outputs
//! carry for them.
//!
//! The kernel decides what it can at the hook (deny an open, a connect, an exec by
//! path); userspace decides the rest from the full event (shells by arguments and
//! parent, exceptions, egress/bind alerts). A kernel decision for rule X wins over a
//! userspace verdict for X, so each rule is counted once per event.

use serde::Serialize;
use serde_json::Value;

use crate::{
    events::Taken,
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

/// A kernel decision as the daemon reports it: `{rule, action, errno}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelDecision {
    pub rule: String,
    pub action: Taken,
    pub errno: Option<i64>,
}

/// The event's kernel decision, if it has one. A decision written by userspace (a
/// kill after the event, `"by": "userspace"`) is not a kernel decision.
pub fn kernel_decision(event: &Value) -> Option<KernelDecision> {
    let d = event.get("decision")?.as_object()?;
    if d.get("by").and_then(Value::as_str) == Some("userspace") {
        return None;
    }
    let rule = match d.get("rule")? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(KernelDecision {
        rule,
        action: Taken::from_word(d.get("action").and_then(Value::as_str).unwrap_or("")),
        errno: d.get("errno").and_then(Value::as_i64),
    })
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
    event: &Value,
    verdicts: Vec<Verdict>,
    enforce: bool,
) -> Vec<Finding> {
    let mut out = Vec::with_capacity(verdicts.len() + 1);
    let kernel = kernel_decision(event);
    if let Some(d) = &kernel {
        let rule = policy_rule(policy, &d.rule);
        let verdict = verdicts
            .iter()
            .find(|v| names_rule(&d.rule, &v.rule, v.rule_index));
        // The daemon's own findings (health) say their priority; kernel decisions of
        // rules outside the policy (self-protection) are critical when they acted.
        let stated = event
            .get("decision")
            .and_then(|x| x.get("priority"))
            .and_then(Value::as_str)
            .and_then(|p| p.parse::<Priority>().ok());
        let priority = rule.map_or(
            stated.unwrap_or(if d.action == Taken::Alert {
                Priority::Warning
            } else {
                Priority::Critical
            }),
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
        if kernel
            .as_ref()
            .is_some_and(|d| names_rule(&d.rule, &v.rule, v.rule_index))
        {
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
fn describe(event: &Value, d: &KernelDecision) -> String {
    let s = |k: &str| event.get(k).and_then(Value::as_str).unwrap_or("");
    let done = match d.action {
        Taken::Deny => "denied",
        Taken::Kill => "killed",
        Taken::Alert => "reported",
    };
    let what = crate::sensors::decision_target(event).unwrap_or_else(|| match s("kind") {
        "health" => format!("{}: {}", s("check"), s("detail")),
        other => other.to_owned(),
    });
    let degraded = event
        .get("decision")
        .and_then(|x| x.get("degraded_from"))
        .and_then(Value::as_str)
        .map(|from| format!(", {from} rule over --kill-limit"))
        .unwrap_or_default();
    match d.errno {
        Some(e) => format!("{what} {done} (errno {e}{degraded})"),
        None => format!("{what} {done}"),
    }
}

/// The process of an event: `comm[pid]`, the name from `comm` (exec) or the lineage.
pub fn process(event: &Value) -> String {
    let tgid = event
        .get("tgid")
        .or_else(|| event.get("pid"))
        .and_then(Value::as_u64);
    let lineage = event.get("lineage").and_then(Value::as_array);
    let comm = event
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

/// `openclaw[100] > bash[4200] > curl[4242]`, or empty without a lineage.
pub fn lineage(event: &Value) -> String {
    event
        .get("lineage")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .map(|e| {
                    format!(
                        "{}[{}]",
                        e.get("comm").and_then(Value::as_str).unwrap_or("?"),
                        e.get("pid").and_then(Value::as_u64).unwrap_or(0)
                    )
                })
                .collect::<Vec<_>>()
                .join(" > ")
        })
        .unwrap_or_default()
}

/// ` in tool call ID (TOOL, session KEY, run ID): COMMAND` for an alert line, the
/// command cut short (the event has it whole).
fn call_context(call: &Value) -> String {
    let s = |k: &str| call.get(k).and_then(Value::as_str);
    let mut out = format!(
        " in tool call {} ({}",
        s("id").unwrap_or("?"),
        s("tool").unwrap_or("?")
    );
    if let Some(k) = s("session_key") {
        out.push_str(&format!(", session {k}"));
    }
    if let Some(r) = s("run_id") {
        out.push_str(&format!(", run {r}"));
    }
    out.push(')');
    if let Some(what) = s("command").or_else(|| s("path")).or_else(|| s("url")) {
        let cut: String = what.chars().take(120).collect();
        let more = if cut.len() < what.len() { "..." } else { "" };
        out.push_str(&format!(": {cut}{more}"));
    }
    out
}

/// The alert for an event's findings (none without findings): about the strongest,
/// naming the others. One line: rule, what matched, process, lineage.
pub fn alert(policy: &CompiledPolicy, findings: &[Finding], event: &Value) -> Option<Alert> {
    let first = findings.first()?;
    let mut output = format!("{}: {} by {}", first.rule, first.output, process(event));
    let lin = lineage(event);
    if !lin.is_empty() {
        output.push_str(&format!(" (lineage {lin})"));
    }
    match (first.wanted, first.by) {
        (Some("kill"), _) => output.push_str(" [kill not done: record-only]"),
        (Some(w), _) => output.push_str(&format!(" [{w} not enforced in the kernel]")),
        (None, By::Kernel) if first.action != Taken::Alert => output.push_str(" [kernel]"),
        _ => {}
    }
    if let Some(call) = event.get("tool_call").filter(|c| c.get("id").is_some()) {
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
