//! syslog: one datagram per alert to the local syslog socket (`/dev/log`), which
//! journald, rsyslog and syslog-ng all serve. Facility authpriv: alerts name the
//! secrets an agent reached for, and distributions route authpriv to a root-only log.

use std::{
    io,
    os::unix::net::UnixDatagram,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use super::{
    hostname, one_line, Alert, Deadline, Destination, Record, SinkCounters, SinkError,
    SyslogConfig, SyslogFormat,
};

/// LOG_AUTHPRIV.
const FACILITY: u8 = 10;
const APP: &str = "openclaw-guard";
/// Bigger datagrams are refused by some daemons (rsyslog's default is 8 KiB).
const MAX_DATAGRAM: usize = 8192;

pub(crate) struct SyslogSink {
    path: PathBuf,
    format: SyslogFormat,
    hostname: String,
    pid: u32,
    sock: Option<UnixDatagram>,
    /// The "cannot reach syslog" message goes to stderr once, not per alert.
    reported: bool,
}

impl SyslogSink {
    pub(crate) fn new(cfg: &SyslogConfig) -> Self {
        Self {
            path: cfg.path.clone(),
            format: cfg.format,
            hostname: hostname(),
            pid: std::process::id(),
            sock: None,
            reported: false,
        }
    }

    fn connect(&mut self) -> io::Result<&UnixDatagram> {
        if self.sock.is_none() {
            let s = UnixDatagram::unbound()?;
            s.connect(&self.path)?;
            // A wedged syslog daemon must not hold the worker (and shutdown) forever.
            s.set_write_timeout(Some(Duration::from_secs(1)))?;
            self.sock = Some(s);
        }
        self.sock
            .as_ref()
            .ok_or_else(|| io::Error::other("not connected"))
    }

    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        let sock = self.connect()?;
        if let Err(e) = sock.send(msg) {
            // The daemon may have restarted: reconnect once and try again.
            self.sock = None;
            let sock = self.connect().map_err(|_| e)?;
            sock.send(msg)?;
        }
        Ok(())
    }
}

impl Destination for SyslogSink {
    fn deliver(
        &mut self,
        rec: &Record,
        _counters: &SinkCounters,
        _deadline: &Deadline,
    ) -> Result<(), SinkError> {
        let Some(alert) = &rec.alert else {
            return Ok(());
        };
        let msg = format_message(
            self.format,
            &self.hostname,
            self.pid,
            alert,
            rec.event.as_ref().unwrap_or(&serde_json::Value::Null),
            SystemTime::now(),
        );
        match self.send(msg.as_bytes()) {
            Ok(()) => {
                self.reported = false;
                Ok(())
            }
            Err(e) => {
                if !self.reported {
                    self.reported = true;
                    log::warn!(
                        "cannot send alerts to syslog at {}: {e}; \
                         they are counted as syslog failures until it is reachable \
                         (or turn outputs.syslog off)",
                        self.path.display()
                    );
                }
                Err(SinkError::Other(format!("{}: {e}", self.path.display())))
            }
        }
    }
}

/// The datagram for one alert.
pub fn format_message(
    format: SyslogFormat,
    host: &str,
    pid: u32,
    alert: &Alert,
    event: &Value,
    now: SystemTime,
) -> String {
    let pri = u16::from(FACILITY) * 8 + u16::from(alert.priority.syslog_severity());
    let ts = event_time(event).unwrap_or_else(|| {
        let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        jiff::Timestamp::new(
            i64::try_from(d.as_secs()).unwrap_or(0),
            i32::try_from(d.subsec_nanos()).unwrap_or(0),
        )
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    });
    let body = one_line(&format!(
        "{} rule={} action={}: {}",
        alert.priority.falco_name(),
        alert.rule,
        alert.action,
        alert.output
    ));
    let mut msg = match format {
        // glibc's local form: no host name (the daemon adds its own).
        SyslogFormat::Rfc3164 => format!(
            "<{pri}>{} {APP}[{pid}]: {body}",
            ts.strftime("%b %e %H:%M:%S")
        ),
        // TIME-SECFRAC is at most 6 digits in RFC 5424; no structured data.
        SyslogFormat::Rfc5424 => format!(
            "<{pri}>1 {} {} {APP} {pid} {} - {body}",
            ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"),
            header_field(host),
            header_field(&alert.rule),
        ),
    };
    truncate(&mut msg, MAX_DATAGRAM);
    msg
}

fn event_time(event: &Value) -> Option<jiff::Timestamp> {
    event.get("time")?.as_str()?.parse().ok()
}

/// RFC 5424 header fields are 1..=48 printable ASCII characters without spaces.
fn header_field(s: &str) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(48)
        .collect();
    if f.is_empty() {
        "-".to_owned()
    } else {
        f
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}
