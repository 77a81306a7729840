use std::{os::unix::process::CommandExt as _, path::Path, sync::Arc};

use serde_json::Value;

use super::*;
use crate::{
    events::{DaemonRecord, Decision, Exec, FileOpen, HealthDecision, LineageEntry, Net, Payload},
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

fn lineage() -> Vec<LineageEntry> {
    [(100, "openclaw"), (200, "bash"), (300, "cat")]
        .into_iter()
        .map(|(pid, comm)| LineageEntry {
            pid,
            comm: comm.into(),
        })
        .collect()
}

/// A decoded, enriched event of process `pid` as the daemon builds it.
fn event(pid: u32, depth: u32, payload: Payload) -> Event {
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
        pid,
        tgid: pid,
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

fn open_payload(path: &str) -> Payload {
    Payload::FileOpen(FileOpen {
        op: "open",
        path: path.into(),
        dev: "8:1".into(),
        ino: 7,
        flags: 0,
        ret: 0,
    })
}

fn net_payload(addr: &str) -> Payload {
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
}

fn exec_payload(ppid: u32, comm: &str, file: &str, argv: &[&str]) -> Payload {
    Payload::Exec(Exec {
        ppid,
        uid: 0,
        gid: 0,
        comm: comm.into(),
        filename: file.into(),
        filename_truncated: false,
        argv: argv.iter().map(|a| (*a).to_owned()).collect(),
        argv_truncated: false,
        exe_dev: "8:1".into(),
        exe_ino: 0,
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
    })
}

fn deny(rule: &str) -> Decision {
    Decision {
        rule: rule.into(),
        action: Taken::Deny,
        errno: Some(1),
        degraded_from: None,
    }
}

fn secret_open(decision: Option<Decision>) -> Event {
    let mut ev = event(300, 2, open_payload("/home/u/.openclaw/.env"));
    ev.lineage = lineage();
    ev.decision = decision;
    ev
}

fn connect(addr: &str) -> Event {
    let mut ev = event(300, 2, net_payload(addr));
    ev.lineage = lineage();
    ev
}

fn findings(p: &CompiledPolicy, ev: &Event, enforce: bool) -> Vec<Finding> {
    merge(p, ev, p.evaluate_event(ev, &EvalEnv::default()), enforce)
}

#[test]
fn kernel_decision_wins_over_the_same_rule_in_userspace() {
    let p = policy(None);
    let ev = secret_open(Some(deny("secrets")));
    let f = findings(&p, &ev, true);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].by, By::Kernel);
    assert_eq!(f[0].action, Taken::Deny);
    assert_eq!(f[0].priority, Priority::Critical);
    assert!(f[0].output.contains(".openclaw/.env"), "{}", f[0].output);

    // Named by number (`rule-N`, as the daemon falls back to): the same rule.
    let index = p.policy.rule("secrets").map(|r| r.index).unwrap_or(0);
    let ev = secret_open(Some(deny(&format!("rule-{index}"))));
    let f = findings(&p, &ev, true);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, "secrets");
}

#[test]
fn kernel_decision_of_another_rule_keeps_both_strongest_first() {
    let p = policy(None);
    // `--protect` files are decided by a kernel rule the policy does not name.
    let ev = secret_open(Some(deny("protected-file")));
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
        (f[1].rule.as_str(), f[1].action, f[1].wanted),
        ("secrets", Taken::Alert, Some("block"))
    );
}

#[test]
fn block_without_a_kernel_decision_is_reported_as_not_enforced() {
    let p = policy(None);
    let ev = secret_open(None);
    let f = findings(&p, &ev, true);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].action, f[0].wanted, f[0].by),
        (Taken::Alert, Some("block"), By::Userspace)
    );
    let a = alert(&p, &f, &Subject::of(&ev)).expect("alert");
    assert_eq!(a.action, "alert");
    assert!(a.output.contains("block not enforced"), "{}", a.output);
}

#[test]
fn userspace_verdicts_shells_egress_and_modes() {
    let p = policy(None);
    // The exec tool's shell: informational through the exception.
    let tool = event(
        200,
        1,
        exec_payload(100, "bash", "/bin/bash", &["bash", "-c", "ls"]),
    );
    let f = findings(&p, &tool, true);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].priority, Priority::Informational);
    assert_eq!(f[0].exception.as_deref(), Some("exec-tool"));
    // A nested shell: critical.
    let nested = event(
        300,
        2,
        exec_payload(200, "sh", "/bin/sh", &["sh", "-c", "curl x | sh"]),
    );
    assert_eq!(findings(&p, &nested, true)[0].priority, Priority::Critical);
    // Egress: kind `net` + op, loopback allowed.
    assert!(findings(&p, &connect("127.0.0.1"), true).is_empty());
    let f = findings(&p, &connect("93.184.216.34"), true);
    assert_eq!((f[0].rule.as_str(), f[0].action), ("egress", Taken::Alert));
    // Kill: done in enforce, reported in record-only, an alert in monitor mode.
    let py = event(
        300,
        2,
        exec_payload(200, "python3", "/usr/bin/python3", &["python3", "-c", "x"]),
    );
    assert_eq!(findings(&p, &py, true)[0].action, Taken::Kill);
    let f = findings(&p, &py, false);
    assert_eq!((f[0].action, f[0].wanted), (Taken::Alert, Some("kill")));
    let m = policy(Some(Mode::Monitor));
    assert_eq!(findings(&m, &py, true)[0].action, Taken::Alert);
    assert_eq!(findings(&m, &py, true)[0].wanted, None);
}

#[test]
fn alert_names_rule_process_and_lineage_in_one_line() {
    let p = policy(None);
    let ev = connect("93.184.216.34");
    let f = findings(&p, &ev, true);
    let a = alert(&p, &f, &Subject::of(&ev)).expect("alert");
    assert_eq!(a.rule, "egress");
    assert_eq!(a.priority, Priority::Warning);
    assert_eq!(
        a.output,
        "egress: connect to 93.184.216.34 port 443 by cat[300] (lineage openclaw[100] > bash[200] > cat[300])"
    );
    assert_eq!(a.tags, ["openclaw", "egress", "userspace"]);
    assert!(alert(&p, &[], &Subject::of(&ev)).is_none());
}

#[test]
fn output_flags_keep_a_bare_path_as_a_file() {
    let args = SinkOptions {
        output: vec!["/tmp/x.jsonl".into(), "syslog".into(), "metrics:off".into()],
        ..SinkOptions::default()
    };
    let c = args.outputs_config().expect("valid flags");
    assert_eq!(c.jsonl.path.as_deref(), Some(Path::new("/tmp/x.jsonl")));
    assert!(c.syslog.enabled && !c.metrics.enabled);
    let bad = SinkOptions {
        output: vec!["webhook:".into()],
        ..SinkOptions::default()
    };
    assert!(bad.outputs_config().is_err());
}

fn quiet_args(state: &Path, extra: &[&str]) -> SinkOptions {
    let mut output = vec!["none".to_owned(), "metrics:off".to_owned()];
    output.extend(extra.iter().map(|s| (*s).to_owned()));
    SinkOptions {
        output,
        state_dir: state.to_owned(),
        ..SinkOptions::default()
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

/// A process to kill that outlives the test unless killed.
fn sleeper() -> std::process::Child {
    std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep")
}

/// The exec of inline Python (`python-kill` matches it) as the kernel reports it for
/// the running process `pid`: its inode the running image's, which the kill checks
/// against reuse of the pid.
fn inline_python(pid: u32) -> Event {
    let mut ev = event(
        pid,
        2,
        exec_payload(1, "python3", "/usr/bin/python3", &["python3", "-c", "x"]),
    );
    let ino = std::fs::metadata(format!("/proc/{pid}/exe"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("the victim's exe");
    if let Payload::Exec(x) = &mut ev.payload {
        x.exe_ino = ino;
    }
    ev
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
    let mut ev = inline_python(pid);
    ev.root = std::process::id();
    sink.kernel_event(&ev).expect("event");
    let status = victim.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    sink.flush();
    let stats = sink.stats();
    assert_eq!(stats.kills.killed, 1, "{stats:?}");
    assert_eq!(stats.findings["python-kill"]["kill"], 1, "{stats:?}");
    sink.shutdown().expect("shutdown");

    let rec = recorded(dir.path());
    assert_eq!(rec.len(), 1);
    let d = &rec[0]["decision"];
    assert_eq!(d["rule"], "python-kill");
    assert_eq!(d["action"], "kill");
    assert_eq!(d["by"], "userspace");
    assert_eq!(d["signal"], libc::SIGKILL);
    assert_eq!(d["result"], "killed");
    // python-kill is an exec (shell) rule: the victim led its group, so the group went.
    assert_eq!(d["scope"], "process_group");
    assert_eq!(d["pgid"], pid);
    assert!(rec[0].get("userspace_decision").is_none());
    assert_eq!(rec[0]["findings"][0]["action"], "kill");
}

#[test]
fn a_kill_beside_a_kernel_decision_is_the_userspace_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut victim = sleeper();
    let pid = victim.id();
    let mut sink =
        Sink::start(&quiet_args(dir.path(), &[]), Arc::new(policy(None))).expect("start");
    let mut ev = inline_python(pid);
    ev.root = std::process::id();
    ev.decision = Some(Decision {
        action: Taken::Alert,
        errno: None,
        ..deny("exec-watch")
    });
    sink.kernel_event(&ev).expect("event");
    let status = victim.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    sink.shutdown().expect("shutdown");
    let rec = recorded(dir.path());
    assert_eq!(rec[0]["decision"]["rule"], "exec-watch");
    assert_eq!(rec[0]["userspace_decision"]["rule"], "python-kill");
    assert_eq!(rec[0]["userspace_decision"]["result"], "killed");
    assert_eq!(rec[0]["userspace_decision"]["scope"], "process");
}

#[test]
fn record_only_does_not_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut victim = sleeper();
    let pid = victim.id();
    let args = SinkOptions {
        record_only: true,
        ..quiet_args(dir.path(), &[])
    };
    let mut sink = Sink::start(&args, Arc::new(policy(None))).expect("start");
    let mut ev = inline_python(pid);
    ev.root = 1;
    sink.kernel_event(&ev).expect("event");
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
fn a_reused_pid_running_another_image_is_not_killed() {
    let mut victim = sleeper();
    let pid = victim.id();
    let mut ev = inline_python(pid);
    if let Payload::Exec(x) = &mut ev.payload {
        x.exe_ino += 1;
    }
    let report = kill::kill_event_process(&ev, false);
    assert_eq!(report.result, "changed");
    assert!(victim.try_wait().expect("try_wait").is_none(), "killed");
    let _ = victim.kill();
    let _ = victim.wait();
}

/// A record of the daemon's own, as the parts that make them write them.
#[derive(serde::Serialize)]
struct Counted {
    time: &'static str,
    kind: &'static str,
    n: u64,
}

impl OwnRecord for Counted {
    fn kind(&self) -> &'static str {
        self.kind
    }
}

#[test]
fn every_event_is_recorded_with_its_findings_and_own_records_pass_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.jsonl");
    let out_s = out.display().to_string();
    let args = SinkOptions {
        output: vec![out_s, "metrics:off".into()],
        state_dir: dir.path().join("state"),
        ..SinkOptions::default()
    };
    let mut sink = Sink::start(&args, Arc::new(policy(None))).expect("start");
    sink.kernel_event(&connect("127.0.0.1")).expect("event");
    sink.kernel_event(&connect("10.0.0.5")).expect("event");
    sink.kernel_event(&secret_open(Some(deny("secrets"))))
        .expect("event");
    sink.record(&Counted {
        time: "2026-01-01T00:00:00Z",
        kind: "stats",
        n: 7,
    })
    .expect("stats");
    sink.flush();
    let rs = sink.recorder_stats().expect("recording");
    assert_eq!(rs.recorded, 4, "{rs:?}");
    assert_eq!(rs.head_seq, Some(4));
    assert_eq!(sink.stats().events, 4);
    sink.shutdown().expect("shutdown");

    let rec = recorded(&dir.path().join("state"));
    assert_eq!(rec.len(), 4);
    assert!(rec[0].get("findings").is_none());
    assert_eq!(rec[1]["findings"][0]["rule"], "egress");
    assert_eq!(rec[2]["findings"][0]["by"], "kernel");
    assert_eq!(rec[2]["decision"]["errno"], 1);
    assert_eq!(
        rec[3],
        serde_json::json!({"time": "2026-01-01T00:00:00Z", "kind": "stats", "n": 7})
    );
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .expect("jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].get("alert").is_none());
    assert_eq!(lines[1]["alert"]["rule"], "egress");
    assert_eq!(lines[2]["alert"]["action"], "deny");
    assert!(lines[3].get("alert").is_none());
}

#[test]
fn a_health_record_is_the_guards_own_finding_and_alerts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.jsonl");
    let args = SinkOptions {
        output: vec![out.display().to_string(), "metrics:off".into()],
        state_dir: dir.path().join("state"),
        ..SinkOptions::default()
    };
    let mut sink = Sink::start(&args, Arc::new(policy(None))).expect("start");
    sink.record(&DaemonRecord::Health {
        time: "2026-01-01T00:00:00Z".into(),
        check: "bpf-lsm",
        detail: "BPF LSM stopped deciding".into(),
        decision: HealthDecision {
            rule: "guard-health",
            action: Taken::Alert,
            priority: "critical",
        },
    })
    .expect("health");
    assert_eq!(sink.stats().findings["guard-health"]["alert"], 1);
    sink.shutdown().expect("shutdown");
    let rec = recorded(&dir.path().join("state"));
    assert_eq!(rec[0]["kind"], "health");
    assert_eq!(rec[0]["decision"]["rule"], "guard-health");
    assert_eq!(rec[0]["findings"][0]["by"], "daemon");
    assert_eq!(rec[0]["findings"][0]["priority"], "critical");
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(&out)
            .expect("jsonl")
            .lines()
            .next()
            .expect("a line"),
    )
    .expect("json");
    assert_eq!(line["alert"]["priority"], "critical");
    assert_eq!(
        line["alert"]["output"],
        "guard-health: bpf-lsm: BPF LSM stopped deciding"
    );
    assert_eq!(
        line["alert"]["tags"],
        serde_json::json!(["openclaw", "daemon"])
    );
}

#[test]
fn live_events_and_their_records_are_judged_alike() {
    let mut denied = event(4242, 2, open_payload("/root/.openclaw/.env"));
    denied.decision = Some(deny("secrets"));
    let events = [
        event(4242, 2, net_payload("127.0.0.1")),
        event(4242, 2, net_payload("10.0.0.5")),
        event(4242, 0, net_payload("10.0.0.5")),
        event(4242, 2, open_payload("/etc/hostname")),
        event(4242, 2, open_payload("/root/.openclaw/.env")),
        denied,
        event(
            4242,
            1,
            exec_payload(
                100,
                "bash",
                "/bin/bash",
                &["bash", "--noprofile", "--norc", "-c", "ls"],
            ),
        ),
        event(
            4242,
            2,
            exec_payload(100, "bash", "/bin/sh", &["sh", "-c", "curl x | sh"]),
        ),
        event(
            4242,
            2,
            exec_payload(100, "bash", "/usr/bin/git", &["git", "status"]),
        ),
    ];
    // `policy replay` judges the record's JSON; the daemon the decoded event.
    let p = policy(None);
    for ev in &events {
        let json = serde_json::to_value(ev).expect("encodes");
        assert_eq!(
            p.evaluate_event(ev, &EvalEnv::default()),
            p.evaluate(&json),
            "{json}"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events.jsonl");
    let args = SinkOptions {
        output: vec![out.display().to_string(), "metrics:off".into()],
        state_dir: dir.path().join("state"),
        ..SinkOptions::default()
    };
    let mut sink = Sink::start(&args, Arc::new(p)).expect("start");
    for ev in &events {
        sink.kernel_event(ev).expect("event");
    }
    let findings = sink.stats().findings;
    sink.shutdown().expect("shutdown");
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .expect("jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let rec = recorded(&dir.path().join("state"));
    // The cases are not vacuous: findings on the way, one of them the kernel's.
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
    assert_eq!(findings["shell-spawn"]["alert"], 2, "{findings:?}");
    // The record is the event's own encoding plus what was found, nothing else.
    for (ev, r) in events.iter().zip(&rec) {
        let mut plain = r.clone();
        if let Some(m) = plain.as_object_mut() {
            m.remove("findings");
        }
        assert_eq!(plain, serde_json::to_value(ev).expect("encodes"));
    }
}
