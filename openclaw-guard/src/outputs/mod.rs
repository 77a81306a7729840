//! Alert outputs: where events and alerts go once policy has decided.
//!
//! The pipeline hands every event to [`Outputs::emit`], with the [`Alert`] when a rule
//! matched. `emit` never waits: each sink has its own bounded queue and worker thread,
//! and a full queue drops the record and counts it; ordinary events may fill only three
//! quarters of it, the rest is kept for alerts. Enforcement happens in the kernel
//! and the recorder has its own path, so a slow or dead destination (webhook down,
//! syslog stuck) costs at most dropped output records, never a late decision.
//!
//! Sinks:
//! - JSON lines ([`jsonl`]): stdout or a size-rotated file, every event.
//! - syslog ([`syslog`]): datagrams to `/dev/log`, alerts only.
//! - webhook ([`webhook`]): Falcosidekick-compatible JSON POST, alerts only.
//! - OpenTelemetry ([`otlp`]): OTLP/HTTP protobuf log records, every event, batched.
//! - journald ([`journald`]): native journal entries with searchable fields, alerts only.
//! - Prometheus metrics ([`metrics`]): a loopback scrape endpoint over [`Metrics`].
//!
//! JSON lines, the webhook and OTLP carry either the guard's own JSON or its OCSF
//! rendering ([`ocsf`], `format = "ocsf"`).

pub mod journald;
pub mod jsonl;
pub mod metrics;
pub mod ocsf;
pub mod otlp;
pub mod syslog;
pub mod webhook;

#[cfg(test)]
mod tests;

use std::{
    fmt,
    net::SocketAddr,
    path::PathBuf,
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use self::metrics::{Metrics, MetricsServer};

/// Falco's priorities, most severe first. Policy files spell them in lower case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[serde(alias = "emerg")]
    Emergency,
    Alert,
    #[serde(alias = "crit")]
    Critical,
    #[serde(alias = "err")]
    Error,
    #[serde(alias = "warn")]
    Warning,
    Notice,
    #[serde(alias = "info")]
    Informational,
    Debug,
}

impl Priority {
    pub const ALL: [Priority; 8] = [
        Priority::Emergency,
        Priority::Alert,
        Priority::Critical,
        Priority::Error,
        Priority::Warning,
        Priority::Notice,
        Priority::Informational,
        Priority::Debug,
    ];

    /// The spelling Falco and Falcosidekick use ("Critical", "Informational", ...).
    pub fn falco_name(self) -> &'static str {
        match self {
            Priority::Emergency => "Emergency",
            Priority::Alert => "Alert",
            Priority::Critical => "Critical",
            Priority::Error => "Error",
            Priority::Warning => "Warning",
            Priority::Notice => "Notice",
            Priority::Informational => "Informational",
            Priority::Debug => "Debug",
        }
    }

    /// The lower-case spelling used in policy files and JSON lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Emergency => "emergency",
            Priority::Alert => "alert",
            Priority::Critical => "critical",
            Priority::Error => "error",
            Priority::Warning => "warning",
            Priority::Notice => "notice",
            Priority::Informational => "informational",
            Priority::Debug => "debug",
        }
    }

    /// syslog severity (RFC 5424 section 6.2.1); Falco's priorities map one to one.
    pub fn syslog_severity(self) -> u8 {
        match self {
            Priority::Emergency => 0,
            Priority::Alert => 1,
            Priority::Critical => 2,
            Priority::Error => 3,
            Priority::Warning => 4,
            Priority::Notice => 5,
            Priority::Informational => 6,
            Priority::Debug => 7,
        }
    }
}

/// Policy severities are Falco's priorities; the match breaks the build if they part.
impl From<crate::policy::Severity> for Priority {
    fn from(s: crate::policy::Severity) -> Self {
        use crate::policy::Severity as S;
        match s {
            S::Emergency => Priority::Emergency,
            S::Alert => Priority::Alert,
            S::Critical => Priority::Critical,
            S::Error => Priority::Error,
            S::Warning => Priority::Warning,
            S::Notice => Priority::Notice,
            S::Informational => Priority::Informational,
            S::Debug => Priority::Debug,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = OutputError;

    /// Case-insensitive, with the usual syslog abbreviations.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let p = match s.to_ascii_lowercase().as_str() {
            "emergency" | "emerg" => Priority::Emergency,
            "alert" => Priority::Alert,
            "critical" | "crit" => Priority::Critical,
            "error" | "err" => Priority::Error,
            "warning" | "warn" => Priority::Warning,
            "notice" => Priority::Notice,
            "informational" | "info" => Priority::Informational,
            "debug" => Priority::Debug,
            _ => return Err(OutputError::Priority(s.to_owned())),
        };
        Ok(p)
    }
}

/// What policy says about an event when a rule matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Rule id.
    pub rule: String,
    pub priority: Priority,
    /// Action taken: "alert", "deny" or "kill".
    pub action: String,
    /// One human-readable line.
    pub output: String,
    pub tags: Vec<String>,
}

/// Errors from building the outputs; the daemon adds context and reports them.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("unknown priority {0:?} (expected emergency, alert, critical, error, warning, notice, informational or debug)")]
    Priority(String),
    #[error("cannot open JSON lines file {path}: {source}")]
    JsonlOpen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("jsonl.keep must be at most {max}, got {got}")]
    JsonlKeep { max: usize, got: usize },
    #[error("webhook url {url:?}: {reason}")]
    WebhookUrl { url: String, reason: String },
    #[error("metrics listen address {0} is not loopback: the endpoint has no authentication; use 127.0.0.1 or [::1] and a reverse proxy if it must be reached from elsewhere")]
    MetricsNotLoopback(SocketAddr),
    #[error("cannot listen for metrics on {addr}: {source} (set outputs.metrics.listen to another port, or outputs.metrics.enabled = false)")]
    MetricsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start {sink} output thread: {source}")]
    Thread {
        sink: &'static str,
        source: std::io::Error,
    },
    #[error("otlp url {url:?}: {reason}")]
    OtlpUrl { url: String, reason: String },
    #[error("unknown --output {0:?} (expected stdout, file:PATH, syslog, syslog:PATH, webhook:URL, otlp:URL, journald, metrics:ADDR or none)")]
    Flag(String),
}

/// Output settings, as carried by the policy file or built from CLI flags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    /// Records each sink may hold before it drops new ones.
    pub queue_capacity: usize,
    pub jsonl: JsonlConfig,
    pub syslog: SyslogConfig,
    /// Off when absent.
    pub webhook: Option<WebhookConfig>,
    /// Off when absent.
    pub otlp: Option<OtlpConfig>,
    pub journald: JournaldConfig,
    pub metrics: MetricsConfig,
}

/// What an output writes for each record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// The guard's own JSON (as recorded; Falcosidekick's shape for the webhook).
    #[default]
    Native,
    /// OCSF 1.8.0 events ([`ocsf`]).
    Ocsf,
}

impl FromStr for OutputFormat {
    type Err = OutputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" | "jsonl" | "json" => Ok(OutputFormat::Native),
            "ocsf" => Ok(OutputFormat::Ocsf),
            _ => Err(OutputError::Flag(format!("--output-format {s}"))),
        }
    }
}

impl Default for OutputsConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 4096,
            jsonl: JsonlConfig::default(),
            syslog: SyslogConfig::default(),
            webhook: None,
            otlp: None,
            journald: JournaldConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonlConfig {
    pub enabled: bool,
    /// A file to append to; stdout when absent.
    pub path: Option<PathBuf>,
    /// Rotate the file before it would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept beside the live one (`PATH.1` newest ... `PATH.keep`).
    pub keep: usize,
    pub format: OutputFormat,
}

impl Default for JsonlConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: None,
            max_bytes: 64 * 1024 * 1024,
            keep: 5,
            format: OutputFormat::Native,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    pub enabled: bool,
    /// The local syslog socket (a unix datagram socket).
    pub path: PathBuf,
    pub format: SyslogFormat,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            path: PathBuf::from("/dev/log"),
            format: SyslogFormat::Rfc3164,
        }
    }
}

/// Datagram format. RFC 3164 is what glibc's syslog(3) writes to `/dev/log` and what
/// every local daemon (journald, rsyslog, syslog-ng) parses; RFC 5424 carries a
/// full timestamp with the year and zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFormat {
    Rfc3164,
    Rfc5424,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where Falcosidekick listens, e.g. `http://127.0.0.1:2801/`.
    pub url: String,
    /// Per-request timeout (connect, send and response).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts after the first one fails.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff between attempts; doubles each time, capped at 5 s.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Falcosidekick's payload (native) or the alert as an OCSF Detection Finding.
    #[serde(default)]
    pub format: OutputFormat,
}

fn default_timeout_ms() -> u64 {
    2000
}
fn default_max_retries() -> u32 {
    2
}
fn default_backoff_ms() -> u64 {
    200
}

impl WebhookConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout_ms: default_timeout_ms(),
            max_retries: default_max_retries(),
            backoff_ms: default_backoff_ms(),
            format: OutputFormat::Native,
        }
    }
}

/// OpenTelemetry logs over OTLP/HTTP (protobuf).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's logs endpoint, e.g. `http://127.0.0.1:4318/v1/logs`; a URL
    /// with no path gets `/v1/logs`, as OTLP/HTTP exporters do.
    pub url: String,
    /// Every event (the default) or alerts only.
    #[serde(default)]
    pub alerts_only: bool,
    /// Per-request timeout (connect, send and response).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts after the first one fails.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff between attempts; doubles each time, capped at 5 s.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Log records sent in one request at most.
    #[serde(default = "default_otlp_batch")]
    pub max_batch: usize,
    /// Each record's body: the event's own JSON or its OCSF rendering.
    #[serde(default)]
    pub format: OutputFormat,
}

fn default_otlp_batch() -> usize {
    512
}

impl OtlpConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            alerts_only: false,
            timeout_ms: default_timeout_ms(),
            max_retries: default_max_retries(),
            backoff_ms: default_backoff_ms(),
            max_batch: default_otlp_batch(),
            format: OutputFormat::Native,
        }
    }
}

/// Native journal entries: one per alert, with fields `journalctl` can match on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournaldConfig {
    pub enabled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Loopback address to serve `/metrics` on.
    pub listen: SocketAddr,
}

pub const DEFAULT_METRICS_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9469,
));

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_METRICS_LISTEN,
        }
    }
}

impl OutputsConfig {
    /// Applies one `--output` flag: `stdout`, `file:PATH`, `syslog`, `syslog:PATH`,
    /// `webhook:URL`, `otlp:URL`, `journald`, `metrics:ADDR`, `metrics:off`
    /// or `none` (no JSON lines).
    pub fn apply_flag(&mut self, flag: &str) -> Result<(), OutputError> {
        let (name, arg) = match flag.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (flag, None),
        };
        match (name, arg) {
            ("stdout", None) => {
                self.jsonl.enabled = true;
                self.jsonl.path = None;
            }
            ("file", Some(p)) if !p.is_empty() => {
                self.jsonl.enabled = true;
                self.jsonl.path = Some(PathBuf::from(p));
            }
            ("none", None) => self.jsonl.enabled = false,
            ("syslog", None) => self.syslog.enabled = true,
            ("syslog", Some(p)) if !p.is_empty() => {
                self.syslog.enabled = true;
                self.syslog.path = PathBuf::from(p);
            }
            ("webhook", Some(u)) if !u.is_empty() => {
                webhook::validate_url(u)?;
                self.webhook = Some(WebhookConfig::new(u));
            }
            ("otlp", Some(u)) if !u.is_empty() => {
                let url = otlp::logs_url(u)?;
                self.otlp = Some(OtlpConfig::new(url));
            }
            ("journald", None) => self.journald.enabled = true,
            ("metrics", Some("off")) => self.metrics.enabled = false,
            ("metrics", Some(a)) => {
                let addr: SocketAddr = a.parse().map_err(|_| OutputError::Flag(flag.into()))?;
                self.metrics.enabled = true;
                self.metrics.listen = addr;
            }
            _ => return Err(OutputError::Flag(flag.to_owned())),
        }
        Ok(())
    }

    /// `--output-format`: the format of every output that has a choice.
    pub fn set_format(&mut self, format: OutputFormat) {
        self.jsonl.format = format;
        if let Some(w) = &mut self.webhook {
            w.format = format;
        }
        if let Some(o) = &mut self.otlp {
            o.format = format;
        }
    }
}

/// One record as the workers see it: shared by every sink's queue, cloned once.
#[derive(Debug)]
pub(crate) struct Record {
    /// The event's fields, for the sinks that format alerts from them (syslog,
    /// webhook); `None` for an event without an alert handed over encoded only.
    pub(crate) event: Option<Value>,
    pub(crate) alert: Option<Alert>,
    /// The event already encoded as a JSON object by the caller (the recorder needed
    /// it too), so the JSON lines sink does not encode it again.
    pub(crate) json: Option<Bytes>,
}

/// An event the pipeline is done with, for [`Outputs::emit_batch`].
#[derive(Debug)]
pub struct Outgoing {
    /// The event's `kind`, for the metrics.
    pub kind: &'static str,
    /// The event encoded as one JSON object.
    pub json: Bytes,
    pub alert: Option<Alert>,
}

/// Adds `"key": value` as the last field of the JSON object encoded in `json`.
pub(crate) fn splice_field(
    json: &mut Vec<u8>,
    key: &str,
    value: &impl Serialize,
) -> serde_json::Result<()> {
    if json.last() != Some(&b'}') {
        return Err(serde::ser::Error::custom("not a JSON object"));
    }
    json.pop();
    if json.len() > 1 {
        json.push(b',');
    }
    serde_json::to_writer(&mut *json, key)?;
    json.push(b':');
    serde_json::to_writer(&mut *json, value)?;
    json.push(b'}');
    Ok(())
}

/// Per-sink counters, shared by `emit` (enqueue side), the worker and the metrics.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Accepted into the queue.
    pub enqueued: AtomicU64,
    /// Delivered.
    pub sent: AtomicU64,
    /// Given up on after the sink's own retries.
    pub failed: AtomicU64,
    /// Dropped without an attempt: queue full, or shutting down.
    pub dropped: AtomicU64,
    /// Extra attempts (webhook).
    pub retries: AtomicU64,
    /// In the queue or being delivered now.
    pub queued: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl SinkCounters {
    pub(crate) fn fail(&self, err: impl fmt::Display) {
        self.fail_many(1, err);
    }

    /// `n` records given up on for one reason (a batch).
    pub(crate) fn fail_many(&self, n: u64, err: impl fmt::Display) {
        self.failed.fetch_add(n, Ordering::Relaxed);
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some(err.to_string());
    }

    fn snapshot(&self, name: &str) -> SinkStats {
        SinkStats {
            sink: name.to_owned(),
            enqueued: self.enqueued.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// For `openclaw-guard status`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct OutputStats {
    pub sinks: Vec<SinkStats>,
    /// Where `/metrics` is served, when it is.
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SinkStats {
    pub sink: String,
    pub enqueued: u64,
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    pub retries: u64,
    pub queued: u64,
    pub last_error: Option<String>,
}

/// Why one delivery failed (after the sink's own retries).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
    /// The output is shutting down and its grace period is over.
    #[error("shutting down")]
    Abandoned,
}

/// When the workers must stop trying; shared with each sink so that its retries and
/// backoff end with the daemon.
#[derive(Debug, Default)]
pub(crate) struct Deadline(Mutex<Option<Instant>>);

impl Deadline {
    pub(crate) fn passed(&self) -> bool {
        self.get().is_some_and(|d| Instant::now() >= d)
    }

    pub(crate) fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, at: Instant) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
    }

    /// Sleeps for `d`, or less if the deadline comes first; false if it came.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let d = match self.get() {
            Some(at) => d.min(at.saturating_duration_since(Instant::now())),
            None => d,
        };
        std::thread::sleep(d);
        !self.passed()
    }
}

/// A destination run by one worker thread.
pub(crate) trait Destination: Send + 'static {
    /// Delivers one record, retrying as the sink sees fit.
    fn deliver(
        &mut self,
        rec: &Record,
        counters: &SinkCounters,
        deadline: &Deadline,
    ) -> Result<(), SinkError>;

    /// Called when the queue is momentarily empty: a buffered sink writes out here.
    fn flush(&mut self, _counters: &SinkCounters, _deadline: &Deadline) -> Result<(), SinkError> {
        Ok(())
    }

    /// True for a sink that sends records in batches: a record `deliver` took stays
    /// `queued` until its batch goes out, and the sink itself counts it `sent` or
    /// `failed` then.
    fn batches(&self) -> bool {
        false
    }
}

struct SinkHandle {
    name: &'static str,
    alerts_only: bool,
    /// Records the queue holds at most.
    capacity: u64,
    /// Queue depth past which ordinary events are dropped: the rest of the queue is
    /// kept for alerts, so a flood of events never crowds a decision's alert out.
    bulk_limit: u64,
    /// Batches of records (one per pipeline flush: one wakeup of the worker per
    /// batch, not per event); the depth in records is kept in `counters.queued`.
    tx: Option<SyncSender<Vec<Arc<Record>>>>,
    counters: Arc<SinkCounters>,
    thread: Option<JoinHandle<()>>,
}

/// The daemon's outputs. Cheap to share behind an `Arc`; `emit` takes `&self`.
pub struct Outputs {
    sinks: Vec<SinkHandle>,
    metrics: Arc<Metrics>,
    server: Option<MetricsServer>,
    deadline: Arc<Deadline>,
}

impl Outputs {
    /// Starts the configured sinks (and the metrics endpoint) on their own threads.
    pub fn start(config: &OutputsConfig, metrics: Arc<Metrics>) -> Result<Self, OutputError> {
        let deadline = Arc::new(Deadline::default());
        let mut out = Self {
            sinks: Vec::new(),
            metrics,
            server: None,
            deadline,
        };
        let cap = config.queue_capacity.max(1);
        if config.jsonl.enabled {
            let sink = jsonl::JsonlSink::open(&config.jsonl)?;
            let name = if config.jsonl.path.is_some() {
                "jsonl_file"
            } else {
                "stdout"
            };
            out.add(name, false, cap, sink)?;
        }
        if config.syslog.enabled {
            let sink = syslog::SyslogSink::new(&config.syslog);
            out.add("syslog", true, cap, sink)?;
        }
        if let Some(w) = &config.webhook {
            let sink = webhook::WebhookSink::new(w)?;
            out.add("webhook", true, cap, sink)?;
        }
        if let Some(o) = &config.otlp {
            let sink = otlp::OtlpSink::new(o)?;
            out.add("otlp", o.alerts_only, cap, sink)?;
        }
        if config.journald.enabled {
            let sink = journald::JournaldSink::new(&config.journald);
            out.add("journald", true, cap, sink)?;
        }
        if config.metrics.enabled {
            let addr = config.metrics.listen;
            out.server = Some(MetricsServer::start(addr, Arc::clone(&out.metrics))?);
        }
        Ok(out)
    }

    fn add(
        &mut self,
        name: &'static str,
        alerts_only: bool,
        cap: usize,
        mut sink: impl Destination,
    ) -> Result<(), OutputError> {
        let (tx, rx): (_, Receiver<Vec<Arc<Record>>>) = mpsc::sync_channel(cap);
        let counters = self.metrics.register_sink(name);
        let c = Arc::clone(&counters);
        let deadline = Arc::clone(&self.deadline);
        let thread = std::thread::Builder::new()
            .name(format!("out-{name}"))
            .spawn(move || worker(&mut sink, &rx, &c, &deadline))
            .map_err(|source| OutputError::Thread { sink: name, source })?;
        self.sinks.push(SinkHandle {
            name,
            alerts_only,
            capacity: cap as u64,
            bulk_limit: (cap as u64 * 3 / 4).max(1),
            tx: Some(tx),
            counters,
            thread: Some(thread),
        });
        Ok(())
    }

    /// Hands one event (and its alert, if a rule matched) to every sink that wants it.
    /// Never blocks: a full queue drops the record for that sink and counts it. Also
    /// counts the event by kind and the alert by rule and action in [`Metrics`].
    pub fn emit(&self, event: &Value, alert: Option<&Alert>) {
        let kind = event.get("kind").and_then(Value::as_str);
        if self.count(kind.unwrap_or("unknown"), alert) {
            self.enqueue(Record {
                event: Some(event.clone()),
                alert: alert.cloned(),
                json: None,
            });
        }
    }

    /// Events the caller no longer needs, each with its JSON encoding (written as it
    /// is by the JSON lines sink) and alert: no copy, and each worker gets the batch
    /// in one message.
    pub fn emit_batch(&self, items: impl IntoIterator<Item = Outgoing>) {
        let mut batch: Vec<Arc<Record>> = Vec::new();
        // Events are counted per run of one kind: a batch is mostly one kind.
        let mut run: Option<(&'static str, u64)> = None;
        for o in items {
            match &mut run {
                Some((kind, n)) if *kind == o.kind => *n += 1,
                _ => {
                    if let Some((kind, n)) = run.replace((o.kind, 1)) {
                        self.metrics.add_events(kind, n);
                    }
                }
            }
            if let Some(a) = &o.alert {
                self.metrics.inc_alert(&a.rule, &a.action);
            }
            if self.wanted(o.alert.is_some()) {
                // An alert's fields are read back once here, for the sinks that
                // format alerts from them (syslog, webhook, journald).
                let event = o
                    .alert
                    .as_ref()
                    .and_then(|_| serde_json::from_slice(&o.json).ok());
                batch.push(Arc::new(Record {
                    event,
                    alert: o.alert,
                    json: Some(o.json),
                }));
            }
        }
        if let Some((kind, n)) = run {
            self.metrics.add_events(kind, n);
        }
        self.enqueue_batch(&batch);
    }

    /// Whether any sink takes a record (alerts-only sinks take alerts only).
    fn wanted(&self, alert: bool) -> bool {
        self.sinks.iter().any(|s| alert || !s.alerts_only)
    }

    /// Updates the metrics; true if any sink wants the record.
    fn count(&self, kind: &str, alert: Option<&Alert>) -> bool {
        self.metrics.inc_event(kind);
        if let Some(a) = alert {
            self.metrics.inc_alert(&a.rule, &a.action);
        }
        self.wanted(alert.is_some())
    }

    fn enqueue(&self, rec: Record) {
        self.enqueue_batch(&[Arc::new(rec)]);
    }

    fn enqueue_batch(&self, batch: &[Arc<Record>]) {
        if batch.is_empty() {
            return;
        }
        for s in &self.sinks {
            let Some(tx) = &s.tx else { continue };
            let mut accepted = Vec::with_capacity(batch.len());
            for rec in batch {
                let is_alert = rec.alert.is_some();
                if s.alerts_only && !is_alert {
                    continue;
                }
                // Counted before the send so the worker's decrement can never come
                // first.
                let depth = s.counters.queued.fetch_add(1, Ordering::Relaxed);
                let limit = if is_alert { s.capacity } else { s.bulk_limit };
                if depth >= limit {
                    s.counters.queued.fetch_sub(1, Ordering::Relaxed);
                    s.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                accepted.push(Arc::clone(rec));
            }
            let n = accepted.len() as u64;
            if n == 0 {
                continue;
            }
            match tx.try_send(accepted) {
                Ok(()) => {
                    s.counters.enqueued.fetch_add(n, Ordering::Relaxed);
                }
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    s.counters.queued.fetch_sub(n, Ordering::Relaxed);
                    s.counters.dropped.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
    }

    /// Counters per sink, for `openclaw-guard status`.
    pub fn stats(&self) -> OutputStats {
        OutputStats {
            sinks: self
                .sinks
                .iter()
                .map(|s| s.counters.snapshot(s.name))
                .collect(),
            metrics_listen: self.server.as_ref().map(MetricsServer::local_addr),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops accepting records and lets each worker deliver what it holds for up to
    /// `grace`; what is left after that is counted as dropped.
    pub fn shutdown(mut self, grace: Duration) {
        self.stop(grace);
    }

    fn stop(&mut self, grace: Duration) {
        self.deadline.set(Instant::now() + grace);
        for s in &mut self.sinks {
            s.tx = None;
        }
        for s in &mut self.sinks {
            if let Some(t) = s.thread.take() {
                // A worker that panicked has nothing left to flush; carry on.
                let _ = t.join();
            }
        }
        self.server = None;
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

fn worker(
    sink: &mut impl Destination,
    rx: &Receiver<Vec<Arc<Record>>>,
    counters: &SinkCounters,
    deadline: &Deadline,
) {
    while let Ok(batch) = rx.recv() {
        for rec in &batch {
            handle(sink, rec, counters, deadline);
        }
        // Drain what is already queued before flushing, so a burst is one write.
        while let Ok(batch) = rx.try_recv() {
            for rec in &batch {
                handle(sink, rec, counters, deadline);
            }
        }
        if let Err(e) = sink.flush(counters, deadline) {
            counters.fail(e);
        }
    }
}

fn handle(sink: &mut impl Destination, rec: &Record, counters: &SinkCounters, deadline: &Deadline) {
    let res = if deadline.passed() {
        Err(SinkError::Abandoned)
    } else {
        sink.deliver(rec, counters, deadline)
    };
    match res {
        Ok(()) if sink.batches() => return,
        Ok(()) => {
            counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        Err(SinkError::Abandoned) => {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => counters.fail(e),
    }
    counters.queued.fetch_sub(1, Ordering::Relaxed);
}

/// The host name sent with webhook alerts and RFC 5424 syslog.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The event as one JSON object with the alert (when any) under `"alert"`.
pub(crate) fn merged(rec: &Record) -> Value {
    let mut v = match (&rec.event, &rec.json) {
        (Some(e @ Value::Object(_)), _) => e.clone(),
        // Handed over encoded only: decoded here, for the sinks that need fields.
        (None, Some(j)) => serde_json::from_slice(j).unwrap_or(Value::Null),
        (other, _) => serde_json::json!({ "event": other }),
    };
    if let (Some(a), Value::Object(m)) = (&rec.alert, &mut v) {
        m.insert(
            "alert".to_owned(),
            serde_json::to_value(a).unwrap_or(Value::Null),
        );
    }
    v
}

/// Visits the leaves of an event: every value that is not an object (lists
/// included: each output carries them its own way), named by the keys leading to it
/// joined with `sep` after `prefix` (`proc.pid`); nulls are skipped. A bare scalar
/// event is one leaf named `prefix`.
pub(crate) fn for_each_leaf(prefix: &str, sep: &str, v: &Value, f: &mut impl FnMut(&str, &Value)) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}{sep}{k}")
                };
                for_each_leaf(&key, sep, v, f);
            }
        }
        Value::Null => {}
        leaf => f(prefix, leaf),
    }
}

/// One line of text: control characters (newlines included) become spaces, so an
/// attacker-chosen file name cannot forge extra log lines.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
