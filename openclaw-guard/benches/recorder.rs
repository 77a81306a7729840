//! Recorder ingest benchmark: sustained appends per second with hash chaining, and
//! bytes on disk per event, for a realistic ~400-byte exec event.
//!
//! `cargo bench -p openclaw-guard --bench recorder` prints one JSON line per
//! configuration and a final summary line. `RECORDER_BENCH_EVENTS` sets the number of
//! events per configuration (default 200000). The record is written under the system
//! temporary directory (`TMPDIR`), so the figures are that filesystem's.

// A bench target links every dependency of the crate but uses few of them.
#![allow(
    unused_crate_dependencies,
    reason = "bench uses a subset of the crate's deps"
)]

use std::{
    path::Path,
    time::{Duration, Instant},
};

use openclaw_guard::recorder::{Options, Recorder};
use serde_json::{json, Value};

fn event(i: u64) -> Value {
    let pid = 40_000 + (i % 5000);
    json!({
        "time": format!("2026-05-01T12:{:02}:{:02}.{:09}Z", (i / 60) % 60, i % 60, i % 1_000_000_000),
        "kind": "exec",
        "pid": pid,
        "tgid": pid,
        "ppid": 39_999,
        "root": 1234,
        "comm": "python3",
        "lineage": [
            {"pid": 1234, "comm": "openclaw-gatewa"},
            {"pid": 39_990, "comm": "node"},
            {"pid": 39_999, "comm": "bash"},
            {"pid": pid, "comm": "python3"},
        ],
        "filename": "/usr/bin/python3",
        "argv": ["python3", "-c", "import os; print(os.listdir('/home/agent/workspace'))"],
        "cwd": "/home/agent/workspace/project",
        "uid": 1000,
    })
}

fn decision(i: u64) -> Value {
    let mut ev = event(i);
    ev["kind"] = json!("decision");
    ev["decision"] = json!({"rule": "secrets.ssh-keys", "action": "deny", "errno": 13});
    ev
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("record"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ocgr"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

struct Run {
    name: &'static str,
    fsync_interval: Option<Duration>,
    /// Every n-th event is a decision (fsynced on append); 0 = none.
    decision_every: u64,
    /// Events per `append_batch` call (group commit); 1 = plain `append`.
    batch: usize,
}

fn run(cfg: &Run, n: u64) -> Result<Value, Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let opts = Options {
        fsync_interval: cfg.fsync_interval,
        ..Options::default()
    };
    // Pre-build the events: the figure is the recorder's cost, not json! macros'.
    let events: Vec<Value> = (0..n)
        .map(|i| {
            if cfg.decision_every > 0 && i % cfg.decision_every == 0 {
                decision(i)
            } else {
                event(i)
            }
        })
        .collect();
    let payload_bytes: usize = events.iter().map(|e| e.to_string().len()).sum();
    let (mut rec, _) = Recorder::open(tmp.path(), opts)?;
    let start = Instant::now();
    if cfg.batch > 1 {
        for chunk in events.chunks(cfg.batch) {
            rec.append_batch(chunk)?;
        }
    } else {
        for ev in &events {
            rec.append(ev)?;
        }
    }
    rec.sync()?;
    let secs = start.elapsed().as_secs_f64();
    drop(rec);
    let disk = dir_bytes(tmp.path());
    #[expect(clippy::cast_precision_loss, reason = "figures for a report")]
    let (nf, disk_f, payload_f) = (n as f64, disk as f64, payload_bytes as f64);
    Ok(json!({
        "config": cfg.name,
        "events": n,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "records_per_sec": (nf / secs).round(),
        "mb_per_sec": ((disk_f / secs / 1e6) * 10.0).round() / 10.0,
        "payload_bytes_per_event": (payload_f / nf).round(),
        "disk_bytes_per_event": (disk_f / nf * 10.0).round() / 10.0,
    }))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; a harness-less bench ignores its arguments.
    let n: u64 = std::env::var("RECORDER_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let run_of = |name, fsync_interval, decision_every, batch| Run {
        name,
        fsync_interval,
        decision_every,
        batch,
    };
    let (second, ten_ms) = (Duration::from_secs(1), Duration::from_millis(10));
    let runs = [
        run_of("no_periodic_fsync", None, 0, 1),
        run_of("fsync_every_1s", Some(second), 0, 1),
        run_of("fsync_every_10ms", Some(ten_ms), 0, 1),
        run_of("fsync_every_1s_1pct_decisions", Some(second), 100, 1),
        // The same, appended in batches of 1000 as a daemon draining a busy ring
        // buffer would: one fsync per batch that holds a decision (a batch of
        // 64 gains little here: most would hold one decision anyway).
        run_of(
            "fsync_every_1s_1pct_decisions_batch1000",
            Some(second),
            100,
            1000,
        ),
        // Worst case: every event is a decision, fsynced before append returns.
        run_of("every_event_a_decision", Some(second), 1, 1),
    ];
    let mut summary = serde_json::Map::new();
    for cfg in &runs {
        // One fsync per event is disk-bound: fewer events give the same rate.
        let n = if cfg.decision_every == 1 {
            (n / 20).max(1)
        } else {
            n
        };
        let r = run(cfg, n)?;
        println!("{r}");
        summary.insert(cfg.name.to_owned(), r["records_per_sec"].clone());
        // Bytes per event are those of the plain exec event (the first run);
        // decision events are bigger.
        if !summary.contains_key("disk_bytes_per_event") {
            summary.insert(
                "disk_bytes_per_event".to_owned(),
                r["disk_bytes_per_event"].clone(),
            );
            summary.insert(
                "payload_bytes_per_event".to_owned(),
                r["payload_bytes_per_event"].clone(),
            );
        }
    }
    println!("{}", json!({ "recorder_bench": summary }));
    Ok(())
}
