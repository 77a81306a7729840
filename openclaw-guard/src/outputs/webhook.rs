//! HTTP webhook in Falco's JSON output shape, so a Falcosidekick instance accepts it
//! as is: `POST /` with `output`, `priority`, `rule`, `time`, `source`, `hostname`,
//! `tags` and `output_fields`. Alerts only.
//!
//! The client is `ureq`: blocking, small, no async runtime of its own, which fits a
//! worker thread whose only job is this one POST at a time. Each request has a
//! timeout; failures are retried a bounded number of times with a capped exponential
//! backoff, then counted.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{
    hostname, merged, ocsf, one_line, Alert, Deadline, Destination, OutputError, OutputFormat,
    Record, SinkCounters, SinkError, WebhookConfig,
};

pub const SOURCE: &str = "openclaw-guard";
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(crate) struct WebhookSink {
    poster: Poster,
    hostname: String,
    format: OutputFormat,
}

/// POSTs bodies to one URL with a timeout, bounded retries and a capped exponential
/// backoff; shared by the webhook and the OTLP output.
pub(crate) struct Poster {
    pub(crate) url: String,
    agent: ureq::Agent,
    max_retries: u32,
    backoff: Duration,
    content_type: &'static str,
}

/// Checks the URL up front so a typo is a start-up error, not a stream of failures.
pub fn validate_url(url: &str) -> Result<(), OutputError> {
    http_url(url, "Falcosidekick", "http://127.0.0.1:2801/")
        .map(drop)
        .map_err(|reason| OutputError::WebhookUrl {
            url: url.to_owned(),
            reason,
        })
}

/// An `http://host...` URL for a POSTing output (`to`: what listens there), or why
/// not. The client is built without TLS.
pub(crate) fn http_url(url: &str, to: &str, example: &str) -> Result<ureq::http::Uri, String> {
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "https is not built into this guard; point it at {to} over http \
                 (loopback or a local network) or put a TLS proxy beside it"
            ))
        }
        _ => return Err(format!("expected an http:// URL, e.g. {example}")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("no host".to_owned());
    }
    Ok(uri)
}

impl Poster {
    pub(crate) fn new(
        url: &str,
        timeout_ms: u64,
        max_retries: u32,
        backoff_ms: u64,
        content_type: &'static str,
    ) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(timeout_ms.max(1))))
            // Statuses are judged below (retry 5xx/429, give up on other 4xx).
            .http_status_as_error(false)
            // Records go where they are configured, not through an environment proxy
            // or a redirect chosen by the receiver.
            .proxy(None)
            .max_redirects(0)
            .user_agent(concat!("openclaw-guard/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            url: url.to_owned(),
            agent,
            max_retries,
            backoff: Duration::from_millis(backoff_ms),
            content_type,
        }
    }

    /// One attempt: Ok, or Err with whether it is worth retrying.
    fn post(&self, body: &[u8]) -> Result<(), (bool, String)> {
        let resp = self
            .agent
            .post(&self.url)
            .content_type(self.content_type)
            .send(body)
            .map_err(|e| (true, e.to_string()))?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(()),
            429 | 500..=599 => Err((true, format!("HTTP {status}"))),
            _ => Err((false, format!("HTTP {status} (not retried)"))),
        }
    }

    /// Sends `body`, retrying as configured; retries are counted in `counters`.
    pub(crate) fn send(
        &self,
        body: &[u8],
        counters: &SinkCounters,
        deadline: &Deadline,
    ) -> Result<(), SinkError> {
        let mut backoff = self.backoff;
        let mut last = String::new();
        for attempt in 0..=self.max_retries {
            if attempt > 0 {
                if !deadline.sleep(backoff) {
                    return Err(SinkError::Other(format!(
                        "{}: {last} (gave up: shutting down)",
                        self.url
                    )));
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                counters
                    .retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            match self.post(body) {
                Ok(()) => return Ok(()),
                Err((retry, e)) => {
                    last = e;
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(SinkError::Other(format!("{}: {last}", self.url)))
    }
}

impl WebhookSink {
    pub(crate) fn new(cfg: &WebhookConfig) -> Result<Self, OutputError> {
        validate_url(&cfg.url)?;
        Ok(Self {
            poster: Poster::new(
                &cfg.url,
                cfg.timeout_ms,
                cfg.max_retries,
                cfg.backoff_ms,
                "application/json",
            ),
            hostname: hostname(),
            format: cfg.format,
        })
    }
}

impl Destination for WebhookSink {
    fn deliver(
        &mut self,
        rec: &Record,
        counters: &SinkCounters,
        deadline: &Deadline,
    ) -> Result<(), SinkError> {
        let Some(alert) = &rec.alert else {
            return Ok(());
        };
        let body = match self.format {
            OutputFormat::Native => serde_json::to_vec(&payload(
                alert,
                rec.event.as_ref().unwrap_or(&serde_json::Value::Null),
                &self.hostname,
            )),
            OutputFormat::Ocsf => serde_json::to_vec(&ocsf::render(&merged(rec), &self.hostname)),
        }
        .map_err(|e| SinkError::Other(format!("cannot encode alert: {e}")))?;
        self.poster.send(&body, counters, deadline)
    }
}

/// The Falcosidekick payload for one alert.
pub fn payload(alert: &Alert, event: &Value, host: &str) -> Value {
    let mut fields = Map::new();
    flatten(event, &mut fields);
    fields.insert("alert.action".to_owned(), Value::from(alert.action.clone()));
    serde_json::json!({
        "output": one_line(&alert.output),
        "priority": alert.priority.falco_name(),
        "rule": alert.rule,
        "time": time_of(event),
        "source": SOURCE,
        "hostname": host,
        "tags": alert.tags,
        "output_fields": fields,
    })
}

/// The event's own time, normalised to RFC 3339 with nanoseconds; now if it has none.
fn time_of(event: &Value) -> String {
    let ts = event
        .get("time")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .unwrap_or_else(jiff::Timestamp::now);
    format!("{ts:.9}")
}

/// Nested objects become dotted keys (`proc.pid`); lists become one string
/// (`lineage` -> "node(100), sh(101)"), because receivers expect flat scalars.
fn flatten(v: &Value, out: &mut Map<String, Value>) {
    super::for_each_leaf("", ".", v, &mut |key, leaf| {
        // A bare scalar event has no name of its own.
        let key = if key.is_empty() && !leaf.is_array() {
            "event"
        } else {
            key
        };
        let value = match leaf {
            Value::Array(items) => {
                Value::from(items.iter().map(list_item).collect::<Vec<_>>().join(", "))
            }
            scalar => scalar.clone(),
        };
        out.insert(key.to_owned(), value);
    });
}

fn list_item(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) => match (m.get("comm").and_then(Value::as_str), m.get("pid")) {
            (Some(comm), Some(pid)) => format!("{comm}({pid})"),
            _ => v.to_string(),
        },
        other => other.to_string(),
    }
}
