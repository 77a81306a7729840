//! Outputs against real receivers: a local HTTP server, a bound unix datagram
//! socket, a temporary directory, and the metrics endpoint scraped over TCP.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use serde_json::{json, Value};

use super::{
    syslog::format_message, webhook::payload, Alert, JsonlConfig, Metrics, MetricsConfig,
    MetricsServer, Outgoing, OutputError, OutputFormat, OutputStats, Outputs, OutputsConfig,
    Priority, SinkStats, SyslogConfig, SyslogFormat, WebhookConfig,
};

fn event(seq: u64) -> Value {
    json!({
        "time": "2025-03-01T12:34:56.123456789Z",
        "kind": "exec",
        "seq": seq,
        "pid": 4242,
        "tgid": 4242,
        "ppid": 4200,
        "root": 4100,
        "depth": 2,
        "comm": "sh",
        "filename": "/bin/sh",
        "proc": { "pid": 4242, "exe": { "path": "/bin/sh" } },
        "lineage": [{ "pid": 4200, "comm": "node" }, { "pid": 4100, "comm": "openclaw" }],
        "decision": null,
    })
}

fn alert(priority: Priority) -> Alert {
    Alert {
        rule: "shell.unexpected".to_owned(),
        priority,
        action: "alert".to_owned(),
        output: "shell /bin/sh spawned by node (pid 4242)\nforged line".to_owned(),
        tags: vec!["openclaw".to_owned(), "shell".to_owned()],
    }
}

/// Only what the test turns on: no stdout, no metrics port.
fn quiet() -> OutputsConfig {
    OutputsConfig {
        jsonl: JsonlConfig {
            enabled: false,
            ..JsonlConfig::default()
        },
        metrics: MetricsConfig {
            enabled: false,
            ..MetricsConfig::default()
        },
        ..OutputsConfig::default()
    }
}

fn sink<'a>(stats: &'a OutputStats, name: &str) -> &'a SinkStats {
    stats
        .sinks
        .iter()
        .find(|s| s.sink == name)
        .unwrap_or_else(|| panic!("no sink {name} in {stats:?}"))
}

/// Polls until `done` holds; the bound only guards against a hung test.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A small HTTP/1.1 server on 127.0.0.1 that records each request and answers with
/// the next status from `statuses` (200 once they run out). Keep-alive aware.
fn receiver(statuses: Vec<u16>) -> (SocketAddr, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
    let addr = listener.local_addr().expect("receiver addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(statuses.into_iter()));
    let s = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let (s, st) = (Arc::clone(&s), Arc::clone(&statuses));
            std::thread::spawn(move || serve_conn(conn, &s, &st));
        }
    });
    (addr, seen)
}

fn serve_conn(
    conn: TcpStream,
    seen: &Mutex<Vec<Request>>,
    statuses: &Mutex<std::vec::IntoIter<u16>>,
) {
    let mut w = conn.try_clone().expect("clone stream");
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
                if k == "content-length" {
                    len = v.parse().expect("content-length");
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).expect("request body");
        seen.lock().expect("lock").push(Request {
            method,
            path,
            headers,
            body,
        });
        let status = statuses.lock().expect("lock").next().unwrap_or(200);
        let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok");
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn webhook_payload_is_what_falcosidekick_accepts() {
    let (addr, seen) = receiver(vec![]);
    let mut cfg = quiet();
    cfg.webhook = Some(WebhookConfig::new(format!("http://{addr}/")));
    let out = Outputs::start(&cfg, Arc::new(Metrics::new())).expect("start outputs");

    // Not an alert: the webhook does not want it.
    out.emit(&event(0), None);
    out.emit(&event(1), Some(&alert(Priority::Critical)));
    wait_for("one webhook request", || {
        sink(&out.stats(), "webhook").sent == 1
    });
    let reqs = seen.lock().expect("lock").clone();
    assert_eq!(reqs.len(), 1, "only the alert is posted");
    let req = &reqs[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/");
    assert!(req
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("application/json")));

    let body: Value = serde_json::from_slice(&req.body).expect("JSON body");
    let obj = body.as_object().expect("object");
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "output",
        "priority",
        "rule",
        "time",
        "source",
        "hostname",
        "tags",
        "output_fields",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected);

    let output = obj["output"].as_str().expect("output is a string");
    assert!(!output.contains('\n'), "one line: {output:?}");
    assert!(output.starts_with("shell /bin/sh spawned by node"));
    assert_eq!(obj["priority"], "Critical");
    assert_eq!(obj["rule"], "shell.unexpected");
    assert_eq!(obj["source"], "openclaw-guard");
    assert!(!obj["hostname"].as_str().expect("hostname").is_empty());
    assert_eq!(obj["tags"], json!(["openclaw", "shell"]));

    // RFC 3339 with nanoseconds, the event's own time.
    let time = obj["time"].as_str().expect("time is a string");
    assert_eq!(time, "2025-03-01T12:34:56.123456789Z");
    time.parse::<jiff::Timestamp>().expect("RFC 3339");

    let fields = obj["output_fields"].as_object().expect("output_fields map");
    for (k, v) in fields {
        assert!(
            !v.is_object() && !v.is_array() && !v.is_null(),
            "output_fields.{k} is not flat: {v}"
        );
    }
    assert_eq!(fields["pid"], 4242);
    assert_eq!(fields["comm"], "sh");
    assert_eq!(fields["proc.pid"], 4242);
    assert_eq!(fields["proc.exe.path"], "/bin/sh");
    assert_eq!(fields["lineage"], "node(4200), openclaw(4100)");
    assert_eq!(fields["alert.action"], "alert");
    assert!(!fields.contains_key("decision"), "nulls are left out");
}

#[test]
fn every_priority_is_capitalised_like_falco() {
    let expect = [
        (Priority::Emergency, "Emergency"),
        (Priority::Alert, "Alert"),
        (Priority::Critical, "Critical"),
        (Priority::Error, "Error"),
        (Priority::Warning, "Warning"),
        (Priority::Notice, "Notice"),
        (Priority::Informational, "Informational"),
        (Priority::Debug, "Debug"),
    ];
    for (p, name) in expect {
        let body = payload(&alert(p), &event(0), "host");
        assert_eq!(body["priority"], name);
        // Policy spelling round-trips, in any case.
        assert_eq!(name.parse::<Priority>().expect("parse"), p);
        assert_eq!(p.as_str().parse::<Priority>().expect("parse"), p);
        let v: Priority = serde_json::from_value(json!(p.as_str())).expect("serde");
        assert_eq!(v, p);
    }
    assert!(matches!(
        "loud".parse::<Priority>(),
        Err(OutputError::Priority(_))
    ));
    let info: Priority = serde_json::from_value(json!("info")).expect("alias");
    assert_eq!(info, Priority::Informational);
}

#[test]
fn payload_without_event_time_uses_now_with_nanoseconds() {
    let body = payload(&alert(Priority::Notice), &json!({"kind": "exec"}), "h");
    let time = body["time"].as_str().expect("time");
    // e.g. 2025-03-01T12:34:56.123456789Z: nine fractional digits.
    let frac = time
        .split_once('.')
        .and_then(|(_, f)| f.strip_suffix('Z'))
        .expect("fraction");
    assert_eq!(frac.len(), 9, "{time}");
    time.parse::<jiff::Timestamp>().expect("RFC 3339");
}

/// A tool call's context reaches the webhook's fields (and so Falcosidekick's
/// outputs) as dotted keys.
#[test]
fn payload_carries_the_tool_call() {
    let ev = json!({"kind": "file_open", "tool_call": {"id": "call_1", "run_id": "r-1",
        "session_key": "agent:main:main", "tool": "exec", "command": "cat ~/.openclaw/.env"}});
    let body = payload(&alert(Priority::Critical), &ev, "h");
    let f = &body["output_fields"];
    assert_eq!(f["tool_call.id"], "call_1", "{body}");
    assert_eq!(f["tool_call.session_key"], "agent:main:main", "{body}");
    assert_eq!(f["tool_call.run_id"], "r-1", "{body}");
    assert_eq!(f["tool_call.command"], "cat ~/.openclaw/.env", "{body}");
}

#[test]
fn webhook_retries_server_errors_then_delivers() {
    let (addr, seen) = receiver(vec![503, 500]);
    let mut cfg = quiet();
    cfg.webhook = Some(WebhookConfig {
        format: Default::default(),
        backoff_ms: 10,
        ..WebhookConfig::new(format!("http://{addr}/"))
    });
    let out = Outputs::start(&cfg, Arc::new(Metrics::new())).expect("start outputs");
    out.emit(&event(1), Some(&alert(Priority::Error)));
    wait_for("delivery", || sink(&out.stats(), "webhook").sent == 1);
    let s = out.stats();
    let w = sink(&s, "webhook");
    assert_eq!((w.retries, w.failed), (2, 0));
    assert_eq!(seen.lock().expect("lock").len(), 3);
}

#[test]
fn webhook_client_errors_are_not_retried() {
    let (addr, seen) = receiver(vec![400]);
    let mut cfg = quiet();
    cfg.webhook = Some(WebhookConfig {
        format: Default::default(),
        backoff_ms: 10,
        ..WebhookConfig::new(format!("http://{addr}/"))
    });
    let out = Outputs::start(&cfg, Arc::new(Metrics::new())).expect("start outputs");
    out.emit(&event(1), Some(&alert(Priority::Error)));
    wait_for("failure", || sink(&out.stats(), "webhook").failed == 1);
    let s = out.stats();
    let w = sink(&s, "webhook");
    assert_eq!(w.retries, 0);
    assert!(w.last_error.as_deref().unwrap_or("").contains("HTTP 400"));
    assert_eq!(seen.lock().expect("lock").len(), 1);
}

#[test]
fn webhook_down_never_blocks_emit_and_failures_are_counted() {
    // A port nothing listens on: bind, note it, close it.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let metrics = Arc::new(Metrics::new());
    let mut cfg = quiet();
    cfg.queue_capacity = 2;
    cfg.webhook = Some(WebhookConfig {
        format: Default::default(),
        url: format!("http://{addr}/"),
        timeout_ms: 500,
        max_retries: 2,
        // Each record then holds the worker for at least 300 + 600 ms.
        backoff_ms: 300,
    });
    let out = Outputs::start(&cfg, Arc::clone(&metrics)).expect("start outputs");

    // Far more alerts than the queue holds. Were emit to wait for a delivery or a
    // free slot, nothing would be dropped; it drops instead and returns.
    for i in 0..10 {
        out.emit(&event(i), Some(&alert(Priority::Critical)));
    }
    let s = out.stats();
    let w = sink(&s, "webhook");
    assert_eq!(w.enqueued + w.dropped, 10, "{w:?}");
    // Two queued plus at most one the worker already took.
    assert!(w.enqueued <= 3, "{w:?}");
    assert!(w.dropped >= 7, "{w:?}");
    assert_eq!(
        w.failed, 0,
        "no record can have exhausted its retries yet: {w:?}"
    );

    let accepted = w.enqueued;
    wait_for("retries to be exhausted", || {
        sink(&out.stats(), "webhook").failed == accepted
    });
    let s = out.stats();
    let w = sink(&s, "webhook");
    assert_eq!(w.sent, 0);
    assert_eq!(w.retries, accepted * 2, "two retries per record: {w:?}");
    assert_eq!(w.queued, 0);
    assert!(w
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains(&addr.to_string()));

    let text = metrics.render();
    assert!(text.contains(&format!(
        "openclaw_guard_output_failures_total{{sink=\"webhook\"}} {accepted}"
    )));
    assert!(text.contains(&format!(
        "openclaw_guard_output_dropped_total{{sink=\"webhook\"}} {}",
        w.dropped
    )));
    // Events are still counted: the pipeline saw every one.
    assert!(text.contains("openclaw_guard_events_total{kind=\"exec\"} 10"));
}

#[test]
fn bad_webhook_urls_are_start_up_errors() {
    for url in [
        "https://sidekick:2801/",
        "ftp://x/",
        "not a url",
        "http:///",
    ] {
        let mut cfg = quiet();
        cfg.webhook = Some(WebhookConfig::new(url));
        match Outputs::start(&cfg, Arc::new(Metrics::new())) {
            Err(OutputError::WebhookUrl { .. }) => {}
            Err(e) => panic!("{url}: unexpected error {e}"),
            Ok(_) => panic!("{url}: accepted"),
        }
    }
}

#[test]
fn syslog_alerts_go_to_the_socket_as_datagrams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log");
    let server = UnixDatagram::bind(&path).expect("bind syslog socket");
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut cfg = quiet();
    cfg.syslog = SyslogConfig {
        enabled: true,
        path: path.clone(),
        format: SyslogFormat::Rfc3164,
    };
    let out = Outputs::start(&cfg, Arc::new(Metrics::new())).expect("start outputs");
    out.emit(&event(0), None);
    out.emit(&event(1), Some(&alert(Priority::Warning)));

    let mut buf = [0u8; 9000];
    let n = server.recv(&mut buf).expect("a datagram");
    let msg = std::str::from_utf8(&buf[..n]).expect("utf-8");
    // authpriv (10) * 8 + warning (4)
    assert!(msg.starts_with("<84>Mar  1 12:34:56 "), "{msg}");
    assert!(
        msg.contains(&format!("openclaw-guard[{}]: ", std::process::id())),
        "{msg}"
    );
    assert!(msg.contains("Warning rule=shell.unexpected action=alert: shell /bin/sh"));
    assert!(!msg.contains('\n'), "one line: {msg:?}");

    wait_for("sent count", || sink(&out.stats(), "syslog").sent == 1);
    // The non-alert event never reached the syslog queue.
    server.set_nonblocking(true).expect("nonblocking");
    assert!(server.recv(&mut buf).is_err(), "only one datagram");
    assert_eq!(sink(&out.stats(), "syslog").enqueued, 1);
}

#[test]
fn syslog_rfc5424_header() {
    let msg = format_message(
        SyslogFormat::Rfc5424,
        "gw-host",
        77,
        &alert(Priority::Emergency),
        &event(1),
        SystemTime::now(),
    );
    assert_eq!(
        msg,
        "<80>1 2025-03-01T12:34:56.123456Z gw-host openclaw-guard 77 shell.unexpected - \
         Emergency rule=shell.unexpected action=alert: shell /bin/sh spawned by node \
         (pid 4242) forged line"
    );
}

#[test]
fn syslog_missing_socket_is_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = quiet();
    cfg.syslog = SyslogConfig {
        enabled: true,
        path: dir.path().join("no-such-log"),
        format: SyslogFormat::Rfc3164,
    };
    let out = Outputs::start(&cfg, Arc::new(Metrics::new())).expect("start outputs");
    out.emit(&event(1), Some(&alert(Priority::Alert)));
    out.emit(&event(2), Some(&alert(Priority::Alert)));
    wait_for("two failures", || sink(&out.stats(), "syslog").failed == 2);
    let s = out.stats();
    assert!(sink(&s, "syslog")
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("no-such-log"));
}

#[test]
fn jsonl_file_rotates_by_size_and_keeps_n_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let mut cfg = quiet();
    cfg.queue_capacity = 1000;
    cfg.jsonl = JsonlConfig {
        format: Default::default(),
        enabled: true,
        path: Some(path.clone()),
        max_bytes: 4096,
        keep: 3,
    };
    let out = Outputs::start(&cfg, Arc::new(Metrics::new())).expect("start outputs");
    for i in 0..300 {
        let a = alert(Priority::Notice);
        out.emit(&event(i), (i == 299).then_some(&a));
    }
    let s = out.stats();
    assert_eq!(sink(&s, "jsonl_file").dropped, 0);
    out.shutdown(Duration::from_secs(10));

    let rotated = |n: usize| dir.path().join(format!("events.jsonl.{n}"));
    assert!(!rotated(4).exists(), "only 3 rotated files are kept");
    let mut seqs = Vec::new();
    for p in [rotated(3), rotated(2), rotated(1), path.clone()] {
        let meta = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            meta.len() <= 4096,
            "{} is {} bytes",
            p.display(),
            meta.len()
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&p).expect("read");
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("each line is JSON");
            seqs.push(v["seq"].as_u64().expect("seq"));
            if v["seq"] == 299 {
                assert_eq!(v["alert"]["rule"], "shell.unexpected");
                assert_eq!(v["alert"]["priority"], "notice");
                assert_eq!(v["kind"], "exec");
            } else {
                assert!(v.get("alert").is_none());
            }
        }
    }
    // Oldest first, no gaps, ending with the newest event in the live file.
    assert_eq!(seqs.last(), Some(&299));
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(seqs.len() < 300, "older files were removed");
}

#[test]
fn jsonl_unwritable_path_is_a_start_up_error() {
    let mut cfg = quiet();
    cfg.jsonl.enabled = true;
    cfg.jsonl.path = Some("/nonexistent-dir/events.jsonl".into());
    assert!(matches!(
        Outputs::start(&cfg, Arc::new(Metrics::new())),
        Err(OutputError::JsonlOpen { .. })
    ));
}

fn scrape(addr: SocketAddr, path: &str) -> (String, String) {
    let mut c = TcpStream::connect(addr).expect("connect metrics");
    write!(c, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request");
    let mut resp = String::new();
    c.read_to_string(&mut resp).expect("response");
    let (head, body) = resp.split_once("\r\n\r\n").expect("head and body");
    (head.to_owned(), body.to_owned())
}

/// Checks the text exposition format: HELP/TYPE before samples, sample lines
/// `name{k="v",...} value`, no sample without a TYPE.
fn check_exposition(text: &str) {
    let mut typed = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.split(' ');
            let name = p.next().expect("name");
            let kind = p.next().expect("kind");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_owned()), "TYPE twice: {line}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("value");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().expect("name");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        assert!(typed.contains(name), "sample before TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
        }
    }
}

#[test]
fn metrics_endpoint_serves_counters_in_exposition_format() {
    let metrics = Arc::new(Metrics::new());
    let mut cfg = quiet();
    cfg.metrics = MetricsConfig {
        enabled: true,
        listen: "127.0.0.1:0".parse().expect("addr"),
    };
    let (addr_hook, _seen) = receiver(vec![]);
    cfg.webhook = Some(WebhookConfig::new(format!("http://{addr_hook}/")));
    let out = Outputs::start(&cfg, Arc::clone(&metrics)).expect("start outputs");
    let addr = out.stats().metrics_listen.expect("metrics address");

    out.emit(&event(1), None);
    out.emit(&json!({"kind": "file_open"}), None);
    let mut deny = alert(Priority::Critical);
    deny.rule = "secrets \"env\"".to_owned();
    deny.action = "deny".to_owned();
    out.emit(&event(2), Some(&deny));
    metrics.set_kernel(10, 2);
    metrics.set_tracked_processes(3);
    wait_for("webhook delivery", || {
        sink(&out.stats(), "webhook").sent == 1
    });

    let (head, body) = scrape(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    check_exposition(&body);
    for want in [
        "openclaw_guard_events_total{kind=\"exec\"} 2",
        "openclaw_guard_events_total{kind=\"file_open\"} 1",
        "openclaw_guard_kernel_events_emitted_total 10",
        "openclaw_guard_kernel_events_lost_total 2",
        "openclaw_guard_alerts_total{rule=\"secrets \\\"env\\\"\",action=\"deny\"} 1",
        "openclaw_guard_output_sent_total{sink=\"webhook\"} 1",
        "openclaw_guard_output_failures_total{sink=\"webhook\"} 0",
        "openclaw_guard_output_dropped_total{sink=\"webhook\"} 0",
        "openclaw_guard_tracked_processes 3",
        "# TYPE openclaw_guard_uptime_seconds gauge",
    ] {
        assert!(
            body.lines().any(|l| l == want),
            "missing {want:?} in\n{body}"
        );
    }

    let (head, _) = scrape(addr, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    let snap = metrics.snapshot();
    assert_eq!(snap.events.get("exec"), Some(&2));
    assert_eq!(snap.alerts.get("secrets \"env\"/deny"), Some(&1));
}

#[test]
fn metrics_refuses_non_loopback() {
    let r = MetricsServer::start("0.0.0.0:0".parse().expect("addr"), Arc::new(Metrics::new()));
    assert!(matches!(r, Err(OutputError::MetricsNotLoopback(_))));
}

#[test]
fn config_rejects_unknown_fields_and_fills_defaults() {
    let cfg: OutputsConfig = serde_json::from_value(json!({
        "jsonl": { "path": "/var/log/openclaw-guard/events.jsonl", "keep": 2 },
        "webhook": { "url": "http://127.0.0.1:2801/" },
    }))
    .expect("valid config");
    assert_eq!(cfg.jsonl.keep, 2);
    assert_eq!(cfg.jsonl.max_bytes, 64 * 1024 * 1024);
    assert!(!cfg.syslog.enabled);
    let w = cfg.webhook.expect("webhook");
    assert_eq!((w.timeout_ms, w.max_retries), (2000, 2));
    assert!(cfg.metrics.enabled);
    assert_eq!(cfg.metrics.listen, "127.0.0.1:9469".parse().expect("addr"));

    for bad in [
        json!({ "jsonl": { "pth": "x" } }),
        json!({ "sylog": {} }),
        json!({ "webhook": { "url": "http://x/", "retries": 1 } }),
        json!({ "metrics": { "listen": "127.0.0.1:9469", "path": "/m" } }),
    ] {
        let e = serde_json::from_value::<OutputsConfig>(bad.clone())
            .expect_err("unknown field accepted");
        assert!(e.to_string().contains("unknown field"), "{bad}: {e}");
    }
}

#[test]
fn output_flags() {
    let mut cfg = OutputsConfig::default();
    cfg.apply_flag("file:/tmp/ev.jsonl").expect("file");
    cfg.apply_flag("syslog").expect("syslog");
    cfg.apply_flag("webhook:http://127.0.0.1:2801/")
        .expect("webhook");
    cfg.apply_flag("metrics:off").expect("metrics off");
    assert_eq!(cfg.jsonl.path.as_deref(), Some("/tmp/ev.jsonl".as_ref()));
    assert!(cfg.syslog.enabled);
    assert!(cfg.webhook.is_some());
    assert!(!cfg.metrics.enabled);
    for bad in ["file:", "webhook:https://x/", "loud", "metrics:nope"] {
        assert!(cfg.apply_flag(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn outputs_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Outputs>();
    send_sync::<Metrics>();
}

#[test]
fn shutdown_with_webhook_down_gives_up_and_counts_the_rest_as_dropped() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let metrics = Arc::new(Metrics::new());
    let mut cfg = quiet();
    cfg.webhook = Some(WebhookConfig {
        format: Default::default(),
        url: format!("http://{addr}/"),
        timeout_ms: 500,
        max_retries: 5,
        // Far longer than the grace period: shutdown must cut the backoff short.
        backoff_ms: 60_000,
    });
    let out = Outputs::start(&cfg, Arc::clone(&metrics)).expect("start outputs");
    for i in 0..20 {
        out.emit(&event(i), Some(&alert(Priority::Critical)));
    }
    out.shutdown(Duration::from_millis(100));
    let text = metrics.render();
    let value = |name: &str| -> u64 {
        let prefix = format!("{name}{{sink=\"webhook\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let (failed, dropped) = (
        value("openclaw_guard_output_failures_total"),
        value("openclaw_guard_output_dropped_total"),
    );
    // The worker may or may not have taken the first record before shutdown: at
    // most that one failed, the rest were abandoned, none is unaccounted for.
    assert!(failed <= 1, "failed {failed}");
    assert_eq!(failed + dropped, 20, "failed {failed} dropped {dropped}");
    assert_eq!(value("openclaw_guard_output_queued"), 0);
}

#[test]
fn config_reads_from_toml_as_the_policy_file_carries_it() {
    let cfg: OutputsConfig = toml::from_str(
        r#"
queue_capacity = 128
[jsonl]
path = "/var/log/openclaw-guard/events.jsonl"
max_bytes = 1048576
keep = 3
[syslog]
enabled = true
format = "rfc5424"
[webhook]
url = "http://127.0.0.1:2801/"
timeout_ms = 1000
max_retries = 4
[metrics]
enabled = false
listen = "[::1]:9470"
"#,
    )
    .expect("valid TOML");
    assert_eq!(cfg.queue_capacity, 128);
    assert_eq!((cfg.jsonl.max_bytes, cfg.jsonl.keep), (1_048_576, 3));
    assert!(cfg.syslog.enabled);
    assert_eq!(cfg.syslog.format, SyslogFormat::Rfc5424);
    assert_eq!(cfg.syslog.path, std::path::Path::new("/dev/log"));
    let w = cfg.webhook.expect("webhook");
    assert_eq!((w.timeout_ms, w.max_retries, w.backoff_ms), (1000, 4, 200));
    assert!(!cfg.metrics.enabled);
    assert_eq!(cfg.metrics.listen, "[::1]:9470".parse().expect("addr"));
    assert!(toml::from_str::<OutputsConfig>("[jsonl]\nrotate = true\n").is_err());
}

#[test]
fn policy_severities_map_to_the_same_priorities() {
    for name in crate::policy::Severity::NAMES {
        let sev = crate::policy::Severity::parse(name).expect("policy severity");
        assert_eq!(Priority::from(sev).as_str(), *name);
    }
}

#[test]
fn metric_series_are_capped() {
    let m = Metrics::new();
    for i in 0..1100 {
        m.inc_alert(&format!("rule{i}"), "deny");
    }
    let snap = m.snapshot();
    assert_eq!(snap.alerts.len(), 1025, "1024 series and _other");
    assert_eq!(snap.alerts.get("_other/deny").copied(), None);
    assert_eq!(snap.alerts.get("_other/_other"), Some(&76));
    m.inc_event("exec");
    m.inc_event("exec");
    assert_eq!(m.snapshot().events.get("exec"), Some(&2));
}

#[test]
fn jsonl_writes_the_callers_encoding_with_the_alert_spliced_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let mut cfg = quiet();
    cfg.jsonl = JsonlConfig {
        format: Default::default(),
        enabled: true,
        path: Some(path.clone()),
        max_bytes: 1 << 20,
        keep: 1,
    };
    let out = Outputs::start(&cfg, Arc::new(Metrics::new())).expect("start outputs");
    let a = alert(Priority::Critical);
    for (i, al) in [(1, None), (2, Some(a.clone()))] {
        let ev = event(i);
        let json = serde_json::to_vec(&ev).expect("encode").into();
        out.emit_batch([Outgoing {
            kind: "file_open",
            json,
            alert: al,
        }]);
    }
    out.emit_batch([Outgoing {
        kind: "x",
        json: b"{}".to_vec().into(),
        alert: Some(a),
    }]);
    out.shutdown(Duration::from_secs(10));
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], event(1));
    let mut want = event(2);
    want["alert"] = serde_json::to_value(alert(Priority::Critical)).expect("alert");
    assert_eq!(lines[1], want);
    assert_eq!(lines[2]["alert"]["rule"], "shell.unexpected");
}

/// A wedged JSON lines destination (a FIFO nobody reads): ordinary events stop at
/// three quarters of the queue and are dropped, the rest of the queue still takes
/// alerts, and only a full queue drops an alert.
#[test]
fn a_flood_of_events_leaves_room_for_alerts() {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("wedged");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Held open for reading (never read until the end) so the sink's open succeeds and
    // its writes block once the pipe is full.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open fifo");
    let mut cfg = quiet();
    cfg.queue_capacity = 16;
    cfg.jsonl = JsonlConfig {
        format: Default::default(),
        enabled: true,
        path: Some(fifo.clone()),
        max_bytes: u64::MAX,
        keep: 1,
    };
    let out = Outputs::start(&cfg, Arc::new(Metrics::new())).expect("start outputs");
    // Events until the worker is blocked in a write and the queue holds the bulk
    // share (three quarters of 16), steadily.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    let before = loop {
        for _ in 0..200 {
            out.emit(&event(i), None);
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
        let s = sink(&out.stats(), "jsonl_file").clone();
        if s.queued == 12 {
            break s;
        }
        assert!(Instant::now() < deadline, "the queue never filled: {s:?}");
    };
    for i in 0..50 {
        out.emit(&event(10_000 + i), None);
    }
    let a = alert(Priority::Critical);
    for i in 0..5 {
        out.emit(&event(20_000 + i), Some(&a));
    }
    let after = sink(&out.stats(), "jsonl_file").clone();
    assert_eq!(
        after.enqueued - before.enqueued,
        4,
        "alerts fill the reserved quarter"
    );
    assert_eq!(after.dropped - before.dropped, 50 + 1, "{after:?}");
    // Unwedge, so that the worker can finish.
    let drain = std::thread::spawn(move || {
        let mut r = reader;
        let mut buf = vec![0u8; 1 << 16];
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    out.shutdown(Duration::from_secs(5));
    let _ = drain.join();
}

/// Each kind of record renders in the OCSF class docs/outputs.md gives it, with the
/// fields a SIEM keys on; the whole objects are checked against the published schema
/// by the integration test `enforce::outputs::ocsf_every_kind_validates`.
#[test]
fn ocsf_classes_by_kind() {
    let t = "2026-12-05T10:00:00.123456789Z";
    let base = |kind: &str| {
        serde_json::json!({"time": t, "ktime_ns": 5, "kind": kind, "pid": 11, "tgid": 10,
            "root": 1, "depth": 2, "cgroup_id": 3,
            "lineage": [{"pid": 1, "comm": "node"}, {"pid": 10, "comm": "bash"}],
            "role": "tool"})
    };
    let with = |kind: &str, extra: serde_json::Value| {
        let mut v = base(kind);
        v.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        v
    };
    let exec = with(
        "exec",
        serde_json::json!({"ppid": 1, "uid": 0, "gid": 0, "comm": "cat",
            "filename": "/usr/bin/cat", "argv": ["cat", "x"]}),
    );
    let open = with(
        "file_open",
        serde_json::json!({"op": "open", "path": "/h/.openclaw/.env", "dev": "8:1",
            "ino": 42, "flags": 0, "ret": -1}),
    );
    let denied = with(
        "file_open",
        serde_json::json!({"op": "open", "path": "/h/.openclaw/.env", "dev": "8:1",
            "ino": 42, "flags": 0, "ret": -1,
            "decision": {"rule": "secrets", "action": "deny", "errno": 1},
            "tool_call": {"id": "c1", "tag": "t-1", "tool": "exec", "gateway": 1}}),
    );
    let connect = with(
        "net",
        serde_json::json!({"op": "connect", "family": "inet", "addr": "10.0.0.1",
            "port": 443, "protocol": "tcp", "sock_type": "stream", "ret": 0,
            "dest_name": "example.com"}),
    );
    let stats = serde_json::json!({"time": t, "kind": "stats", "tracked_processes": 1});
    let cases = [
        (&exec, 1007, 1),
        (&open, 1001, 14),
        (&denied, 2004, 1),
        (&connect, 4001, 1),
        (&stats, 0, 99),
    ];
    for (native, class, activity) in cases {
        let o = super::ocsf::render(native, "h1");
        assert_eq!(o["class_uid"], class, "{native} -> {o}");
        assert_eq!(o["activity_id"], activity, "{native} -> {o}");
        assert_eq!(o["type_uid"], class * 100 + activity);
        assert_eq!(o["time"], 1_796_464_800_123_i64, "{o}");
        assert_eq!(o["metadata"]["version"], super::ocsf::OCSF_VERSION);
        assert_eq!(o["device"]["hostname"], "h1");
    }
    let o = super::ocsf::render(&exec, "h1");
    assert_eq!(o["process"]["cmd_line"], "cat x");
    assert_eq!(o["process"]["file"]["path"], "/usr/bin/cat");
    assert_eq!(o["unmapped"]["role"], "tool");
    let o = super::ocsf::render(&denied, "h1");
    assert_eq!(o["action_id"], 2);
    assert_eq!(o["finding_info"]["analytic"]["name"], "secrets");
    assert_eq!(o["evidences"][0]["file"]["path"], "/h/.openclaw/.env");
    assert_eq!(o["metadata"]["correlation_uid"], "t-1");
    assert_eq!(o["unmapped"]["tool_call"]["id"], "c1");
    let o = super::ocsf::render(&connect, "h1");
    assert_eq!(o["dst_endpoint"]["ip"], "10.0.0.1");
    assert_eq!(o["dst_endpoint"]["hostname"], "example.com");
    assert_eq!(o["dst_endpoint"]["port"], 443);
}

/// Falco's eight priorities keep their order in OTLP's severity numbers.
#[test]
fn otlp_severity_follows_priority() {
    let numbers: Vec<i32> = Priority::ALL
        .iter()
        .map(|p| super::otlp::severity_number(*p))
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] > w[1]), "{numbers:?}");
    let rec = super::otlp::log_record(
        &serde_json::json!({"kind": "exec", "tgid": 7, "argv": ["a", "b"], "name_hash": u64::MAX,
            "alert": {"rule": "r", "priority": "critical", "output": "line\nforged"}}),
        OutputFormat::Native,
        "h",
    );
    assert_eq!(rec.severity_number, 18);
    assert_eq!(rec.event_name, "openclaw_guard.exec");
    let body = format!("{:?}", rec.body);
    assert!(body.contains("line forged"), "{body}");
    let keys: Vec<&str> = rec.attributes.iter().map(|a| a.key.as_str()).collect();
    assert!(
        keys.contains(&"alert.rule") && keys.contains(&"argv"),
        "{keys:?}"
    );
    // A u64 past i64 stays exact (as text).
    let hash = rec
        .attributes
        .iter()
        .find(|a| a.key == "name_hash")
        .map(|a| format!("{:?}", a.value));
    assert!(hash.is_some_and(|h| h.contains(&u64::MAX.to_string())));
}

#[test]
fn otlp_and_journald_flags() {
    let mut c = OutputsConfig::default();
    c.apply_flag("otlp:http://127.0.0.1:4318").expect("otlp");
    assert_eq!(
        c.otlp.as_ref().map(|o| o.url.as_str()),
        Some("http://127.0.0.1:4318/v1/logs")
    );
    c.apply_flag("otlp:http://collector:4318/custom/logs")
        .expect("otlp path");
    assert_eq!(
        c.otlp.as_ref().map(|o| o.url.as_str()),
        Some("http://collector:4318/custom/logs")
    );
    assert!(c.apply_flag("otlp:https://collector:4318").is_err());
    assert!(c.apply_flag("otlp:").is_err());
    c.apply_flag("journald").expect("journald");
    assert!(c.journald.enabled);
    c.set_format(OutputFormat::Ocsf);
    assert_eq!(c.jsonl.format, OutputFormat::Ocsf);
    assert_eq!(c.otlp.as_ref().map(|o| o.format), Some(OutputFormat::Ocsf));
}

/// The webhook and JSON lines in OCSF: the alert arrives as a Detection Finding (the
/// event as its evidence), every JSON line as an OCSF event; the schema check of
/// both is the integration test `enforce::outputs::ocsf_every_kind_validates`.
#[test]
fn webhook_and_jsonl_carry_ocsf_when_asked() {
    let (addr, seen) = receiver(vec![]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ocsf.jsonl");
    let mut cfg = quiet();
    cfg.webhook = Some(WebhookConfig::new(format!("http://{addr}/")));
    cfg.jsonl.enabled = true;
    cfg.jsonl.path = Some(path.clone());
    cfg.set_format(OutputFormat::Ocsf);
    let out = Outputs::start(&cfg, Arc::new(Metrics::new())).expect("start outputs");
    out.emit(&event(0), None);
    out.emit(&event(1), Some(&alert(Priority::Critical)));
    wait_for("one webhook request", || {
        sink(&out.stats(), "webhook").sent == 1
    });
    out.shutdown(Duration::from_secs(2));
    let reqs = seen.lock().expect("lock").clone();
    let body: Value = serde_json::from_slice(&reqs[0].body).expect("JSON body");
    assert_eq!(body["class_uid"], 2004, "{body}");
    assert_eq!(body["severity_id"], 5);
    assert_eq!(body["finding_info"]["analytic"]["name"], "shell.unexpected");
    assert_eq!(body["is_alert"], true);
    assert_eq!(body["metadata"]["version"], super::ocsf::OCSF_VERSION);
    let lines: Vec<Value> = std::fs::read_to_string(&path)
        .expect("jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["class_uid"], 1007, "an exec without an alert");
    assert_eq!(lines[1]["class_uid"], 2004, "the alert");
}

/// OTLP with `format = "ocsf"`: each log record's body is the event's OCSF JSON (the
/// attributes stay the event's own fields).
#[test]
fn otlp_body_is_ocsf_when_asked() {
    let mut ev = event(1);
    ev["alert"] = serde_json::to_value(alert(Priority::Warning)).expect("alert");
    let rec = super::otlp::log_record(&ev, OutputFormat::Ocsf, "h");
    let body = match rec.body.and_then(|b| b.value) {
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => s,
        other => panic!("body is not text: {other:?}"),
    };
    let ocsf: Value = serde_json::from_str(&body).expect("OCSF JSON body");
    assert_eq!(ocsf["class_uid"], 2004);
    assert_eq!(ocsf["device"]["hostname"], "h");
    assert_eq!(rec.severity_number, 13);
    assert!(rec.attributes.iter().any(|a| a.key == "alert.rule"));
}
