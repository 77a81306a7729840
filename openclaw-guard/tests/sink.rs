//! The sink with its webhook target down (issue 5, must-show 3, at the library
//! level): every event is still recorded, decisions durably, the pipeline never
//! waits on the webhook, and the failures are counted for `status`.

#![allow(
    unused_crate_dependencies,
    reason = "integration test uses a subset of the crate's deps"
)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use openclaw_guard::{
    events::{Decision, Event, FileOpen, LineageEntry, Net, Payload, Taken},
    policy::{load_str, CompileContext, CompiledPolicy},
    recorder::{verify, Reader},
    sink::{Sink, SinkOptions},
};
use serde_json::{json, Value};

const POLICY: &str = r#"
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
"#;

fn event(pid: u32, comm: &str, payload: Payload) -> Event {
    Event {
        time: jiff::Timestamp::now().to_string(),
        ktime_ns: 1,
        kind: match &payload {
            Payload::Net(_) => "net",
            _ => "file_open",
        },
        pid,
        tgid: pid,
        root: 100,
        depth: 1,
        cgroup_id: 1,
        lineage: vec![
            LineageEntry {
                pid: 100,
                comm: "openclaw".into(),
            },
            LineageEntry {
                pid,
                comm: comm.into(),
            },
        ],
        role: None,
        tool_call: None,
        payload,
        decision: None,
    }
}

fn connect(i: u32, addr: &str) -> Event {
    event(
        300 + i,
        "curl",
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
        }),
    )
}

fn denied_open() -> Event {
    let mut ev = event(
        400,
        "cat",
        Payload::FileOpen(FileOpen {
            op: "open",
            path: "/home/u/.openclaw/.env".into(),
            dev: "8:1".into(),
            ino: 9,
            flags: 0,
            ret: -1,
        }),
    );
    ev.decision = Some(Decision {
        rule: "secrets".into(),
        action: Taken::Deny,
        errno: Some(1),
        degraded_from: None,
    });
    ev
}

fn stats(sink: &Sink) -> Value {
    serde_json::to_value(sink.stats()).expect("stats encode")
}

fn webhook_stats(stats: &Value) -> Value {
    stats["outputs"]["sinks"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["sink"] == "webhook"))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn webhook_down_events_still_recorded_and_failures_counted() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let args = SinkOptions {
        output: vec![
            "none".into(),
            "metrics:off".into(),
            format!("webhook:http://127.0.0.1:{port}/"),
        ],
        state_dir: dir.path().to_owned(),
        ..SinkOptions::default()
    };
    let policy = load_str(POLICY, "p.toml").expect("policy");
    let compiled = CompiledPolicy::new(&policy, None, &CompileContext::default());
    let mut sink = Sink::start(&args, Arc::new(compiled)).expect("sink");

    let started = Instant::now();
    let mut n = 0;
    for i in 0..20 {
        sink.kernel_event(&connect(
            i,
            if i % 2 == 0 {
                "93.184.216.34"
            } else {
                "127.0.0.1"
            },
        ))
        .expect("event");
        n += 1;
        if i == 10 {
            sink.kernel_event(&denied_open()).expect("event");
            n += 1;
        }
        sink.flush();
    }
    // Ten alerts to a dead webhook with retries and backoff would take seconds if
    // anything waited on it.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the pipeline waited: {:?}",
        started.elapsed()
    );
    // The decision batch was fsynced before flush returned; the rest is on its way.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = stats(&sink);
        let w = webhook_stats(&s);
        let recorded = s["recorder"]["recorded"].as_u64().unwrap_or(0);
        if w["failed"].as_u64().unwrap_or(0) >= 1 && recorded == n {
            assert_eq!(w["sent"], 0, "{s}");
            assert!(w["last_error"].is_string(), "{s}");
            assert_eq!(s["recorder"]["gap_events"], 0, "{s}");
            assert_eq!(s["findings"]["egress"]["alert"], 10, "{s}");
            assert_eq!(s["findings"]["secrets"]["deny"], 1, "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "no webhook failure counted: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    sink.shutdown().expect("shutdown");

    let mut events = Vec::new();
    Reader::open(dir.path())
        .expect("reader")
        .events(
            None,
            |r| events.push(r.event),
            |p| panic!("unreadable: {p:?}"),
        )
        .expect("read");
    assert_eq!(events.len() as u64, n);
    let decisions: Vec<&Value> = events
        .iter()
        .filter(|e| e.get("decision").is_some())
        .collect();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0]["findings"][0]["by"], "kernel");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.get("findings").is_some())
            .count(),
        11
    );
    assert!(verify(dir.path()).expect("verify").is_ok());
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    /// `None` (the test then says why it skips) without the right to mount.
    fn mount(at: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_owned()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes zeros until the filesystem is full.
fn fill(path: &std::path::Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).expect("filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn full_state_dir_keeps_outputting_counts_the_gap_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let Some(_fs) = SmallFs::mount(&state, "512k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)");
        return;
    };
    let jsonl = dir.path().join("events.jsonl");
    let args = SinkOptions {
        output: vec![jsonl.display().to_string(), "metrics:off".into()],
        state_dir: state.clone(),
        ..SinkOptions::default()
    };
    let policy = load_str(POLICY, "p.toml").expect("policy");
    let compiled = CompiledPolicy::new(&policy, None, &CompileContext::default());
    let mut sink = Sink::start(&args, Arc::new(compiled)).expect("sink");
    fill(&state.join("filler"));

    let mut n = 0u64;
    for i in 0..60 {
        sink.kernel_event(&connect(i, "93.184.216.34"))
            .expect("event");
        n += 1;
        sink.flush();
    }

    let wait_for = |sink: &Sink, what: &str, ok: &dyn Fn(&Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = stats(sink);
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{what}: {s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Every event is recorded or counted in a gap; a gap record written when the
    // store took a write for a moment is recorded too (closed gaps: all but the
    // current one).
    let accounted = |r: &Value| {
        let closed = r["gaps"].as_u64().unwrap_or(0) - u64::from(r["failing"] == true);
        r["recorded"].as_u64().unwrap_or(0) + r["gap_events"].as_u64().unwrap_or(0) - closed
    };
    wait_for(&sink, "store refusing writes", &|s| {
        let r = &s["recorder"];
        r["failing"] == true && accounted(r) == n
    });
    // A decision while the store refuses is held, not lost. (Sent once the store is
    // failing: before, the recorder may write it ahead of the queued ordinary events,
    // while there is still room.)
    sink.kernel_event(&denied_open()).expect("event");
    n += 1;
    sink.flush();
    let s = wait_for(&sink, "decision held", &|s| {
        let r = &s["recorder"];
        r["held_decisions"] == 1 && accounted(r) + 1 == n
    });
    let r = &s["recorder"];
    assert_eq!(r["held_decisions"], 1, "{s}");
    assert!(r["gap_events"].as_u64().unwrap_or(0) > 0, "{s}");
    assert!(
        r["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("no space left"),
        "{s}"
    );
    let gap = r["gap_events"].as_u64().unwrap_or(0);
    // Outputs go on: every event reaches the JSON lines file.
    wait_for(&sink, "JSON lines written", &|s| {
        s["outputs"]["sinks"][0]["sent"].as_u64() == Some(n)
    });

    // Space comes back: the held decision and a gap record are written, then new events.
    std::fs::remove_file(state.join("filler")).expect("remove filler");
    wait_for(&sink, "recording resumed", &|s| {
        s["recorder"]["failing"] == false && s["recorder"]["held_decisions"] == 0
    });
    sink.kernel_event(&connect(99, "93.184.216.34"))
        .expect("event");
    sink.flush();
    sink.shutdown().expect("shutdown");

    let mut events = Vec::new();
    Reader::open(&state)
        .expect("reader")
        .events(
            None,
            |r| events.push(r.event),
            |p| panic!("unreadable: {p:?}"),
        )
        .expect("read");
    let gaps: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "recorder_gap")
        .collect();
    assert!(!gaps.is_empty());
    let lost: u64 = gaps
        .iter()
        .map(|g| g["lost_events"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(lost, gap);
    assert!(events.iter().any(|e| e.get("decision").is_some()));
    assert_eq!(events.last().map(|e| e["pid"].clone()), Some(json!(399)));
    assert_eq!(events.len() as u64, n + 1 + gaps.len() as u64 - gap);
    assert!(verify(&state).expect("verify").is_ok());
}
