//! OCSF rendering of the guard's events, for SIEMs that speak the Open Cybersecurity
//! Schema Framework instead of our own JSON.
//!
//! One record becomes one OCSF event, from the record's JSON form (the same form the
//! outputs get and `events` reads back), so a live output and an export of the record
//! render alike:
//! - a sensor event with a decision or an alert: Detection Finding (2004), the
//!   activity carried as its evidence and `actor`;
//! - `exec`, `fork`, `exit`: Process Activity (1007) Launch/Launch/Terminate;
//! - `file_open`: File System Activity (1001) Open, Rename for renames and links;
//! - `net` (`connect`, `sendmsg`, `bind`): Network Activity (4001) Open/Traffic/Listen;
//! - `repeat`: the class of what it repeats, with `count` and its time span;
//! - the daemon's own records (stats, policy, host, tool_call, ...) and tamper
//!   attempts without a decision: Base Event (0), Other.
//!
//! Whatever has no OCSF home (role, tree depth, the tool call, kernel ids) stays under
//! `unmapped`, so nothing of the native record is lost. Profiles: `host` on every
//! event (`actor`, `device`), `security_control` on findings (`action_id`,
//! `disposition_id`). Checked against the published 1.8.0 class definitions by
//! tests/ocsf (the `ocsf-json-schema` package).

use serde_json::{json, Map, Value};

use super::Priority;

/// The OCSF schema version the rendering follows.
pub const OCSF_VERSION: &str = "1.8.0";

/// The OCSF object for one native record (an event, with the alert when there is one
/// under `"alert"`, as [`super::merged`] builds it).
pub fn render(native: &Value, host: &str) -> Value {
    let mut rest = match native {
        Value::Object(m) => m.clone(),
        other => Map::from_iter([("event".to_owned(), other.clone())]),
    };
    let kind = take_str(&mut rest, "kind").unwrap_or_else(|| "unknown".to_owned());
    let time_text = take_str(&mut rest, "time");
    let time = time_text.as_deref().map_or_else(now_ms, ms_of);
    // `null` (a record written without one) is no decision.
    let alert = rest.remove("alert").filter(|v| !v.is_null());
    let decision = rest.remove("decision").filter(|v| !v.is_null());
    let seq = rest.get("record_seq").and_then(Value::as_u64);
    // The guard's own records are not activity on the host.
    let sensor = matches!(
        kind.as_str(),
        "exec" | "fork" | "exit" | "file_open" | "net" | "repeat" | "tamper"
    );
    let mut unmapped = Map::new();
    unmapped.insert("kind".to_owned(), Value::from(kind.clone()));
    let mut ev = Map::new();
    let profiles: Vec<&str>;
    if sensor {
        let activity = activity(&kind, &mut rest);
        if decision.is_some() || alert.is_some() {
            profiles = vec!["host", "security_control"];
            finding(
                &mut ev,
                &kind,
                activity,
                decision.as_ref(),
                alert.as_ref(),
                time,
            );
        } else {
            profiles = vec!["host"];
            ev.extend(activity.fields);
            set_class(&mut ev, activity.class, activity.id);
            ev.insert("severity_id".to_owned(), Value::from(1));
        }
    } else {
        profiles = vec!["host"];
        set_class(&mut ev, Class::Base, 99);
        ev.insert("activity_name".to_owned(), Value::from(kind.clone()));
        let severity = decision
            .as_ref()
            .and_then(|d| d.get("priority"))
            .and_then(Value::as_str)
            .and_then(|p| p.parse::<Priority>().ok())
            .map_or(1, severity_id);
        ev.insert("severity_id".to_owned(), Value::from(severity));
        ev.insert("message".to_owned(), Value::from(summary(&kind, &rest)));
        if let Some(d) = decision {
            unmapped.insert("decision".to_owned(), d);
        }
    }
    ev.insert("time".to_owned(), Value::from(time));
    ev.insert("device".to_owned(), json!({"hostname": host, "type_id": 0}));
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {
            "name": "openclaw-guard",
            "vendor_name": "openclaw-guard",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "profiles": profiles,
        "log_name": kind,
    });
    if let Some(t) = time_text {
        metadata["original_time"] = Value::from(t);
    }
    if let Some(s) = seq {
        metadata["sequence"] = Value::from(s);
        rest.remove("record_seq");
    }
    // The tool call's tag is unique to one call: what groups a call's events.
    if let Some(tag) = rest
        .get("tool_call")
        .and_then(|t| t.get("tag"))
        .and_then(Value::as_str)
    {
        metadata["correlation_uid"] = Value::from(tag);
    }
    ev.insert("metadata".to_owned(), metadata);
    unmapped.extend(rest);
    ev.insert("unmapped".to_owned(), Value::Object(unmapped));
    Value::Object(ev)
}

#[derive(Clone, Copy)]
enum Class {
    Base,
    Process,
    File,
    Network,
    Finding,
}

impl Class {
    fn uids(self) -> (u64, u64, &'static str, &'static str) {
        match self {
            Class::Base => (0, 0, "Base Event", "Uncategorized"),
            Class::Process => (1007, 1, "Process Activity", "System Activity"),
            Class::File => (1001, 1, "File System Activity", "System Activity"),
            Class::Network => (4001, 4, "Network Activity", "Network Activity"),
            Class::Finding => (2004, 2, "Detection Finding", "Findings"),
        }
    }
}

fn set_class(ev: &mut Map<String, Value>, class: Class, activity_id: u64) {
    let (uid, category, name, category_name) = class.uids();
    ev.insert("class_uid".to_owned(), Value::from(uid));
    ev.insert("class_name".to_owned(), Value::from(name));
    ev.insert("category_uid".to_owned(), Value::from(category));
    ev.insert("category_name".to_owned(), Value::from(category_name));
    ev.insert("activity_id".to_owned(), Value::from(activity_id));
    ev.insert("type_uid".to_owned(), Value::from(uid * 100 + activity_id));
}

/// A sensor event as an OCSF activity: its class, activity and class-specific fields
/// (`actor`, `process`, `file`, `dst_endpoint`, ...).
struct Activity {
    class: Class,
    id: u64,
    fields: Map<String, Value>,
}

fn activity(kind: &str, rest: &mut Map<String, Value>) -> Activity {
    let mut fields = Map::new();
    let pid = take_u64(rest, "tgid");
    let tid = take_u64(rest, "pid");
    let lineage = rest.remove("lineage");
    let ancestry: Vec<Value> = lineage
        .as_ref()
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| json!({"pid": e.get("pid"), "name": e.get("comm")}))
                .collect()
        })
        .unwrap_or_default();
    let mut actor = Map::new();
    if let Some(p) = pid {
        actor.insert("pid".to_owned(), Value::from(p));
    }
    if let Some(t) = tid {
        actor.insert("tid".to_owned(), Value::from(t));
    }
    if let Some(Value::Object(last)) = lineage.as_ref().and_then(|l| l.as_array()?.last()) {
        if last.get("pid").and_then(Value::as_u64) == pid {
            if let Some(c) = last.get("comm") {
                actor.insert("name".to_owned(), c.clone());
            }
        }
    }
    if !ancestry.is_empty() {
        actor.insert("ancestry".to_owned(), Value::from(ancestry));
    }
    // A repeat stands for many events of the kind it names.
    let of = match kind {
        "repeat" => rest
            .get("of")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        k => k.to_owned(),
    };
    let (class, id) = match of.as_str() {
        "exec" => {
            let mut process = actor.clone();
            let argv: Vec<String> = rest
                .remove("argv")
                .and_then(|a| serde_json::from_value(a).ok())
                .unwrap_or_default();
            process.insert("cmd_line".to_owned(), Value::from(argv.join(" ")));
            if let Some(c) = take_str(rest, "comm") {
                process.insert("name".to_owned(), Value::from(c));
            }
            if let Some(f) = take_str(rest, "filename") {
                process.insert("file".to_owned(), file_object(&f));
                process.insert("path".to_owned(), Value::from(f));
            }
            if let Some(uid) = take_u64(rest, "uid") {
                process.insert("user".to_owned(), json!({"uid": uid.to_string()}));
            }
            let ppid = take_u64(rest, "ppid");
            if let Some(pp) = ppid {
                process.insert("parent_process".to_owned(), json!({"pid": pp}));
            }
            fields.insert(
                "actor".to_owned(),
                json!({"process": {"pid": ppid.unwrap_or(0)}}),
            );
            fields.insert("process".to_owned(), Value::Object(process));
            fields.insert("launch_type_id".to_owned(), Value::from(2)); // Exec
            (Class::Process, 1)
        }
        "fork" => {
            let child = take_u64(rest, "child_tgid").unwrap_or(0);
            fields.insert(
                "process".to_owned(),
                json!({"pid": child, "parent_process": {"pid": pid}}),
            );
            fields.insert("actor".to_owned(), json!({ "process": actor }));
            fields.insert("launch_type_id".to_owned(), Value::from(3)); // Spawn
            (Class::Process, 1)
        }
        "exit" => {
            if let Some(code) = rest.remove("exit_code") {
                fields.insert("exit_code".to_owned(), code);
            }
            fields.insert("process".to_owned(), Value::Object(actor.clone()));
            fields.insert("actor".to_owned(), json!({ "process": actor }));
            (Class::Process, 2)
        }
        "file_open" => {
            let op = rest.get("op").and_then(Value::as_str).unwrap_or("open");
            let id = match op {
                "rename" | "link" => 5,
                _ => 14,
            };
            // A repeat names the file by its inode only.
            let path = take_str(rest, "path").unwrap_or_else(|| {
                let dev = rest.get("dev").and_then(Value::as_str).unwrap_or("?");
                let ino = rest.get("ino").and_then(Value::as_u64).unwrap_or(0);
                format!("inode {dev}:{ino}")
            });
            fields.insert("file".to_owned(), file_object(&path));
            fields.insert("actor".to_owned(), json!({ "process": actor }));
            status(&mut fields, rest);
            repeat(&mut fields, rest);
            (Class::File, id)
        }
        "net" => {
            let op = rest
                .get("op")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let id = match op.as_str() {
                "connect" => 1,
                "sendmsg" => 6,
                "bind" => 7,
                _ => 99,
            };
            let family = rest
                .get("family")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let mut dst = Map::new();
            let addr = take_str(rest, "addr").unwrap_or_default();
            if matches!(family.as_str(), "inet" | "inet6" | "ipv4" | "ipv6") && !addr.is_empty() {
                dst.insert("ip".to_owned(), Value::from(addr));
            } else if !addr.is_empty() {
                dst.insert("name".to_owned(), Value::from(addr));
            }
            if let Some(p) = take_u64(rest, "port") {
                dst.insert("port".to_owned(), Value::from(p));
            }
            if let Some(h) = take_str(rest, "dest_name") {
                dst.insert("hostname".to_owned(), Value::from(h));
            }
            let mut conn = json!({"direction_id": if op == "bind" { 0 } else { 2 }});
            if let Some(p) = take_str(rest, "protocol") {
                conn["protocol_name"] = Value::from(p);
            }
            let endpoint = if op == "bind" {
                "src_endpoint"
            } else {
                "dst_endpoint"
            };
            fields.insert(endpoint.to_owned(), Value::Object(dst));
            fields.insert("connection_info".to_owned(), conn);
            fields.insert("actor".to_owned(), json!({ "process": actor }));
            status(&mut fields, rest);
            repeat(&mut fields, rest);
            (Class::Network, id)
        }
        // Tamper attempts, and a repeat of something else: the acting process is
        // what OCSF can say; the rest stays unmapped.
        _ => {
            let target = rest.get("target").and_then(Value::as_u64);
            let process = match target {
                Some(t) if t != 0 => json!({ "pid": t }),
                _ => Value::Object(actor.clone()),
            };
            fields.insert("process".to_owned(), process);
            fields.insert("actor".to_owned(), json!({ "process": actor }));
            status(&mut fields, rest);
            repeat(&mut fields, rest);
            (Class::Process, 99)
        }
    };
    if id == 99 {
        fields.insert("activity_name".to_owned(), Value::from(kind));
    }
    Activity { class, id, fields }
}

/// A file by its path (the kernel reports no type; `type_id` 0 is OCSF's Unknown).
fn file_object(path: &str) -> Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    json!({"name": name, "path": path, "type_id": 0})
}

/// `ret` (0 or a negative errno) as OCSF's status.
fn status(fields: &mut Map<String, Value>, rest: &mut Map<String, Value>) {
    if let Some(ret) = rest.get("ret").and_then(Value::as_i64) {
        rest.remove("ret");
        fields.insert(
            "status_id".to_owned(),
            Value::from(if ret < 0 { 2 } else { 1 }),
        );
        fields.insert("status_code".to_owned(), Value::from(ret.to_string()));
    }
}

/// A `repeat` record's count and span.
fn repeat(fields: &mut Map<String, Value>, rest: &mut Map<String, Value>) {
    if let Some(n) = take_u64(rest, "count") {
        fields.insert("count".to_owned(), Value::from(n));
    }
    if let Some(t) = take_str(rest, "first_time") {
        fields.insert("start_time".to_owned(), Value::from(ms_of(&t)));
    }
    if let Some(t) = take_str(rest, "last_time") {
        fields.insert("end_time".to_owned(), Value::from(ms_of(&t)));
    }
}

/// A decision (and its alert) as a Detection Finding, the activity as its evidence.
fn finding(
    ev: &mut Map<String, Value>,
    kind: &str,
    activity: Activity,
    decision: Option<&Value>,
    alert: Option<&Value>,
    time: i64,
) {
    let get = |v: Option<&Value>, k: &str| {
        v.and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let rule = get(alert, "rule")
        .or_else(|| get(decision, "rule"))
        .unwrap_or_default();
    let action = get(decision, "action")
        .or_else(|| get(alert, "action"))
        .unwrap_or_else(|| "alert".to_owned());
    let priority = get(alert, "priority")
        .or_else(|| get(decision, "priority"))
        .and_then(|p| p.parse::<Priority>().ok());
    // Without the alert (an export of the record) the action says how grave it was.
    let severity = priority.map_or(
        match action.as_str() {
            "kill" => 5,
            "deny" => 4,
            _ => 3,
        },
        severity_id,
    );
    let output = get(alert, "output");
    let (action_id, disposition_id) = match action.as_str() {
        "deny" | "kill" => (2, 2), // Denied, Blocked
        _ => (3, 15),              // Observed, Detected
    };
    let mut evidence = activity.fields.clone();
    evidence.retain(|k, _| {
        matches!(
            k.as_str(),
            "actor" | "process" | "file" | "dst_endpoint" | "src_endpoint" | "connection_info"
        )
    });
    let mut info = json!({
        "uid": format!("{rule}:{time}:{}", ev_pid(&activity)),
        "title": if rule.is_empty() { kind.to_owned() } else { format!("{rule}: {action}") },
        "types": [kind],
        "analytic": {"type_id": 1, "name": rule, "uid": rule},
    });
    if let Some(o) = &output {
        info["desc"] = Value::from(o.clone());
    }
    if let Some(tags) = alert.and_then(|a| a.get("tags")) {
        info["tags"] = Value::Array(
            tags.as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|t| json!({"name": "tag", "value": t}))
                .collect(),
        );
    }
    set_class(ev, Class::Finding, 1);
    ev.insert("finding_info".to_owned(), info);
    ev.insert("severity_id".to_owned(), Value::from(severity));
    ev.insert("action_id".to_owned(), Value::from(action_id));
    ev.insert("action".to_owned(), Value::from(action.clone()));
    ev.insert("disposition_id".to_owned(), Value::from(disposition_id));
    ev.insert("is_alert".to_owned(), Value::from(alert.is_some()));
    ev.insert(
        "message".to_owned(),
        Value::from(output.unwrap_or_else(|| format!("{rule}: {action} {kind}"))),
    );
    if let Some(a) = activity.fields.get("actor") {
        ev.insert("actor".to_owned(), a.clone());
    }
    if let Some(errno) = decision
        .and_then(|d| d.get("errno"))
        .and_then(Value::as_i64)
    {
        ev.insert("status_code".to_owned(), Value::from(errno.to_string()));
    }
    ev.insert("evidences".to_owned(), json!([evidence]));
}

fn ev_pid(a: &Activity) -> u64 {
    a.fields
        .get("actor")
        .and_then(|a| a.get("process"))
        .and_then(|p| p.get("pid"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// OCSF severity for one of Falco's priorities.
pub fn severity_id(p: Priority) -> u64 {
    match p {
        Priority::Emergency => 6,
        Priority::Alert | Priority::Critical => 5,
        Priority::Error => 4,
        Priority::Warning => 3,
        Priority::Notice => 2,
        Priority::Informational | Priority::Debug => 1,
    }
}

/// One line saying what a daemon record is.
fn summary(kind: &str, rest: &Map<String, Value>) -> String {
    let s = |k: &str| rest.get(k).and_then(Value::as_str).unwrap_or("");
    match kind {
        "policy" => format!("policy {} {}", s("result"), s("path")),
        "tool_call" => format!("tool call {} ({})", s("id"), s("tool")),
        other => format!("openclaw-guard {other}"),
    }
}

fn take_str(m: &mut Map<String, Value>, k: &str) -> Option<String> {
    match m.remove(k) {
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            m.insert(k.to_owned(), other);
            None
        }
        None => None,
    }
}

fn take_u64(m: &mut Map<String, Value>, k: &str) -> Option<u64> {
    let v = m.get(k)?.as_u64()?;
    m.remove(k);
    Some(v)
}

fn ms_of(t: &str) -> i64 {
    t.parse::<jiff::Timestamp>()
        .map_or_else(|_| now_ms(), |ts| ts.as_millisecond())
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}
