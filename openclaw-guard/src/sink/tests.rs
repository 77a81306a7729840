use std::{os::unix::process::CommandExt as _, path::Path, sync::Arc};

use serde_json::{json, Value};

use super::*;
use crate::{
    outputs::Priority,
    policy::{load_str, CompileContext, Mode},
    recorder::Reader,
};

pub(super) const POLICY: &str = r#"
version = 1
mode = "enforce"

[[rules]]
id = "secrets"
description = "secret read"
action = "block"
severity = "critical"
[rules.files]
paths = ["~/.openclaw/.env"]

[[rules]]
id = "egress"
description = "egress"
action = "alert"
severity = "warning"
[rules.egress]
allow = ["loopback"]

[[rules]]
id = "shell-spawn"
description = "shell"
action = "alert"
severity = "critical"
[rules.exec]
shells = ["sh", "bash"]
[[rules.exceptions]]
name = "exec-tool"
parent_is_gateway = true
exe = ["sh", "bash"]
args = ["-c"]
severity = "informational"

[[rules]]
id = "python-kill"
description = "inline python"
action = "kill"
severity = "critical"
[rules.exec]
shells = ["python-c"]
"#;

fn policy(mode: Option<Mode>) -> CompiledPolicy {
    let p = load_str(POLICY, "test.toml").expect("test policy parses");
    CompiledPolicy::new(&p, mode, &CompileContext::default())
}

fn lineage() -> Value {
    json!([{"pid": 100, "comm": "openclaw"}, {"pid": 200, "comm": "bash"}, {"pid": 300, "comm": "cat"}])
}

fn secret_open(decision: Option<Value>) -> Value {
    let mut ev = json!({
        "time": "2026-01-01T00:00:00Z", "kind": "file_open", "pid": 300, "tgid": 300,
        "root": 100, "depth": 2, "lineage": lineage(),
        "path": "/home/u/.openclaw/.env", "dev": "8:1", "ino": 7, "flags": 0, "ret": -1,
    });
    if let Some(d) = decision {
        ev["decision"] = d;
    }
    ev
}

fn connect(addr: &str) -> Value {
    json!({
        "time": "2026-01-01T00:00:00Z", "kind": "net", "op": "connect", "pid": 300,
        "tgid": 300, "root": 100, "depth": 2, "lineage": lineage(), "family": "inet",
        "addr": addr, "port": 443, "protocol": "tcp", "sock_type": "stream", "ret": 0,
    })
}

fn findings(p: &CompiledPolicy, ev: &Value, enforce: bool) -> Vec<Finding> {
    merge(p, ev, p.evaluate(ev), enforce)
}

#[test]
fn kernel_decision_wins_over_the_same_rule_in_userspace() {
    let p = policy(None);
    let ev = secret_open(Some(
        json!({"rule": "secrets", "action": "deny", "errno": 1}),
    ));
    let f = findings(&p, &ev, true);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].by, By::Kernel);
    assert_eq!(f[0].action.as_str(), "deny");
    assert_eq!(f[0].priority, Priority::Critical);
    assert!(f[0].output.contains(".openclaw/.env"), "{}", f[0].output);

    // Named by number (`rule-N`, as the daemon falls back to): the same rule.
    let index = p.policy.rule("secrets").map(|r| r.index).unwrap_or(0);
    let ev = secret_open(Some(
        json!({"rule": format!("rule-{index}"), "action": "deny", "errno": 1}),
    ));
    let f = findings(&p, &ev, true);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, "secrets");
}

#[test]
fn kernel_decision_of_another_rule_keeps_both_strongest_first() {
    let p = policy(None);
    // `--protect` files are decided by a kernel rule the policy does not name.
    let ev = secret_open(Some(
        json!({"rule": "protected-file", "action": "deny", "errno": 1}),
    ));
    let f = findings(&p, &ev, true);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(
        (f[0].rule.as_str(), f[0].by),
        ("protected-file", By::Kernel)
    );
    assert_eq!(
        f[0].output,
        "open of `/home/u/.openclaw/.env` denied (errno 1)"
    );
    assert_eq!(
        (f[1].rule.as_str(), f[1].action.as_str(), f[1].wanted),
        ("secrets", "alert", Some("block"))
    );
}

#[test]
fn block_without_a_kernel_decision_is_reported_as_not_enforced() {
    let p = policy(None);
    let ev = secret_open(None);
    let f = findings(&p, &ev, true);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].action.as_str(), f[0].wanted, f[0].by),
        ("alert", Some("block"), By::Userspace)
    );
    let a = alert(&p, &f, &ev).expect("alert");
    assert_eq!(a.action, "alert");
    assert!(a.output.contains("block not enforced"), "{}", a.output);
}

#[test]
fn userspace_verdicts_shells_egress_and_modes() {
    let p = policy(None);
    // The exec tool's shell: informational through the exception.
    let tool = json!({"kind": "exec", "pid": 200, "tgid": 200, "ppid": 100, "root": 100, "depth": 1,
        "comm": "bash", "filename": "/bin/bash", "argv": ["bash", "-c", "ls"], "lineage": lineage()});
    let f = findings(&p, &tool, true);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].priority, Priority::Informational);
    assert_eq!(f[0].exception.as_deref(), Some("exec-tool"));
    // A nested shell: critical.
    let nested = json!({"kind": "exec", "pid": 300, "tgid": 300, "ppid": 200, "root": 100, "depth": 2,
        "comm": "sh", "filename": "/bin/sh", "argv": ["sh", "-c", "curl x | sh"], "lineage": lineage()});
    assert_eq!(findings(&p, &nested, true)[0].priority, Priority::Critical);
    // Egress: kind `net` + op, loopback allowed.
    assert!(findings(&p, &connect("127.0.0.1"), true).is_empty());
    let f = findings(&p, &connect("93.184.216.34"), true);
    assert_eq!(
        (f[0].rule.as_str(), f[0].action.as_str()),
        ("egress", "alert")
    );
    // Kill: done in enforce, reported in record-only, an alert in monitor mode.
    let py = json!({"kind": "exec", "pid": 300, "tgid": 300, "root": 100, "depth": 2,
        "filename": "/usr/bin/python3", "argv": ["python3", "-c", "x"]});
    assert_eq!(findings(&p, &py, true)[0].action.as_str(), "kill");
    assert_eq!(
        (
            findings(&p, &py, false)[0].action.as_str(),
            findings(&p, &py, false)[0].wanted
        ),
        ("alert", Some("kill"))
    );
    let m = policy(Some(Mode::Monitor));
    assert_eq!(findings(&m, &py, true)[0].action.as_str(), "alert");
    assert_eq!(findings(&m, &py, true)[0].wanted, None);
}

#[test]
fn alert_names_rule_process_and_lineage_in_one_line() {
    let p = policy(None);
    let ev = connect("93.184.216.34");
    let f = findings(&p, &ev, true);
    let a = alert(&p, &f, &ev).expect("alert");
    assert_eq!(a.rule, "egress");
    assert_eq!(a.priority, Priority::Warning);
    assert_eq!(
        a.output,
        "egress: connect to 93.184.216.34 port 443 by cat[300] (lineage openclaw[100] > bash[200] > cat[300])"
    );
    assert_eq!(a.tags, ["openclaw", "egress", "userspace"]);
    assert!(alert(&p, &[], &ev).is_none());
}

#[test]
fn output_flags_keep_a_bare_path_as_a_file() {
    let args = SinkArgs {
        output: vec!["/tmp/x.jsonl".into(), "syslog".into(), "metrics:off".into()],
        ..SinkArgs::default()
    };
    let c = args.outputs_config().expect("valid flags");
    assert_eq!(c.jsonl.path.as_deref(), Some(Path::new("/tmp/x.jsonl")));
    assert!(c.syslog.enabled && !c.metrics.enabled);
    let bad = SinkArgs {
        output: vec!["webhook:".into()],
        ..SinkArgs::default()
    };
    assert!(bad.outputs_config().is_err());
}

fn quiet_args(state: &Path, extra: &[&str]) -> SinkArgs {
    let mut output = vec!["none".to_owned(), "metrics:off".to_owned()];
    output.extend(extra.iter().map(|s| (*s).to_owned()));
    SinkArgs {
        output,
        state_dir: state.to_owned(),
        ..SinkArgs::default()
    }
}

fn recorded(state: &Path) -> Vec<Value> {
    let mut v = Vec::new();
    Reader::open(state)
        .expect("reader")
        .events(None, |r| v.push(r.event), |p| panic!("unreadable: {p:?}"))
        .expect("read");
    v
}

#[test]
fn userspace_kill_signals_the_process_group_and_is_recorded_as_a_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A real victim leading its own process group, with a child in that group.
    let mut victim = std::process::Command::new("sh")
        .args(["-c", "sleep 30 & wait"])
        .process_group(0)
        .spawn()
        .expect("spawn sh");
    let pid = victim.id();
    let mut sink =
        Sink::start(&quiet_args(dir.path(), &[]), Arc::new(policy(None))).expect("start");
    let ev = json!({"time": "2026-01-01T00:00:00Z", "kind": "exec", "pid": pid, "tgid": pid,
        "root": std::process::id(), "depth": 2, "filename": "/usr/bin/python3",
        "argv": ["python3", "-c", "import pty"], "comm": "python3"});
    sink.event(ev).expect("event");
    let status = victim.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    sink.flush();
    let stats = sink.stats();
    assert_eq!(stats["kills"]["killed"], 1, "{stats}");
    assert_eq!(stats["findings"]["python-kill"]["kill"], 1, "{stats}");
    sink.shutdown().expect("shutdown");

    let rec = recorded(dir.path());
    assert_eq!(rec.len(), 1);
    let d = &rec[0]["decision"];
    assert_eq!(d["rule"], "python-kill");
    assert_eq!(d["action"], "kill");
    assert_eq!(d["by"], "userspace");
    assert_eq!(d["result"], "killed");
    // python-kill is an exec (shell) rule: the victim led its group, so the group went.
    assert_eq!(d["scope"], "process_group");
    assert_eq!(d["pgid"], pid);
}

#[test]
fn record_only_does_not_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut victim = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let pid = victim.id();
    let args = SinkArgs {
        record_only: true,
        ..quiet_args(dir.path(), &[])
    };
    let mut sink = Sink::start(&args, Arc::new(policy(None))).expect("start");
    sink.event(
        json!({"kind": "exec", "pid": pid, "tgid": pid, "root": 1, "depth": 2,
        "filename": "/usr/bin/python3", "argv": ["python3", "-c", "x"]}),
    )
    .expect("event");
    sink.shutdown().expect("shutdown");
    assert!(
        victim.try_wait().expect("try_wait").is_none(),
        "record-only killed"
    );
    let _ = victim.kill();
    let _ = victim.wait();
    let rec = recorded(dir.path());
    assert!(rec[0].get("decision").is_none());
    assert_eq!(rec[0]["findings"][0]["wanted"], "kill");
}

#[test]
fn every_event_is_recorded_with_its_findings_and_stats_records_pass_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.jsonl");
    let out_s = out.display().to_string();
    let args = SinkArgs {
        output: vec![out_s, "metrics:off".into()],
        state_dir: dir.path().join("state"),
        ..SinkArgs::default()
    };
    let mut sink = Sink::start(&args, Arc::new(policy(None))).expect("start");
    sink.event(connect("127.0.0.1")).expect("event");
    sink.event(connect("10.0.0.5")).expect("event");
    sink.event(secret_open(Some(
        json!({"rule": "secrets", "action": "deny", "errno": 1}),
    )))
    .expect("event");
    sink.event(json!({"time": "2026-01-01T00:00:00Z", "kind": "stats",
        "counters": {"kernel_submitted": 7, "kernel_lost": 2}, "tracked_processes": 3}))
        .expect("stats");
    sink.flush();
    let m = sink.metrics().snapshot();
    assert_eq!(
        (m.kernel_emitted, m.kernel_lost, m.tracked_processes),
        (7, 2, 3)
    );
    let rs = sink.recorder_stats().expect("recording");
    assert_eq!(rs.recorded, 4, "{rs:?}");
    assert_eq!(rs.head_seq, Some(4));
    sink.shutdown().expect("shutdown");

    let rec = recorded(&dir.path().join("state"));
    assert_eq!(rec.len(), 4);
    assert!(rec[0].get("findings").is_none());
    assert_eq!(rec[1]["findings"][0]["rule"], "egress");
    assert_eq!(rec[2]["findings"][0]["by"], "kernel");
    assert_eq!(rec[3]["kind"], "stats");
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .expect("jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].get("alert").is_none());
    assert_eq!(lines[1]["alert"]["rule"], "egress");
    assert_eq!(lines[2]["alert"]["action"], "deny");
}

/// A decoded event as the daemon builds it.
fn decoded(depth: u32, payload: crate::events::Payload) -> Event {
    use crate::events::Payload;
    let kind = match &payload {
        Payload::Exec(_) => "exec",
        Payload::FileOpen(_) => "file_open",
        Payload::Net(_) => "net",
        _ => "other",
    };
    Event {
        time: "2026-01-01T00:00:00Z".into(),
        ktime_ns: 1,
        kind,
        pid: 4242,
        tgid: 4242,
        root: 100,
        depth,
        cgroup_id: 1,
        lineage: Vec::new(),
        role: None,
        tool_call: None,
        payload,
        decision: None,
    }
}

#[test]
fn decoded_events_judged_in_place_record_what_their_json_values_would() {
    use crate::events::{Exec, FileOpen, Net, Payload};
    let net = |addr: &str| {
        Payload::Net(Net {
            op: "connect",
            family: "inet".into(),
            addr: addr.into(),
            port: 443,
            ipv4_mapped: false,
            protocol: "tcp".into(),
            sock_type: "stream".into(),
            ret: 0,
            dest_name: None,
            sockaddr_family: None,
            name_hash: 0,
        })
    };
    let open = |path: &str| {
        Payload::FileOpen(FileOpen {
            op: "open",
            path: path.into(),
            dev: "8:1".into(),
            ino: 7,
            flags: 0,
            ret: 0,
        })
    };
    let exec = |depth, file: &str, argv: &[&str]| {
        decoded(
            depth,
            Payload::Exec(Exec {
                ppid: 100,
                uid: 0,
                gid: 0,
                comm: "bash".into(),
                filename: file.into(),
                filename_truncated: false,
                argv: argv.iter().map(|a| (*a).to_owned()).collect(),
                argv_truncated: false,
                exe: String::new(),
                stdio: Vec::new(),
                stdio_socket: false,
                fileless: false,
                shell: None,
                after_denial: false,
                env_held: false,
                env_blanked: Vec::new(),
                env_error: None,
                stdio_families: 0,
                exe_dev: "8:1".into(),
                exe_ino: 9,
            }),
        )
    };
    let mut denied = decoded(2, open("/root/.openclaw/.env"));
    denied.decision = Some(crate::events::Decision {
        rule: "secrets".into(),
        action: crate::events::Taken::Deny,
        errno: Some(1),
        degraded_from: None,
    });
    let events = [
        decoded(2, net("127.0.0.1")),
        decoded(2, net("10.0.0.5")),
        decoded(0, net("10.0.0.5")),
        decoded(2, open("/etc/hostname")),
        decoded(2, open("/root/.openclaw/.env")),
        denied,
        exec(
            1,
            "/bin/bash",
            &["bash", "--noprofile", "--norc", "-c", "ls"],
        ),
        exec(2, "/bin/sh", &["sh", "-c", "curl x | sh"]),
        exec(2, "/usr/bin/git", &["git", "status"]),
    ];
    let run = |typed: bool| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("events.jsonl");
        let args = SinkArgs {
            output: vec![out.display().to_string(), "metrics:off".into()],
            state_dir: dir.path().join("state"),
            ..SinkArgs::default()
        };
        let mut sink = Sink::start(&args, Arc::new(policy(None))).expect("start");
        for ev in &events {
            if typed {
                sink.kernel_event(ev).expect("event");
            } else {
                sink.event(serde_json::to_value(ev).expect("value"))
                    .expect("event");
            }
        }
        let findings = sink.stats()["findings"].clone();
        sink.shutdown().expect("shutdown");
        let lines: Vec<Value> = std::fs::read_to_string(&out)
            .expect("jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        (recorded(&dir.path().join("state")), lines, findings)
    };
    let (typed, json) = (run(true), run(false));
    assert_eq!(typed, json);
    // The cases are not vacuous: three findings on the way, one of them the kernel's.
    let (rec, lines, findings) = typed;
    assert_eq!(rec.len(), events.len());
    assert!(rec[0].get("findings").is_none());
    assert_eq!(rec[1]["findings"][0]["rule"], "egress");
    assert!(rec[2].get("findings").is_none(), "the gateway itself");
    assert!(rec[3].get("findings").is_none());
    assert_eq!(rec[4]["findings"][0]["wanted"], "block");
    assert_eq!(rec[5]["findings"][0]["by"], "kernel");
    assert_eq!(rec[6]["findings"][0]["exception"], "exec-tool");
    assert_eq!(lines[7]["alert"]["priority"], "critical");
    assert!(rec[8].get("findings").is_none());
    assert_eq!(findings["shell-spawn"]["alert"], 2, "{findings}");
}
