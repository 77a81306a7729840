//! The self-protection sensor (openclaw-guard-ebpf/src/tamper.rs,
//! tests/src/enforce/tamper.rs): the tree's attempts on the guard (signals, ptrace,
//! bpf, its files, kernel knobs and loads, scheduling, mounts).

use openclaw_guard_common::{
    kernel_dev_major_minor,
    tamper::{op as tamper_op, TamperEvent},
    InodeKey,
};

use super::decision;
use crate::events::{Decision, DecodeError, Payload, Tamper};

/// Its BPF LSM programs (program, hook): the guard's process, maps and files.
pub const LSM_PROGRAMS: &[(&str, &str)] = &[
    ("task_kill", "task_kill"),
    ("ptrace_access_check", "ptrace_access_check"),
    ("bpf", "bpf"),
    ("guard_inode_unlink", "inode_unlink"),
    ("guard_inode_rmdir", "inode_rmdir"),
    ("guard_inode_create", "inode_create"),
    ("guard_inode_mkdir", "inode_mkdir"),
    ("guard_inode_link", "inode_link"),
    ("guard_inode_rename", "inode_rename"),
    ("guard_path_truncate", "path_truncate"),
    ("guard_sb_umount", "sb_umount"),
    ("guard_kernel_read_file", "kernel_read_file"),
    ("guard_kernel_load_data", "kernel_load_data"),
    ("guard_task_setscheduler", "task_setscheduler"),
    ("guard_task_setnice", "task_setnice"),
    ("guard_task_setioprio", "task_setioprio"),
    ("guard_task_setrlimit", "task_setrlimit"),
    ("guard_sb_mount", "sb_mount"),
    ("guard_move_mount", "move_mount"),
];

/// A `tamper` record.
pub(super) fn decode(
    bytes: &[u8],
    names: &super::Names,
) -> Result<(Payload, Option<Decision>), DecodeError> {
    let ev: TamperEvent = super::record(bytes)?;
    Ok((
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
                .then(|| guard_path(names, InodeKey::new(ev.dev, ev.ino))),
            name: {
                let n = ev
                    .name
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(ev.name.len());
                (n > 0).then(|| String::from_utf8_lossy(&ev.name[..n]).into_owned())
            },
        }),
        decision(names, ev.action, ev.rule, ev.ret),
    ))
}

/// A guarded file by its path when the daemon knows it.
fn guard_path(names: &super::Names, key: InodeKey) -> String {
    names.guard_paths.get(&key).map_or_else(
        || {
            let (major, minor) = kernel_dev_major_minor(key.dev);
            format!("dev {major}:{minor} inode {}", key.ino)
        },
        |p| p.display().to_string(),
    )
}

/// What a decision on this event was about, as an alert line says it.
pub(super) fn target(t: &Tamper) -> String {
    let op = t.op;
    match (
        op,
        t.guarded.as_deref().unwrap_or(""),
        t.name.as_deref().unwrap_or(""),
    ) {
        ("peek-secrets", ..) => format!(
            "read of the environment or memory of pid {} (a carrier of the secrets)",
            t.target
        ),
        ("signal-held", ..) => format!(
            "signal {} to pid {} (held for its secrets to be blanked)",
            t.arg, t.target
        ),
        ("kernel-knob", _, n) => format!("write to the kernel control `{n}`"),
        ("kernel-load", ..) => format!("kernel load (module, kexec image or policy; id {})", t.arg),
        ("sched", ..) => {
            "change of the guard's scheduling (policy, nice or I/O priority)".to_owned()
        }
        ("rlimit", ..) => format!("change of the guard's resource limit {} (prlimit)", t.arg),
        ("mount", ..) => {
            "mount in the host's user namespace (it could cover the guard's files)".to_owned()
        }
        (_, "", _) => format!("{op} on the guard"),
        (_, g, "") => format!("{op} of the guard's `{g}`"),
        (_, g, n) => format!("{op} of `{n}` (the guard's `{g}`)"),
    }
}
