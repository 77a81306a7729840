//! The outputs fleets read (issue 20): OTLP received by an independent decoder (the
//! OpenTelemetry project's Python protobuf definitions), OCSF checked against the
//! published class definitions, journald read back with `journalctl -o json`.
//!
//! The receivers are Python (tests/otlp, tests/ocsf) with packages `cargo xtask`
//! installs (`OCG_PYTHONPATH`); test guests have no Python, so these run on the host
//! rows and say so in a guest.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use serde_json::{Map, Value};

use super::{
    faults::{ensure_stopped, mkfifo, open_decisions, read_secret, recorded, verify, wait_status},
    files::{home, tier_or_skip},
};
use crate::{
    support::{guard_bin, GuardProcess, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![
        otlp_receiver_gets_every_field,
        ocsf_every_kind_validates,
        journald_fields_read_back,
    ]
}

/// The Python scripts beside this crate.
fn script(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `python3` with the receivers' packages, or why there is none here.
fn python() -> Result<Command, Outcome> {
    let path = std::env::var_os("OCG_PYTHONPATH")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/openclaw-guard/python"))
        })
        .unwrap_or_default();
    let probe = Command::new("python3")
        .env("PYTHONPATH", &path)
        .args([
            "-c",
            "import opentelemetry.proto.collector.logs.v1.logs_service_pb2, ocsf_json_schema, jsonschema",
        ])
        .output();
    match probe {
        Ok(o) if o.status.success() => {
            let mut c = Command::new("python3");
            c.env("PYTHONPATH", &path);
            Ok(c)
        }
        Ok(o) => Err(Outcome::Skipped(format!(
            "python3 lacks the receivers' packages in {} (cargo xtask setup installs \
             them; the host rows run this): {}",
            path.display(),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ))),
        Err(e) => Err(Outcome::Skipped(format!(
            "no python3 here ({e}); the host rows run this"
        ))),
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Nested objects as dotted keys, as the OTLP output flattens them; lists stay lists
/// (objects inside them as their JSON text).
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Null => {}
        Value::Array(items) => {
            let items = items
                .iter()
                .map(|i| match i {
                    Value::Object(_) => Value::from(i.to_string()),
                    other => other.clone(),
                })
                .collect();
            out.insert(prefix.to_owned(), Value::Array(items));
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

/// OpenTelemetry's severity number for the alert's priority (the logs data model).
fn otel_severity(priority: &str) -> i64 {
    match priority {
        "debug" => 5,
        "informational" => 9,
        "notice" => 10,
        "warning" => 13,
        "error" => 17,
        "critical" => 18,
        "alert" => 19,
        _ => 21,
    }
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Issue 20, must show 1: every event goes to an OTLP/HTTP collector, decoded here by
/// the official protobuf definitions; every field of a decision event arrives with
/// its value and type, with severity, time, name and resource. Then the collector
/// goes away: enforcement and the record carry on, and the failures are counted.
fn otlp_receiver_gets_every_field() -> TestResult {
    let mut py = match python() {
        Ok(p) => p,
        Err(skip) => return Ok(skip),
    };
    let h = home("outputs-otlp")?;
    let d = h.dir.0.display().to_string();
    let port_file = h.dir.path("otlp.port");
    let received = h.dir.path("otlp.jsonl");
    let receiver = Killed(
        py.arg(script("otlp/receiver.py"))
            .arg(&port_file)
            .arg(&received)
            .stdin(Stdio::null())
            .spawn()
            .context("starting the OTLP receiver")?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            break p.trim().to_owned();
        }
        ensure!(Instant::now() < deadline, "the OTLP receiver did not start");
        std::thread::sleep(Duration::from_millis(100));
    };
    mkfifo(&h.dir.path("step2"))?;
    let (first, second) = (["a1", "a2"], ["b1", "b2", "b3"]);
    let mut script_text = String::new();
    for n in first {
        script_text.push_str(&read_secret(&h.state, &d, n));
    }
    script_text.push_str(&format!("read -r _ < '{d}/step2'\n"));
    for n in second {
        script_text.push_str(&read_secret(&h.state, &d, n));
    }
    let gateway = StandInGateway::start_env(&h.dir, "", &script_text, &[("HOME", h.home.clone())])?;
    let guard = GuardProcess::start(
        &h.dir,
        &[
            "--pid".into(),
            gateway.pid().to_string(),
            "--output".into(),
            format!("otlp:http://127.0.0.1:{port}"),
        ],
    )?;
    let tier = match tier_or_skip(&guard) {
        Ok(t) => t,
        Err(skip) => return Ok(skip),
    };
    gateway.release()?;
    for n in first {
        ensure_stopped(tier, &d, n)?;
    }
    // Both decisions at the collector.
    let deadline = Instant::now() + Duration::from_secs(30);
    let decisions_received = |recs: &[Value]| {
        recs.iter()
            .filter(|r| r["attributes"]["decision.rule"] == "secrets")
            .count()
    };
    while decisions_received(&read_jsonl(&received)) < first.len() {
        ensure!(
            Instant::now() < deadline,
            "the collector got {} of {} decisions",
            decisions_received(&read_jsonl(&received)),
            first.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The collector goes away.
    drop(receiver);
    std::fs::write(h.dir.path("step2"), "go\n")?;
    for n in second {
        ensure_stopped(tier, &d, n)?;
    }
    let otlp = |v: &Value| -> Value {
        v["sink"]["outputs"]["sinks"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["sink"] == "otlp"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    wait_status(&h.dir, "a failed OTLP export", |v| {
        otlp(v)["failed"].as_u64().unwrap_or(0) >= 1
    })?;
    gateway.wait()?;
    let (events, stats) = guard.stop_with_stats()?;
    let records = read_jsonl(&received);
    println!(
        "    the collector got {} log records; otlp sink at the end: {}",
        records.len(),
        otlp(&stats)
    );

    // Every field of each decision of the first phase.
    let version = Command::new(guard_bin()).arg("--version").output()?;
    let version = String::from_utf8_lossy(&version.stdout);
    let version = version.split_whitespace().last().unwrap_or("").to_owned();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_owned();
    let mut checked = 0;
    for ev in events
        .iter()
        .filter(|e| e["decision"]["rule"] == "secrets" && e["alert"].is_object())
    {
        let Some(rec) = records.iter().find(|r| {
            r["attributes"]["ktime_ns"] == ev["ktime_ns"] && r["attributes"]["tgid"] == ev["tgid"]
        }) else {
            continue;
        };
        let mut want = BTreeMap::new();
        flatten("", ev, &mut want);
        let got = rec["attributes"].as_object().cloned().unwrap_or_default();
        for (k, v) in &want {
            ensure!(
                got.get(k) == Some(v),
                "attribute {k}: sent {v}, received {:?}\nrecord: {rec}",
                got.get(k)
            );
        }
        let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        ensure!(extra.is_empty(), "attributes the event lacks: {extra:?}");
        let priority = ev["alert"]["priority"].as_str().unwrap_or("");
        ensure!(
            rec["severity_number"].as_i64() == Some(otel_severity(priority))
                && rec["severity_text"] == priority,
            "severity {} {} for priority {priority}",
            rec["severity_number"],
            rec["severity_text"]
        );
        ensure!(
            rec["body"] == ev["alert"]["output"],
            "body {} is not the alert line {}",
            rec["body"],
            ev["alert"]["output"]
        );
        ensure!(
            rec["event_name"] == "openclaw_guard.file_open",
            "event name {}",
            rec["event_name"]
        );
        let time: jiff::Timestamp = ev["time"].as_str().unwrap_or("").parse()?;
        ensure!(
            rec["time_unix_nano"].as_i64().map(i128::from) == Some(time.as_nanosecond()),
            "time {} is not the event's {}",
            rec["time_unix_nano"],
            ev["time"]
        );
        let res = &rec["resource"];
        ensure!(
            res["service.name"] == "openclaw-guard"
                && res["service.version"] == version.as_str()
                && res["host.name"] == host.as_str()
                && res["openclaw.gateway.pid"] == ev["root"],
            "resource {res} (want version {version}, host {host}, gateway {})",
            ev["root"]
        );
        ensure!(
            rec["scope"]["name"] == "openclaw-guard",
            "scope {}",
            rec["scope"]
        );
        checked += 1;
    }
    ensure!(
        checked >= first.len(),
        "{checked} decision(s) matched at the collector, expected {}",
        first.len()
    );
    println!(
        "    {checked} decision events: every field, severity, body, time and resource as sent"
    );

    // The collector down: counted, nothing lost from the record.
    let w = otlp(&stats);
    let count = |k: &str| w[k].as_u64().unwrap_or(0);
    ensure!(
        count("failed") >= 1 && count("retries") >= 1,
        "export failures not counted: {w}"
    );
    ensure!(
        w["last_error"]
            .as_str()
            .unwrap_or("")
            .contains(&format!(":{port}/v1/logs")),
        "the last error does not name the collector: {w}"
    );
    ensure!(
        count("sent") + count("failed") + count("dropped") + count("queued") >= count("enqueued"),
        "records unaccounted for by the OTLP counters: {w}"
    );
    let state = h.dir.path("state");
    println!("    {}", verify(&state)?);
    let in_record = open_decisions(&recorded(&state)?);
    ensure!(
        in_record.len() >= first.len() + second.len(),
        "{} decisions in the record for {} reads",
        in_record.len(),
        first.len() + second.len()
    );
    ensure!(
        open_decisions(&events) == in_record,
        "record and JSON lines differ"
    );
    Ok(Outcome::Passed)
}

/// What class an event of this kind renders as (docs/outputs.md).
fn ocsf_class(native: &Value) -> u64 {
    let decided = native["decision"].is_object() || native["alert"].is_object();
    let of = match native["kind"].as_str().unwrap_or("") {
        "repeat" => native["of"].as_str().unwrap_or(""),
        k => k,
    };
    match of {
        "exec" | "fork" | "exit" | "file_open" | "net" | "tamper" if decided => 2004,
        "exec" | "fork" | "exit" | "tamper" => 1007,
        "file_open" => 1001,
        "net" => 4001,
        _ if native["kind"] == "repeat" => 1007,
        _ => 0,
    }
}

/// Issue 20, must show 2: every kind of event the guard writes, live (JSON lines
/// output in OCSF) and exported from the record (`events --format ocsf`), validates
/// against the OCSF 1.8.0 class definitions, in the class its kind maps to.
fn ocsf_every_kind_validates() -> TestResult {
    let mut py = match python() {
        Ok(p) => p,
        Err(skip) => return Ok(skip),
    };
    let h = home("outputs-ocsf")?;
    let d = h.dir.0.display().to_string();
    // Processes started, a file written and read, a connect refused on loopback, a
    // secret read stopped, a process killed by a signal.
    let script_text = format!(
        "ls / > /dev/null\n\
         echo note > '{d}/note.txt'; cat '{d}/note.txt' > /dev/null\n\
         for i in $(seq 40); do read -r _ < '{d}/note.txt'; done\n\
         bash -c 'echo x > /dev/tcp/127.0.0.1/9; true' 2>/dev/null\n\
         {}\
         sh -c 'kill -9 $$'\n\
         (sleep 0.1) &\nwait\n",
        read_secret(&h.state, &d, "s1")
    );
    let gateway = StandInGateway::start_env(&h.dir, "", &script_text, &[("HOME", h.home.clone())])?;
    let guard = GuardProcess::start(
        &h.dir,
        &[
            "--pid".into(),
            gateway.pid().to_string(),
            "--output-format".into(),
            "ocsf".into(),
        ],
    )?;
    let tier = match tier_or_skip(&guard) {
        Ok(t) => t,
        Err(skip) => return Ok(skip),
    };
    gateway.release()?;
    ensure_stopped(tier, &d, "s1")?;
    gateway.wait()?;
    // A policy reload: a `policy` record of the daemon's own.
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(guard.pid() as libc::pid_t, libc::SIGHUP) };
    wait_status(&h.dir, "the reload", |v| {
        v["last_reload"]["result"] == "applied"
    })?;
    let live = guard.stop()?;
    let state = h.dir.path("state");
    let native = recorded(&state)?;
    let export = Command::new(guard_bin())
        .args(["events", "--format", "ocsf", "--state-dir"])
        .arg(&state)
        .output()?;
    ensure!(
        export.status.success(),
        "events --format ocsf failed: {}",
        String::from_utf8_lossy(&export.stderr)
    );
    let export_path = h.dir.path("export.ocsf.jsonl");
    std::fs::write(&export_path, &export.stdout)?;
    let exported = read_jsonl(&export_path);
    ensure!(
        exported.len() == native.len(),
        "{} OCSF events exported for {} records",
        exported.len(),
        native.len()
    );

    // Each record in its class, in order.
    let mut kinds: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    for (n, o) in native.iter().zip(&exported) {
        let want = ocsf_class(n);
        ensure!(
            o["class_uid"].as_u64() == Some(want),
            "record {} (kind {}) rendered as class {}, expected {want}: {o}",
            n["record_seq"],
            n["kind"],
            o["class_uid"]
        );
        ensure!(
            o["metadata"]["sequence"] == n["record_seq"],
            "record {} exported out of order",
            n["record_seq"]
        );
        let key = format!(
            "{}{}",
            n["kind"].as_str().unwrap_or("?"),
            if n["decision"].is_object() {
                "+decision"
            } else {
                ""
            }
        );
        kinds.entry(key).or_insert((want, 0)).1 += 1;
    }
    println!("    record kinds -> OCSF classes: {kinds:?}");
    for kind in ["repeat", "policy"] {
        ensure!(
            kinds.keys().any(|k| k.starts_with(kind)),
            "no {kind} record in the run: {kinds:?}"
        );
    }
    for class in [0, 1001, 1007, 2004] {
        ensure!(
            kinds.values().any(|(c, _)| *c == class),
            "no event rendered as class {class}: {kinds:?}"
        );
    }

    // The stopped read as a finding: who, what, which rule, what was done.
    let finding = exported
        .iter()
        .find(|o| o["class_uid"] == 2004 && o["finding_info"]["analytic"]["name"] == "secrets")
        .context("no Detection Finding for the secrets rule")?;
    let evidence = &finding["evidences"][0];
    ensure!(
        evidence["file"]["path"] == format!("{}/.env", h.state).as_str()
            && finding["action_id"] == 2
            && finding["disposition_id"] == 2
            && finding["actor"]["process"]["pid"].as_u64().is_some(),
        "the finding does not say what was stopped: {finding}"
    );

    // Both renderings against the published class definitions.
    let live_path = h.dir.path("events.jsonl");
    ensure!(
        live.iter().all(|o| o["metadata"]["version"] == "1.8.0"),
        "the live output is not OCSF"
    );
    // Kinds a host run does not make (no BPF LSM for tamper refusals here, no
    // gateway reporting tool calls, no failing health check), rendered by the same
    // code from records of the shape the daemon writes.
    let samples_path = h.dir.path("samples.ocsf.jsonl");
    let samples: Vec<String> = other_kinds()
        .iter()
        .map(|n| openclaw_guard::outputs::ocsf::render(n, "ocg-test").to_string())
        .collect();
    std::fs::write(&samples_path, samples.join("\n") + "\n")?;
    let out = py
        .arg(script("ocsf/validate.py"))
        .arg(&live_path)
        .arg(&export_path)
        .arg(&samples_path)
        .output()
        .context("running the OCSF validator")?;
    let report = String::from_utf8_lossy(&out.stdout);
    println!("    validator: {}", report.trim());
    ensure!(
        out.status.success(),
        "OCSF events do not validate: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(report.trim())?;
    let classes: &Map<String, Value> = report["classes"].as_object().context("report")?;
    let validated: u64 = classes.values().filter_map(Value::as_u64).sum();
    let all = live.len() + exported.len() + samples.len();
    ensure!(
        validated as usize == all,
        "{validated} events validated of {all}"
    );
    Ok(Outcome::Passed)
}

/// Records of the kinds [`ocsf_every_kind_validates`] cannot make on a host run, in
/// the shape the daemon writes them (events.rs, attribution.rs, daemon/).
fn other_kinds() -> Vec<Value> {
    let t = "2026-12-05T10:00:00.123456789Z";
    let proc_ = serde_json::json!({"time": t, "ktime_ns": 9, "pid": 12, "tgid": 12, "root": 10,
        "depth": 2, "cgroup_id": 1, "role": "tool",
        "lineage": [{"pid": 10, "comm": "node"}, {"pid": 12, "comm": "kill"}]});
    let with = |extra: Value| {
        let mut v = proc_.clone();
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    };
    vec![
        with(
            serde_json::json!({"kind": "tamper", "op": "signal", "target": 7, "arg": 9, "ret": -1,
            "decision": {"rule": "self-protection", "action": "deny", "errno": 1}}),
        ),
        with(
            serde_json::json!({"kind": "tamper", "op": "unlink", "target": 0, "arg": 0, "ret": 0,
            "guarded": "/var/lib/openclaw-guard/record", "name": "seg-1.ocgr"}),
        ),
        with(
            serde_json::json!({"kind": "repeat", "of": "net", "op": "connect", "count": 12,
            "first_time": t, "first_ktime_ns": 9, "last_time": t, "family": "inet",
            "addr": "10.0.0.9", "port": 443,
            "decision": {"rule": "egress", "action": "deny", "errno": 1}}),
        ),
        with(
            serde_json::json!({"kind": "exec", "ppid": 10, "uid": 0, "gid": 0, "comm": "bash",
            "filename": "/bin/bash", "argv": ["bash", "-i"], "exe": "/bin/bash",
            "alert": {"rule": "shell-spawn", "priority": "critical", "action": "kill",
                "output": "shell-spawn: interactive shell", "tags": ["openclaw", "exec"]},
            "tool_call": {"id": "call_1", "tag": "t-1", "tool": "exec", "gateway": 10,
                "session_key": "agent:main:main", "run_id": "r1", "command": "bash -i"}}),
        ),
        serde_json::json!({"time": t, "kind": "tool_call", "phase": "start", "id": "call_1",
            "tool": "exec", "tag": "t-1", "gateway": 10, "command": "ls"}),
        serde_json::json!({"time": t, "kind": "health", "check": "lsm", "detail": "BPF LSM stopped deciding",
            "decision": {"rule": "guard-health", "action": "alert", "priority": "critical"}}),
        serde_json::json!({"time": t, "kind": "recorder_gap", "lost": 3}),
    ]
}

/// Issue 20, must show 4: alerts as native journal entries, read back with
/// `journalctl -o json` from a journald of our own: systemd-journald runs in a
/// private mount namespace (its own /run and journal directory), and the daemon
/// sends to it there.
fn journald_fields_read_back() -> TestResult {
    const JOURNALD: &str = "/lib/systemd/systemd-journald";
    if !Path::new(JOURNALD).exists()
        || Command::new("journalctl")
            .arg("--version")
            .output()
            .is_err()
    {
        return Ok(Outcome::Skipped(format!(
            "no {JOURNALD} or journalctl here (systemd is not installed); the host rows run this"
        )));
    }
    let h = home("outputs-journald")?;
    let d = h.dir.0.display().to_string();
    let ready = h.dir.path("ns.ready");
    // The namespace's holder: a private /run and journal directory, then waits.
    let holder = Killed(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && \
                 if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi && \
                 touch '{}' && exec sleep 600",
                ready.display()
            ))
            .spawn()
            .context("unshare")?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        ensure!(Instant::now() < deadline, "the namespace was not set up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ns = holder.0.id().to_string();
    let inside = |program: &str| {
        let mut c = Command::new("nsenter");
        c.args(["-t", &ns, "-m", "--", program]);
        c
    };
    // journald in its own network namespace too: off the host's audit netlink.
    let _journald = Killed(
        inside("unshare")
            .args(["-n", JOURNALD])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting systemd-journald")?,
    );
    let socket = format!("/proc/{ns}/root/run/systemd/journal/socket");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !Path::new(&socket).exists() {
        ensure!(Instant::now() < deadline, "journald did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let script_text = read_secret(&h.state, &d, "j1");
    let gateway = StandInGateway::start_env(&h.dir, "", &script_text, &[("HOME", h.home.clone())])?;
    let guard = GuardProcess::start_wrapped(
        &h.dir,
        &[
            "nsenter".into(),
            "-t".into(),
            ns.clone(),
            "-m".into(),
            "--".into(),
        ],
        &[
            "--pid".into(),
            gateway.pid().to_string(),
            "--output".into(),
            "journald".into(),
        ],
    )?;
    let tier = match tier_or_skip(&guard) {
        Ok(t) => t,
        Err(skip) => return Ok(skip),
    };
    gateway.release()?;
    ensure_stopped(tier, &d, "j1")?;
    gateway.wait()?;
    let read_back = || -> anyhow::Result<Vec<Value>> {
        let out = inside("journalctl")
            .args(["-o", "json", "--no-pager", "RULE=secrets"])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut entries = read_back()?;
    while entries.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        entries = read_back()?;
    }
    let (events, stats) = guard.stop_with_stats()?;
    let alert = events
        .iter()
        .find(|e| e["decision"]["rule"] == "secrets" && e["alert"].is_object())
        .context("no secrets alert in the JSON lines")?;
    let journald = stats["sink"]["outputs"]["sinks"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["sink"] == "journald"))
        .cloned()
        .unwrap_or(Value::Null);
    println!(
        "    journalctl RULE=secrets: {} entr(y/ies); journald sink {journald}",
        entries.len()
    );
    let entry = entries
        .iter()
        .find(|e| e["OCG_KTIME_NS"] == alert["ktime_ns"].to_string().as_str())
        .with_context(|| format!("the alert is not in the journal: {entries:?}"))?;
    let priority = match alert["alert"]["priority"].as_str().unwrap_or("") {
        "emergency" => "0",
        "alert" => "1",
        "critical" => "2",
        "error" => "3",
        "warning" => "4",
        "notice" => "5",
        "informational" => "6",
        _ => "7",
    };
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let want = [
        ("PRIORITY", priority.to_owned()),
        ("MESSAGE", s(&alert["alert"]["output"])),
        ("SYSLOG_IDENTIFIER", "openclaw-guard".to_owned()),
        ("RULE", "secrets".to_owned()),
        ("ACTION", s(&alert["alert"]["action"])),
        ("OCG_TGID", s(&alert["tgid"])),
        ("OCG_PID", s(&alert["pid"])),
        ("OCG_PATH", s(&alert["path"])),
        ("OCG_KIND", "file_open".to_owned()),
        ("OCG_DECISION_RULE", "secrets".to_owned()),
        ("OCG_ALERT_PRIORITY", s(&alert["alert"]["priority"])),
    ];
    for (k, v) in want {
        ensure!(
            entry[k] == v.as_str(),
            "journal field {k}: {} (want {v})\nentry: {entry}",
            entry[k]
        );
    }
    ensure!(
        journald["sent"].as_u64() >= Some(1) && journald["failed"] == 0,
        "journald sink counters: {journald}"
    );
    if entries.len() > 1 {
        bail!("one alert, {} journal entries: {entries:?}", entries.len());
    }
    Ok(Outcome::Passed)
}
