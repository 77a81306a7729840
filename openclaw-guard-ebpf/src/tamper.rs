//! Self-protection: the gateway's tree may not signal or ptrace the guard, nor use
//! `bpf()` at all (BPF LSM `task_kill`, `ptrace_access_check`, `bpf`), nor change the
//! guard's files: binary, policy, state directory and pins (`GUARD_FILES`: write
//! opens, truncate, unlink, rename, link, new entries, unmounting bpffs). Only with BPF
//! LSM: without it the daemon says self-protection is not enforced.
//!
//! Unlike the secrets rules, this holds for the gateway itself (depth 0) too: nothing
//! in the agent has a reason to touch the guard.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use openclaw_guard_common::{
    action, counter, kind,
    tamper::{guarded, op, TamperEvent},
    InodeKey, TrackedProc,
};

use crate::{
    kernel::{dentry_inode_key, dentry_parent, file_dentry, read_at, task_tgid},
    maps::{
        apply, count, current_tracked, effective, header, offsets, reserve, GUARD_FILES, SETTINGS,
    },
};

/// `int task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig, const struct cred *cred)`.
#[lsm(hook = "task_kill")]
pub(crate) fn task_kill(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    let sig: i32 = ctx.arg(2);
    // Signal 0 only probes for existence.
    if sig == 0 {
        return 0;
    }
    let task: *const u8 = ctx.arg(0);
    if targets_guard(task) {
        return deny(&proc_, op::SIGNAL, guard_tgid(), sig as u32);
    }
    match crate::env::signal_refused(&proc_, task) {
        Some(target) => deny_env(&proc_, op::SIGNAL_HELD, target, sig as u32, true),
        None => 0,
    }
}

/// `int ptrace_access_check(struct task_struct *child, unsigned int mode)`.
#[lsm(hook = "ptrace_access_check")]
pub(crate) fn ptrace_access_check(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    let task: *const u8 = ctx.arg(0);
    let mode: u32 = ctx.arg(1);
    if targets_guard(task) {
        return deny(&proc_, op::PTRACE, guard_tgid(), mode);
    }
    // The gateway's environment and memory (and its broker's, and a held process's).
    // `/proc/PID/stat` and the like ask with NOAUDIT for fields they then leave out:
    // refused too, not reported (`ps` would flood the record).
    const PTRACE_MODE_NOAUDIT: u32 = 0x04;
    match crate::env::peek_refused(&proc_, task) {
        Some(target) => deny_env(
            &proc_,
            op::PEEK_SECRETS,
            target,
            mode,
            mode & PTRACE_MODE_NOAUDIT == 0,
        ),
        None => 0,
    }
}

/// `int bpf(int cmd, union bpf_attr *attr, unsigned int size)`: the agent's tree has no
/// business loading programs or touching the guard's maps.
#[lsm(hook = "bpf")]
pub(crate) fn bpf(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    let cmd: i32 = ctx.arg(0);
    deny(&proc_, op::BPF, cmd as u32, 0)
}

/// Opens for writing or with O_TRUNC (`flags`: the file's `f_flags`) of a guarded file,
/// for `file_open` (one program per open on the host, not two: every process pays for
/// each program on this hook). 0, or the refusal.
#[inline(always)]
pub(crate) fn check_open(proc_: &TrackedProc, file: *const u8, flags: u32) -> i32 {
    const O_ACCMODE: u32 = 0o3;
    const O_TRUNC: u32 = 0o1000;
    if flags & (O_ACCMODE | O_TRUNC) == 0 {
        return 0;
    }
    // SAFETY: as above.
    let Ok(dentry) = (unsafe { file_dentry(file) }) else {
        return 0;
    };
    check(proc_, op::WRITE, dentry, core::ptr::null())
}

/// `int inode_unlink(struct inode *dir, struct dentry *dentry)`.
#[lsm(hook = "inode_unlink")]
pub(crate) fn guard_inode_unlink(ctx: LsmContext) -> i32 {
    on_entry(&ctx, 2, op::UNLINK, 1, 1)
}

/// `int inode_rmdir(struct inode *dir, struct dentry *dentry)`.
#[lsm(hook = "inode_rmdir")]
pub(crate) fn guard_inode_rmdir(ctx: LsmContext) -> i32 {
    on_entry(&ctx, 2, op::UNLINK, 1, 1)
}

/// `int inode_create(struct inode *dir, struct dentry *dentry, umode_t mode)`.
#[lsm(hook = "inode_create")]
pub(crate) fn guard_inode_create(ctx: LsmContext) -> i32 {
    on_entry(&ctx, 3, op::CREATE, 1, 1)
}

/// `int inode_mkdir(struct inode *dir, struct dentry *dentry, umode_t mode)`.
#[lsm(hook = "inode_mkdir")]
pub(crate) fn guard_inode_mkdir(ctx: LsmContext) -> i32 {
    on_entry(&ctx, 3, op::CREATE, 1, 1)
}

/// `int inode_link(struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry)`:
/// a second name for a guarded file, or a new entry in a guarded directory.
#[lsm(hook = "inode_link")]
pub(crate) fn guard_inode_link(ctx: LsmContext) -> i32 {
    on_entry(&ctx, 3, op::LINK, 0, 2)
}

/// `int inode_rename(struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
/// struct dentry *new_dentry)`: moving a guarded file away, or anything over it.
#[lsm(hook = "inode_rename")]
pub(crate) fn guard_inode_rename(ctx: LsmContext) -> i32 {
    on_entry(&ctx, 4, op::RENAME, 1, 3)
}

/// `int path_truncate(const struct path *path)`: truncate(2) by name.
#[lsm(hook = "path_truncate")]
pub(crate) fn guard_path_truncate(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    let path: *const u8 = ctx.arg(0);
    // SAFETY: the hook's path, read through probe_read.
    let Ok(dentry) = (unsafe { read_at::<*const u8>(path, offsets().path_dentry) }) else {
        return 0;
    };
    check(&proc_, op::TRUNCATE, dentry, core::ptr::null())
}

/// `int sb_umount(struct vfsmount *mnt, int flags)`: unmounting bpffs would drop the
/// pinned links, and with them the enforcement that outlives the daemon.
#[lsm(hook = "sb_umount")]
pub(crate) fn guard_sb_umount(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    let mnt: *const u8 = ctx.arg(0);
    let o = offsets();
    // SAFETY: kernel pointers read through probe_read.
    let dev = unsafe {
        read_at::<*const u8>(mnt, o.vfsmount_mnt_sb).and_then(|sb| read_at::<u32>(sb, o.sb_s_dev))
    };
    let Ok(dev) = dev else {
        return 0;
    };
    let key = InodeKey::new(dev, 0);
    // SAFETY: value copied out at once.
    match unsafe { GUARD_FILES.get(key) }.copied() {
        Some(flags) if flags & guarded::FS != 0 => {
            deny_file(&proc_, op::UMOUNT, key, core::ptr::null())
        }
        _ => 0,
    }
}

/// A hook whose arguments `first` and `second` are dentries (the same index twice when
/// there is one) and whose previous verdict is argument `ret_arg`.
#[inline(always)]
fn on_entry(ctx: &LsmContext, ret_arg: usize, operation: u32, first: usize, second: usize) -> i32 {
    let previous: i32 = ctx.arg(ret_arg);
    if previous != 0 {
        return previous;
    }
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    let a: *const u8 = ctx.arg(first);
    let b: *const u8 = if second != first {
        ctx.arg(second)
    } else {
        core::ptr::null()
    };
    check(&proc_, operation, a, b)
}

/// Denies when either dentry is guarded.
#[inline(always)]
fn check(proc_: &TrackedProc, operation: u32, a: *const u8, b: *const u8) -> i32 {
    if let Some(key) = guarded_by(a) {
        return deny_file(proc_, operation, key, a);
    }
    if !b.is_null() {
        if let Some(key) = guarded_by(b) {
            return deny_file(proc_, operation, key, b);
        }
    }
    0
}

/// The `GUARD_FILES` entry covering a dentry: its own inode (absent for a name being
/// created), or a guarded directory up to four levels above it.
#[inline(always)]
fn guarded_by(dentry: *const u8) -> Option<InodeKey> {
    if dentry.is_null() {
        return None;
    }
    // SAFETY: dentry pointers read through probe_read; map values copied out at once.
    unsafe {
        if let Ok(key) = dentry_inode_key(dentry) {
            if GUARD_FILES.get(key).is_some() {
                return Some(key);
            }
        }
        let mut d = dentry;
        for _ in 0..4 {
            let parent = dentry_parent(d).ok()?;
            if parent == d {
                return None;
            }
            let key = dentry_inode_key(parent).ok()?;
            if GUARD_FILES.get(key).is_some_and(|f| *f & guarded::DIR != 0) {
                return Some(key);
            }
            d = parent;
        }
    }
    None
}

#[inline(always)]
fn guard_tgid() -> u32 {
    SETTINGS.get(0).map_or(0, |s| s.guard_tgid)
}

#[inline(always)]
fn targets_guard(task: *const u8) -> bool {
    let guard = guard_tgid();
    // SAFETY: the hook's task pointer, read through probe_read.
    guard != 0 && unsafe { task_tgid(task) }.is_ok_and(|t| t == guard)
}

#[inline(always)]
fn deny(proc_: &TrackedProc, operation: u32, target: u32, arg: u32) -> i32 {
    emit(
        proc_,
        operation,
        target,
        arg,
        InodeKey::new(0, 0),
        core::ptr::null(),
    )
}

#[inline(always)]
fn deny_file(proc_: &TrackedProc, operation: u32, key: InodeKey, dentry: *const u8) -> i32 {
    emit(proc_, operation, 0, 0, key, dentry)
}

/// A refusal of the `env` rule (reported when `report`).
#[inline(always)]
fn deny_env(proc_: &TrackedProc, operation: u32, target: u32, arg: u32, report: bool) -> i32 {
    let rule = SETTINGS.get(0).map_or(0, |s| s.env_rule);
    let act = effective(action::DENY);
    let ret = apply(act);
    if report {
        send(
            proc_,
            operation,
            target,
            arg,
            InodeKey::new(0, 0),
            core::ptr::null(),
            rule,
            act,
            ret,
        );
    }
    ret
}

#[inline(always)]
fn emit(
    proc_: &TrackedProc,
    operation: u32,
    target: u32,
    arg: u32,
    key: InodeKey,
    dentry: *const u8,
) -> i32 {
    // Refused, not killed: the rule protects the guard; monitor mode only reports.
    let act = effective(action::DENY);
    let ret = apply(act);
    send(
        proc_,
        operation,
        target,
        arg,
        key,
        dentry,
        openclaw_guard_common::tamper::RULE,
        act,
        ret,
    );
    ret
}

/// Reports a refusal (decision ring).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn send(
    proc_: &TrackedProc,
    operation: u32,
    target: u32,
    arg: u32,
    key: InodeKey,
    dentry: *const u8,
    rule: u32,
    act: u32,
    ret: i32,
) {
    if let Some(mut e) = reserve::<TamperEvent>(true) {
        let ev = e.as_mut_ptr();
        // SAFETY: reserved ring-buffer memory of the right size; the name is read
        // through probe_read.
        unsafe {
            (*ev).header = header(kind::TAMPER, proc_);
            (*ev).op = operation;
            (*ev).target = target;
            (*ev).arg = arg;
            (*ev).action = act;
            (*ev).ret = ret;
            (*ev).dev = key.dev;
            (*ev).ino = key.ino;
            (*ev).rule = rule;
            (*ev)._pad = 0;
            (*ev).name = [0; openclaw_guard_common::NAME_LEN];
            if !dentry.is_null() {
                if let Ok(name) = read_at::<*const u8>(dentry, offsets().dentry_d_name_name) {
                    let _ =
                        aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(name, &mut (*ev).name);
                }
            }
        }
        e.submit(0);
        count(counter::EMITTED);
    }
}
