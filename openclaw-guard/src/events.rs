//! The event schema userspace works with: kernel records are decoded once, by their
//! sensors ([`crate::sensors`]), into [`Event`]s that enrichment, policy, outputs and
//! the recorder all share. Field names are stable (documented in the README).

use openclaw_guard_common::{action, kernel_dev_major_minor, kind};
use serde::Serialize;

/// What was done about an event: reported, refused, or its process killed; `alert`,
/// `deny`, `kill` in the record and the outputs. (A policy says what to do in its own
/// words, [`crate::policy::Action`]: `block` is done as `deny`.) Weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Taken {
    Alert,
    Deny,
    Kill,
}

impl Taken {
    pub fn as_str(self) -> &'static str {
        match self {
            Taken::Alert => "alert",
            Taken::Deny => "deny",
            Taken::Kill => "kill",
        }
    }

    /// A recorded or reported word (`block` is a policy's word for deny); anything
    /// else is a report.
    pub fn from_word(s: &str) -> Self {
        match s {
            "deny" | "block" => Taken::Deny,
            "kill" => Taken::Kill,
            _ => Taken::Alert,
        }
    }

    /// The kernel's action code; `None` for no action. A kill over the rate limit
    /// was a deny.
    pub fn from_kernel(a: u32) -> Option<Self> {
        match a {
            action::ALERT => Some(Taken::Alert),
            action::DENY | action::KILL_LIMITED => Some(Taken::Deny),
            action::KILL => Some(Taken::Kill),
            _ => None,
        }
    }
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The daemon's own records, in the same stream and record as the sensors' events,
/// told apart by `kind` like them. (Records of other parts: `stats`, `host`,
/// `summary`, `tool_call`.)
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DaemonRecord {
    /// A policy reload (`SIGHUP`, the file changed): `applied`; `rejected`, the policy
    /// in force stays; `failed` in the kernel, the previous one restored.
    Policy {
        time: String,
        result: &'static str,
        /// The file, or `(embedded default)`.
        path: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// What asked for it.
        trigger: String,
    },
    /// A check of the guard itself changed (`bpf-lsm`: BPF LSM stopped deciding, or
    /// decides again): an alert of the `guard-health` rule at `priority`.
    Health {
        time: String,
        check: &'static str,
        detail: String,
        decision: HealthDecision,
    },
    /// Events the recorder could not keep (its disk failed), written once it can.
    RecorderGap {
        time: String,
        lost_events: u64,
        /// When the recorder started failing.
        since: String,
        reason: String,
    },
}

/// A record the daemon writes of its own into the stream, beside the sensors'
/// events: [`DaemonRecord`]s, and the `stats`, `host`, `summary` and `tool_call`
/// records of the parts that make them. Encoded once, at the pipeline's end
/// (`crate::sink::Sink::record`).
pub trait OwnRecord: Serialize {
    fn kind(&self) -> &'static str;
    /// The guard's own finding the record is, with what it says (a health check).
    fn finding(&self) -> Option<(&HealthDecision, String)> {
        None
    }
}

impl OwnRecord for DaemonRecord {
    fn kind(&self) -> &'static str {
        match self {
            DaemonRecord::Policy { .. } => "policy",
            DaemonRecord::Health { .. } => "health",
            DaemonRecord::RecorderGap { .. } => "recorder_gap",
        }
    }

    fn finding(&self) -> Option<(&HealthDecision, String)> {
        match self {
            DaemonRecord::Health {
                check,
                detail,
                decision,
                ..
            } => Some((decision, format!("{check}: {detail}"))),
            _ => None,
        }
    }
}

/// The decision a [`DaemonRecord::Health`] record carries.
#[derive(Clone, Debug, Serialize)]
pub struct HealthDecision {
    pub rule: &'static str,
    pub action: Taken,
    pub priority: &'static str,
}

/// One ancestor in a lineage.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LineageEntry {
    pub pid: u32,
    pub comm: String,
}

/// One event, as printed (JSON lines) and recorded.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Wall-clock time of the kernel hook, RFC 3339 with nanoseconds.
    pub time: String,
    /// Kernel boot-time clock at the hook.
    pub ktime_ns: u64,
    pub kind: &'static str,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// tgid of the gateway this process descends from.
    pub root: u32,
    /// Generations below the gateway (0 = the gateway itself).
    pub depth: u32,
    pub cgroup_id: u64,
    /// Ancestry from the gateway down to this process (filled by enrichment).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<LineageEntry>,
    /// What the process is in its tree (`gateway`, `broker`, `exec-tool`, `tool`,
    /// `helper`, `other`), filled by enrichment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// The agent's session, run and tool call this process serves (filled by
    /// enrichment from [`crate::attribution`]), or why it is unattributed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<Attribution>,
    #[serde(flatten)]
    pub payload: Payload,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// One tool call, as the gateway reported it (read back from `tool_call` records when
/// a daemon restarts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ToolCall {
    /// OpenClaw's tool call id (from the model's response).
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub tool: String,
    /// `exec`'s command text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// `read`/`write`/`edit`'s path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The guard's tag for it (what the exec command's environment carries).
    pub tag: String,
    /// The gateway that reported it.
    pub gateway: u32,
}

/// An event's tool call, or why it has none. Only processes of a tool call (roles
/// `exec-tool` and `tool`) are ever unattributed: the gateway's own machinery belongs
/// to no call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Attribution {
    /// A process of the call's tree.
    Call(std::sync::Arc<ToolCall>),
    /// The gateway's own file open or connect, matched to one in-process tool call
    /// (`read`, `write`, `web_fetch`, ...) by its target while that call ran (`via`:
    /// `path` or `host`). Never a guess: with two such calls that could match, none.
    InProcess {
        #[serde(flatten)]
        call: std::sync::Arc<ToolCall>,
        via: &'static str,
    },
    Unattributed {
        unattributed: &'static str,
    },
}

impl Attribution {
    pub const NO_TAG: Self = Self::Unattributed {
        unattributed: "no tag",
    };
    pub const UNKNOWN_TAG: Self = Self::Unattributed {
        unattributed: "unknown tag",
    };
    pub const UNREADABLE: Self = Self::Unattributed {
        unattributed: "environment unreadable",
    };
    pub const UNSEEN: Self = Self::Unattributed {
        unattributed: "start not seen",
    };
}

/// Per-kind fields.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Payload {
    Exec(Exec),
    FileOpen(FileOpen),
    Fork(Fork),
    Exit(Exit),
    Net(Net),
    Tamper(Tamper),
    Repeat(Repeat),
    Dns(Dns),
}

/// A DNS answer from a trusted resolver, as the kernel learned it (the addresses now
/// stand for `name` in egress decisions until `ttl` runs out). The daemon keeps the
/// names for the net events; it does not record these.
#[derive(Clone, Debug, Serialize)]
pub struct Dns {
    pub name: String,
    /// The first addresses of the answer (IPv4 as such).
    pub addrs: Vec<String>,
    /// How many addresses the kernel learned in all.
    pub naddrs: u32,
    /// Seconds, as the kernel keeps it (the answer's smallest, clamped).
    pub ttl: u32,
    pub resolver: String,
    #[serde(skip)]
    pub name_hash: u64,
}

/// `count` more events like the thread's last full one (same kind, operation, file or
/// destination, and decision) happened from `first_time` to `last_time`: folded in the
/// kernel (`--fold-ms`), counted, not sent one by one. Refusals fold too: the event
/// then carries the decision each repeat got.
#[derive(Clone, Debug, Serialize)]
pub struct Repeat {
    /// The kind of the folded events: "file_open" or "net".
    pub of: &'static str,
    /// Their operation: "open", "connect", "sendmsg".
    pub op: &'static str,
    pub count: u32,
    /// The full event that opened the window (the same `ktime_ns`).
    pub first_time: String,
    pub first_ktime_ns: u64,
    pub last_time: String,
    /// Files: "major:minor" and inode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// Files: `open(2)` flags (0 on the tracepoint tier).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<u64>,
    /// Net: the destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// An attempt by the tree on the guard itself.
#[derive(Clone, Debug, Serialize)]
pub struct Tamper {
    /// "signal", "ptrace", "bpf", or a file operation on the guard's files: "write",
    /// "unlink", "rename", "link", "create", "truncate", "umount".
    pub op: &'static str,
    /// The guard's pid (signal, ptrace) or the `bpf()` command number.
    pub target: u32,
    /// The signal number, the ptrace mode, or 0.
    pub arg: u32,
    pub ret: i32,
    /// File operations: the guarded file, directory or filesystem (mount point) hit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guarded: Option<String>,
    /// File operations: the name of the entry operated on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Fork {
    pub child_tgid: u32,
    pub child_depth: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Exit {
    /// Exit status (0-255) when the process exited normally.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal number when a signal ended it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// A connect, a send with a destination, or a bind.
#[derive(Clone, Debug, Serialize)]
pub struct Net {
    /// "connect", "sendmsg", "bind", or "socket" (a raw/ICMP socket refused at creation).
    pub op: &'static str,
    /// "inet", "inet6", "unix" or "af<N>".
    pub family: String,
    /// IP address (IPv4-mapped IPv6 reported as IPv4), unix socket path ("@name" for
    /// the abstract namespace), or empty.
    pub addr: String,
    pub port: u16,
    /// The address was an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
    pub ipv4_mapped: bool,
    /// "tcp", "udp", "icmp", "icmpv6", "raw" or the number.
    pub protocol: String,
    /// "stream", "dgram", "raw", ...
    pub sock_type: String,
    pub ret: i32,
    /// The DNS name the destination address was learned under (from the answers of
    /// the gateways' resolvers), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_name: Option<String>,
    /// The sockaddr's family field when it was not the socket's own (`AF_UNSPEC` on
    /// an IPv4 socket's send: the address is read as the socket's family).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockaddr_family: Option<String>,
    /// The kernel's hash of that name (0: none).
    #[serde(skip)]
    pub name_hash: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Exec {
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub filename: String,
    pub filename_truncated: bool,
    /// argv of the new image.
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    /// The executable the kernel loaded, as "major:minor".
    pub exe_dev: String,
    pub exe_ino: u64,
    /// The following are filled by enrichment from /proc (empty when the process was
    /// gone first). `/proc/PID/exe`: `/memfd:NAME (deleted)` for a fileless image.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub exe: String,
    /// Where fds 0, 1, 2 go: `file`, `pipe`, `tty`, `null`, `unix`, `inet`, `inet6`, ...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stdio: Vec<&'static str>,
    /// A network socket on stdin, stdout or stderr.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stdio_socket: bool,
    /// The image runs from memory or a deleted file.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fileless: bool,
    /// The shell this image is, by inode or content, when its name does not say so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// The process or an ancestor in its tool call was denied or killed by a rule.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub after_denial: bool,
    /// The new image was held at exec for the `env` rule (a carrier's child).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub env_held: bool,
    /// Held images: the secret variables whose values the daemon blanked before
    /// resuming it (names only), or why it could not (the process was then killed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_blanked: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_error: Option<String>,
    /// The kernel's reading of fds 0-2 at exec (`ExecEvent::stdio_families`), merged
    /// into `stdio` by enrichment.
    #[serde(skip)]
    pub stdio_families: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct FileOpen {
    /// "open", "link" (a hard link made to it), "rename" (moved, or renamed over), or
    /// "exec" (an exec of it refused by an exec rule).
    pub op: &'static str,
    /// The path as the kernel resolved it (symlinks, `..`, /proc/self/root followed).
    pub path: String,
    /// "major:minor".
    pub dev: String,
    pub ino: u64,
    /// `open(2)` flags as the kernel holds them.
    pub flags: u32,
    /// 0, or the negative errno the guard returned.
    pub ret: i32,
}

/// What the guard decided about the event.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Decision {
    pub rule: String,
    /// "deny", "kill" or "alert".
    pub action: Taken,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// "kill" when a kill rule fired faster than `--kill-limit` and denied instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded_from: Option<&'static str>,
}

/// Converts the kernel's boot-time clock to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    realtime_minus_boottime_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let read = |id| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: valid pointer to a timespec.
            unsafe { libc::clock_gettime(id, &mut ts) };
            i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
        };
        Self {
            realtime_minus_boottime_ns: read(libc::CLOCK_REALTIME) - read(libc::CLOCK_BOOTTIME),
        }
    }

    pub fn rfc3339(&self, ktime_ns: u64) -> String {
        let ns = i128::from(ktime_ns) + self.realtime_minus_boottime_ns;
        match jiff::Timestamp::from_nanosecond(ns) {
            Ok(ts) => format!("{ts:.9}"),
            Err(_) => String::from("1970-01-01T00:00:00.000000000Z"),
        }
    }
}

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event header")]
    Short(usize),
    #[error("record of kind {kind} has {len} bytes, expected {expected}")]
    Size {
        kind: u32,
        len: usize,
        expected: usize,
    },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

pub fn kind_name(k: u32) -> &'static str {
    match k {
        kind::EXEC => "exec",
        kind::FILE_OPEN => "file_open",
        kind::FORK => "fork",
        kind::EXIT => "exit",
        kind::NET => "net",
        kind::TAMPER => "tamper",
        kind::REPEAT => "repeat",
        kind::DNS => "dns",
        _ => "unknown",
    }
}

/// "major:minor" of a kernel `s_dev`.
pub fn dev_string(dev: u32) -> String {
    let (major, minor) = kernel_dev_major_minor(dev);
    format!("{major}:{minor}")
}

pub(crate) fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
