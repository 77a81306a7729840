//! Tool-call attribution: which session, run and tool call of the agent an event
//! belongs to.
//!
//! The source is OpenClaw itself: the guard's plugin (`deploy/openclaw-plugin/`) runs
//! in the gateway, and its `before_tool_call` hook (awaited before the tool runs)
//! reports each call here over a unix socket. The guard answers with a tag; for `exec`
//! the plugin puts it into the command's environment (`OCG_TOOL_CALL`). The kernel's
//! tree stays the authority on which processes belong to the call: the tag is read
//! once, from the shell the gateway (or its spawn broker) starts for the call (held at
//! its first exec while the `env` rule blocks, so the read cannot race its exit), and
//! every process below it inherits the call in the process cache. A child cannot
//! re-tag itself: descendants' environments are never read.
//!
//! Reports are untrusted input: only a tracked gateway process may make them (peer
//! credentials), one line of at most [`LINE_MAX`] bytes, strict JSON with bounded,
//! printable ids. Anything else is refused, counted by reason, and changes nothing.
//! Accepted reports are recorded as `tool_call` records, which also attribute the
//! gateway's in-process tools (`read`, `write`, `web_fetch`): those start no process.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::events::{Attribution, ToolCall};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::mpsc,
};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/openclaw-guard/attribution.sock";
/// The environment variable the plugin sets on an `exec` call's command.
pub const ENV_TAG: &str = "OCG_TOOL_CALL";
/// One report at most (a command text is cut at 4 KiB by the plugin).
pub const LINE_MAX: usize = 16 * 1024;
/// Ids (tool call, run, session, agent) at most.
const ID_MAX: usize = 256;
/// Command, path, URL and error texts at most (characters).
const TEXT_MAX: usize = 4096;
/// Calls remembered (the oldest are forgotten: their processes keep what they got).
const CALLS_KEPT: usize = 16_384;
/// Connections served at once; more are refused (a flood cannot pile up tasks).
const CONNS_MAX: usize = 64;
/// How long a refused peer's connection is read away before it is closed.
const REFUSED_LINGER: Duration = Duration::from_millis(200);
/// A connection's time to send a line: a peer that stalls is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reports refused, by reason, and what was accepted.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    pub starts: u64,
    pub ends: u64,
    /// Not from a tracked gateway process.
    pub rejected_peer: u64,
    /// A line longer than [`LINE_MAX`], or no line in time.
    pub rejected_oversize: u64,
    /// Not the report schema (bad JSON, unknown fields, wrong types, bad ids).
    pub rejected_malformed: u64,
    /// Connections refused while [`CONNS_MAX`] were served.
    pub rejected_busy: u64,
    /// `tool_call` records the pipeline could not take (full queue): counted, the
    /// attribution of processes is not affected.
    pub records_dropped: u64,
    /// Execs whose tag no accepted report gave (forged, or older than the record).
    pub unknown_tags: u64,
    /// Calls of an earlier daemon read back from the record at start-up.
    pub restored: u64,
}

/// An in-process call's window: what it targets, from its start to its end (boot
/// clock, ns: the kernel's event time).
struct Window {
    call: Arc<ToolCall>,
    start_ns: u64,
    end_ns: Option<u64>,
}

/// Windows kept at most (a gateway whose calls never end cannot grow the list).
const WINDOWS_KEPT: usize = 1024;
/// How long an ended window still takes events: the kernel's events of the call may
/// reach the daemon after the plugin's end report (they are judged by their own time).
const WINDOW_LINGER_NS: u64 = 10_000_000_000;
/// Events this long after the end report still count (the report follows the tool's
/// last act by the plugin's own latency).
const WINDOW_SLACK_NS: u64 = 100_000_000;

#[derive(Default)]
struct Inner {
    calls: HashMap<String, Arc<ToolCall>>,
    order: VecDeque<String>,
    windows: VecDeque<Window>,
    gateways: HashSet<u32>,
    counters: Counters,
    next: u64,
}

impl Inner {
    /// Keeps a call under its tag; beyond [`CALLS_KEPT`] the oldest are forgotten.
    fn remember(&mut self, call: Arc<ToolCall>) {
        let tag = call.tag.clone();
        if self.calls.insert(tag.clone(), call).is_none() {
            self.order.push_back(tag);
        }
        while self.order.len() > CALLS_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.calls.remove(&old);
            }
        }
    }
}

/// The calls reported so far and the gateways allowed to report; shared by the
/// listener and the pipeline.
pub struct Registry {
    inner: Mutex<Inner>,
    /// Makes tags of this daemon unlike an earlier one's.
    epoch: u64,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        let epoch = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .ok()
            .and_then(|u| u64::from_str_radix(&u.replace('-', "")[..16], 16).ok())
            .unwrap_or_else(|| u64::from(std::process::id()) << 32);
        Self {
            inner: Mutex::new(Inner::default()),
            epoch,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere does not make the map inconsistent: each change is one call.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A gateway process that may report.
    pub fn add_gateway(&self, pid: u32) {
        self.lock().gateways.insert(pid);
    }

    pub fn is_gateway(&self, pid: u32) -> bool {
        self.lock().gateways.contains(&pid)
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters
    }

    /// Takes back the calls an earlier daemon recorded (`tool_call` start records
    /// since `since`): a restart (an upgrade) then keeps the calls in flight, whose
    /// shells still carry those tags. Returns how many.
    pub fn restore(&self, state_dir: &Path, since: jiff::Timestamp) -> usize {
        let Ok(reader) = crate::recorder::Reader::open(state_dir) else {
            return 0;
        };
        let mut found = Vec::new();
        let _ = reader.events(
            Some(since),
            |rec| {
                let ev = rec.event;
                if ev.get("kind").and_then(Value::as_str) == Some("tool_call")
                    && ev.get("phase").and_then(Value::as_str) == Some("start")
                {
                    if let Some(call) = ev
                        .get("tool_call")
                        .and_then(|c| serde_json::from_value::<ToolCall>(c.clone()).ok())
                        .filter(|c| !c.tag.is_empty())
                    {
                        found.push(call);
                    }
                }
            },
            |_| {},
        );
        let n = found.len();
        let mut inner = self.lock();
        for call in found {
            inner.remember(Arc::new(call));
        }
        inner.counters.restored += n as u64;
        n
    }

    /// The call a tag names (an exec's environment): `UNKNOWN_TAG` if none does.
    pub fn resolve(&self, tag: &str) -> Attribution {
        let mut inner = self.lock();
        match inner.calls.get(tag) {
            Some(c) => Attribution::Call(c.clone()),
            None => {
                inner.counters.unknown_tags += 1;
                Attribution::UNKNOWN_TAG
            }
        }
    }

    /// Takes one report line from `peer`; returns the reply and, when accepted, the
    /// record for the pipeline.
    pub fn take(&self, peer: Option<u32>, line: &[u8]) -> (Value, Option<ToolCallRecord>) {
        let mut inner = self.lock();
        let Some(gateway) = peer.filter(|p| inner.gateways.contains(p)) else {
            inner.counters.rejected_peer += 1;
            return (refusal(NOT_A_GATEWAY), None);
        };
        let report = match parse(line) {
            Ok(r) => r,
            Err(e) => {
                inner.counters.rejected_malformed += 1;
                return (refusal(&e), None);
            }
        };
        let time = jiff::Timestamp::now().to_string();
        let Report {
            kind,
            duration_ms,
            w: report,
        } = report;
        match kind {
            ReportKind::Start => {
                inner.next += 1;
                let tag = format!("{:016x}-{}", self.epoch, inner.next);
                let params = report.params.unwrap_or_default();
                let call = Arc::new(ToolCall {
                    id: report.tool_call_id,
                    run_id: report.run_id,
                    session_key: report.session_key,
                    session_id: report.session_id,
                    agent_id: report.agent_id,
                    tool: report.tool_name.unwrap_or_default(),
                    command: params.command,
                    path: params.path.or(params.file_path),
                    url: params.url,
                    tag: tag.clone(),
                    gateway,
                });
                inner.remember(call.clone());
                inner.counters.starts += 1;
                if call.tool != "exec" && (call.path.is_some() || call.url.is_some()) {
                    let now = crate::secret_env::boot_ns();
                    inner
                        .windows
                        .retain(|w| w.end_ns.is_none_or(|e| e + WINDOW_LINGER_NS > now));
                    if inner.windows.len() >= WINDOWS_KEPT {
                        inner.windows.pop_front();
                    }
                    inner.windows.push_back(Window {
                        call: call.clone(),
                        start_ns: now,
                        end_ns: None,
                    });
                }
                let record = ToolCallRecord {
                    time,
                    kind: "tool_call",
                    phase: "start",
                    tgid: gateway,
                    tool_call: CallOfRecord::Known(call),
                    pty: params.pty,
                    duration_ms: None,
                    error: None,
                };
                (serde_json::json!({ "tag": tag }), Some(record))
            }
            ReportKind::End => {
                inner.counters.ends += 1;
                let now = crate::secret_env::boot_ns();
                if let Some(w) = inner.windows.iter_mut().rev().find(|w| {
                    w.end_ns.is_none()
                        && w.call.id == report.tool_call_id
                        && w.call.run_id == report.run_id
                        && w.call.gateway == gateway
                }) {
                    w.end_ns = Some(now);
                }
                // The call as its start named it (the end carries ids only).
                let started = inner.order.iter().rev().find_map(|t| {
                    inner.calls.get(t).filter(|c| {
                        c.id == report.tool_call_id
                            && c.run_id == report.run_id
                            && c.gateway == gateway
                    })
                });
                let call = started.map_or_else(
                    || CallOfRecord::Unstarted {
                        id: report.tool_call_id.clone(),
                        run_id: report.run_id.clone(),
                        tool: report.tool_name.clone(),
                    },
                    |c| CallOfRecord::Known(c.clone()),
                );
                let record = ToolCallRecord {
                    time,
                    kind: "tool_call",
                    phase: "end",
                    tgid: gateway,
                    tool_call: call,
                    pty: None,
                    duration_ms,
                    error: report.error,
                };
                (serde_json::json!({ "ok": true }), Some(record))
            }
        }
    }

    /// The in-process tool call a gateway's own file open or connect served: the one
    /// call running at the event's time whose path (or URL host) is the event's.
    pub fn in_process(&self, ev: &crate::events::Event) -> Option<Attribution> {
        use crate::events::Payload;
        let (path, host) = match &ev.payload {
            Payload::FileOpen(f) => (Some(f.path.as_str()), None),
            Payload::Net(n) => (None, n.dest_name.as_deref()),
            _ => return None,
        };
        let inner = self.lock();
        let mut found: Option<(&Arc<ToolCall>, &'static str)> = None;
        for w in inner.windows.iter().filter(|w| {
            w.call.gateway == ev.tgid
                && w.start_ns <= ev.ktime_ns
                && w.end_ns.is_none_or(|e| ev.ktime_ns <= e + WINDOW_SLACK_NS)
        }) {
            let via = match (path, host) {
                (Some(p), _) if w.call.path.as_deref().is_some_and(|t| same_path(p, t)) => "path",
                (_, Some(h)) if w.call.url.as_deref().and_then(url_host).as_deref() == Some(h) => {
                    "host"
                }
                _ => continue,
            };
            match found {
                Some((c, _)) if c.tag != w.call.tag => return None,
                _ => found = Some((&w.call, via)),
            }
        }
        found.map(|(call, via)| Attribution::InProcess {
            call: call.clone(),
            via,
        })
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.lock().counters);
    }
}

const NOT_A_GATEWAY: &str = "not a tracked gateway";

fn refusal(why: &str) -> Value {
    serde_json::json!({ "error": why })
}

#[derive(Debug, PartialEq, Eq)]
enum ReportKind {
    Start,
    End,
}

/// A report, as the plugin sends it (`deploy/openclaw-plugin/index.js`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Wire {
    v: u32,
    #[serde(rename = "type")]
    kind: String,
    tool_call_id: String,
    run_id: Option<String>,
    session_key: Option<String>,
    session_id: Option<String>,
    agent_id: Option<String>,
    tool_name: Option<String>,
    params: Option<Params>,
    duration_ms: Option<f64>,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    command: Option<String>,
    path: Option<String>,
    file_path: Option<String>,
    url: Option<String>,
    workdir: Option<String>,
    pty: Option<bool>,
}

/// A report that passed [`parse`]: its wire form, with the kind and duration read.
#[derive(Debug)]
struct Report {
    kind: ReportKind,
    duration_ms: Option<u64>,
    w: Wire,
}

/// Ids are printable, without spaces, and bounded: they are filter keys and appear
/// in one-line alerts.
fn check_id(field: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > ID_MAX {
        return Err(format!("{field}: empty or longer than {ID_MAX} bytes"));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{field}: control or space characters"));
    }
    Ok(())
}

fn check_text(field: &str, s: &str) -> Result<(), String> {
    if s.chars().count() > TEXT_MAX {
        return Err(format!("{field}: longer than {TEXT_MAX} characters"));
    }
    Ok(())
}

fn parse(line: &[u8]) -> Result<Report, String> {
    let w: Wire = serde_json::from_slice(line).map_err(|e| format!("not a report: {e}"))?;
    if w.v != 1 {
        return Err(format!("v: version {} is not 1", w.v));
    }
    let kind = match w.kind.as_str() {
        "start" => ReportKind::Start,
        "end" => ReportKind::End,
        other => return Err(format!("type: {other:?} is neither start nor end")),
    };
    check_id("toolCallId", &w.tool_call_id)?;
    for (field, v) in [
        ("runId", &w.run_id),
        ("sessionKey", &w.session_key),
        ("sessionId", &w.session_id),
        ("agentId", &w.agent_id),
        ("toolName", &w.tool_name),
    ] {
        if let Some(v) = v {
            check_id(field, v)?;
        }
    }
    if kind == ReportKind::Start && w.tool_name.is_none() {
        return Err("toolName: missing from a start".into());
    }
    if let Some(p) = &w.params {
        for (field, v) in [
            ("params.command", &p.command),
            ("params.path", &p.path),
            ("params.file_path", &p.file_path),
            ("params.url", &p.url),
            ("params.workdir", &p.workdir),
        ] {
            if let Some(v) = v {
                check_text(field, v)?;
            }
        }
    }
    if let Some(e) = &w.error {
        check_text("error", e)?;
    }
    let duration_ms = match w.duration_ms {
        None => None,
        Some(d) if d.is_finite() && (0.0..1e12).contains(&d) => Some(d as u64),
        Some(d) => return Err(format!("durationMs: {d} out of range")),
    };
    Ok(Report {
        kind,
        duration_ms,
        w,
    })
}

/// Whether the kernel's (absolute) `path` is the tool's `target`: the same path, or,
/// for a target relative to the agent's workspace (not known here), its tail.
fn same_path(path: &str, target: &str) -> bool {
    let target = target.trim_start_matches("./");
    if target.is_empty() || target.split('/').any(|c| c == "..") {
        return false;
    }
    if target.starts_with('/') {
        return path == target;
    }
    path.strip_suffix(target)
        .is_some_and(|head| head.ends_with('/'))
}

/// `https://host:port/...` -> `host` (lower case, no brackets).
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// The tag in a process's environment (`/proc/PID/environ`), if any.
pub fn read_tag(pid: u32) -> std::io::Result<Option<String>> {
    Ok(crate::kernel::procfs::read_environ(pid)?.remove(ENV_TAG))
}

/// Binds the socket: its directory is made (root's, 0755), a stale socket replaced,
/// and the socket itself open to every local user (the gateway is not root); the peer
/// check, not the file mode, decides who may report.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use anyhow::Context as _;
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("opening {} to the gateway's user", path.display()))?;
    Ok(listener)
}

/// Serves reports until the daemon stops; accepted ones' records go to `records`.
pub async fn serve(
    listener: UnixListener,
    registry: Arc<Registry>,
    records: mpsc::Sender<ToolCallRecord>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNS_MAX));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of fds and the like: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Anyone but a gateway is turned away at once: only a gateway may hold one of
        // the slots, so idle connections from elsewhere (a tool command's) cannot
        // crowd its reports out.
        let peer = stream
            .peer_cred()
            .ok()
            .and_then(|c| c.pid())
            .and_then(|p| u32::try_from(p).ok());
        if !peer.is_some_and(|p| registry.is_gateway(p)) {
            registry.count(|c| c.rejected_peer += 1);
            let _ = stream.try_write(format!("{}\n", refusal(NOT_A_GATEWAY)).as_bytes());
            // What it sends is read away for a moment, unparsed, so it can still read
            // the refusal (a close with unread data would reset the connection).
            tokio::spawn(async move {
                let mut sink = tokio::io::sink();
                let mut limited = stream.take(LINE_MAX as u64);
                let _ =
                    tokio::time::timeout(REFUSED_LINGER, tokio::io::copy(&mut limited, &mut sink))
                        .await;
            });
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            registry.count(|c| c.rejected_busy += 1);
            continue;
        };
        let registry = registry.clone();
        let records = records.clone();
        tokio::spawn(async move {
            connection(stream, peer, &registry, &records).await;
            drop(permit);
        });
    }
}

async fn connection(
    stream: UnixStream,
    peer: Option<u32>,
    registry: &Registry,
    records: &mpsc::Sender<ToolCallRecord>,
) {
    let (read, mut write) = stream.into_split();
    // One byte over the limit tells an oversized line from one that fits.
    let mut reader = BufReader::new(read.take(LINE_MAX as u64 + 1));
    let mut line = Vec::new();
    loop {
        line.clear();
        let got = tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
        match got {
            Ok(Ok(0)) => return,
            Ok(Ok(_)) if line.last() == Some(&b'\n') => {}
            Ok(Ok(_)) | Err(_) => {
                // Cut off (too long, or the limit reached mid-line), or stalled.
                if !line.is_empty() {
                    registry.count(|c| c.rejected_oversize += 1);
                    let reply = format!("{}\n", refusal("report too long or incomplete"));
                    let _ = write.write_all(reply.as_bytes()).await;
                }
                return;
            }
            Ok(Err(_)) => return,
        }
        let (reply, record) = registry.take(peer, &line);
        if let Some(record) = record {
            if records.try_send(record).is_err() {
                registry.count(|c| c.records_dropped += 1);
            }
        }
        let refused = reply.get("error").is_some();
        if write
            .write_all(format!("{reply}\n").as_bytes())
            .await
            .is_err()
            || refused
        {
            return;
        }
        // The limit counts the whole connection: renew it for the next line.
        reader.get_mut().set_limit(LINE_MAX as u64 + 1);
    }
}

/// The daemon's socket argument (`None`: attribution off).
#[derive(Clone, Debug)]
pub struct SocketArg(pub Option<PathBuf>);

/// Parses `--attribution-socket`: an absolute path, or `none`.
pub fn socket_arg(s: &str) -> Result<SocketArg, String> {
    if s == "none" {
        Ok(SocketArg(None))
    } else if s.starts_with('/') {
        Ok(SocketArg(Some(PathBuf::from(s))))
    } else {
        Err(format!("{s:?}: an absolute path, or `none`"))
    }
}

/// The plugin's files (`deploy/openclaw-plugin/`), carried by the binary so that a
/// host with only the daemon can install it.
pub const PLUGIN_FILES: &[(&str, &str)] = &[
    (
        "package.json",
        include_str!("../../deploy/openclaw-plugin/package.json"),
    ),
    (
        "openclaw.plugin.json",
        include_str!("../../deploy/openclaw-plugin/openclaw.plugin.json"),
    ),
    (
        "index.js",
        include_str!("../../deploy/openclaw-plugin/index.js"),
    ),
];

/// A `tool_call` record: a call's start, as its gateway reported it, or its end.
#[derive(serde::Serialize)]
pub struct ToolCallRecord {
    time: String,
    kind: &'static str,
    phase: &'static str,
    /// The gateway that reported it.
    tgid: u32,
    tool_call: CallOfRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    pty: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl crate::events::OwnRecord for ToolCallRecord {
    fn kind(&self) -> &'static str {
        self.kind
    }
}

/// The call a `tool_call` record is about: as its start named it, or, for an end
/// whose start this daemon did not see, the ids the end carries.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum CallOfRecord {
    Known(Arc<ToolCall>),
    Unstarted {
        id: String,
        run_id: Option<String>,
        tool: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(id: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "v": 1, "type": "start", "toolCallId": id, "runId": "run-1",
            "sessionKey": "agent:main:s1", "toolName": "exec",
            "params": {"command": "id; cat /etc/hostname", "pty": false},
        }))
        .unwrap_or_default()
    }

    fn registry() -> Registry {
        let r = Registry::new();
        r.add_gateway(100);
        r
    }

    #[test]
    fn a_gateway_start_gets_a_tag_that_resolves_to_its_call() {
        let r = registry();
        let (reply, record) = r.take(Some(100), &start("call1"));
        let tag = reply["tag"].as_str().expect("tag").to_owned();
        let record = serde_json::to_value(record.expect("record")).expect("encodes");
        assert_eq!(record["kind"], "tool_call");
        assert_eq!(record["tool_call"]["command"], "id; cat /etc/hostname");
        assert_eq!(record["tool_call"]["session_key"], "agent:main:s1");
        match r.resolve(&tag) {
            Attribution::Call(c) => {
                assert_eq!(c.id, "call1");
                assert_eq!(c.run_id.as_deref(), Some("run-1"));
                assert_eq!(c.gateway, 100);
            }
            other => panic!("{other:?}"),
        }
        // A second report of the same id is another call, with its own tag.
        let (again, _) = r.take(Some(100), &start("call1"));
        assert_ne!(again["tag"], reply["tag"]);
        assert_eq!(r.counters().starts, 2);
    }

    #[test]
    fn reports_from_other_processes_are_refused_and_counted() {
        let r = registry();
        for peer in [Some(101), None] {
            let (reply, record) = r.take(peer, &start("call1"));
            assert!(reply.get("error").is_some(), "{reply}");
            assert!(record.is_none());
        }
        assert_eq!(r.counters().rejected_peer, 2);
        assert_eq!(r.counters().starts, 0);
    }

    #[test]
    fn malformed_reports_are_refused_and_change_nothing() {
        let r = registry();
        let (good, _) = r.take(Some(100), &start("call1"));
        let bad: Vec<Vec<u8>> = vec![
            b"not json".to_vec(),
            b"{}".to_vec(),
            br#"{"v":2,"type":"start","toolCallId":"a","toolName":"exec"}"#.to_vec(),
            br#"{"v":1,"type":"stop","toolCallId":"a","toolName":"exec"}"#.to_vec(),
            br#"{"v":1,"type":"start","toolCallId":"","toolName":"exec"}"#.to_vec(),
            br#"{"v":1,"type":"start","toolCallId":"a b","toolName":"exec"}"#.to_vec(),
            br#"{"v":1,"type":"start","toolCallId":"a\n{\"kind\":\"x\"}","toolName":"exec"}"#
                .to_vec(),
            br#"{"v":1,"type":"start","toolCallId":"a"}"#.to_vec(),
            br#"{"v":1,"type":"start","toolCallId":"a","toolName":"exec","tag":"x"}"#.to_vec(),
            br#"{"v":1,"type":"start","toolCallId":"a","toolName":"exec","params":{"env":{}}}"#
                .to_vec(),
            br#"{"v":1,"type":"start","toolCallId":7,"toolName":"exec"}"#.to_vec(),
            br#"{"v":1,"type":"end","toolCallId":"a","durationMs":-1}"#.to_vec(),
            format!(
                r#"{{"v":1,"type":"start","toolCallId":"{}","toolName":"exec"}}"#,
                "x".repeat(ID_MAX + 1)
            )
            .into_bytes(),
            serde_json::to_vec(&serde_json::json!({"v": 1, "type": "start",
                "toolCallId": "a", "toolName": "exec",
                "params": {"command": "y".repeat(TEXT_MAX + 1)}}))
            .unwrap_or_default(),
        ];
        for line in &bad {
            let (reply, record) = r.take(Some(100), line);
            assert!(
                reply.get("error").is_some() && record.is_none(),
                "{}: {reply}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(r.counters().rejected_malformed, bad.len() as u64);
        assert_eq!(r.counters().starts, 1);
        // The accepted call is untouched.
        let tag = good["tag"].as_str().expect("tag");
        assert!(matches!(r.resolve(tag), Attribution::Call(c) if c.id == "call1"));
    }

    #[test]
    fn an_end_names_its_start_and_cannot_move_it() {
        let r = registry();
        let (good, _) = r.take(Some(100), &start("call1"));
        let end = br#"{"v":1,"type":"end","toolCallId":"call1","runId":"run-1","toolName":"exec","durationMs":12}"#;
        let (_, record) = r.take(Some(100), end);
        let record = serde_json::to_value(record.expect("record")).expect("encodes");
        assert_eq!(record["phase"], "end");
        assert_eq!(record["tool_call"]["command"], "id; cat /etc/hostname");
        assert_eq!(record["duration_ms"], 12);
        let tag = good["tag"].as_str().expect("tag");
        assert!(matches!(r.resolve(tag), Attribution::Call(c) if c.id == "call1"));
    }

    #[test]
    fn in_process_paths_and_hosts_match_within_the_window() {
        assert!(same_path("/ws/notes.txt", "notes.txt"));
        assert!(same_path("/ws/notes.txt", "./notes.txt"));
        assert!(same_path("/ws/a/notes.txt", "a/notes.txt"));
        assert!(!same_path("/ws/xnotes.txt", "notes.txt"));
        assert!(!same_path("/ws/notes.txt", "../ws/notes.txt"));
        assert!(same_path("/etc/hosts", "/etc/hosts"));
        assert!(!same_path("/x/etc/hosts", "/etc/hosts"));
        assert_eq!(
            url_host("https://Example.test:8443/a?b").as_deref(),
            Some("example.test")
        );
        assert_eq!(url_host("http://u:p@h.test/").as_deref(), Some("h.test"));
        assert_eq!(url_host("http://[::1]:80/").as_deref(), Some("::1"));
    }

    #[test]
    fn unknown_tags_are_unattributed_and_counted() {
        let r = registry();
        assert_eq!(r.resolve("0000000000000000-1"), Attribution::UNKNOWN_TAG);
        assert_eq!(r.counters().unknown_tags, 1);
    }

    #[test]
    fn the_oldest_calls_are_forgotten_beyond_the_bound() {
        let r = registry();
        let (first, _) = r.take(Some(100), &start("c0"));
        for i in 1..=CALLS_KEPT {
            r.take(Some(100), &start(&format!("c{i}")));
        }
        let tag = first["tag"].as_str().expect("tag");
        assert_eq!(r.resolve(tag), Attribution::UNKNOWN_TAG);
        assert!(r.lock().calls.len() <= CALLS_KEPT);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_socket_refuses_oversized_lines_and_other_peers() {
        let dir = std::env::temp_dir().join(format!("ocg-attr-{}", std::process::id()));
        let path = dir.join("a.sock");
        let listener = bind(&path).expect("bind");
        let r = Arc::new(Registry::new());
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(serve(listener, r.clone(), tx));
        let ask = |payload: Vec<u8>| {
            let path = path.clone();
            async move {
                let mut s = UnixStream::connect(&path).await.expect("connect");
                let _ = s.write_all(&payload).await;
                // One reply line (the server keeps the connection for more reports).
                let mut out = String::new();
                let _ = BufReader::new(s).read_line(&mut out).await;
                out
            }
        };
        // This test process is not a gateway: refused, counted.
        let mut line = start("c1");
        line.push(b'\n');
        assert!(ask(line.clone()).await.contains("not a tracked gateway"));
        assert_eq!(r.counters().rejected_peer, 1);
        // Idle connections from elsewhere are closed at once, never hold a slot: kept
        // open, they cannot crowd out the gateway's reports.
        let mut idle = Vec::new();
        for _ in 0..2 * CONNS_MAX {
            idle.push(UnixStream::connect(&path).await.expect("connect"));
        }
        for _ in 0..200 {
            if r.counters().rejected_peer > 2 * CONNS_MAX as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Now it is.
        r.add_gateway(std::process::id());
        let reply = ask(line).await;
        assert!(reply.contains("\"tag\""), "{reply}");
        assert!(rx.recv().await.is_some());
        let mut big = vec![b'x'; LINE_MAX + 10];
        big.push(b'\n');
        // The connection is dropped with the rest unread (the peer may then see a
        // reset rather than the refusal line): refused and counted either way.
        let reply = ask(big).await;
        assert!(!reply.contains("\"tag\""), "{reply:?}");
        assert_eq!(r.counters().rejected_oversize, 1);
        assert_eq!(r.counters().starts, 1);
        assert_eq!(r.counters().rejected_busy, 0);
        drop(idle);
        // The listener serves on.
        let mut line = start("c2");
        line.push(b'\n');
        assert!(ask(line).await.contains("\"tag\""));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
