//! OpenTelemetry output: events and alerts as OTLP log records, POSTed as
//! `ExportLogsServiceRequest` protobuf to a collector's `/v1/logs` (OTLP/HTTP).
//!
//! The messages are the OpenTelemetry project's own (`opentelemetry-proto`, prost);
//! the HTTP client, retries and backoff are the webhook's. Records are buffered by the
//! worker and sent when its queue is momentarily empty or `max_batch` are waiting, so a
//! burst is one request. A batch the collector refuses after the retries is counted
//! `failed`, record by record; the forensic record never depends on it.
//!
//! Each log record: the event's time, severity from the alert's priority (OTel's
//! severity numbers), `event_name` `openclaw_guard.KIND`, the event's fields as
//! attributes (nested objects as dotted keys, lists as arrays, the alert under
//! `alert.*`, the tool call under `tool_call.*`), and a body: the alert's line or a
//! short headline, or the OCSF rendering when `format = "ocsf"`. Records are grouped
//! by gateway: each resource names the host, the guard's version and the gateway
//! (`openclaw.gateway.pid`).

use std::{
    collections::BTreeMap,
    sync::atomic::Ordering,
    time::{SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use prost::Message;
use serde_json::Value;

use super::{
    hostname, merged, ocsf,
    webhook::{self, Poster},
    Deadline, Destination, OtlpConfig, OutputError, OutputFormat, Priority, Record, SinkCounters,
    SinkError,
};

/// The logs path OTLP/HTTP exporters append to a bare endpoint.
const LOGS_PATH: &str = "/v1/logs";

/// The full logs URL for `--output otlp:URL`: `http://host:4318` becomes
/// `http://host:4318/v1/logs`; a URL with a path is taken as it is.
pub fn logs_url(url: &str) -> Result<String, OutputError> {
    let uri = webhook::http_url(url, "a collector", "http://127.0.0.1:4318/v1/logs").map_err(
        |reason| OutputError::OtlpUrl {
            url: url.to_owned(),
            reason,
        },
    )?;
    Ok(match uri.path() {
        "" | "/" => format!("{}{LOGS_PATH}", url.trim_end_matches('/')),
        _ => url.to_owned(),
    })
}

pub(crate) struct OtlpSink {
    poster: Poster,
    format: OutputFormat,
    max_batch: usize,
    hostname: String,
    /// Records waiting for the next request, each with its gateway (0: none).
    pending: Vec<(u64, LogRecord)>,
}

impl OtlpSink {
    pub(crate) fn new(cfg: &OtlpConfig) -> Result<Self, OutputError> {
        let url = logs_url(&cfg.url)?;
        Ok(Self {
            poster: Poster::new(
                &url,
                cfg.timeout_ms,
                cfg.max_retries,
                cfg.backoff_ms,
                "application/x-protobuf",
            ),
            format: cfg.format,
            max_batch: cfg.max_batch.max(1),
            hostname: hostname(),
            pending: Vec::new(),
        })
    }

    /// Sends what is pending as one request; counts each record sent or failed and
    /// no longer queued.
    fn send(&mut self, counters: &SinkCounters, deadline: &Deadline) {
        if self.pending.is_empty() {
            return;
        }
        let n = self.pending.len() as u64;
        let records = std::mem::take(&mut self.pending);
        let request = self.request(records);
        match self
            .poster
            .send(&request.encode_to_vec(), counters, deadline)
        {
            Ok(()) => {
                counters.sent.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => counters.fail_many(n, e),
        }
        counters.queued.fetch_sub(n, Ordering::Relaxed);
    }

    fn request(&self, records: Vec<(u64, LogRecord)>) -> ExportLogsServiceRequest {
        let mut by_gateway: BTreeMap<u64, Vec<LogRecord>> = BTreeMap::new();
        for (gw, r) in records {
            by_gateway.entry(gw).or_default().push(r);
        }
        let scope = InstrumentationScope {
            name: "openclaw-guard".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        };
        let resource_logs = by_gateway
            .into_iter()
            .map(|(gw, log_records)| {
                let mut attributes = vec![
                    kv("service.name", string("openclaw-guard")),
                    kv("service.version", string(env!("CARGO_PKG_VERSION"))),
                    kv("host.name", string(&self.hostname)),
                ];
                if gw != 0 {
                    attributes.push(kv("openclaw.gateway.pid", int(gw as i64)));
                }
                ResourceLogs {
                    resource: Some(Resource {
                        attributes,
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(scope.clone()),
                        log_records,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect();
        ExportLogsServiceRequest { resource_logs }
    }
}

impl Destination for OtlpSink {
    fn deliver(
        &mut self,
        rec: &Record,
        counters: &SinkCounters,
        deadline: &Deadline,
    ) -> Result<(), SinkError> {
        let event = merged(rec);
        let gateway = event.get("root").and_then(Value::as_u64).unwrap_or(0);
        let record = log_record(&event, self.format, &self.hostname);
        self.pending.push((gateway, record));
        if self.pending.len() >= self.max_batch {
            self.send(counters, deadline);
        }
        Ok(())
    }

    fn flush(&mut self, counters: &SinkCounters, deadline: &Deadline) -> Result<(), SinkError> {
        self.send(counters, deadline);
        Ok(())
    }

    fn batches(&self) -> bool {
        true
    }
}

/// One event (its alert merged in under `alert`) as an OTLP log record.
pub fn log_record(event: &Value, format: OutputFormat, host: &str) -> LogRecord {
    let kind = event
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let alert = event.get("alert");
    let priority = alert
        .or_else(|| event.get("decision"))
        .and_then(|a| a.get("priority"))
        .and_then(Value::as_str)
        .and_then(|p| p.parse::<Priority>().ok());
    let (severity_number, severity_text) = match priority {
        Some(p) => (severity_number(p), p.as_str()),
        None => (9, "informational"),
    };
    let body = match format {
        OutputFormat::Ocsf => ocsf::render(event, host).to_string(),
        OutputFormat::Native => alert
            .and_then(|a| a.get("output"))
            .and_then(Value::as_str)
            .map_or_else(|| headline(kind, event), super::one_line),
    };
    // Nested objects as dotted keys; lists stay lists (OTLP has arrays).
    let mut attributes = Vec::new();
    super::for_each_leaf("", ".", event, &mut |key, leaf| {
        attributes.push(kv(key, any(leaf)));
    });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let time = event
        .get("time")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .and_then(|t| u64::try_from(t.as_nanosecond()).ok())
        .unwrap_or(now);
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: now,
        severity_number,
        severity_text: severity_text.to_owned(),
        body: Some(string(&body)),
        attributes,
        event_name: format!("openclaw_guard.{kind}"),
        ..Default::default()
    }
}

/// OpenTelemetry's severity number for one of Falco's priorities (the logs data
/// model's syslog mapping: INFO2 for notice, ERROR2/3 for critical/alert).
pub fn severity_number(p: Priority) -> i32 {
    match p {
        Priority::Debug => 5,
        Priority::Informational => 9,
        Priority::Notice => 10,
        Priority::Warning => 13,
        Priority::Error => 17,
        Priority::Critical => 18,
        Priority::Alert => 19,
        Priority::Emergency => 21,
    }
}

/// A short line for an event without an alert.
fn headline(kind: &str, ev: &Value) -> String {
    let s = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or("");
    let pid = ev.get("tgid").and_then(Value::as_u64).unwrap_or(0);
    let what = match kind {
        "exec" => s("filename").to_owned(),
        "file_open" => s("path").to_owned(),
        "net" => format!(
            "{} {}:{}",
            s("op"),
            s("addr"),
            ev.get("port").and_then(Value::as_u64).unwrap_or(0)
        ),
        _ => String::new(),
    };
    super::one_line(format!("{kind} pid={pid} {what}").trim_end())
}

fn any(v: &Value) -> AnyValue {
    let value = match v {
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => any_value::Value::IntValue(i),
            // Past i64 (hashes, cgroup ids): exact as text, not rounded as a double.
            (None, Some(u)) => any_value::Value::StringValue(u.to_string()),
            _ => any_value::Value::DoubleValue(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Array(items) => any_value::Value::ArrayValue(ArrayValue {
            values: items.iter().map(any).collect(),
        }),
        // Objects inside lists (lineage entries) as their JSON text.
        Value::Object(_) | Value::Null => any_value::Value::StringValue(v.to_string()),
    };
    AnyValue { value: Some(value) }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
        ..Default::default()
    }
}

fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_owned())),
    }
}

fn int(i: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(i)),
    }
}
