//! The network sensor: BPF LSM `socket_connect`, `socket_sendmsg` (a destination given
//! per send: UDP without connect, TCP Fast Open) and `socket_bind`.

use aya_ebpf::{helpers::generated::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};
use openclaw_guard_common::{
    action, counter, kind,
    net::{op, NetEvent},
    SOCKADDR_LEN,
};

use crate::{
    kernel::read_at,
    maps::{count, header, offsets, tracked, EVENTS},
};

/// `int socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)`.
#[lsm(hook = "socket_connect")]
pub(crate) fn socket_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let addr: *const u8 = ctx.arg(1);
    let len: i32 = ctx.arg(2);
    on_socket(op::CONNECT, ctx.arg(0), addr, len)
}

/// `int socket_sendmsg(struct socket *sock, struct msghdr *msg, int size)`.
#[lsm(hook = "socket_sendmsg")]
pub(crate) fn socket_sendmsg(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let msg: *const u8 = ctx.arg(1);
    let o = offsets();
    // SAFETY: msg is the kernel's msghdr for this hook; read through probe_read.
    let (name, len) = unsafe {
        (
            read_at::<*const u8>(msg, o.msghdr_msg_name).unwrap_or(core::ptr::null()),
            read_at::<i32>(msg, o.msghdr_msg_namelen).unwrap_or(0),
        )
    };
    // A send on a connected socket names no destination: its connect was reported.
    if name.is_null() || len <= 0 {
        return 0;
    }
    on_socket(op::SENDMSG, ctx.arg(0), name, len)
}

/// `int socket_bind(struct socket *sock, struct sockaddr *address, int addrlen)`.
#[lsm(hook = "socket_bind")]
pub(crate) fn socket_bind(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let addr: *const u8 = ctx.arg(1);
    let len: i32 = ctx.arg(2);
    on_socket(op::BIND, ctx.arg(0), addr, len)
}

#[inline(always)]
fn on_socket(operation: u32, sock: *const u8, addr: *const u8, len: i32) -> i32 {
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(proc_) = tracked(tgid) else {
        return 0;
    };
    let Some(mut entry) = EVENTS.reserve::<NetEvent>(0) else {
        count(counter::LOST);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    let o = offsets();
    let mut n = len as u32;
    if n > SOCKADDR_LEN as u32 {
        n = SOCKADDR_LEN as u32;
    }
    // SAFETY: reserved ring-buffer memory; kernel pointers read through probe_read.
    unsafe {
        (*ev).header = header(kind::NET, &proc_);
        (*ev).op = operation;
        (*ev).sock_type = u32::from(read_at::<u16>(sock, o.socket_type).unwrap_or(0));
        (*ev).protocol = match read_at::<*const u8>(sock, o.socket_sk) {
            Ok(sk) => u32::from(read_at::<u16>(sk, o.sock_sk_protocol).unwrap_or(0)),
            Err(_) => 0,
        };
        (*ev).action = action::NONE;
        (*ev).ret = 0;
        (*ev).rule = 0;
        (*ev)._pad = 0;
        (*ev).addr_len =
            if bpf_probe_read_kernel((*ev).sockaddr.as_mut_ptr().cast(), n, addr.cast()) == 0 {
                n
            } else {
                0
            };
    }
    entry.submit(0);
    count(counter::EMITTED);
    0
}
