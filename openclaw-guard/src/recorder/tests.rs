//! Store, recovery, verify and query tests on temporary state directories.

use std::{path::Path, time::Duration};

use jiff::Timestamp;
use serde_json::{json, Value};

use super::{
    query::{parse_time_arg, timeline_line},
    segment::{
        decode_frame, list_segments, segment_file_name, FRAME_HEADER_LEN, RECORD_DIR,
        SEGMENT_HEADER_LEN,
    },
    verify, Filter, Options, Reader, RecordedEvent, Recorder,
};

/// Options with no time-based behaviour, so tests are deterministic.
fn opts() -> Options {
    Options {
        segment_max_bytes: 1 << 20,
        segment_max_age: Duration::from_secs(3600),
        retention_max_bytes: None,
        retention_max_segments: None,
        fsync_interval: None,
    }
}

fn event(i: u64) -> Value {
    json!({
        "time": format!("2026-05-01T12:00:{:02}.000000123Z", i % 60),
        "kind": "exec",
        "pid": 1000 + i,
        "tgid": 1000 + i,
        "ppid": 999,
        "root": 100,
        "comm": "bash",
        "lineage": [{"pid": 100, "comm": "openclaw"}, {"pid": 1000 + i, "comm": "bash"}],
        "filename": "/usr/bin/bash",
    })
}

fn write_events(dir: &Path, n: u64, o: Options) {
    let (mut r, rep) = Recorder::open(dir, o).expect("open");
    assert!(rep.is_clean(), "{rep}");
    for i in 0..n {
        r.append(&event(i)).expect("append");
    }
}

fn seg_path(dir: &Path, first: u64) -> std::path::PathBuf {
    dir.join(RECORD_DIR).join(segment_file_name(first))
}

/// `(offset, length)` of every frame of a segment file.
fn frames(path: &Path) -> Vec<(usize, usize)> {
    let buf = std::fs::read(path).expect("read segment");
    let mut at = SEGMENT_HEADER_LEN;
    let mut out = Vec::new();
    while at < buf.len() {
        let f = decode_frame(&buf[at..]).expect("frame");
        out.push((at, f.encoded_len()));
        at += f.encoded_len();
    }
    out
}

fn all_events(dir: &Path) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    Reader::open(dir)
        .expect("reader")
        .events(None, |e| out.push(e), |p| panic!("read problem: {p:?}"))
        .expect("read");
    out
}

#[test]
fn append_reopen_and_verify_across_segments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = Options {
        segment_max_bytes: 2000,
        ..opts()
    };
    write_events(tmp.path(), 30, o.clone());
    // Reopening continues the chain and the seqs.
    let (mut r, rep) = Recorder::open(tmp.path(), o).expect("reopen");
    assert!(rep.is_clean(), "{rep}");
    assert_eq!(rep.next_seq, 31);
    assert_eq!(r.append(&event(30)).expect("append"), 31);
    drop(r);

    let segs = list_segments(&tmp.path().join(RECORD_DIR)).expect("list");
    assert!(segs.len() > 3, "size rotation made {} segments", segs.len());
    let v = verify(tmp.path()).expect("verify");
    assert!(v.is_ok(), "{v}");
    assert_eq!(
        (v.records, v.first_seq, v.last_seq),
        (31, Some(1), Some(31))
    );
    let seqs: Vec<u64> = all_events(tmp.path()).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=31).collect::<Vec<_>>());
}

#[test]
fn rotation_by_age() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = Options {
        segment_max_age: Duration::ZERO,
        ..opts()
    };
    write_events(tmp.path(), 4, o);
    // Every append after the first finds the active segment too old.
    let segs = list_segments(&tmp.path().join(RECORD_DIR)).expect("list");
    assert_eq!(
        segs.iter().map(|s| s.first_seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(verify(tmp.path()).expect("verify").is_ok());
}

#[test]
fn retention_leaves_an_anchor_that_verifies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = Options {
        segment_max_bytes: 1500,
        retention_max_segments: Some(3),
        ..opts()
    };
    write_events(tmp.path(), 40, o);
    let dir = tmp.path().join(RECORD_DIR);
    let segs = list_segments(&dir).expect("list");
    assert_eq!(segs.len(), 3);
    let v = verify(tmp.path()).expect("verify");
    assert!(v.is_ok(), "{v}");
    assert_eq!(v.anchored_from, Some(segs[0].first_seq));
    assert_eq!(v.last_seq, Some(40));

    // Deleting one more segment by hand is not retention: verify names it.
    std::fs::remove_file(&segs[0].path).expect("rm");
    let v = verify(tmp.path()).expect("verify");
    let b = v.first_break.expect("break");
    assert_eq!(b.segment, segs[1].path);
    assert!(b.reason.contains("beyond retention"), "{b}");
}

#[test]
fn retention_by_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = Options {
        segment_max_bytes: 1500,
        retention_max_bytes: Some(5000),
        ..opts()
    };
    write_events(tmp.path(), 60, o);
    let dir = tmp.path().join(RECORD_DIR);
    let total: u64 = list_segments(&dir)
        .expect("list")
        .iter()
        .map(|s| std::fs::metadata(&s.path).expect("stat").len())
        .sum();
    assert!(total <= 5000, "{total} bytes kept");
    assert!(verify(tmp.path()).expect("verify").is_ok());
}

#[test]
fn torn_tail_is_cut_and_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_events(tmp.path(), 5, opts());
    let path = seg_path(tmp.path(), 1);
    let good_len = std::fs::metadata(&path).expect("stat").len();
    // A frame cut short, as a crash in the middle of a write leaves it.
    let mut partial = Vec::new();
    super::segment::encode_frame(&mut partial, 6, &[7; 32], br#"{"kind":"exec","pid":1}"#);
    partial.truncate(FRAME_HEADER_LEN + 5);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes.extend_from_slice(&partial);
    std::fs::write(&path, &bytes).expect("write");

    // Unlike a live writer's in-flight frame, this one fails verify until cut.
    let v = verify(tmp.path()).expect("verify");
    assert!(v.first_break.expect("break").reason.contains("torn tail"));

    let (mut r, rep) = Recorder::open(tmp.path(), opts()).expect("open");
    let torn = rep.torn_tail.clone().expect("torn tail reported");
    assert_eq!(torn.segment, path);
    assert_eq!(torn.offset, good_len);
    assert_eq!(torn.bytes_cut, partial.len() as u64);
    assert_eq!(torn.last_good_seq, Some(5));
    assert!(rep.to_string().contains("torn tail cut"), "{rep}");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), good_len);
    assert_eq!(r.append(&event(5)).expect("append"), 6);
    drop(r);
    assert!(verify(tmp.path()).expect("verify").is_ok());
}

#[test]
fn garbage_tail_is_cut() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_events(tmp.path(), 3, opts());
    let path = seg_path(tmp.path(), 1);
    let mut bytes = std::fs::read(&path).expect("read");
    // Zero-filled blocks: what some filesystems show after power loss.
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(&path, &bytes).expect("write");
    let (_r, rep) = Recorder::open(tmp.path(), opts()).expect("open");
    assert_eq!(rep.torn_tail.expect("torn").bytes_cut, 4096);
}

#[test]
fn damage_in_the_middle_is_kept_not_cut() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_events(tmp.path(), 6, opts());
    let path = seg_path(tmp.path(), 1);
    let f = frames(&path);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[f[2].0 + FRAME_HEADER_LEN + 3] ^= 0x20;
    std::fs::write(&path, &bytes).expect("write");

    let (mut r, rep) = Recorder::open(tmp.path(), opts()).expect("open");
    let d = rep.damaged.clone().expect("damage reported");
    assert_eq!(
        (d.segment.as_path(), d.offset),
        (path.as_path(), f[2].0 as u64)
    );
    assert!(rep.torn_tail.is_none());
    // The damaged file is left as it was; writing goes on after the last seq on disk.
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
    assert_eq!(r.append(&event(6)).expect("append"), 7);
    drop(r);
    assert!(seg_path(tmp.path(), 7).exists());
    let b = verify(tmp.path())
        .expect("verify")
        .first_break
        .expect("break");
    assert_eq!((b.expected_seq, b.offset), (3, f[2].0 as u64));
}

#[test]
fn verify_names_a_flipped_byte() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_events(tmp.path(), 10, opts());
    let path = seg_path(tmp.path(), 1);
    let f = frames(&path);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[f[4].0 + FRAME_HEADER_LEN + 10] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    let v = verify(tmp.path()).expect("verify");
    let b = v.first_break.clone().expect("break");
    assert_eq!(b.segment, path);
    assert_eq!(b.offset, f[4].0 as u64);
    assert_eq!(b.expected_seq, 5);
    assert!(b.reason.contains("checksum"), "{b}");
    assert_eq!(v.records, 4);
    let shown = v.to_string();
    assert!(shown.contains("seg-00000000000000000001.ocgr"), "{shown}");
    assert!(shown.contains("record seq 5"), "{shown}");
}

#[test]
fn verify_names_an_edit_with_a_fixed_up_checksum() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_events(tmp.path(), 10, opts());
    let path = seg_path(tmp.path(), 1);
    let f = frames(&path);
    let mut bytes = std::fs::read(&path).expect("read");
    // Rewrite record 7's payload and recompute its CRC, but not the chain.
    let (off, len) = f[6];
    let frame = decode_frame(&bytes[off..off + len]).expect("frame");
    let payload = String::from_utf8(frame.payload.to_vec())
        .expect("utf8")
        .replace("/usr/bin/bash", "/usr/bin/true");
    let mut forged = Vec::new();
    super::segment::encode_frame(&mut forged, frame.seq, &frame.hash, payload.as_bytes());
    bytes[off..off + len].copy_from_slice(&forged);
    std::fs::write(&path, &bytes).expect("write");
    let b = verify(tmp.path())
        .expect("verify")
        .first_break
        .expect("break");
    assert_eq!((b.offset, b.expected_seq), (off as u64, 7));
    assert!(b.reason.contains("hash chain"), "{b}");
}

#[test]
fn verify_names_a_deleted_record() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_events(tmp.path(), 10, opts());
    let path = seg_path(tmp.path(), 1);
    let f = frames(&path);
    let mut bytes = std::fs::read(&path).expect("read");
    let (off, len) = f[3];
    bytes.drain(off..off + len);
    std::fs::write(&path, &bytes).expect("write");
    let b = verify(tmp.path())
        .expect("verify")
        .first_break
        .expect("break");
    assert_eq!(b.segment, path);
    assert_eq!((b.offset, b.expected_seq), (off as u64, 4));
    assert!(b.reason.contains("found seq 5"), "{b}");
}

#[test]
fn verify_names_swapped_records() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_events(tmp.path(), 10, opts());
    let path = seg_path(tmp.path(), 1);
    let f = frames(&path);
    let bytes = std::fs::read(&path).expect("read");
    let (a, alen) = f[5];
    let (b, blen) = f[6];
    let mut swapped = bytes[..a].to_vec();
    swapped.extend_from_slice(&bytes[b..b + blen]);
    swapped.extend_from_slice(&bytes[a..a + alen]);
    swapped.extend_from_slice(&bytes[b + blen..]);
    std::fs::write(&path, &swapped).expect("write");
    let brk = verify(tmp.path())
        .expect("verify")
        .first_break
        .expect("break");
    assert_eq!(brk.segment, path);
    assert_eq!((brk.offset, brk.expected_seq), (a as u64, 6));
    assert!(brk.reason.contains("found seq 7"), "{brk}");
}

#[test]
fn verify_names_a_missing_middle_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = Options {
        segment_max_bytes: 1500,
        ..opts()
    };
    write_events(tmp.path(), 20, o);
    let segs = list_segments(&tmp.path().join(RECORD_DIR)).expect("list");
    std::fs::remove_file(&segs[1].path).expect("rm");
    let b = verify(tmp.path())
        .expect("verify")
        .first_break
        .expect("break");
    assert_eq!(b.segment, segs[2].path);
    assert!(b.reason.contains("missing"), "{b}");
}

#[test]
fn second_writer_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_r, _) = Recorder::open(tmp.path(), opts()).expect("open");
    let err = Recorder::open(tmp.path(), opts()).expect_err("locked");
    assert!(err.to_string().contains("another process"), "{err}");
}

fn decision_event(t: &str, pid: u64, lineage: &[u64], rule: &str, action: &str) -> Value {
    let lineage: Vec<Value> = lineage
        .iter()
        .map(|p| json!({"pid": p, "comm": format!("c{p}")}))
        .collect();
    json!({
        "time": t, "kind": "decision", "pid": pid, "tgid": pid, "root": 100,
        "comm": format!("c{pid}"), "lineage": lineage,
        "decision": {"rule": rule, "action": action, "errno": 13},
    })
}

fn plain_event(t: &str, kind: &str, pid: u64, lineage: &[u64]) -> Value {
    let lineage: Vec<Value> = lineage
        .iter()
        .map(|p| json!({"pid": p, "comm": format!("c{p}")}))
        .collect();
    json!({
        "time": t, "kind": kind, "pid": pid, "tgid": pid, "root": 100,
        "comm": format!("c{pid}"), "lineage": lineage,
    })
}

/// A small process tree: 100 (gateway) -> 200 -> 300, and 100 -> 210.
fn query_fixture(dir: &Path) {
    let (mut r, _) = Recorder::open(dir, opts()).expect("open");
    for ev in [
        plain_event("2026-05-01T10:00:00Z", "exec", 200, &[100, 200]),
        plain_event("2026-05-01T10:00:01Z", "exec", 300, &[100, 200, 300]),
        plain_event("2026-05-01T10:00:02Z", "file_open", 300, &[100, 200, 300]),
        decision_event(
            "2026-05-01T10:00:03Z",
            300,
            &[100, 200, 300],
            "secrets.ssh",
            "deny",
        ),
        plain_event("2026-05-01T11:00:00Z", "exec", 210, &[100, 210]),
        plain_event("2026-05-01T11:00:01Z", "connect", 210, &[100, 210]),
        decision_event(
            "2026-05-01T11:00:02Z",
            210,
            &[100, 210],
            "net.exfil",
            "kill",
        ),
        decision_event(
            "2026-05-01T11:00:03Z",
            210,
            &[100, 210],
            "net.exfil",
            "alert",
        ),
    ] {
        r.append(&ev).expect("append");
    }
}

fn select(dir: &Path, f: &Filter) -> Vec<u64> {
    all_events(dir)
        .into_iter()
        .filter(|e| f.matches(&e.event))
        .map(|e| e.seq)
        .collect()
}

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

#[test]
fn query_filters() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    query_fixture(d);
    let all = Filter::default();
    assert_eq!(select(d, &all), (1..=8).collect::<Vec<_>>());
    let since = Filter {
        since: Some(ts("2026-05-01T10:30:00Z")),
        ..all.clone()
    };
    assert_eq!(select(d, &since), [5, 6, 7, 8]);
    let range = Filter {
        since: Some(ts("2026-05-01T12:00:01+02:00")),
        until: Some(ts("2026-05-01T10:00:02Z")),
        ..all.clone()
    };
    assert_eq!(select(d, &range), [2, 3]);
    let pid = Filter {
        pids: vec![200],
        ..all.clone()
    };
    assert_eq!(select(d, &pid), [1]);
    let tree = Filter {
        tree: Some(200),
        ..all.clone()
    };
    assert_eq!(select(d, &tree), [1, 2, 3, 4]);
    let gateway_tree = Filter {
        tree: Some(100),
        ..all.clone()
    };
    assert_eq!(select(d, &gateway_tree).len(), 8);
    let kind = Filter {
        kinds: vec!["exec".into(), "connect".into()],
        ..all.clone()
    };
    assert_eq!(select(d, &kind), [1, 2, 5, 6]);
    let rule = Filter {
        rule: Some("net.exfil".into()),
        ..all.clone()
    };
    assert_eq!(select(d, &rule), [7, 8]);
    let decision = Filter {
        decision: Some("deny".into()),
        ..all.clone()
    };
    assert_eq!(select(d, &decision), [4]);
    let combined = Filter {
        rule: Some("net.exfil".into()),
        decision: Some("kill".into()),
        tree: Some(210),
        ..all
    };
    assert_eq!(select(d, &combined), [7]);
}

#[test]
fn since_skips_old_segments_without_losing_events() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = Options {
        segment_max_bytes: 1500,
        ..opts()
    };
    write_events(tmp.path(), 30, o);
    // All segments were created just now; events carry 2026 times. Nothing may be
    // skipped for a `since` before those times.
    let mut seen = 0;
    Reader::open(tmp.path())
        .expect("reader")
        .events(
            Some(ts("2026-05-01T12:00:00Z")),
            |_| seen += 1,
            |p| panic!("{p:?}"),
        )
        .expect("read");
    assert_eq!(seen, 30);
}

#[test]
fn time_arguments() {
    let now = ts("2026-05-01T12:00:00Z");
    assert_eq!(parse_time_arg("1h", now), Ok(ts("2026-05-01T11:00:00Z")));
    assert_eq!(parse_time_arg("90m", now), Ok(ts("2026-05-01T10:30:00Z")));
    assert_eq!(parse_time_arg("2d", now), Ok(ts("2026-04-29T12:00:00Z")));
    assert_eq!(
        parse_time_arg("2026-05-01T14:00:00+02:00", now),
        Ok(ts("2026-05-01T12:00:00Z"))
    );
    assert_eq!(
        parse_time_arg("2026-05-01T12:00:00.123456789Z", now),
        Ok(ts("2026-05-01T12:00:00.123456789Z"))
    );
    assert!(parse_time_arg("yesterday-ish", now).is_err());
}

#[test]
fn timeline_indents_by_lineage() {
    let rec = |event| RecordedEvent {
        seq: 4,
        hash: [0; 32],
        event,
    };
    let top = timeline_line(&rec(plain_event(
        "2026-05-01T10:00:00Z",
        "exec",
        200,
        &[100, 200],
    )));
    let deep = timeline_line(&rec(decision_event(
        "2026-05-01T10:00:03Z",
        300,
        &[100, 200, 300],
        "secrets.ssh",
        "deny",
    )));
    assert!(top.contains("  c200[200] exec"), "{top}");
    assert!(
        deep.contains("    c300[300] decision DENY rule=secrets.ssh errno=13"),
        "{deep}"
    );
    let indent = |s: &str| s.split("  ").count();
    assert!(indent(&deep) > indent(&top));
}

#[test]
fn json_lines_carry_seq_and_hash() {
    let tmp = tempfile::tempdir().expect("tempdir");
    query_fixture(tmp.path());
    let evs = all_events(tmp.path());
    let line: Value = serde_json::from_str(&super::query::json_line(&evs[3])).expect("json");
    assert_eq!(line["record_seq"], 4);
    assert_eq!(line["record_hash"], super::segment::hex(&evs[3].hash));
    assert_eq!(line["decision"]["rule"], "secrets.ssh");
}

#[test]
fn append_batch_assigns_consecutive_seqs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut r, _) = Recorder::open(tmp.path(), opts()).expect("open");
    r.append(&event(0)).expect("append");
    let batch = [
        event(1),
        decision_event("2026-05-01T10:00:03Z", 3, &[1, 3], "r", "deny"),
        event(2),
    ];
    assert_eq!(r.append_batch(&batch).expect("batch"), [2, 3, 4]);
    assert_eq!(r.head().0, Some(4));
    drop(r);
    assert!(verify(tmp.path()).expect("verify").is_ok());
}

#[test]
fn append_encoded_writes_runs_across_segments_and_stops_exactly_at_a_refusal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = Options {
        segment_max_bytes: 1024,
        ..opts()
    };
    let (mut r, _) = Recorder::open(tmp.path(), o).expect("open");
    let payloads: Vec<Vec<u8>> = (0..20)
        .map(|i| serde_json::to_vec(&event(i)).expect("encode"))
        .collect();
    let (n, res) = r.append_encoded(&payloads);
    assert!(res.is_ok());
    assert_eq!(n, 20);
    let segs = list_segments(&tmp.path().join(RECORD_DIR)).expect("list");
    assert!(segs.len() > 3, "one batch spans segments: {segs:?}");
    // The third payload is refused: the two before it are written, nothing after.
    let mut bad = payloads[..5].to_vec();
    bad[2] = vec![b' '; super::segment::MAX_PAYLOAD_LEN as usize + 1];
    let (n, res) = r.append_encoded(&bad);
    assert_eq!(n, 2);
    assert!(res.is_err());
    assert_eq!(r.head().0, Some(22));
    drop(r);
    let rep = verify(tmp.path()).expect("verify");
    assert!(rep.is_ok(), "{rep}");
    let mut seqs = Vec::new();
    Reader::open(tmp.path())
        .expect("reader")
        .events(None, |e| seqs.push(e.seq), |p| panic!("unreadable: {p:?}"))
        .expect("read");
    assert_eq!(seqs, (1..=22).collect::<Vec<u64>>());
}
