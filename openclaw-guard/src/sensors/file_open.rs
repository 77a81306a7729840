//! The file-open sensor (openclaw-guard-ebpf/src/file_open.rs,
//! tests/src/sensors/file_open.rs): opens, links and renames of protected files by the
//! tree, refused at BPF LSM `file_open`, `inode_link`, `inode_rename` or killed at the
//! open syscalls' exits.

use openclaw_guard_common::file_open::{op as file_op, FileOpenEvent};

use super::decision;
use crate::events::{c_string, dev_string, Decision, DecodeError, FileOpen, Payload};

/// Its BPF LSM programs (program, hook): opens, and links and renames of protected
/// files.
pub const LSM_PROGRAMS: &[(&str, &str)] = &[
    ("file_open", "file_open"),
    ("inode_link", "inode_link"),
    ("inode_rename", "inode_rename"),
];

/// `file_open` without `bpf_d_path`, for kernels that refuse the helper in LSM programs.
pub const COMPAT_PROGRAM: &str = "file_open_compat";

/// What [`COMPAT_PROGRAM`] needs: the open syscalls' entries, which keep the path.
pub const COMPAT_TRACEPOINTS: &[&str] =
    &["sys_enter_openat", "sys_enter_openat2", "sys_enter_open"];

/// Without BPF LSM: the open syscalls' exits (the check) and entries (the path).
pub const FALLBACK_TRACEPOINTS: &[&str] = &[
    "sys_exit_openat",
    "sys_exit_openat2",
    "sys_exit_open",
    "sys_enter_openat",
    "sys_enter_openat2",
    "sys_enter_open",
];

/// A `file_open` record.
pub(super) fn decode(
    bytes: &[u8],
    names: &super::Names,
) -> Result<(Payload, Option<Decision>), DecodeError> {
    let ev: FileOpenEvent = super::record(bytes)?;
    let path_len = (ev.path_len as usize).min(ev.path.len());
    Ok((
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
        decision(names, ev.action, ev.rule, ev.ret),
    ))
}

/// What a decision on this event was about, as an alert line says it.
pub(super) fn target(f: &FileOpen) -> String {
    format!("open of `{}`", f.path)
}

/// How file rules are enforced on this kernel (`attached`: whether a program is), in
/// words for start-up and `status`, once the rule blocks and the offsets are trusted.
pub fn enforcement(attached: &dyn Fn(&str) -> bool, act: crate::policy::Action) -> String {
    if attached("file_open") {
        let unix = if attached("unix_stream_connect") && attached("unix_may_send") {
            "; unix sockets bound at protected paths: EPERM at unix_stream_connect, unix_may_send"
        } else {
            "; unix sockets bound at protected paths NOT refused (unix hooks not attached)"
        };
        format!(
            "{act}: EPERM at BPF LSM file_open, inode_link, inode_rename (io_uring opens included){unix}"
        )
    } else if ["sys_exit_openat", "sys_exit_openat2", "sys_exit_open"]
        .iter()
        .all(|p| attached(p))
    {
        let unix = if attached("sys_exit_connect") {
            "; unix sockets bound at protected paths: SIGKILL at connect's exit, before anything is written (unconnected datagrams NOT covered)"
        } else {
            "; unix sockets bound at protected paths NOT covered (connect tracepoints not attached)"
        };
        format!(
            "kill ({act} configured; an open that succeeded cannot be denied): SIGKILL at the open syscall's exit, before the process can read (no BPF LSM on this kernel; io_uring opens, hard links and renames are NOT covered on this tier){unix}"
        )
    } else {
        format!("alert only ({act} configured): neither BPF LSM file_open nor the open syscall tracepoints could be attached")
    }
}
