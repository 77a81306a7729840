//! `policy replay` end to end: a run recorded through the real sink and recorder, then
//! the real binary replaying a stricter policy over it (issue 6, must-show 4).

#![allow(
    unused_crate_dependencies,
    reason = "integration test uses a subset of the crate's deps"
)]

use std::{collections::BTreeSet, path::Path, process::Command, sync::Arc};

use openclaw_guard::{
    events::{Decision, Event, Exec, Exit, FileOpen, Fork, LineageEntry, Net, Payload, Taken},
    policy::{load_str, CompileContext, CompiledPolicy},
    recorder::Reader,
    sink::{Sink, SinkOptions},
};
use serde_json::{json, Value};

/// The policy the guard ran with: egress beyond loopback is only alerted.
const RUNNING: &str = r#"
version = 1
mode = "enforce"

[[rules]]
id = "secrets"
description = "A process started by the agent opened an OpenClaw secret"
action = "block"
severity = "critical"
[rules.files]
paths = ["$OPENCLAW_STATE_DIR/.env", "~/.openclaw/.env"]

[[rules]]
id = "shell-spawn"
description = "A shell started in the agent's process tree"
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
id = "egress"
description = "A process started by the agent connected beyond loopback"
action = "alert"
severity = "warning"
[rules.egress]
allow = ["loopback"]
"#;

/// The same with the documented egress switch flipped to block.
fn stricter() -> String {
    RUNNING.replace(
        "action = \"alert\"\nseverity = \"warning\"",
        "action = \"block\"\nseverity = \"warning\"",
    )
}

const ROOT: u32 = 1000;

fn base(kind: &'static str, pid: u32, depth: u32, payload: Payload) -> Event {
    let mut lineage = vec![LineageEntry {
        pid: ROOT,
        comm: "openclaw".into(),
    }];
    if depth >= 1 {
        lineage.push(LineageEntry {
            pid: 1100,
            comm: "bash".into(),
        });
    }
    if depth >= 2 {
        lineage.push(LineageEntry {
            pid,
            comm: "curl".into(),
        });
    }
    Event {
        time: jiff::Timestamp::now().to_string(),
        ktime_ns: 1,
        kind,
        pid,
        tgid: pid,
        root: ROOT,
        depth,
        cgroup_id: 1,
        lineage,
        role: None,
        tool_call: None,
        payload,
        decision: None,
    }
}

fn net(op: &'static str, pid: u32, depth: u32, addr: &str, port: u16, protocol: &str) -> Event {
    let family = if addr.contains(':') { "inet6" } else { "inet" };
    base(
        "net",
        pid,
        depth,
        Payload::Net(Net {
            op,
            family: family.into(),
            addr: addr.into(),
            port,
            ipv4_mapped: false,
            protocol: protocol.into(),
            sock_type: if protocol == "udp" { "dgram" } else { "stream" }.into(),
            ret: 0,
            dest_name: None,
            sockaddr_family: None,
            name_hash: 0,
        }),
    )
}

/// The recorded run, in order; the second item says whether the stricter policy
/// newly blocks it.
fn run_events() -> Vec<(Event, bool)> {
    let exec = base(
        "exec",
        1100,
        1,
        Payload::Exec(Exec {
            ppid: ROOT,
            uid: 1000,
            gid: 1000,
            comm: "bash".into(),
            filename: "/bin/bash".into(),
            filename_truncated: false,
            argv: ["/bin/bash", "-c", "curl https://example.com"]
                .map(String::from)
                .to_vec(),
            argv_truncated: false,
            exe_dev: "8:1".into(),
            exe_ino: 42,
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
        }),
    );
    let fork = base(
        "fork",
        1100,
        1,
        Payload::Fork(Fork {
            child_tgid: 1200,
            child_depth: 2,
        }),
    );
    let mut secret = base(
        "file_open",
        1200,
        2,
        Payload::FileOpen(FileOpen {
            op: "open",
            path: "/home/agent/.openclaw/.env".into(),
            dev: "8:1".into(),
            ino: 77,
            flags: 0,
            ret: -1,
        }),
    );
    secret.decision = Some(Decision {
        rule: "secrets".into(),
        action: Taken::Deny,
        errno: Some(1),
        degraded_from: None,
    });
    let exit = base(
        "exit",
        1200,
        2,
        Payload::Exit(Exit {
            exit_code: Some(0),
            signal: None,
        }),
    );
    vec![
        (exec, false),
        (fork, false),
        (net("connect", 1200, 2, "127.0.0.1", 8080, "tcp"), false),
        (net("connect", 1200, 2, "93.184.216.34", 443, "tcp"), true),
        (net("connect", 1200, 2, "::1", 443, "tcp"), false),
        (net("sendmsg", 1200, 2, "10.0.0.2", 53, "udp"), true),
        (net("connect", 1200, 2, "2001:db8::1", 443, "tcp"), true),
        (secret, false),
        // The gateway's own connections are not subject to egress.
        (net("connect", ROOT, 0, "93.184.216.34", 443, "tcp"), false),
        (net("bind", 1200, 2, "0.0.0.0", 8080, "tcp"), false),
        (exit, false),
    ]
}

/// Records the run through the sink (real policy merge, real recorder), as the
/// daemon does; returns the seqs the stricter policy newly blocks and the seq of the
/// kernel-denied open. Seqs are read back from the record: the recorder writes a
/// batch holding a decision ahead of ordinary batches still queued.
fn record_run(state: &Path) -> (BTreeSet<u64>, u64) {
    let policy = load_str(RUNNING, "running.toml").expect("running policy");
    let compiled = CompiledPolicy::new(&policy, None, &CompileContext::default());
    let args = SinkOptions {
        output: vec!["none".into(), "metrics:off".into()],
        state_dir: state.to_owned(),
        ..SinkOptions::default()
    };
    let mut sink = Sink::start(&args, Arc::new(compiled)).expect("sink");
    let mut newly_at = BTreeSet::new();
    let mut denied_at = 0;
    // Each event's index is its kernel time, read back from the record.
    for (i, (mut ev, blocked)) in (0u64..).zip(run_events()) {
        if ev.decision.is_some() {
            denied_at = i;
        }
        if blocked {
            newly_at.insert(i);
        }
        ev.ktime_ns = 1_000 + i;
        sink.kernel_event(&ev).expect("event");
        sink.flush();
    }
    sink.shutdown().expect("shutdown");
    let mut seq_of = std::collections::HashMap::new();
    Reader::open(state)
        .expect("record")
        .events(
            None,
            |r| {
                if let Some(i) = r.event["ktime_ns"].as_u64() {
                    seq_of.insert(i - 1_000, r.seq);
                }
            },
            |p| panic!("unreadable record: {p:?}"),
        )
        .expect("read record");
    let seq = |i: &u64| *seq_of.get(i).expect("event recorded");
    (newly_at.iter().map(seq).collect(), seq(&denied_at))
}

fn replay(state: &Path, policy: &Path, extra: &[&str]) -> (Vec<Value>, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_openclaw-guard"))
        .args(["policy", "replay", "--policy"])
        .arg(policy)
        .arg("--state-dir")
        .arg(state)
        .arg("--json")
        .args(extra)
        .output()
        .expect("run openclaw-guard");
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let summary = lines.pop().expect("summary line");
    (lines, summary["summary"].clone())
}

fn seqs(lines: &[Value], pred: impl Fn(&Value) -> bool) -> BTreeSet<u64> {
    lines
        .iter()
        .filter(|l| pred(l))
        .filter_map(|l| l["record_seq"].as_u64())
        .collect()
}

#[test]
fn stricter_policy_lists_exactly_the_events_it_would_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let (newly, denied) = record_run(&state);
    assert_eq!(newly.len(), 3);
    let strict = dir.path().join("stricter.toml");
    std::fs::write(&strict, stricter()).expect("write policy");
    let running = dir.path().join("running.toml");
    std::fs::write(&running, RUNNING).expect("write policy");

    let (lines, summary) = replay(&state, &strict, &[]);
    let would_block = seqs(&lines, |l| l["would"]["action"] == "block");
    let mut expected = newly.clone();
    expected.insert(denied);
    assert_eq!(would_block, expected, "{lines:#?}");
    assert_eq!(
        seqs(&lines, |l| l["change"] == "newly blocked"),
        newly,
        "exactly the connects/sends to non-loopback addresses by the gateway's descendants"
    );
    for l in lines.iter().filter(|l| l["change"] == "newly blocked") {
        assert_eq!(l["did"]["action"], "alert", "{l}");
        assert_eq!(l["did"]["rules"], json!(["egress"]), "{l}");
        assert_eq!(l["would"]["rules"], json!(["egress"]), "{l}");
    }
    let secret = lines
        .iter()
        .find(|l| l["record_seq"] == denied)
        .expect("the denied open is listed");
    assert_eq!(secret["did"]["action"], "block");
    assert_eq!(secret["change"], "same");
    assert_eq!(summary["events"], 11, "stats records are not events");
    assert_eq!(summary["would_block"], 4);
    assert_eq!(summary["did_block"], 1);
    assert_eq!(summary["newly_blocked"], 3);
    assert_eq!(summary["no_longer_blocked"], 0);
    assert_eq!(summary["would_alert"], 1, "the exec tool's shell");

    // `--changed` lists only the differences.
    let (changed, _) = replay(&state, &strict, &["--changed"]);
    assert_eq!(seqs(&changed, |_| true), newly);

    // The running policy over its own run: nothing changes.
    let (same, summary) = replay(&state, &running, &[]);
    assert!(same.iter().all(|l| l["change"] == "same"), "{same:#?}");
    assert_eq!(summary["newly_blocked"], 0);
    assert_eq!(summary["did_alert"], summary["would_alert"]);

    // The table form runs too and ends with the summary.
    let out = Command::new(env!("CARGO_BIN_EXE_openclaw-guard"))
        .args(["policy", "replay", "--policy"])
        .arg(&strict)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("run openclaw-guard");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(text.matches("newly blocked").count(), 4, "{text}");
    assert!(
        text.contains("newly blocked 3, no longer blocked 0"),
        "{text}"
    );
}

#[test]
fn invalid_policy_exits_2_and_missing_record_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "version = 1\n[[rules]]\nid = \"x\"\naction = \"blok\"\n",
    )
    .expect("write");
    let run = |policy: &Path| {
        Command::new(env!("CARGO_BIN_EXE_openclaw-guard"))
            .args(["policy", "replay", "--policy"])
            .arg(policy)
            .arg("--state-dir")
            .arg(dir.path())
            .output()
            .expect("run")
    };
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:"));
    let good = dir.path().join("good.toml");
    std::fs::write(&good, RUNNING).expect("write");
    let out = run(&good);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no record at"));
}
