//! The unix-socket sensor: connects and sends from the tree to a unix socket bound at
//! a protected file. It closes delegation (issue 15, route 4): the service manager's,
//! the container daemons' and the terminal multiplexers' sockets take orders from
//! whoever connects, and act outside the tree. The socket is judged by its file's
//! identity (its inode, or a protected directory above it), like a protected file,
//! whatever path, symlink or `/proc/self/root` named it.
//!
//! BPF LSM: `unix_stream_connect` and `unix_may_send` refuse. Tracepoint tier: at a
//! successful `connect`'s exit the connected peer is checked and the caller killed
//! before it can write (unconnected datagram sends are not seen on that tier).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{lsm, map, tracepoint},
    maps::LruHashMap,
    programs::{LsmContext, TracePointContext},
};
use openclaw_guard_common::{action, file_open::op, TrackedProc};

use crate::{
    file_open::{emit, protection, verdict, KERNEL_PATH},
    kernel::{dentry_inode_key, read_at},
    maps::{apply, current_tracked, effective, lsm_ret, offsets, tracked},
};

const AF_UNIX: u16 = 1;

/// Tracepoint tier: a tracked thread's `connect` in flight (fd, user sockaddr), from
/// the syscall's entry to its exit.
#[map]
static CONNECTS: LruHashMap<u64, [u64; 2]> = LruHashMap::pinned(4096, 0);

/// `int unix_stream_connect(struct sock *sock, struct sock *other, struct sock *newsk)`.
#[lsm(hook = "unix_stream_connect")]
pub(crate) fn unix_stream_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    let other: *const u8 = ctx.arg(1);
    lsm_ret(check(&proc_, other, other, 0, false))
}

/// `int unix_may_send(struct socket *sock, struct socket *other)`: datagrams.
#[lsm(hook = "unix_may_send")]
pub(crate) fn unix_may_send(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    let other: *const u8 = ctx.arg(1);
    // SAFETY: the hook's socket, read through probe_read.
    let Ok(sk) = (unsafe { read_at::<*const u8>(other, offsets().socket_sk) }) else {
        return 0;
    };
    lsm_ret(check(&proc_, sk, sk, 0, false))
}

/// `sys_enter_connect(int fd, struct sockaddr *uservaddr, int addrlen)`.
#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub(crate) fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    if current_tracked().is_none() {
        return 0;
    }
    // SAFETY: reading the tracepoint's own record.
    let (fd, addr) = unsafe {
        (
            ctx.read_at::<u64>(16).unwrap_or(u64::MAX),
            ctx.read_at::<u64>(24).unwrap_or(0),
        )
    };
    let _ = CONNECTS.insert(bpf_get_current_pid_tgid(), [fd, addr], 0);
    0
}

/// `sys_exit_connect`: a unix socket now connected to a protected one gets its
/// caller killed before it returns to user space.
#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub(crate) fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    let id = bpf_get_current_pid_tgid();
    // SAFETY: a value copied out at once.
    let Some([fd, addr]) = (unsafe { CONNECTS.get(id) }).copied() else {
        return 0;
    };
    let _ = CONNECTS.remove(id);
    // SAFETY: reading the tracepoint's own record.
    if unsafe { ctx.read_at::<i64>(16) } != Ok(0) {
        return 0;
    }
    let o = offsets();
    // SAFETY: the current task's fd table and its socket, read through probe_read.
    let (sk, peer) = unsafe {
        let Ok(file) = crate::file_open::fd_file(fd as u32) else {
            return 0;
        };
        let Ok(socket) = read_at::<*const u8>(file, o.file_private_data) else {
            return 0;
        };
        let Ok(sk) = read_at::<*const u8>(socket, o.socket_sk) else {
            return 0;
        };
        if read_at::<u16>(sk, o.sock_family) != Ok(AF_UNIX) {
            return 0;
        }
        match read_at::<*const u8>(sk, o.unix_sock_peer) {
            Ok(p) if !p.is_null() => (sk, p),
            _ => return 0,
        }
    };
    // sun_path follows sun_family in the caller's sockaddr_un. The connected socket
    // carries the listener's credentials (copied at connect).
    check(&proc_, peer, sk, addr.wrapping_add(2), true);
    0
}

/// Whether the server behind a unix socket is in a tracked tree: `cred_sk` carries
/// the listener's pid (`sk_peer_pid`). The agent's own tmux server is not a
/// delegation; a server outside the tree is.
#[inline(always)]
fn served_by_tree(cred_sk: *const u8) -> bool {
    let o = offsets();
    // SAFETY: kernel pointers read through probe_read.
    unsafe {
        let Ok(pid) = read_at::<*const u8>(cred_sk, o.sock_sk_peer_pid) else {
            return false;
        };
        if pid.is_null() {
            return false;
        }
        read_at::<u32>(pid, o.pid_numbers).is_ok_and(|tgid| tracked(tgid).is_some())
    }
}

/// The verdict on reaching the unix socket `sk` (0 or the errno); reported when a rule
/// matched. `cred_sk` carries the server's pid. `user_path`: the caller's socket path
/// (tracepoint tier), else the bound name is read from the socket.
#[inline(always)]
fn check(
    proc_: &TrackedProc,
    sk: *const u8,
    cred_sk: *const u8,
    user_path: u64,
    after: bool,
) -> i32 {
    let o = offsets();
    // SAFETY: kernel pointers read through probe_read.
    let dentry: *const u8 =
        unsafe { read_at(sk, o.unix_sock_path + o.path_dentry) }.unwrap_or(core::ptr::null());
    // Abstract and unbound sockets have no file: no identity to protect.
    if dentry.is_null() {
        return 0;
    }
    // SAFETY: as above.
    let Ok(key) = (unsafe { dentry_inode_key(dentry) }) else {
        return 0;
    };
    let Some(rule) = protection(proc_, key, dentry) else {
        return 0;
    };
    if served_by_tree(cred_sk) {
        return 0;
    }
    let (act, ret, rule_id) = if after {
        // Connected already: a kill before the return to user space keeps anything
        // from being written.
        let act = match effective(rule.action) {
            action::DENY | action::KILL => action::KILL,
            other => other,
        };
        (act, apply(act), rule.rule)
    } else {
        verdict(Some(rule))
    };
    let path = if user_path != 0 {
        [user_path, 0]
    } else {
        // SAFETY: as above.
        match unsafe { read_at::<*const u8>(sk, o.unix_sock_addr) } {
            Ok(a) if !a.is_null() => [
                a.wrapping_add(o.unix_address_name as usize + 2) as u64,
                KERNEL_PATH,
            ],
            _ => [0, 0],
        }
    };
    emit(
        proc_,
        op::CONNECT,
        key,
        core::ptr::null(),
        path,
        act,
        ret,
        rule_id,
    );
    ret
}
