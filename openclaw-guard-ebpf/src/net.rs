//! The network sensor: BPF LSM `socket_connect`, `socket_sendmsg` (a destination given
//! per send: UDP without connect, TCP Fast Open) and `socket_bind`.

use aya_ebpf::{
    helpers::generated::bpf_probe_read_kernel, macros::lsm, maps::lpm_trie::Key,
    programs::LsmContext,
};
use openclaw_guard_common::{
    action, counter, kind,
    net::{op, NetEvent},
    RuleAction, EGRESS_PORT_RANGES, SOCKADDR_LEN,
};

use crate::{
    kernel::read_at,
    maps::{apply, count, effective, header, offsets, tracked, EGRESS_V4, EGRESS_V6, EVENTS},
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

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The egress rule matching a destination, if it is on a deny list.
#[inline(always)]
fn egress(addr: *const u8) -> Option<RuleAction> {
    // SAFETY: kernel copy of the caller's sockaddr, read through probe_read.
    unsafe {
        let family: u16 = read_at(addr, 0).ok()?;
        let port = u16::from_be(read_at::<u16>(addr, 2).ok()?);
        let rule = match family {
            AF_INET => {
                let a: [u8; 4] = read_at(addr, 4).ok()?;
                EGRESS_V4.get(Key::new(32, a)).copied()
            }
            AF_INET6 => {
                let a: [u8; 16] = read_at(addr, 8).ok()?;
                // An IPv4-mapped destination (::ffff:a.b.c.d) is that IPv4 address.
                let mapped = a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff;
                if mapped {
                    EGRESS_V4
                        .get(Key::new(32, [a[12], a[13], a[14], a[15]]))
                        .copied()
                } else {
                    EGRESS_V6.get(Key::new(128, a)).copied()
                }
            }
            _ => None,
        }?;
        if rule.allow != 0 {
            return None;
        }
        if rule.nports != 0 {
            let mut hit = false;
            for i in 0..EGRESS_PORT_RANGES {
                if (i as u32) < rule.nports {
                    let r = rule.ports[i];
                    if port >= (r >> 16) as u16 && port <= (r & 0xffff) as u16 {
                        hit = true;
                    }
                }
            }
            if !hit {
                return None;
            }
        }
        Some(RuleAction {
            rule: rule.rule,
            action: rule.action,
        })
    }
}

#[inline(always)]
fn on_socket(operation: u32, sock: *const u8, addr: *const u8, len: i32) -> i32 {
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(proc_) = tracked(tgid) else {
        return 0;
    };
    // The gateway itself is not subject to its children's egress rules; binds are
    // judged in userspace (exposure alerts).
    let rule = if proc_.depth > 0 && operation != op::BIND {
        egress(addr)
    } else {
        None
    };
    let (act, ret, rule_id) = match rule {
        Some(r) => {
            let act = effective(r.action);
            (act, apply(act), r.rule)
        }
        None => (action::NONE, 0, 0),
    };
    let Some(mut entry) = EVENTS.reserve::<NetEvent>(0) else {
        count(counter::LOST);
        return ret;
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
        (*ev).action = act;
        (*ev).ret = ret;
        (*ev).rule = rule_id;
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
    ret
}
