//! Reading the record back: [`Reader`] walks the segments in seq order, [`Filter`]
//! selects events, and [`timeline_line`] / [`json_line`] render them.
//!
//! This is also the seam for `policy replay`: it will open a [`Reader`], iterate
//! [`Reader::events`] with a time [`Filter`], and feed each [`RecordedEvent::event`]
//! to the policy engine, comparing the verdict with the event's recorded `decision`.

use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};

use super::{
    segment::{
        decode_frame, hex, list_segments, Hash, SegmentFile, SegmentHeader, RECORD_DIR,
        SEGMENT_HEADER_LEN,
    },
    RecorderError,
};

/// One event read back from the record.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub seq: u64,
    pub hash: Hash,
    pub event: Value,
}

/// Read-only access to a record. Needs no lock: it can run while the daemon writes.
#[derive(Debug)]
pub struct Reader {
    segments: Vec<SegmentFile>,
}

/// A record problem met while reading: the reader skips the rest of that segment and
/// goes on with the next one (`events verify` is the tool that judges the record).
#[derive(Debug, Clone)]
pub struct ReadProblem {
    pub segment: PathBuf,
    pub offset: u64,
    pub reason: String,
}

impl ReadProblem {
    /// Tells a reader of the record (`events`, `policy replay`) what was skipped.
    pub fn warn(&self) {
        eprintln!(
            "warning: skipped unreadable part of {} from byte {}: {}; run `openclaw-guard events verify`",
            self.segment.display(),
            self.offset,
            self.reason
        );
    }
}

impl Reader {
    /// Opens the record under `<state_dir>/record`.
    pub fn open(state_dir: &Path) -> Result<Self, RecorderError> {
        let dir = state_dir.join(RECORD_DIR);
        let segments = list_segments(&dir).map_err(|source| RecorderError::Io {
            what: format!("failed to list the record in {}", dir.display()),
            source,
        })?;
        Ok(Self { segments })
    }

    /// Calls `visit` for every event in seq order, and `problem` for every piece of
    /// the record that could not be read. `since` lets whole segments be skipped
    /// without reading them when a later segment was already created before it.
    pub fn events(
        &self,
        since: Option<Timestamp>,
        mut visit: impl FnMut(RecordedEvent),
        mut problem: impl FnMut(ReadProblem),
    ) -> Result<(), RecorderError> {
        for (i, seg) in self.segments.iter().enumerate() {
            if let (Some(since), Some(next)) = (since, self.segments.get(i + 1)) {
                // Events are appended within moments of their kernel timestamp; a
                // segment whose successor was created well before `since` cannot hold
                // anything in range. The slack covers event-to-append delay and clock
                // steps.
                if let Some(next_created) = created_of(&next.path) {
                    let slack = SignedDuration::from_mins(10);
                    if next_created.checked_add(slack).is_ok_and(|t| t < since) {
                        continue;
                    }
                }
            }
            let buf = match std::fs::read(&seg.path) {
                Ok(b) => b,
                // Deleted by retention between listing and reading: nothing to show.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(RecorderError::Io {
                        what: format!("failed to read {}", seg.path.display()),
                        source,
                    })
                }
            };
            if let Err(e) = SegmentHeader::decode(&buf) {
                problem(ReadProblem {
                    segment: seg.path.clone(),
                    offset: 0,
                    reason: format!("segment header: {e}"),
                });
                continue;
            }
            let mut at = SEGMENT_HEADER_LEN;
            while at < buf.len() {
                let frame = match decode_frame(&buf[at..]) {
                    Ok(f) => f,
                    Err(e) => {
                        let last = i + 1 == self.segments.len();
                        // An incomplete last frame of the last segment is an append
                        // in flight (or a tail the next start-up cuts): not a problem.
                        if !(last && matches!(e, super::segment::DecodeError::Truncated { .. })) {
                            problem(ReadProblem {
                                segment: seg.path.clone(),
                                offset: at as u64,
                                reason: e.to_string(),
                            });
                        }
                        break;
                    }
                };
                at += frame.encoded_len();
                match serde_json::from_slice(frame.payload) {
                    Ok(event) => visit(RecordedEvent {
                        seq: frame.seq,
                        hash: frame.hash,
                        event,
                    }),
                    Err(e) => problem(ReadProblem {
                        segment: seg.path.clone(),
                        offset: (at - frame.encoded_len()) as u64,
                        reason: format!("record {} is not JSON: {e}", frame.seq),
                    }),
                }
            }
        }
        Ok(())
    }
}

fn created_of(path: &Path) -> Option<Timestamp> {
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    let mut f = std::fs::File::open(path).ok()?;
    std::io::Read::read_exact(&mut f, &mut head).ok()?;
    let h = SegmentHeader::decode(&head).ok()?;
    Timestamp::from_nanosecond(i128::from(h.created_unix_ns)).ok()
}

/// What `events` selects. Every set field must match (AND); an empty filter selects
/// everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// The event's `pid` or `tgid` is one of these.
    pub pids: Vec<u64>,
    /// The process or any of its ancestors (`lineage`) is this pid: the whole tree
    /// below it.
    pub tree: Option<u64>,
    /// `kind` is one of these.
    pub kinds: Vec<String>,
    /// `decision.rule` equals this.
    pub rule: Option<String>,
    /// `decision.action` equals this (`alert`, `deny`, `kill`).
    pub decision: Option<String>,
    /// `tool_call.session_key` or `tool_call.session_id`.
    pub session: Option<String>,
    /// `tool_call.run_id`.
    pub run: Option<String>,
    /// `tool_call.id`.
    pub tool_call: Option<String>,
}

fn field_u64(ev: &Value, key: &str) -> Option<u64> {
    ev.get(key).and_then(Value::as_u64)
}

/// The event's `time` field, parsed (RFC 3339, any offset).
pub fn event_time(ev: &Value) -> Option<Timestamp> {
    ev.get("time")?.as_str()?.parse().ok()
}

impl Filter {
    pub fn matches(&self, ev: &Value) -> bool {
        if self.since.is_some() || self.until.is_some() {
            // An event without a readable time cannot be shown to be in range.
            let Some(t) = event_time(ev) else {
                return false;
            };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u) {
                return false;
            }
        }
        if !self.pids.is_empty() {
            let pid = field_u64(ev, "pid");
            let tgid = field_u64(ev, "tgid");
            if !self
                .pids
                .iter()
                .any(|p| pid == Some(*p) || tgid == Some(*p))
            {
                return false;
            }
        }
        if let Some(root) = self.tree {
            let own = field_u64(ev, "pid") == Some(root) || field_u64(ev, "tgid") == Some(root);
            let below = ev
                .get("lineage")
                .and_then(Value::as_array)
                .is_some_and(|l| l.iter().any(|a| field_u64(a, "pid") == Some(root)));
            if !own && !below {
                return false;
            }
        }
        if !self.kinds.is_empty() {
            let kind = ev.get("kind").and_then(Value::as_str);
            if !self.kinds.iter().any(|k| kind == Some(k.as_str())) {
                return false;
            }
        }
        let decision = ev.get("decision");
        let dfield = |k: &str| decision.and_then(|d| d.get(k)).and_then(Value::as_str);
        if self
            .rule
            .as_deref()
            .is_some_and(|r| dfield("rule") != Some(r))
        {
            return false;
        }
        if self
            .decision
            .as_deref()
            .is_some_and(|a| dfield("action") != Some(a))
        {
            return false;
        }
        let call = ev.get("tool_call");
        let cfield = |k: &str| call.and_then(|c| c.get(k)).and_then(Value::as_str);
        if let Some(s) = self.session.as_deref() {
            if cfield("session_key") != Some(s) && cfield("session_id") != Some(s) {
                return false;
            }
        }
        if self
            .run
            .as_deref()
            .is_some_and(|r| cfield("run_id") != Some(r))
        {
            return false;
        }
        if self
            .tool_call
            .as_deref()
            .is_some_and(|t| cfield("id") != Some(t))
        {
            return false;
        }
        true
    }
}

/// Parses `--since`/`--until`: an RFC 3339 time (`2026-05-01T12:00:00Z`,
/// `2026-05-01T14:00:00+02:00`) or a duration back from `now` (`90s`, `15m`, `1h`,
/// `2h30m`, `1 day`).
pub fn parse_time_arg(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let span: jiff::Span = s.parse().map_err(|_| {
        format!(
            "`{s}` is neither an RFC 3339 time (2026-05-01T12:00:00Z) nor a duration (1h, 30m, 2d)"
        )
    })?;
    // Days are taken as 24 hours: a "since 2d" question is about elapsed time.
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| format!("`{s}`: {e}"))?;
    now.checked_sub(d.abs()).map_err(|e| format!("`{s}`: {e}"))
}

/// Keys shown in fixed places of a timeline line, not in its trailing details.
const SHOWN: &[&str] = &[
    "time",
    "kind",
    "pid",
    "tgid",
    "ppid",
    "root",
    "comm",
    "lineage",
    "decision",
    "tool_call",
];

fn compact(v: &Value) -> String {
    let s = match v {
        // Control characters escaped: a newline in an argv or a reported command must
        // not start a line of its own that reads like another event.
        Value::String(s) => s.escape_debug().to_string(),
        other => other.to_string(),
    };
    // Keep a line a line: long argv or paths are cut, the JSON output has them whole.
    if s.chars().count() > 160 {
        let cut: String = s.chars().take(157).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// One human-readable timeline line: time, seq, then `comm[pid] kind details`
/// indented two spaces per lineage level below the gateway.
pub fn timeline_line(rec: &RecordedEvent) -> String {
    let ev = &rec.event;
    let time = ev.get("time").and_then(Value::as_str).unwrap_or("-");
    let depth = ev
        .get("lineage")
        .and_then(Value::as_array)
        .map_or(0, |l| l.len().saturating_sub(1));
    let comm = ev.get("comm").and_then(Value::as_str).unwrap_or("?");
    let pid = field_u64(ev, "pid").map_or_else(|| "?".to_owned(), |p| p.to_string());
    let kind = ev.get("kind").and_then(Value::as_str).unwrap_or("?");
    let mut line = format!(
        "{time} {:>8}  {}{comm}[{pid}] {kind}",
        rec.seq,
        "  ".repeat(depth.min(32))
    );
    if let Some(d) = ev.get("decision").and_then(Value::as_object) {
        let action = d.get("action").and_then(Value::as_str).unwrap_or("?");
        let rule = d.get("rule").and_then(Value::as_str).unwrap_or("?");
        line.push_str(&format!(" {} rule={rule}", action.to_uppercase()));
        if let Some(errno) = d.get("errno") {
            line.push_str(&format!(" errno={errno}"));
        }
    }
    match ev.get("tool_call") {
        Some(c) if c.get("id").is_some() => {
            line.push_str(&format!(" call={}", compact(&c["id"])));
        }
        Some(c) if c.get("unattributed").is_some() => {
            line.push_str(&format!(
                " call=unattributed({})",
                compact(&c["unattributed"])
            ));
        }
        _ => {}
    }
    if let Some(obj) = ev.as_object() {
        for (k, v) in obj.iter().filter(|(k, _)| !SHOWN.contains(&k.as_str())) {
            line.push_str(&format!(" {k}={}", compact(v)));
        }
    }
    line
}

/// Events grouped under their tool calls, calls in the order they started (by first
/// record), each headed by its tool, ids and command text; events of no call last.
#[derive(Default)]
pub struct CallGroups {
    /// Each call (its `tool_call` object) with its events, in the order calls started.
    calls: Vec<(Value, Vec<RecordedEvent>)>,
    /// Where each call is in `calls`, by its tag (which tells two calls of one id
    /// apart: ids repeat across runs).
    index: std::collections::HashMap<String, usize>,
    none: Vec<RecordedEvent>,
}

impl CallGroups {
    pub fn add(&mut self, rec: RecordedEvent) {
        let Some(call) = rec.event.get("tool_call").filter(|c| c.get("id").is_some()) else {
            self.none.push(rec);
            return;
        };
        let key = call
            .get("tag")
            .or_else(|| call.get("id"))
            .map(Value::to_string)
            .unwrap_or_default();
        let at = match self.index.get(&key) {
            Some(&at) => at,
            None => {
                self.index.insert(key, self.calls.len());
                self.calls.push((call.clone(), Vec::new()));
                self.calls.len() - 1
            }
        };
        self.calls[at].1.push(rec);
    }

    pub fn lines(self) -> Vec<String> {
        let mut out = Vec::new();
        for (call, events) in &self.calls {
            let s = |k: &str| call.get(k).and_then(Value::as_str).unwrap_or("-");
            let what = call
                .get("command")
                .or_else(|| call.get("path"))
                .or_else(|| call.get("url"))
                .map(compact)
                .unwrap_or_default();
            out.push(format!(
                "tool call {} ({}) session={} run={}: {what}",
                compact(&Value::from(s("id"))),
                compact(&Value::from(s("tool"))),
                compact(&Value::from(s("session_key"))),
                compact(&Value::from(s("run_id"))),
            ));
            out.extend(events.iter().map(|r| format!("  {}", timeline_line(r))));
        }
        if !self.none.is_empty() {
            out.push("no tool call:".to_owned());
            out.extend(self.none.iter().map(|r| format!("  {}", timeline_line(r))));
        }
        out
    }
}

/// One JSON line for export: the event as recorded, plus `record_seq` and
/// `record_hash` (hex) so a shipped copy can be checked against the record.
pub fn json_line(rec: &RecordedEvent) -> String {
    json_value(rec).to_string()
}

/// The object [`json_line`] prints.
pub fn json_value(rec: &RecordedEvent) -> Value {
    let mut obj = match &rec.event {
        Value::Object(m) => m.clone(),
        // Only objects are recorded by the daemon; anything else is wrapped whole.
        other => {
            let mut m = Map::new();
            m.insert("event".to_owned(), other.clone());
            m
        }
    };
    obj.insert("record_seq".to_owned(), Value::from(rec.seq));
    obj.insert("record_hash".to_owned(), Value::from(hex(&rec.hash)));
    Value::Object(obj)
}
