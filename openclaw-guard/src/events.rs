//! The event schema userspace works with: kernel records decoded once, here, into
//! [`Event`]s that enrichment, policy, outputs and the recorder all share. Field names
//! are stable (documented in the README).

use std::{
    mem::size_of,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use openclaw_guard_common::{
    action,
    dns::DnsEvent,
    exec::ExecEvent,
    file_open::{op as file_op, FileOpenEvent},
    flags, kernel_dev_major_minor, kind,
    lifecycle::{ExitEvent, ForkEvent},
    net::{op, NetEvent},
    repeat::RepeatEvent,
    tamper::{op as tamper_op, TamperEvent},
    EventHeader, InodeKey,
};
use serde::Serialize;

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
    pub action: &'static str,
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

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8], clock: &Clock) -> Result<Event, DecodeError> {
    let header: EventHeader = read_pod(bytes).ok_or(DecodeError::Short(bytes.len()))?;
    let expect = |expected: usize| {
        if bytes.len() < expected {
            Err(DecodeError::Size {
                kind: header.kind,
                len: bytes.len(),
                expected,
            })
        } else {
            Ok(())
        }
    };
    let (payload, decision) = match header.kind {
        kind::EXEC => {
            expect(size_of::<ExecEvent>())?;
            let ev: ExecEvent = read_pod(bytes).ok_or(DecodeError::Short(bytes.len()))?;
            let len = (ev.filename_len as usize).min(ev.filename.len());
            (
                Payload::Exec(Exec {
                    ppid: ev.ppid,
                    uid: ev.uid,
                    gid: ev.gid,
                    comm: c_string(&ev.comm),
                    filename: String::from_utf8_lossy(&ev.filename[..len]).into_owned(),
                    filename_truncated: ev.flags & flags::TRUNCATED != 0,
                    argv: split_args(&ev.args[..(ev.args_len as usize).min(ev.args.len())]),
                    argv_truncated: ev.flags & flags::ARGS_TRUNCATED != 0,
                    exe: String::new(),
                    stdio: Vec::new(),
                    stdio_socket: false,
                    fileless: false,
                    shell: None,
                    after_denial: false,
                    env_held: ev.flags & flags::ENV_HELD != 0,
                    env_blanked: Vec::new(),
                    env_error: None,
                    stdio_families: ev.stdio_families,
                    exe_dev: dev_string(ev.exe_dev),
                    exe_ino: ev.exe_ino,
                }),
                None,
            )
        }
        kind::FILE_OPEN => {
            expect(size_of::<FileOpenEvent>())?;
            let ev: FileOpenEvent = read_pod(bytes).ok_or(DecodeError::Short(bytes.len()))?;
            let path_len = (ev.path_len as usize).min(ev.path.len());
            (
                Payload::FileOpen(FileOpen {
                    op: match ev.op {
                        file_op::LINK => "link",
                        file_op::RENAME => "rename",
                        file_op::EXEC => "exec",
                        _ => "open",
                    },
                    path: c_string(&ev.path[..path_len]),
                    dev: dev_string(ev.dev),
                    ino: ev.ino,
                    flags: ev.flags,
                    ret: ev.ret,
                }),
                decision(ev.action, ev.rule, ev.ret),
            )
        }
        kind::FORK => {
            expect(size_of::<ForkEvent>())?;
            let ev: ForkEvent = read_pod(bytes).ok_or(DecodeError::Short(bytes.len()))?;
            (
                Payload::Fork(Fork {
                    child_tgid: ev.child_tgid,
                    child_depth: ev.child_depth,
                }),
                None,
            )
        }
        kind::EXIT => {
            expect(size_of::<ExitEvent>())?;
            let ev: ExitEvent = read_pod(bytes).ok_or(DecodeError::Short(bytes.len()))?;
            // wait(2) encoding: low 7 bits the signal, next 8 the exit status.
            let status = ev.exit_code as i32;
            let sig = status & 0x7f;
            let exit = if sig == 0 {
                Exit {
                    exit_code: Some((status >> 8) & 0xff),
                    signal: None,
                }
            } else {
                Exit {
                    exit_code: None,
                    signal: Some(sig),
                }
            };
            (Payload::Exit(exit), None)
        }
        kind::NET => {
            expect(size_of::<NetEvent>())?;
            let ev: NetEvent = read_pod(bytes).ok_or(DecodeError::Short(bytes.len()))?;
            let raw = &ev.sockaddr[..(ev.addr_len as usize).min(ev.sockaddr.len())];
            let (mut family, mut addr, mut port, mut ipv4_mapped) = decode_sockaddr(raw);
            let mut sockaddr_family = None;
            // The kernel reads an IPv4 socket's AF_UNSPEC sockaddr as a sockaddr_in.
            if family == "af0" && i32::from(ev.sock_family as u16) == libc::AF_INET {
                let mut fixed = raw.to_vec();
                fixed[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                sockaddr_family = Some(family);
                (family, addr, port, ipv4_mapped) = decode_sockaddr(&fixed);
            }
            (
                Payload::Net(Net {
                    op: match ev.op {
                        op::CONNECT => "connect",
                        op::SENDMSG => "sendmsg",
                        op::BIND => "bind",
                        op::SOCKET => "socket",
                        _ => "unknown",
                    },
                    family,
                    addr,
                    port,
                    ipv4_mapped,
                    protocol: protocol_name(ev.protocol),
                    sock_type: sock_type_name(ev.sock_type),
                    ret: ev.ret,
                    dest_name: None,
                    sockaddr_family,
                    name_hash: ev.name,
                }),
                decision(ev.action, ev.rule, ev.ret),
            )
        }
        kind::TAMPER => {
            expect(size_of::<TamperEvent>())?;
            let ev: TamperEvent = read_pod(bytes).ok_or(DecodeError::Short(bytes.len()))?;
            (
                Payload::Tamper(Tamper {
                    op: match ev.op {
                        tamper_op::SIGNAL => "signal",
                        tamper_op::PTRACE => "ptrace",
                        tamper_op::BPF => "bpf",
                        tamper_op::WRITE => "write",
                        tamper_op::UNLINK => "unlink",
                        tamper_op::RENAME => "rename",
                        tamper_op::LINK => "link",
                        tamper_op::CREATE => "create",
                        tamper_op::TRUNCATE => "truncate",
                        tamper_op::UMOUNT => "umount",
                        tamper_op::PEEK_SECRETS => "peek-secrets",
                        tamper_op::SIGNAL_HELD => "signal-held",
                        tamper_op::KNOB => "kernel-knob",
                        tamper_op::KERNEL_LOAD => "kernel-load",
                        tamper_op::SCHED => "sched",
                        tamper_op::MOUNT => "mount",
                        tamper_op::RLIMIT => "rlimit",
                        _ => "unknown",
                    },
                    target: ev.target,
                    arg: ev.arg,
                    ret: ev.ret,
                    guarded: (ev.ino != 0 || ev.dev != 0)
                        .then(|| guard_path(InodeKey::new(ev.dev, ev.ino))),
                    name: {
                        let n = ev
                            .name
                            .iter()
                            .position(|&b| b == 0)
                            .unwrap_or(ev.name.len());
                        (n > 0).then(|| String::from_utf8_lossy(&ev.name[..n]).into_owned())
                    },
                }),
                decision(ev.action, ev.rule, ev.ret),
            )
        }
        kind::REPEAT => {
            expect(size_of::<RepeatEvent>())?;
            let ev: RepeatEvent = read_pod(bytes).ok_or(DecodeError::Short(bytes.len()))?;
            let st = ev.state;
            let mut r = Repeat {
                of: kind_name(st.kind),
                op: "unknown",
                count: st.count,
                first_time: clock.rfc3339(st.start_ns),
                first_ktime_ns: st.start_ns,
                last_time: clock.rfc3339(st.last_ns),
                dev: None,
                ino: None,
                flags: None,
                family: None,
                addr: None,
                port: None,
            };
            if st.kind == kind::FILE_OPEN {
                r.op = "open";
                r.ino = Some(st.sig[0]);
                // The high bits hold the inode's generation (see the eBPF `open_sig`).
                r.dev = Some(dev_string(st.sig[1] as u32));
                r.flags = Some(st.sig[2]);
            } else {
                r.op = match st.op {
                    op::CONNECT => "connect",
                    op::SENDMSG => "sendmsg",
                    _ => "unknown",
                };
                let raw: Vec<u8> = st.sig.iter().flat_map(|w| w.to_ne_bytes()).collect();
                let (family, addr, port, _) = decode_sockaddr(&raw[..28]);
                r.family = Some(family);
                r.addr = Some(addr);
                r.port = Some(port);
            }
            // Refusals fold too: each repeat was checked and decided like the first.
            (Payload::Repeat(r), decision(st.action, st.rule, st.ret))
        }
        kind::DNS => {
            expect(size_of::<DnsEvent>())?;
            let ev: DnsEvent = read_pod(bytes).ok_or(DecodeError::Short(bytes.len()))?;
            let ip = |a: &[u8; 16]| {
                let v6 = Ipv6Addr::from(*a);
                v6.to_ipv4_mapped()
                    .map_or_else(|| v6.to_string(), |v4| v4.to_string())
            };
            let n = (ev.naddrs as usize).min(ev.addrs.len());
            (
                Payload::Dns(Dns {
                    name: qname_text(&ev.qname),
                    addrs: ev.addrs[..n].iter().map(ip).collect(),
                    naddrs: ev.naddrs,
                    ttl: ev.ttl,
                    resolver: ip(&ev.resolver),
                    name_hash: ev.name,
                }),
                None,
            )
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(Event {
        time: clock.rfc3339(header.ktime_ns),
        ktime_ns: header.ktime_ns,
        kind: kind_name(header.kind),
        pid: header.pid,
        tgid: header.tgid,
        root: header.root,
        depth: header.depth,
        cgroup_id: header.cgroup_id,
        lineage: Vec::new(),
        role: None,
        tool_call: None,
        payload,
        decision,
    })
}

/// A kernel decision, named by the rule table the daemon loaded (see `rule_name`).
fn decision(act: u32, rule: u32, ret: i32) -> Option<Decision> {
    (act != action::NONE).then(|| Decision {
        rule: rule_name(rule),
        action: action_name(act),
        errno: (ret < 0).then_some(-ret),
        degraded_from: (act == action::KILL_LIMITED).then_some("kill"),
    })
}

/// Paths of the guard's own files by identity, set by the daemon (self-protection).
static GUARD_PATHS: std::sync::RwLock<Option<std::collections::HashMap<InodeKey, PathBuf>>> =
    std::sync::RwLock::new(None);

/// Installs the paths of the `GUARD_FILES` entries.
pub fn set_guard_paths(paths: std::collections::HashMap<InodeKey, PathBuf>) {
    if let Ok(mut p) = GUARD_PATHS.write() {
        *p = Some(paths);
    }
}

fn guard_path(key: InodeKey) -> String {
    GUARD_PATHS
        .read()
        .ok()
        .and_then(|p| p.as_ref().and_then(|p| p.get(&key).cloned()))
        .map_or_else(
            || {
                let (major, minor) = kernel_dev_major_minor(key.dev);
                format!("dev {major}:{minor} inode {}", key.ino)
            },
            |p| p.display().to_string(),
        )
}

/// Names of the kernel's numeric rule ids, set by the daemon from the policy it loaded.
static RULE_NAMES: std::sync::RwLock<Option<std::collections::HashMap<u32, String>>> =
    std::sync::RwLock::new(None);

/// Installs the names of the kernel's rule ids.
pub fn set_rule_names(names: std::collections::HashMap<u32, String>) {
    if let Ok(mut n) = RULE_NAMES.write() {
        *n = Some(names);
    }
}

fn rule_name(id: u32) -> String {
    RULE_NAMES
        .read()
        .ok()
        .and_then(|n| n.as_ref().and_then(|n| n.get(&id).cloned()))
        .unwrap_or_else(|| format!("rule-{id}"))
}

/// (family, address, port, ipv4_mapped) of a raw `struct sockaddr`.
pub fn decode_sockaddr(raw: &[u8]) -> (String, String, u16, bool) {
    if raw.len() < 2 {
        return (String::from("unspec"), String::new(), 0, false);
    }
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let port = |r: &[u8]| {
        if r.len() >= 4 {
            u16::from_be_bytes([r[2], r[3]])
        } else {
            0
        }
    };
    match i32::from(family) {
        libc::AF_INET if raw.len() >= 8 => {
            let a = Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
            ("inet".into(), a.to_string(), port(raw), false)
        }
        libc::AF_INET6 if raw.len() >= 24 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&raw[8..24]);
            let a = Ipv6Addr::from(b);
            match a.to_ipv4_mapped() {
                Some(v4) => ("inet6".into(), v4.to_string(), port(raw), true),
                None => ("inet6".into(), a.to_string(), port(raw), false),
            }
        }
        libc::AF_UNIX => {
            let path = &raw[2..];
            let name = if path.first() == Some(&0) {
                format!(
                    "@{}",
                    String::from_utf8_lossy(&path[1..]).trim_end_matches('\0')
                )
            } else {
                c_string(path)
            };
            ("unix".into(), name, 0, false)
        }
        f => (format!("af{f}"), String::new(), 0, false),
    }
}

fn protocol_name(p: u32) -> String {
    match p as i32 {
        libc::IPPROTO_TCP => "tcp".into(),
        libc::IPPROTO_UDP => "udp".into(),
        libc::IPPROTO_ICMP => "icmp".into(),
        libc::IPPROTO_ICMPV6 => "icmpv6".into(),
        libc::IPPROTO_RAW => "raw".into(),
        0 => "default".into(),
        n => n.to_string(),
    }
}

fn sock_type_name(t: u32) -> String {
    match t as i32 {
        libc::SOCK_STREAM => "stream".into(),
        libc::SOCK_DGRAM => "dgram".into(),
        libc::SOCK_RAW => "raw".into(),
        libc::SOCK_SEQPACKET => "seqpacket".into(),
        n => n.to_string(),
    }
}

fn split_args(block: &[u8]) -> Vec<String> {
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    if block.is_empty() {
        return Vec::new();
    }
    block
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// A question name in wire form (length-prefixed labels) as dotted text, lowercase
/// (the kernel hashes it case-folded); bytes outside printable ASCII are escaped.
pub fn qname_text(wire: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < wire.len() {
        let n = usize::from(wire[i]);
        if n == 0 || n > 63 {
            break;
        }
        if !out.is_empty() {
            out.push('.');
        }
        for &b in wire.iter().skip(i + 1).take(n) {
            match b.to_ascii_lowercase() {
                c @ (b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_') => out.push(char::from(c)),
                c => out.push_str(&format!("\\x{c:02x}")),
            }
        }
        i += n + 1;
    }
    out
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

pub fn action_name(a: u32) -> &'static str {
    match a {
        action::ALERT => "alert",
        action::DENY => "deny",
        action::KILL => "kill",
        action::KILL_LIMITED => "deny",
        _ => "none",
    }
}

/// "major:minor" of a kernel `s_dev`.
pub fn dev_string(dev: u32) -> String {
    let (major, minor) = kernel_dev_major_minor(dev);
    format!("{major}:{minor}")
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Reads a plain-data struct from the front of a byte slice.
fn read_pod<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is one of the repr(C) integer-only wire structs, valid
    // for any bit pattern; read_unaligned because ring-buffer records are 8-aligned only.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a repr(C) struct as bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn decodes_exec_with_truncation_flag() {
        let mut ev: ExecEvent = unsafe { std::mem::zeroed() };
        ev.header.kind = kind::EXEC;
        ev.header.tgid = 42;
        ev.ppid = 7;
        ev.comm[..4].copy_from_slice(b"true");
        ev.filename[..9].copy_from_slice(b"/bin/true");
        ev.filename_len = 9;
        ev.flags = flags::TRUNCATED;
        ev.exe_dev = openclaw_guard_common::kernel_dev(8, 1);
        let e = decode(&bytes_of(&ev), &Clock::now()).unwrap();
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "exec");
        assert_eq!(json["filename"], "/bin/true");
        assert_eq!(json["comm"], "true");
        assert_eq!(json["ppid"], 7);
        assert_eq!(json["exe_dev"], "8:1");
        assert_eq!(json["filename_truncated"], true);
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(
            decode(&[0u8; 3], &Clock::now()).unwrap_err(),
            DecodeError::Short(3)
        );
        let mut h = EventHeader {
            kind: 99,
            ..EventHeader::default()
        };
        assert_eq!(
            decode(&bytes_of(&h), &Clock::now()).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
        h.kind = kind::EXEC;
        assert!(matches!(
            decode(&bytes_of(&h), &Clock::now()),
            Err(DecodeError::Size { .. })
        ));
    }

    #[test]
    fn deny_becomes_a_decision() {
        let mut ev: FileOpenEvent = unsafe { std::mem::zeroed() };
        ev.header.kind = kind::FILE_OPEN;
        ev.action = action::DENY;
        ev.ret = -1;
        ev.rule = 7;
        let e = decode(&bytes_of(&ev), &Clock::now()).unwrap();
        assert_eq!(
            e.decision,
            Some(Decision {
                rule: "rule-7".into(),
                action: "deny",
                errno: Some(1),
                degraded_from: None,
            })
        );
        ev.action = action::KILL_LIMITED;
        let e = decode(&bytes_of(&ev), &Clock::now()).unwrap();
        let d = e.decision.unwrap();
        assert_eq!((d.action, d.degraded_from), ("deny", Some("kill")));
    }

    #[test]
    fn question_names_as_text() {
        assert_eq!(
            qname_text(b"\x03api\x07Example\x03com\x00junk"),
            "api.example.com"
        );
        assert_eq!(qname_text(b"\x02a\x01\x00"), "a\\x01");
        assert_eq!(qname_text(b"\x00"), "");
        // A hash of the text form is the kernel's hash of the wire form.
        assert_eq!(
            openclaw_guard_common::dns::name_hash("api.example.com"),
            b"\x03api\x07example\x03com"
                .iter()
                .fold(openclaw_guard_common::dns::HASH_INIT, |h, b| {
                    openclaw_guard_common::dns::hash_step(h, *b)
                })
        );
    }

    #[test]
    fn sockaddr_decoding_folds_ipv4_mapped() {
        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[18..20].copy_from_slice(&[0xff, 0xff]);
        v6[20..24].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(
            decode_sockaddr(&v6),
            ("inet6".into(), "10.1.2.3".into(), 443, true)
        );
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&53u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            decode_sockaddr(&v4),
            ("inet".into(), "127.0.0.1".into(), 53, false)
        );
        let mut un = vec![0u8; 8];
        un[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        un[2..7].copy_from_slice(b"\0abcd");
        assert_eq!(decode_sockaddr(&un).1, "@abcd");
    }

    #[test]
    fn args_split_on_nul() {
        assert_eq!(
            split_args(b"sh\0-c\0echo hi\0"),
            vec!["sh", "-c", "echo hi"]
        );
        assert!(split_args(b"").is_empty());
    }
}
