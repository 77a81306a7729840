//! Prometheus metrics: a registry of atomics the daemon updates, and a loopback
//! endpoint serving it in the text exposition format (version 0.0.4).
//!
//! The endpoint is a small HTTP/1.1 `GET` handler on its own thread: one request per
//! connection, bounded reads and timeouts, so a scraper cannot hold the daemon.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, RwLock,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{OutputError, SinkCounters};

/// Distinct label sets per metric before new ones fold into `"_other"`: rule ids come
/// from policy and kinds from the kernel, but a bug must not grow memory unbounded.
const MAX_SERIES: usize = 1024;
const OTHER: &str = "_other";

/// Counters and gauges, shared by the pipeline (writers) and the endpoint (reader).
#[derive(Debug)]
pub struct Metrics {
    start: Instant,
    events: Labeled,
    alerts: Labeled,
    kernel_emitted: AtomicU64,
    kernel_lost: AtomicU64,
    tracked: AtomicU64,
    sinks: RwLock<Vec<(String, Arc<SinkCounters>)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            events: Labeled::default(),
            alerts: Labeled::default(),
            kernel_emitted: AtomicU64::new(0),
            kernel_lost: AtomicU64::new(0),
            tracked: AtomicU64::new(0),
            sinks: RwLock::new(Vec::new()),
        }
    }

    /// One event received, by kind (`Outputs::emit` calls this).
    pub fn inc_event(&self, kind: &str) {
        self.events.add(&[kind], 1);
    }

    /// `n` events of one kind (a batch's run of them).
    pub fn add_events(&self, kind: &str, n: u64) {
        self.events.add(&[kind], n);
    }

    /// One alert, by rule and action taken (`Outputs::emit` calls this).
    pub fn inc_alert(&self, rule: &str, action: &str) {
        self.alerts.inc(&[rule, action]);
    }

    /// The kernel's own totals: records written to and lost from the ring buffer.
    pub fn set_kernel(&self, emitted: u64, lost: u64) {
        self.kernel_emitted.store(emitted, Ordering::Relaxed);
        self.kernel_lost.store(lost, Ordering::Relaxed);
    }

    /// Processes currently tracked in gateway trees.
    pub fn set_tracked_processes(&self, n: u64) {
        self.tracked.store(n, Ordering::Relaxed);
    }

    pub fn uptime(&self) -> Duration {
        self.start.elapsed()
    }

    /// Counters for one output sink; the same sink name shares one set.
    pub fn register_sink(&self, name: &str) -> Arc<SinkCounters> {
        let mut sinks = self.sinks.write().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = sinks.iter().find(|(n, _)| n == name) {
            return Arc::clone(c);
        }
        let c = Arc::new(SinkCounters::default());
        sinks.push((name.to_owned(), Arc::clone(&c)));
        c
    }

    /// The same numbers, for `openclaw-guard status`.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            uptime_seconds: self.uptime().as_secs(),
            events: self.events.flat(),
            alerts: self.alerts.flat(),
            kernel_emitted: self.kernel_emitted.load(Ordering::Relaxed),
            kernel_lost: self.kernel_lost.load(Ordering::Relaxed),
            tracked_processes: self.tracked.load(Ordering::Relaxed),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            "openclaw_guard_events_total",
            "counter",
            "Events received from the kernel, by kind.",
        );
        self.events
            .render(&mut out, "openclaw_guard_events_total", &["kind"]);
        header(
            &mut out,
            "openclaw_guard_kernel_events_emitted_total",
            "counter",
            "Records the kernel programs wrote to the ring buffer.",
        );
        sample(
            &mut out,
            "openclaw_guard_kernel_events_emitted_total",
            &[],
            self.kernel_emitted.load(Ordering::Relaxed),
        );
        header(
            &mut out,
            "openclaw_guard_kernel_events_lost_total",
            "counter",
            "Records the kernel programs could not write (ring buffer full).",
        );
        sample(
            &mut out,
            "openclaw_guard_kernel_events_lost_total",
            &[],
            self.kernel_lost.load(Ordering::Relaxed),
        );
        header(
            &mut out,
            "openclaw_guard_alerts_total",
            "counter",
            "Policy alerts, by rule and action taken.",
        );
        self.alerts
            .render(&mut out, "openclaw_guard_alerts_total", &["rule", "action"]);

        let sinks = self.sinks.read().unwrap_or_else(|p| p.into_inner());
        let per_sink: [(&str, &str, &str, SinkField); 5] = [
            (
                "openclaw_guard_output_sent_total",
                "counter",
                "Records delivered, by output sink.",
                |c| &c.sent,
            ),
            (
                "openclaw_guard_output_failures_total",
                "counter",
                "Records an output gave up on after its retries, by sink.",
                |c| &c.failed,
            ),
            (
                "openclaw_guard_output_dropped_total",
                "counter",
                "Records dropped without delivery (queue full or shutdown), by sink.",
                |c| &c.dropped,
            ),
            (
                "openclaw_guard_output_retries_total",
                "counter",
                "Extra delivery attempts, by sink.",
                |c| &c.retries,
            ),
            (
                "openclaw_guard_output_queued",
                "gauge",
                "Records waiting in an output's queue or being delivered, by sink.",
                |c| &c.queued,
            ),
        ];
        for (name, kind, help, field) in per_sink {
            header(&mut out, name, kind, help);
            for (sink, c) in sinks.iter() {
                sample(
                    &mut out,
                    name,
                    &[("sink", sink)],
                    field(c).load(Ordering::Relaxed),
                );
            }
        }
        drop(sinks);

        header(
            &mut out,
            "openclaw_guard_tracked_processes",
            "gauge",
            "Processes currently tracked in gateway trees.",
        );
        sample(
            &mut out,
            "openclaw_guard_tracked_processes",
            &[],
            self.tracked.load(Ordering::Relaxed),
        );
        header(
            &mut out,
            "openclaw_guard_uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
        );
        let _ = writeln!(
            out,
            "openclaw_guard_uptime_seconds {:.3}",
            self.uptime().as_secs_f64()
        );
        out
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub uptime_seconds: u64,
    /// kind -> count.
    pub events: BTreeMap<String, u64>,
    /// "rule/action" -> count.
    pub alerts: BTreeMap<String, u64>,
    pub kernel_emitted: u64,
    pub kernel_lost: u64,
    pub tracked_processes: u64,
}

/// Picks one counter out of a sink's set.
type SinkField = fn(&SinkCounters) -> &AtomicU64;

/// A counter family keyed by label values.
///
/// Keyed by the label values joined with [`SEP`], so the one-label hot path (events by
/// kind) looks a series up by `&str` without allocating.
#[derive(Debug, Default)]
struct Labeled(RwLock<BTreeMap<String, Arc<AtomicU64>>>);

/// ASCII unit separator between label values in a key; never kept inside a value.
const SEP: char = '\u{1f}';

fn series_key<'a>(labels: &[&'a str]) -> std::borrow::Cow<'a, str> {
    match labels {
        [one] if !one.contains(SEP) => std::borrow::Cow::Borrowed(one),
        _ => {
            let parts: Vec<String> = labels.iter().map(|l| l.replace(SEP, " ")).collect();
            std::borrow::Cow::Owned(parts.join(&SEP.to_string()))
        }
    }
}

impl Labeled {
    fn inc(&self, labels: &[&str]) {
        self.add(labels, 1);
    }

    fn add(&self, labels: &[&str], n: u64) {
        let key = series_key(labels);
        // Hot path: a read lock and an atomic add once the series exists.
        {
            let map = self.0.read().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = map.get(key.as_ref()) {
                c.fetch_add(n, Ordering::Relaxed);
                return;
            }
        }
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        let key = if !map.contains_key(key.as_ref()) && map.len() >= MAX_SERIES {
            series_key(&vec![OTHER; labels.len()]).into_owned()
        } else {
            key.into_owned()
        };
        map.entry(key).or_default().fetch_add(n, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, label_names: &[&str]) {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        for (key, c) in map.iter() {
            let labels: Vec<(&str, &str)> =
                label_names.iter().copied().zip(key.split(SEP)).collect();
            sample(out, name, &labels, c.load(Ordering::Relaxed));
        }
    }

    fn flat(&self) -> BTreeMap<String, u64> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(k, c)| (k.replace(SEP, "/"), c.load(Ordering::Relaxed)))
            .collect()
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], v: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(val));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {v}");
}

/// Label values escape backslash, double quote and newline (exposition format).
fn escape_label(s: &str) -> String {
    let mut e = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => e.push_str("\\\\"),
            '"' => e.push_str("\\\""),
            '\n' => e.push_str("\\n"),
            c => e.push(c),
        }
    }
    e
}

/// The `/metrics` endpoint. Stops when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (loopback only: the endpoint has no authentication) and serves.
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Self, OutputError> {
        if !addr.ip().is_loopback() {
            return Err(OutputError::MetricsNotLoopback(addr));
        }
        let listener =
            TcpListener::bind(addr).map_err(|source| OutputError::MetricsBind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| OutputError::MetricsBind { addr, source })?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("metrics".to_owned())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.load(Ordering::Relaxed) {
                        break;
                    }
                    // A failed accept or a misbehaving client only loses that scrape.
                    if let Ok(conn) = conn {
                        let _ = serve(conn, &metrics);
                    }
                }
            })
            .map_err(|source| OutputError::Thread {
                sink: "metrics",
                source,
            })?;
        Ok(Self {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept; if that fails the thread is left to the process.
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn serve(mut conn: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 8192];
    let mut len = 0;
    // Read the request head only; a GET has no body we care about.
    while len < buf.len() {
        let n = conn.read(&mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics" | "/") => ("200 OK", metrics.render()),
        ("GET" | "HEAD", _) => ("404 Not Found", "not found; try /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "only GET\n".to_owned()),
    };
    let ctype = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        resp.extend_from_slice(body.as_bytes());
    }
    conn.write_all(&resp)?;
    conn.flush()
}
