//! journald: one native journal entry per alert, with the event's fields as journal
//! fields, so `journalctl -u openclaw-guard RULE=secrets` or `OCG_TOOL_CALL_ID=...`
//! finds them without parsing text.
//!
//! Fields: `MESSAGE` (the alert's line), `PRIORITY` (its syslog severity; all eight
//! levels), `SYSLOG_IDENTIFIER=openclaw-guard`, `RULE`, `ACTION`, and every scalar of
//! the event as `OCG_<NAME>`, nested names joined by `_` (`OCG_TGID`, `OCG_PATH`,
//! `OCG_TOOL_CALL_ID`, `OCG_DECISION_ERRNO`, ...). The native protocol is
//! `libsystemd`'s: large entries go as a sealed memfd, as journald expects.

use serde_json::Value;

use super::{
    merged, one_line, Deadline, Destination, JournaldConfig, Record, SinkCounters, SinkError,
};

/// Where journald listens for native entries (fixed by systemd).
pub const SOCKET: &str = "/run/systemd/journal/socket";

pub(crate) struct JournaldSink {
    /// The "cannot reach journald" message goes to stderr once, not per alert.
    reported: bool,
}

impl JournaldSink {
    pub(crate) fn new(_cfg: &JournaldConfig) -> Self {
        Self { reported: false }
    }
}

impl Destination for JournaldSink {
    fn deliver(
        &mut self,
        rec: &Record,
        _counters: &SinkCounters,
        _deadline: &Deadline,
    ) -> Result<(), SinkError> {
        let Some(alert) = &rec.alert else {
            return Ok(());
        };
        let event = merged(rec);
        let mut fields = vec![
            ("SYSLOG_IDENTIFIER".to_owned(), "openclaw-guard".to_owned()),
            ("RULE".to_owned(), alert.rule.clone()),
            ("ACTION".to_owned(), alert.action.clone()),
        ];
        flatten("OCG", &event, &mut fields);
        let priority = match alert.priority.syslog_severity() {
            0 => libsystemd::logging::Priority::Emergency,
            1 => libsystemd::logging::Priority::Alert,
            2 => libsystemd::logging::Priority::Critical,
            3 => libsystemd::logging::Priority::Error,
            4 => libsystemd::logging::Priority::Warning,
            5 => libsystemd::logging::Priority::Notice,
            6 => libsystemd::logging::Priority::Info,
            _ => libsystemd::logging::Priority::Debug,
        };
        match libsystemd::logging::journal_send(
            priority,
            &one_line(&alert.output),
            fields.into_iter(),
        ) {
            Ok(()) => {
                self.reported = false;
                Ok(())
            }
            Err(e) => {
                if !self.reported {
                    self.reported = true;
                    log::warn!(
                        "cannot send alerts to journald at {SOCKET}: {e}; they are counted \
                         as journald failures until it is reachable"
                    );
                }
                Err(SinkError::Other(e.to_string()))
            }
        }
    }
}

/// Scalars as `PREFIX_NAME` fields (journal field names are upper case letters,
/// digits and `_`); lists joined with `, `.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    super::for_each_leaf(prefix, "_", v, &mut |key, leaf| {
        let name: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let value = match leaf {
            Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
            scalar => text(scalar),
        };
        out.push((name, value));
    });
}
