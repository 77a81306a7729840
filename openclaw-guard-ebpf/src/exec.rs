//! The exec sensor: `sched_process_exec`, after the new image is committed.

use aya_ebpf::helpers::generated::bpf_probe_read_user as bpf_probe_read_user_raw;
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_uid_gid, bpf_probe_read_kernel_str_bytes},
    macros::{btf_tracepoint, lsm},
    programs::{BtfTracePointContext, LsmContext},
};
use openclaw_guard_common::file_open::op as file_op;
use openclaw_guard_common::{counter, exec::ExecEvent, flags, kind, ARGS_LEN, PATH_LEN};

use aya_ebpf::helpers::bpf_get_current_cgroup_id;
use openclaw_guard_common::TrackedProc;

use crate::{
    kernel::{file_inode_key, parent_tgid, read_at},
    maps::{
        count, current_tracked, decide, header, offsets, tracked, CANDIDATE_COMMS, EXEC_DENY,
        GATEWAY_CGROUPS, PROCS, TRACKED,
    },
};

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
#[btf_tracepoint(function = "sched_process_exec")]
pub(crate) fn sched_process_exec(ctx: BtfTracePointContext) -> u32 {
    let _ = try_exec(&ctx);
    0
}

/// The one kind of event untracked processes may send: an exec inside a gateway
/// unit's cgroup (tracked from now on, as a root), or of a candidate executable (root 0:
/// userspace checks its command line).
#[inline(always)]
fn untracked_exec_of_interest(tgid: u32) -> Option<TrackedProc> {
    // SAFETY: helper without preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: values copied out at once.
    if unsafe { GATEWAY_CGROUPS.get(cgroup) }.is_some() {
        let root = TrackedProc {
            root: tgid,
            depth: 0,
        };
        if TRACKED.insert(tgid, root, 0).is_err() {
            count(counter::TRACK_FULL);
        }
        return Some(root);
    }
    let comm = bpf_get_current_comm().ok()?;
    // SAFETY: as above.
    unsafe { CANDIDATE_COMMS.get(comm) }.map(|_| TrackedProc { root: 0, depth: 0 })
}

fn try_exec(ctx: &BtfTracePointContext) -> Result<(), i32> {
    let task: *const u8 = ctx.arg(0);
    let bprm: *const u8 = ctx.arg(2);
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    let proc_ = match tracked(tgid) {
        Some(p) => {
            // The old image's folded events come before the exec.
            crate::fold::flush(aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32);
            p
        }
        None => match untracked_exec_of_interest(tgid) {
            Some(p) => p,
            None => return Ok(()),
        },
    };
    // A carrier's child: its image is held for the daemon to blank its secrets.
    let held = crate::env::take_hold(tgid);
    let Some(mut entry) = PROCS.reserve::<ExecEvent>(0) else {
        count(counter::LOST);
        if held {
            crate::env::hold_failed();
        }
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: `ev` points at reserved ring-buffer memory of the right size; kernel
    // pointers are only read through bpf_probe_read_kernel.
    unsafe {
        (*ev).header = header(kind::EXEC, &proc_);
        (*ev).ppid = parent_tgid(task).unwrap_or(0);
        (*ev).uid = uid_gid as u32;
        (*ev).gid = (uid_gid >> 32) as u32;
        (*ev).flags = 0;
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        let (dev, ino) = match read_at::<*const u8>(bprm, offsets().bprm_file) {
            Ok(file) => match file_inode_key(file) {
                Ok(key) => (key.dev, key.ino),
                Err(_) => (0, 0),
            },
            Err(_) => (0, 0),
        };
        (*ev).exe_dev = dev;
        (*ev).exe_ino = ino;
        let name: *const u8 = read_at(bprm, offsets().bprm_filename).unwrap_or(core::ptr::null());
        let len = match bpf_probe_read_kernel_str_bytes(name, &mut (*ev).filename) {
            Ok(s) => s.len(),
            Err(_) => 0,
        };
        (*ev).filename_len = len as u32;
        // The helper stops at the buffer's end: a name filling it was cut.
        if len >= PATH_LEN - 1 {
            (*ev).flags |= flags::TRUNCATED;
        }
        (*ev).stdio_families = stdio_families();
        // The new image's argv, from its own memory: the hook runs after the exec
        // committed, in the new process.
        (*ev).args_len = 0;
        let o = offsets();
        if let Ok(mm) = read_at::<*const u8>(task, o.task_mm) {
            let start: u64 = read_at(mm, o.mm_arg_start).unwrap_or(0);
            let end: u64 = read_at(mm, o.mm_arg_end).unwrap_or(0);
            let mut n = end.saturating_sub(start);
            if n > ARGS_LEN as u64 {
                n = ARGS_LEN as u64;
                (*ev).flags |= flags::ARGS_TRUNCATED;
            }
            if start != 0
                && bpf_probe_read_user_raw(
                    (*ev).args.as_mut_ptr().cast(),
                    n as u32,
                    start as *const _,
                ) == 0
            {
                (*ev).args_len = n as u32;
            }
        }
    }
    // The stop is queued before the daemon can see the event (and resume it).
    if held && crate::env::hold(tgid) {
        // SAFETY: as above.
        unsafe { (*ev).flags |= flags::ENV_HELD };
    }
    entry.submit(0);
    count(counter::EMITTED);
    Ok(())
}

/// `int bprm_check_security(struct linux_binprm *bprm)`: exec rules on the executable
/// (its inode), checked before the new image replaces the old. Rules on arguments
/// cannot act here: the new argv is not readable yet (they act after exec, from
/// userspace).
#[lsm(hook = "bprm_check_security")]
pub(crate) fn bprm_check_security(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    if proc_.depth == 0 {
        return 0;
    }
    let bprm: *const u8 = ctx.arg(0);
    // SAFETY: the kernel's linux_binprm for this hook, read through probe_read.
    let Ok(file) = (unsafe { read_at::<*const u8>(bprm, offsets().bprm_file) }) else {
        return 0;
    };
    // SAFETY: as above.
    let Ok(key) = (unsafe { file_inode_key(file) }) else {
        return 0;
    };
    // SAFETY: value copied out at once.
    let Some(rule) = (unsafe { EXEC_DENY.get(key) }).copied() else {
        return 0;
    };
    let (act, ret) = decide(rule);
    // No path: bpf_d_path needs a pointer the verifier trusts, and this one was read
    // from bprm (the event carries the inode; the exec event has the file name).
    crate::file_open::emit_decision(
        &proc_,
        file_op::EXEC,
        key,
        core::ptr::null(),
        act,
        ret,
        rule.rule,
    );
    ret
}

/// The socket families of fds 0-2 of the new image (see `ExecEvent::stdio_families`):
/// read here, the reverse-shell mark does not depend on the process living long enough
/// for /proc to be read.
#[inline(always)]
fn stdio_families() -> u32 {
    const S_IFMT: u16 = 0o170000;
    const S_IFSOCK: u16 = 0o140000;
    let o = offsets();
    let mut out = openclaw_guard_common::exec::STDIO_KNOWN;
    for fd in 0..3u32 {
        // SAFETY: the current task's fd table and files, read through probe_read.
        let family = unsafe {
            let Ok(file) = crate::file_open::fd_file(fd) else {
                continue;
            };
            if file.is_null() {
                continue;
            }
            let Ok(inode) = read_at::<*const u8>(file, o.file_f_inode) else {
                continue;
            };
            match read_at::<u16>(inode, o.inode_i_mode) {
                Ok(mode) if mode & S_IFMT == S_IFSOCK => {}
                _ => continue,
            }
            let Ok(socket) = read_at::<*const u8>(file, o.file_private_data) else {
                continue;
            };
            let Ok(sk) = read_at::<*const u8>(socket, o.socket_sk) else {
                continue;
            };
            read_at::<u16>(sk, o.sock_family).unwrap_or(0)
        };
        out |= u32::from(family.min(255) as u8) << (fd * 8);
    }
    out
}
