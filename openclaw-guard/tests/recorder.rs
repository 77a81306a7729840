//! Recorder end to end: a writer killed with SIGKILL mid-storm, and the real
//! `openclaw-guard events` binary querying and verifying a record.

// An integration test links every dependency of the crate but uses few of them.
#![allow(
    unused_crate_dependencies,
    reason = "integration test uses a subset of the crate's deps"
)]

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use openclaw_guard::recorder::{verify, Options, Reader, Recorder};
use serde_json::{json, Value};

const CHILD_ENV: &str = "OCG_RECORDER_CRASH_CHILD_DIR";

fn exec_event(i: u64) -> Value {
    json!({
        "time": jiff::Timestamp::now().to_string(),
        "kind": "exec",
        "pid": 5000 + i % 300,
        "tgid": 5000 + i % 300,
        "ppid": 4999,
        "root": 100,
        "comm": "sh",
        "lineage": [{"pid": 100, "comm": "openclaw"}, {"pid": 5000 + i % 300, "comm": "sh"}],
        "filename": "/bin/sh",
        "argv": ["sh", "-c", format!("echo storm {i}")],
    })
}

fn decision_event(i: u64) -> Value {
    let mut ev = exec_event(i);
    ev["kind"] = json!("decision");
    ev["decision"] = json!({"rule": "secrets.ssh", "action": "deny", "errno": 13});
    ev
}

/// Not a test on its own: the writer process of `sigkill_during_event_storm`. The
/// test binary re-runs itself with only this test selected and `CHILD_ENV` set.
#[test]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let opts = Options {
        // Small segments so the storm also crosses rotations.
        segment_max_bytes: 256 << 10,
        fsync_interval: Some(Duration::from_millis(20)),
        ..Options::default()
    };
    let (mut rec, _) = Recorder::open(Path::new(&dir), opts).expect("child: open");
    for i in 0.. {
        if i % 7 == 0 {
            let seq = rec.append(&decision_event(i)).expect("child: append");
            // Printed only after append returned: the parent holds us to these.
            println!("DECISION {seq}");
        } else {
            rec.append(&exec_event(i)).expect("child: append");
        }
    }
}

#[test]
fn sigkill_during_event_storm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut reported = BTreeSet::new();
    let parse = |line: &str| {
        line.strip_prefix("DECISION ")
            .and_then(|s| s.parse::<u64>().ok())
    };
    // Let the storm run through several rotations, then kill -9 mid-write.
    while reported.len() < 2000 {
        let line = lines.next().expect("writer ended early").expect("read");
        if let Some(seq) = parse(&line) {
            reported.insert(seq);
        }
    }
    child.kill().expect("SIGKILL writer");
    // Lines the child printed before it died are still in the pipe.
    for line in lines.map_while(Result::ok) {
        if let Some(seq) = parse(&line) {
            reported.insert(seq);
        }
    }
    let status = child.wait().expect("wait");
    assert!(!status.success(), "writer was killed: {status:?}");

    // Restart: recovery may or may not find a torn tail (the kill can land between
    // writes); either way it is reported, and the record verifies.
    let (mut rec, report) = Recorder::open(tmp.path(), Options::default()).expect("reopen");
    eprintln!("{report}");
    assert!(report.damaged.is_none(), "{report}");
    let (last, _) = rec.head();
    let last = last.expect("records written");
    assert!(last >= *reported.last().expect("decisions"), "{report}");
    // Appending continues the same chain.
    assert_eq!(rec.append(&exec_event(0)).expect("append"), last + 1);
    drop(rec);

    let v = verify(tmp.path()).expect("verify");
    assert!(v.is_ok(), "{v}");
    assert!(v.segments > 1, "storm rotated: {v}");

    let mut recorded = BTreeSet::new();
    Reader::open(tmp.path())
        .expect("reader")
        .events(
            None,
            |e| {
                if e.event.get("decision").is_some() {
                    recorded.insert(e.seq);
                }
            },
            |p| panic!("read problem: {p:?}"),
        )
        .expect("read");
    let lost: Vec<_> = reported.difference(&recorded).collect();
    assert!(lost.is_empty(), "decisions reported but lost: {lost:?}");

    let out = guard(&["events", "verify", "--state-dir", path_str(tmp.path())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn guard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_openclaw-guard"))
        .args(args)
        .output()
        .expect("run openclaw-guard")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn fixture(dir: &Path) {
    let (mut rec, _) = Recorder::open(dir, Options::default()).expect("open");
    let now = jiff::Timestamp::now();
    let old = now - jiff::SignedDuration::from_hours(3);
    let ev =
        |t: jiff::Timestamp, kind: &str, pid: u64, lineage: &[u64], dec: Option<(&str, &str)>| {
            let lineage: Vec<Value> = lineage
                .iter()
                .map(|p| json!({"pid": p, "comm": format!("c{p}")}))
                .collect();
            let mut v = json!({
                "time": t.to_string(), "kind": kind, "pid": pid, "tgid": pid, "root": 100,
                "comm": format!("c{pid}"), "lineage": lineage, "path": "/etc/hostname",
            });
            if let Some((rule, action)) = dec {
                v["decision"] = json!({"rule": rule, "action": action});
            }
            v
        };
    for v in [
        ev(old, "exec", 200, &[100, 200], None),
        ev(old, "file_open", 200, &[100, 200], None),
        ev(now, "exec", 300, &[100, 200, 300], None),
        ev(
            now,
            "decision",
            300,
            &[100, 200, 300],
            Some(("secrets.ssh", "deny")),
        ),
        ev(now, "connect", 400, &[100, 400], None),
        ev(
            now,
            "decision",
            400,
            &[100, 400],
            Some(("net.exfil", "kill")),
        ),
    ] {
        rec.append(&v).expect("append");
    }
}

#[test]
fn cli_timeline_and_filters() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fixture(tmp.path());
    let dir = path_str(tmp.path());

    let out = guard(&["events", "--state-dir", dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    // Indented by lineage depth: 300 is one level below 200.
    assert!(
        lines[0].contains("  c200[200] exec path=/etc/hostname"),
        "{stdout}"
    );
    assert!(
        lines[3].contains("    c300[300] decision DENY rule=secrets.ssh"),
        "{stdout}"
    );

    let out = guard(&[
        "events",
        "--state-dir",
        dir,
        "--tree",
        "200",
        "--since",
        "1h",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "{}", text(&out));
    assert!(stdout.lines().all(|l| l.contains("c300[300]")), "{stdout}");

    let out = guard(&[
        "events",
        "--state-dir",
        dir,
        "--pid",
        "200",
        "--kind",
        "file_open",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "{}",
        text(&out)
    );
}

#[test]
fn cli_json_lines_export() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fixture(tmp.path());
    let dir = path_str(tmp.path());
    let out = guard(&["events", "--state-dir", dir, "--json", "--decision", "kill"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["record_seq"], 6);
    assert_eq!(lines[0]["decision"]["rule"], "net.exfil");
    assert_eq!(lines[0]["record_hash"].as_str().map(str::len), Some(64));

    let out = guard(&[
        "events",
        "--state-dir",
        dir,
        "--json",
        "--rule",
        "secrets.ssh",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "{}",
        text(&out)
    );
}

#[test]
fn cli_verify_reports_and_fails_on_tampering() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fixture(tmp.path());
    let dir = path_str(tmp.path());
    let out = guard(&["events", "verify", "--state-dir", dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("verify ok: 1 segment(s), 6 record(s)"),
        "{stdout}"
    );

    // Flip one byte in the payload of the third record.
    let seg = tmp.path().join("record/seg-00000000000000000001.ocgr");
    let mut bytes = std::fs::read(&seg).expect("read");
    let pos = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"OCGR")
        .map(|(i, _)| i)
        .nth(3)
        .expect("third frame");
    bytes[pos + 60] ^= 0x04;
    std::fs::write(&seg, &bytes).expect("write");
    let out = guard(&["events", "--state-dir", dir, "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("verify FAILED"), "{stdout}");
    assert!(stdout.contains("seg-00000000000000000001.ocgr"), "{stdout}");
    assert!(stdout.contains("record seq 3"), "{stdout}");
}

#[test]
fn cli_torn_tail_fails_verify_until_the_writer_cuts_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fixture(tmp.path());
    let dir = path_str(tmp.path());
    let seg = tmp.path().join("record/seg-00000000000000000001.ocgr");
    let mut bytes = std::fs::read(&seg).expect("read");
    let good = bytes.len();
    // The start of a frame, as a crash mid-write leaves it.
    bytes.extend_from_slice(b"OCGR\x40\x01\x00\x00garbage");
    std::fs::write(&seg, &bytes).expect("write");

    let out = guard(&["events", "verify", "--state-dir", dir]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("torn tail"),
        "{}",
        text(&out)
    );
    // Queries still show everything before the tail.
    let out = guard(&["events", "--state-dir", dir]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        6,
        "{}",
        text(&out)
    );

    let (_rec, report) = Recorder::open(tmp.path(), Options::default()).expect("open");
    let torn = report.torn_tail.expect("torn tail reported");
    assert_eq!((torn.offset, torn.last_good_seq), (good as u64, Some(6)));
    let out = guard(&["events", "verify", "--state-dir", dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn cli_missing_record_is_an_error_with_a_hint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = guard(&["events", "verify", "--state-dir", path_str(tmp.path())]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--state-dir"),
        "{}",
        text(&out)
    );
}
