//! The file sensor and the protected-file rules: BPF LSM `file_open` (also sees
//! io_uring opens), `inode_link` and `inode_rename`.
//!
//! A file is protected by identity (its inode, or a protected directory up to three
//! levels above it) or by name in a protected directory, so symlinks, `..`,
//! /proc/self/root, hard links made earlier and replacements by rename all match.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_str_bytes,
        generated::bpf_d_path,
    },
    macros::{lsm, tracepoint},
    maps::ring_buf::RingBufEntry,
    programs::{LsmContext, TracePointContext},
};
use openclaw_guard_common::{
    action, counter,
    file_open::{op, FileOpenEvent},
    kind, InodeKey, RuleAction, TrackedProc, NAME_LEN, PATH_LEN,
};

use crate::{
    fold::{fold, repeat, Decided},
    kernel::{
        dentry_inode_key, dentry_name_key, dentry_parent, file_dentry, file_inode_instance,
        file_inode_key, read_at,
    },
    maps::{
        apply, count, current_tracked, effective, header, lsm_ret, offsets, reserve, wakeup,
        OPEN_PATHS, PROTECTED_INODES, PROTECTED_NAMES,
    },
};

/// An open's fold signature: the file (number, device, and what tells it from a later
/// inode reusing the number: a reopen inside a window skips the checks, so a reused
/// number must never pass for the file the window allowed) and the open flags.
/// Userspace reads the device from the low 32 bits of `sig[1]`.
#[inline(always)]
fn open_sig(key: InodeKey, [gen, inode]: [u64; 2], flags: u32) -> [u64; 4] {
    [
        key.ino,
        u64::from(key.dev) | (gen << 32),
        u64::from(flags),
        inode,
    ]
}

/// `int file_open(struct file *file)`; the last argument is the previous LSM's verdict.
#[lsm(hook = "file_open")]
pub(crate) fn file_open(ctx: LsmContext) -> i32 {
    on_file_open(&ctx, true)
}

/// The same hook where LSM programs may not call `bpf_d_path` (before 5.11): the
/// path is the one the open syscall was given (kept by `sys_enter_open*`, attached
/// with this program), when it names this file.
#[lsm(hook = "file_open")]
pub(crate) fn file_open_compat(ctx: LsmContext) -> i32 {
    on_file_open(&ctx, false)
}

#[inline(always)]
fn on_file_open(ctx: &LsmContext, d_path: bool) -> i32 {
    // Compat: the path this thread's open syscall gave, taken at once so it never
    // stays for a later open made without a syscall (an exec's binary, io_uring).
    let user = if d_path {
        [0, 0]
    } else {
        let id = bpf_get_current_pid_tgid();
        // SAFETY: a value copied out at once.
        let entry = unsafe { OPEN_PATHS.get(id) }.copied();
        if entry.is_some() {
            let _ = OPEN_PATHS.remove(id);
        }
        entry.unwrap_or([0, 0])
    };
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    let file: *const u8 = ctx.arg(0);
    // SAFETY: `file` is the kernel's file pointer for this hook, read through probe_read.
    let flags: u32 = unsafe { read_at(file, offsets().file_f_flags) }.unwrap_or(0);
    // Inode 0 stands for "unreadable": a Result kept across the calls below leaves
    // registers the verifier sees as uninitialised (R4 !read_ok on 6.12).
    // SAFETY: as above.
    let key = unsafe { file_inode_key(file) }.unwrap_or(InodeKey::new(0, 0));
    // SAFETY: as above.
    let sig = open_sig(key, unsafe { file_inode_instance(file) }, flags);
    // A reopen the thread's window already allowed skips the checks below (the
    // directory walks are most of this hook's cost in a tight loop).
    if key.ino != 0 && repeat(kind::FILE_OPEN, op::OPEN, sig) {
        return 0;
    }
    // The guard's own files first (self-protection, the gateway included).
    let refused = crate::tamper::check_open(&proc_, file, flags);
    if refused != 0 {
        return lsm_ret(refused);
    }
    if key.ino == 0 {
        return 0;
    }
    // SAFETY: as above.
    let dentry = unsafe { file_dentry(file) }.unwrap_or(core::ptr::null());
    let rule = protection(&proc_, key, dentry);
    let (act, ret, rule_id) = verdict(rule);
    // Refused again: still refused (the checks above ran), reported by a count.
    let d = Decided {
        action: act,
        rule: rule_id,
        ret,
    };
    if fold(&proc_, kind::FILE_OPEN, op::OPEN, sig, d) {
        return lsm_ret(ret);
    }
    if d_path {
        emit(&proc_, op::OPEN, key, file, [0, 0], act, ret, rule_id);
    } else {
        emit_compat(&proc_, key, file, dentry, user, act, ret, rule_id);
    }
    lsm_ret(ret)
}

/// `emit` for `file_open_compat`: the kernel's flags, and the caller's path only when
/// its last component is the opened dentry's name (else none: a path that names
/// another file is worse than none).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit_compat(
    proc_: &TrackedProc,
    key: InodeKey,
    file: *const u8,
    dentry: *const u8,
    [user_path, _]: [u64; 2],
    act: u32,
    ret: i32,
    rule: u32,
) {
    let Some(mut entry) = reserve_open(proc_, op::OPEN, key, act, ret, rule) else {
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: an event reserve_open filled but for these fields; kernel and user
    // memory read through probe_read.
    unsafe {
        (*ev).flags = read_at::<u32>(file, offsets().file_f_flags).unwrap_or(0);
        if user_path != 0 {
            if let Ok(b) = bpf_probe_read_user_str_bytes(user_path as *const u8, &mut (*ev).path) {
                let len = b.len();
                if names_dentry(&(*ev).path, len, dentry) {
                    (*ev).path_len = len as u32;
                }
            }
        }
    }
    submit_open(entry, act);
}

/// Whether the last component of `path[..len]` is `dentry`'s name (compared on its
/// first `NAME_LEN - 1` bytes, for a longer name). No search for the last '/': the
/// name's length (`d_name.len`) says where the component starts, and 5.10's verifier
/// takes one short loop.
///
/// # Safety
/// `dentry` is a kernel dentry pointer (read through probe_read).
#[inline(always)]
unsafe fn names_dentry(path: &[u8; PATH_LEN], len: usize, dentry: *const u8) -> bool {
    if dentry.is_null() || len == 0 || len >= PATH_LEN {
        return false;
    }
    let at = offsets().dentry_d_name_name;
    let mut name = [0u8; NAME_LEN];
    // SAFETY: see the function's contract. `struct qstr` is { u32 hash; u32 len;
    // const char *name }: the length sits just before the name pointer.
    let Ok(full) = (unsafe { read_at::<u32>(dentry, at.wrapping_sub(4)) }) else {
        return false;
    };
    // SAFETY: as above.
    let Ok(n) = (unsafe {
        read_at::<*const u8>(dentry, at)
            .and_then(|p| bpf_probe_read_kernel_str_bytes(p, &mut name).map(|b| b.len()))
    }) else {
        return false;
    };
    let full = full as usize;
    if n >= NAME_LEN || full == 0 || full > len || n > full {
        return false;
    }
    let start = len - full;
    if start > 0 && path[(start - 1) & (PATH_LEN - 1)] != b'/' {
        return false;
    }
    // All NAME_LEN bytes, the ones past `n` ignored: a loop whose trip count depends
    // on `n` becomes, after LLVM, a count the 5.10 verifier cannot bound (the volatile
    // read keeps LLVM from deriving one).
    let mut differ = 0u8;
    for (i, b) in name.iter().enumerate() {
        // SAFETY: reads a local.
        let within = i < unsafe { core::ptr::read_volatile(&n) };
        if within {
            differ |= path[(start + i) & (PATH_LEN - 1)] ^ *b;
        }
    }
    differ == 0
}

/// `int inode_link(struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry)`:
/// a new name for a protected file would be a way around name-based protection.
#[lsm(hook = "inode_link")]
pub(crate) fn inode_link(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    on_dentry(op::LINK, ctx.arg(0), core::ptr::null())
}

/// `int inode_rename(struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
/// struct dentry *new_dentry)`: moving a secret away, or a file over a secret's name.
#[lsm(hook = "inode_rename")]
pub(crate) fn inode_rename(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    on_dentry(op::RENAME, ctx.arg(1), ctx.arg(3))
}

/// Fallback tier: the path the user gave, kept from the open syscall's entry for its
/// exit (where only the fd is known; `bpf_d_path` is not allowed in tracepoints).
/// `sys_enter_open` has (filename, flags); openat (dfd, filename, flags); openat2 (dfd,
/// filename, how), `how` a user pointer to `struct open_how` whose first field is the
/// flags. The flags tell a read from a write where the kernel's `f_flags` is not read.
#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub(crate) fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    on_open_enter(&ctx, 24, 32, false)
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub(crate) fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    on_open_enter(&ctx, 24, 32, true)
}

#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub(crate) fn sys_enter_open(ctx: TracePointContext) -> u32 {
    on_open_enter(&ctx, 16, 24, false)
}

#[inline(always)]
fn on_open_enter(ctx: &TracePointContext, filename_at: usize, flags_at: usize, how: bool) -> u32 {
    if current_tracked().is_none() {
        return 0;
    }
    // SAFETY: reading the tracepoint's own record.
    let Ok(ptr) = (unsafe { ctx.read_at::<u64>(filename_at) }) else {
        return 0;
    };
    // SAFETY: as above; `how` is read from user memory through probe_read_user.
    let flags = unsafe {
        let arg = ctx.read_at::<u64>(flags_at).unwrap_or(0);
        if how {
            aya_ebpf::helpers::bpf_probe_read_user(arg as *const u64).unwrap_or(0)
        } else {
            arg
        }
    };
    let _ = OPEN_PATHS.insert(bpf_get_current_pid_tgid(), [ptr, flags], 0);
    0
}

/// Fallback where BPF LSM is not available: at the exit of an open syscall, the new
/// fd's file is checked and a protected one gets the opener SIGKILLed before it returns
/// to user space (it never reads). Opens through io_uring are not seen on this tier.
#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub(crate) fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub(crate) fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub(crate) fn sys_exit_open(ctx: TracePointContext) -> u32 {
    on_open_exit(&ctx)
}

#[inline(always)]
fn on_open_exit(ctx: &TracePointContext) -> u32 {
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    let id = bpf_get_current_pid_tgid();
    // SAFETY: a value copied out at once.
    let [user_path, user_flags] = unsafe { OPEN_PATHS.get(id) }.copied().unwrap_or([0, 0]);
    let _ = OPEN_PATHS.remove(id);
    // `long ret` follows the common fields and `int __syscall_nr` (+ padding).
    // SAFETY: reading the tracepoint's own record.
    let Ok(fd) = (unsafe { ctx.read_at::<i64>(16) }) else {
        return 0;
    };
    if fd < 0 {
        return 0;
    }
    // SAFETY: the current task's fd table, read through probe_read.
    let Ok(file) = (unsafe { fd_file(fd as u32) }) else {
        return 0;
    };
    // SAFETY: as above.
    let Ok(key) = (unsafe { file_inode_key(file) }) else {
        return 0;
    };
    // SAFETY: as above.
    let sig = open_sig(key, unsafe { file_inode_instance(file) }, user_flags as u32);
    // As in the LSM hook: a reopen the window already allowed needs no checks.
    if repeat(kind::FILE_OPEN, op::OPEN, sig) {
        return 0;
    }
    // SAFETY: as above.
    let dentry = unsafe { file_dentry(file) }.unwrap_or(core::ptr::null());
    let (act, ret, rule_id) = match protection(&proc_, key, dentry) {
        Some(r) => {
            // Too late to deny: the open succeeded. A kill before the return to user
            // space keeps the content from being read.
            let act = match effective(r.action) {
                action::DENY | action::KILL => action::KILL,
                other => other,
            };
            (act, apply(act), r.rule)
        }
        // The gateway's environment or memory through /proc (the `env` rule; with BPF
        // LSM, `ptrace_access_check` refuses the open itself).
        None => match crate::env::peeked_file(&proc_, file, dentry) {
            Some(_) => {
                let act = effective(action::KILL);
                let rule = crate::maps::SETTINGS.get(0).map_or(0, |s| s.env_rule);
                (act, apply(act), rule)
            }
            None => (action::NONE, 0, 0),
        },
    };
    let d = Decided {
        action: act,
        rule: rule_id,
        ret,
    };
    if fold(&proc_, kind::FILE_OPEN, op::OPEN, sig, d) {
        return 0;
    }
    emit(
        &proc_,
        op::OPEN,
        key,
        core::ptr::null(),
        [user_path, user_flags],
        act,
        ret,
        rule_id,
    );
    0
}

/// The `struct file` behind an fd of the current task.
#[inline(always)]
pub(crate) unsafe fn fd_file(fd: u32) -> Result<*const u8, i32> {
    let o = offsets();
    // SAFETY: kernel pointers read through probe_read.
    unsafe {
        let task = aya_ebpf::helpers::bpf_get_current_task() as *const u8;
        let files: *const u8 = read_at(task, o.task_files)?;
        let fdt: *const u8 = read_at(files, o.files_fdt)?;
        let fds: *const u8 = read_at(fdt, o.fdtable_fd)?;
        read_at(fds, fd.wrapping_mul(8))
    }
}

fn on_dentry(operation: u32, old: *const u8, new: *const u8) -> i32 {
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    // SAFETY: dentries of this hook, read through probe_read.
    let Ok(key) = (unsafe { dentry_inode_key(old) }) else {
        return 0;
    };
    let mut rule = protection(&proc_, key, old);
    if rule.is_none() && !new.is_null() {
        // SAFETY: as above; the new dentry may be negative (no inode): only its name
        // and parent are read.
        rule = unsafe { name_protection(&proc_, new) };
    }
    let (act, ret, rule_id) = verdict(rule);
    if act != action::NONE {
        emit(
            &proc_,
            operation,
            key,
            core::ptr::null(),
            [0, 0],
            act,
            ret,
            rule_id,
        );
    }
    ret
}

#[inline(always)]
pub(crate) fn verdict(rule: Option<RuleAction>) -> (u32, i32, u32) {
    match rule {
        Some(r) => {
            let (act, ret) = crate::maps::decide(r);
            (act, ret, r.rule)
        }
        None => (action::NONE, 0, 0),
    }
}

/// The rule protecting a file, for this process. The gateway itself (depth 0) keeps
/// access to its own secrets.
#[inline(always)]
pub(crate) fn protection(
    proc_: &TrackedProc,
    key: InodeKey,
    dentry: *const u8,
) -> Option<RuleAction> {
    if proc_.depth == 0 {
        return None;
    }
    // SAFETY: values copied out at once.
    if let Some(r) = unsafe { PROTECTED_INODES.get(key) } {
        return Some(*r);
    }
    if dentry.is_null() {
        return None;
    }
    // SAFETY: dentry pointers read through probe_read.
    unsafe {
        if let Some(r) = name_protection(proc_, dentry) {
            return Some(r);
        }
        // Protected directories, up to three levels above the file.
        let mut d = dentry;
        for _ in 0..3 {
            let Ok(parent) = dentry_parent(d) else {
                return None;
            };
            if parent == d {
                return None;
            }
            let Ok(pkey) = dentry_inode_key(parent) else {
                return None;
            };
            if let Some(r) = PROTECTED_INODES.get(pkey) {
                return Some(*r);
            }
            d = parent;
        }
    }
    None
}

/// The rule protecting a dentry's name inside its directory.
#[inline(always)]
unsafe fn name_protection(proc_: &TrackedProc, dentry: *const u8) -> Option<RuleAction> {
    if proc_.depth == 0 {
        return None;
    }
    // SAFETY: dentry pointers read through probe_read; values copied out at once.
    unsafe {
        let parent = dentry_parent(dentry).ok()?;
        let dir = dentry_inode_key(parent).ok()?;
        let name = dentry_name_key(dentry, dir).ok()?;
        PROTECTED_NAMES.get(name).copied()
    }
}

/// A decision about a file made by another sensor (exec rules).
#[inline(always)]
pub(crate) fn emit_decision(
    proc_: &TrackedProc,
    operation: u32,
    key: InodeKey,
    file: *const u8,
    act: u32,
    ret: i32,
    rule: u32,
) {
    emit(proc_, operation, key, file, [0, 0], act, ret, rule);
}

/// With [`KERNEL_PATH`] in `emit`'s flags word, the path pointer is kernel memory.
pub(crate) const KERNEL_PATH: u64 = 1 << 63;

/// `file` (LSM tier) gives the path the kernel resolved and the flags; else `user`
/// (tracepoint tier: the path's user pointer or 0, and the flags the caller passed)
/// gives the path as the caller wrote it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit(
    proc_: &TrackedProc,
    operation: u32,
    key: InodeKey,
    file: *const u8,
    [user_path, user_flags]: [u64; 2],
    act: u32,
    ret: i32,
    rule: u32,
) {
    let Some(mut entry) = reserve_open(proc_, operation, key, act, ret, rule) else {
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: an event reserve_open filled but for these fields; kernel memory read
    // through probe_read or bpf_d_path.
    unsafe {
        if !file.is_null() {
            (*ev).flags = read_at::<u32>(file, offsets().file_f_flags).unwrap_or(0);
            // The path the kernel resolved, whatever name (symlink, `..`,
            // /proc/self/root, fd) the caller used.
            let path = file.wrapping_add(offsets().file_f_path as usize);
            let n = bpf_d_path(
                path as *mut _,
                (*ev).path.as_mut_ptr().cast(),
                PATH_LEN as u32,
            );
            if n > 0 {
                (*ev).path_len = n as u32;
            }
        } else if user_path != 0 && user_flags & KERNEL_PATH != 0 {
            let src = user_path as *const u8;
            if let Ok(b) = aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(src, &mut (*ev).path)
            {
                (*ev).path_len = b.len() as u32;
            }
        } else if user_path != 0 {
            (*ev).flags = user_flags as u32;
            if let Ok(b) = bpf_probe_read_user_str_bytes(user_path as *const u8, &mut (*ev).path) {
                (*ev).path_len = b.len() as u32;
            }
        }
    }
    submit_open(entry, act);
}

/// A file event reserved in its ring with everything set but its path and flags
/// (empty, 0): what `emit` and `emit_compat` share.
#[inline(always)]
fn reserve_open(
    proc_: &TrackedProc,
    operation: u32,
    key: InodeKey,
    act: u32,
    ret: i32,
    rule: u32,
) -> Option<RingBufEntry<FileOpenEvent>> {
    let mut entry = reserve::<FileOpenEvent>(act != action::NONE)?;
    let ev = entry.as_mut_ptr();
    // SAFETY: reserved ring-buffer memory of the right size.
    unsafe {
        (*ev).header = header(kind::FILE_OPEN, proc_);
        (*ev).ino = key.ino;
        (*ev).dev = key.dev;
        (*ev).action = act;
        (*ev).ret = ret;
        (*ev).rule = rule;
        (*ev).op = operation;
        (*ev)._pad = 0;
        (*ev).flags = 0;
        (*ev).path_len = 0;
    }
    Some(entry)
}

#[inline(always)]
fn submit_open(entry: RingBufEntry<FileOpenEvent>, act: u32) {
    entry.submit(wakeup(act != action::NONE));
    count(counter::EMITTED);
}
