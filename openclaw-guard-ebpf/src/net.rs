//! The network sensor: BPF LSM `socket_connect`, `socket_sendmsg` (a destination given
//! per send: UDP without connect, TCP Fast Open) and `socket_bind`.

use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, generated::bpf_probe_read_kernel},
    macros::{cgroup_sock, cgroup_sock_addr, lsm, tracepoint},
    maps::lpm_trie::Key,
    programs::{LsmContext, SockAddrContext, SockContext, TracePointContext},
};
use openclaw_guard_common::{
    action, counter,
    dns::mapped,
    egress_flags, kind,
    net::{op, NetEvent},
    EgressRule, RuleAction, TrackedProc, EGRESS_PORT_RANGES, SOCKADDR_LEN,
};

use crate::{
    fold::{fold, Decided},
    kernel::read_at,
    maps::{
        count, current_tracked, decide, header, offsets, reserve, wakeup, DNS_ADDRS, EGRESS_NAMES,
        EGRESS_V4, EGRESS_V6,
    },
};

/// `int socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)`.
#[lsm(hook = "socket_connect")]
pub(crate) fn socket_connect(ctx: LsmContext) -> i32 {
    on_address_hook(&ctx, op::CONNECT)
}

/// connect and bind: `(struct socket *sock, struct sockaddr *address, int addrlen)`.
#[inline(always)]
fn on_address_hook(ctx: &LsmContext, operation: u32) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    let addr: *const u8 = ctx.arg(1);
    let len: i32 = ctx.arg(2);
    on_socket(&proc_, operation, ctx.arg(0), addr, len)
}

/// `int socket_sendmsg(struct socket *sock, struct msghdr *msg, int size)`.
#[lsm(hook = "socket_sendmsg")]
pub(crate) fn socket_sendmsg(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    // Untracked senders leave before any read: this hook runs on every send.
    let Some(proc_) = current_tracked() else {
        return 0;
    };
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
    on_socket(&proc_, op::SENDMSG, ctx.arg(0), name, len)
}

/// `int socket_bind(struct socket *sock, struct sockaddr *address, int addrlen)`.
#[lsm(hook = "socket_bind")]
pub(crate) fn socket_bind(ctx: LsmContext) -> i32 {
    on_address_hook(&ctx, op::BIND)
}

/// `int socket_create(int family, int type, int protocol, int kern)`: raw and packet
/// sockets for the tree, refused while egress blocks. They send without a destination
/// the send hooks can read as the kernel will (a header the caller wrote), and they can
/// forge a resolver's answer to the tree's own socket, which the DNS sensor would
/// believe.
#[lsm(hook = "socket_create")]
pub(crate) fn socket_create(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let kern: i32 = ctx.arg(3);
    if kern != 0 {
        return 0;
    }
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    let family: i32 = ctx.arg(0);
    let ty: i32 = ctx.arg(1);
    let protocol: i32 = ctx.arg(2);
    const SOCK_RAW: i32 = 3;
    const SOCK_TYPE_MASK: i32 = 0xf;
    const AF_PACKET: i32 = 17;
    let inet = family == i32::from(AF_INET) || family == i32::from(AF_INET6);
    let raw = (inet && ty & SOCK_TYPE_MASK == SOCK_RAW) || family == AF_PACKET;
    if proc_.depth == 0 || !raw {
        return 0;
    }
    let Some(r) = egress_blocking_rule(action::DENY) else {
        return 0;
    };
    let (act, ret) = decide(r);
    let ret = crate::maps::lsm_ret(ret);
    socket_refused(
        &proc_,
        family,
        ty & SOCK_TYPE_MASK,
        protocol,
        act,
        ret,
        r.rule,
    );
    ret
}

/// Fallback for `socket_create` where BPF LSM is not available, for what the cgroup
/// `sock_create` program does not see (it runs for inet sockets only): a packet socket
/// asked for by the tree while egress blocks gets its caller killed on the way back
/// from the syscall, before it can use it.
/// `sys_enter_socket(int family, int type, int protocol)`.
#[tracepoint(category = "syscalls", name = "sys_enter_socket")]
pub(crate) fn sys_enter_socket(ctx: TracePointContext) -> u32 {
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    // SAFETY: reading the tracepoint's own record.
    let (family, ty) = unsafe {
        (
            ctx.read_at::<u64>(16).unwrap_or(0) as i32,
            ctx.read_at::<u64>(24).unwrap_or(0) as i32,
        )
    };
    const AF_PACKET: i32 = 17;
    if proc_.depth == 0 || family != AF_PACKET {
        return 0;
    }
    let Some(r) = egress_blocking_rule(action::KILL) else {
        return 0;
    };
    let (act, ret) = decide(r);
    socket_refused(&proc_, family, ty & 0xf, 0, act, ret, r.rule);
    0
}

/// The blocking egress rule with `action`, while egress blocks (else none).
#[inline(always)]
fn egress_blocking_rule(action: u32) -> Option<RuleAction> {
    let s = crate::maps::SETTINGS.get(0)?;
    (s.egress_blocks != 0).then_some(RuleAction {
        rule: s.egress_rule,
        action,
    })
}

/// The decision event of a socket refused (or reported) at its creation.
#[inline(always)]
fn socket_refused(
    proc_: &TrackedProc,
    family: i32,
    ty: i32,
    protocol: i32,
    act: u32,
    ret: i32,
    rule: u32,
) {
    let Some(mut entry) = reserve::<NetEvent>(true) else {
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: reserved ring-buffer memory of the right size.
    unsafe {
        (*ev).header = header(kind::NET, proc_);
        (*ev).op = op::SOCKET;
        (*ev).sock_type = ty as u32;
        (*ev).protocol = protocol as u32;
        (*ev).addr_len = 0;
        (*ev).action = act;
        (*ev).ret = ret;
        (*ev).rule = rule;
        (*ev).sock_family = family as u32;
        (*ev).name = 0;
        (*ev).sockaddr = [0; SOCKADDR_LEN];
    }
    entry.submit(0);
    count(counter::EMITTED);
}

const AF_UNSPEC: u16 = 0;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// What makes two destinations the same, for folding: the 28 bytes of a sockaddr_in6
/// (family, port, flow info, address, scope), or of a sockaddr_in's family, port and
/// address with zeros after them, as `on_sock_addr` builds it.
#[inline(always)]
fn fold_sig(raw: &[u8; 28]) -> [u64; 4] {
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&raw[i..i + 8]);
        u64::from_ne_bytes(b)
    };
    let mut last = [0u8; 4];
    last.copy_from_slice(&raw[24..28]);
    [
        word(0),
        word(8),
        word(16),
        u64::from(u32::from_ne_bytes(last)),
    ]
}

/// A kernel copy of the caller's IPv4 or IPv6 sockaddr in `fold_sig`'s layout; other
/// families are not folded.
#[inline(always)]
unsafe fn sockaddr_raw(addr: *const u8) -> Option<[u8; 28]> {
    let mut raw = [0u8; 28];
    // SAFETY: see read_at.
    unsafe {
        match read_at::<u16>(addr, 0).ok()? {
            AF_INET => raw[..8].copy_from_slice(&read_at::<[u8; 8]>(addr, 0).ok()?),
            AF_INET6 => raw = read_at::<[u8; 28]>(addr, 0).ok()?,
            _ => return None,
        }
    }
    Some(raw)
}

/// What the egress rules say of a destination: the rule and action when a deny entry
/// matches, and the name its address was learned under (0: none).
struct Verdict {
    rule: Option<RuleAction>,
    name: u64,
}

/// The name (hash) a destination address stands for, from an unexpired DNS answer.
#[inline(always)]
fn learned_name(a: &[u8; 16]) -> u64 {
    // SAFETY: map lookup, value copied out at once.
    match unsafe { DNS_ADDRS.get(a) } {
        // SAFETY: helper without preconditions.
        Some(v) if v.expires_ns > unsafe { bpf_ktime_get_boot_ns() } => v.name,
        _ => 0,
    }
}

/// Judges a destination given as an IPv4 or IPv6 address (IPv4-mapped IPv6 is IPv4):
/// an entry for the name its address was learned under decides first, else the most
/// specific prefix entry.
#[inline(always)]
fn egress_addr(v4: Option<[u8; 4]>, v6: [u8; 16], port: u16) -> Verdict {
    let key = match v4 {
        Some(a) => mapped(a),
        None => v6,
    };
    let name = learned_name(&key);
    // SAFETY: map lookups, values copied out at once.
    let by_name = if name != 0 {
        unsafe { EGRESS_NAMES.get(name) }.copied()
    } else {
        None
    };
    // A name's entry first; ports it does not list go on to the prefixes.
    if let Some(e) = by_name {
        match judge(&e, port) {
            Judged::Allow => return Verdict { rule: None, name },
            Judged::Deny(r) => {
                return Verdict {
                    rule: Some(r),
                    name,
                }
            }
            Judged::Next => {}
        }
    }
    // The most specific prefix, then less specific ones while an entry leaves the
    // port to them (an allow entry for some ports only): a few steps at most.
    let mut len: u32 = if v4.is_some() { 32 } else { 128 };
    for _ in 0..4 {
        let entry = match v4 {
            Some(a) => EGRESS_V4.get(Key::new(len, a)).copied(),
            None => EGRESS_V6.get(Key::new(len, v6)).copied(),
        };
        let Some(e) = entry else {
            break;
        };
        match judge(&e, port) {
            Judged::Allow => break,
            Judged::Deny(r) => {
                return Verdict {
                    rule: Some(r),
                    name,
                }
            }
            Judged::Next => {
                let p = egress_flags::prefix(e.flags);
                if p == 0 {
                    break;
                }
                len = p - 1;
            }
        }
    }
    Verdict { rule: None, name }
}

/// What one egress entry says of a port.
enum Judged {
    Allow,
    Deny(RuleAction),
    /// The entry does not list the port and leaves it to a less specific entry.
    Next,
}

#[inline(always)]
fn judge(e: &EgressRule, port: u16) -> Judged {
    let mut listed = e.nports == 0;
    for i in 0..EGRESS_PORT_RANGES {
        if (i as u32) < e.nports {
            let r = e.ports[i];
            if port >= (r >> 16) as u16 && port <= (r & 0xffff) as u16 {
                listed = true;
            }
        }
    }
    if !listed {
        return if e.flags & egress_flags::REST_ALLOW != 0 {
            Judged::Allow
        } else {
            Judged::Next
        };
    }
    if e.flags & egress_flags::ALLOW != 0 {
        Judged::Allow
    } else {
        Judged::Deny(RuleAction {
            rule: e.rule,
            action: e.action,
        })
    }
}

/// A bind of the DNS port by the tree, refused while egress blocks: the DNS sensor
/// believes answers by their source (a resolver's address, port 53), and a tree that
/// could answer from port 53 (in a network namespace of its own, where the resolver's
/// loopback address is free) could teach it that any address is an allowed name.
#[inline(always)]
fn bind_refused(port: u16) -> Verdict {
    let rule = if port == 53 {
        match crate::maps::SETTINGS.get(0) {
            Some(s) if s.egress_blocks != 0 => Some(RuleAction {
                rule: s.egress_rule,
                action: openclaw_guard_common::action::DENY,
            }),
            _ => None,
        }
    } else {
        None
    };
    Verdict { rule, name: 0 }
}

/// Judges the destination of a connect or send on an inet socket of family
/// `sock_family` (0 when not known: the sockaddr's own word is taken). The kernel
/// reads the address by the socket's family, whatever the sockaddr's family field
/// says: an IPv4 socket sends to a sockaddr_in marked `AF_UNSPEC`; any other family
/// the rules cannot read, and it is refused by the blocking egress rule.
#[inline(always)]
fn egress(addr: *const u8, sock_family: u16, operation: u32) -> Verdict {
    let none = Verdict {
        rule: None,
        name: 0,
    };
    // SAFETY: kernel copy of the caller's sockaddr, read through probe_read.
    unsafe {
        let Ok(family) = read_at::<u16>(addr, 0) else {
            return none;
        };
        let port = u16::from_be(read_at::<u16>(addr, 2).unwrap_or(0));
        match family {
            AF_INET => match read_at::<[u8; 4]>(addr, 4) {
                Ok(a) => egress_addr(Some(a), [0; 16], port),
                Err(_) => none,
            },
            AF_INET6 => match read_at::<[u8; 16]>(addr, 8) {
                Ok(a) => {
                    // An IPv4-mapped destination (::ffff:a.b.c.d) is that IPv4 address.
                    let is_mapped =
                        a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff;
                    if is_mapped {
                        egress_addr(Some([a[12], a[13], a[14], a[15]]), a, port)
                    } else {
                        egress_addr(None, a, port)
                    }
                }
                Err(_) => none,
            },
            AF_UNSPEC if sock_family == AF_INET && operation == op::SENDMSG => {
                match read_at::<[u8; 4]>(addr, 4) {
                    Ok(a) => egress_addr(Some(a), [0; 16], port),
                    Err(_) => none,
                }
            }
            // A connect with AF_UNSPEC dissolves the association; it sends nothing.
            AF_UNSPEC if operation == op::CONNECT => none,
            _ if sock_family == AF_INET || sock_family == AF_INET6 => {
                match crate::maps::SETTINGS.get(0) {
                    Some(s) if s.egress_blocks != 0 => Verdict {
                        rule: Some(RuleAction {
                            rule: s.egress_rule,
                            action: openclaw_guard_common::action::DENY,
                        }),
                        name: 0,
                    },
                    _ => none,
                }
            }
            _ => none,
        }
    }
}

#[inline(always)]
fn on_socket(
    proc_: &TrackedProc,
    operation: u32,
    sock: *const u8,
    addr: *const u8,
    len: i32,
) -> i32 {
    let o = offsets();
    // SAFETY: the hook's socket, read through probe_read.
    let sock_family = unsafe {
        match read_at::<*const u8>(sock, o.socket_sk) {
            Ok(sk) => read_at::<u16>(sk, o.sock_family).unwrap_or(0),
            Err(_) => 0,
        }
    };
    // The gateway itself is not subject to its children's egress rules; binds are
    // judged in userspace (exposure alerts), but for the DNS port.
    let Verdict { rule, name } = if proc_.depth == 0 {
        Verdict {
            rule: None,
            name: 0,
        }
    } else if operation == op::BIND {
        let inet = sock_family == AF_INET || sock_family == AF_INET6;
        // SAFETY: kernel copy of the caller's sockaddr, read through probe_read.
        let port = u16::from_be(unsafe { read_at::<u16>(addr, 2) }.unwrap_or(0));
        bind_refused(if inet { port } else { 0 })
    } else {
        egress(addr, sock_family, operation)
    };
    let (act, ret, rule_id) = match rule {
        Some(r) => {
            let (act, ret) = decide(r);
            (act, ret, r.rule)
        }
        None => (action::NONE, 0, 0),
    };
    if operation != op::BIND {
        let d = Decided {
            action: act,
            rule: rule_id,
            ret,
        };
        // SAFETY: kernel copy of the caller's sockaddr, read through probe_read.
        if let Some(raw) = unsafe { sockaddr_raw(addr) } {
            if fold(proc_, kind::NET, operation, fold_sig(&raw), d) {
                return ret;
            }
        }
    }
    let Some(mut entry) = reserve::<NetEvent>(act != action::NONE) else {
        return ret;
    };
    let ev = entry.as_mut_ptr();
    let mut n = len as u32;
    if n > SOCKADDR_LEN as u32 {
        n = SOCKADDR_LEN as u32;
    }
    // SAFETY: reserved ring-buffer memory; kernel pointers read through probe_read.
    unsafe {
        (*ev).header = header(kind::NET, proc_);
        (*ev).op = operation;
        (*ev).sock_type = u32::from(read_at::<u16>(sock, o.socket_type).unwrap_or(0));
        (*ev).protocol = match read_at::<*const u8>(sock, o.socket_sk) {
            Ok(sk) => u32::from(read_at::<u16>(sk, o.sock_sk_protocol).unwrap_or(0)),
            Err(_) => 0,
        };
        (*ev).action = act;
        (*ev).ret = ret;
        (*ev).rule = rule_id;
        (*ev).sock_family = u32::from(sock_family);
        (*ev).name = name;
        (*ev).addr_len =
            if bpf_probe_read_kernel((*ev).sockaddr.as_mut_ptr().cast(), n, addr.cast()) == 0 {
                n
            } else {
                0
            };
    }
    // Binds are judged in userspace (exposure): no delay for them.
    entry.submit(wakeup(act != action::NONE || operation == op::BIND));
    count(counter::EMITTED);
    ret
}

// Fallback where BPF LSM is not available: cgroup socket-address programs at the
// cgroup2 root see connect (also TCP Fast Open) and sendmsg (UDP without connect);
// raw and ICMP sockets are refused to the tree at creation, since sendmsg4/6 do not
// see their sends. They cannot kill (bpf_send_signal is not allowed here on 6.1/6.12):
// a kill rule denies.

/// Verdicts of cgroup socket programs.
const CG_ALLOW: i32 = 1;
const CG_DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub(crate) fn cgroup_connect4(ctx: SockAddrContext) -> i32 {
    on_sock_addr(&ctx, op::CONNECT, false)
}

#[cgroup_sock_addr(connect6)]
pub(crate) fn cgroup_connect6(ctx: SockAddrContext) -> i32 {
    on_sock_addr(&ctx, op::CONNECT, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub(crate) fn cgroup_sendmsg4(ctx: SockAddrContext) -> i32 {
    on_sock_addr(&ctx, op::SENDMSG, false)
}

/// Binds (the gateway's ports exposed beyond loopback are judged in userspace).
#[cgroup_sock_addr(bind4)]
pub(crate) fn cgroup_bind4(ctx: SockAddrContext) -> i32 {
    on_sock_addr(&ctx, op::BIND, false)
}

#[cgroup_sock_addr(bind6)]
pub(crate) fn cgroup_bind6(ctx: SockAddrContext) -> i32 {
    on_sock_addr(&ctx, op::BIND, true)
}

#[cgroup_sock_addr(sendmsg6)]
pub(crate) fn cgroup_sendmsg6(ctx: SockAddrContext) -> i32 {
    on_sock_addr(&ctx, op::SENDMSG, true)
}

/// Raw and ICMP sockets for the tree: refused when a deny rule could be bypassed by them.
#[cgroup_sock(sock_create)]
pub(crate) fn cgroup_sock_create(ctx: SockContext) -> i32 {
    let Some(proc_) = current_tracked() else {
        return CG_ALLOW;
    };
    if proc_.depth == 0 {
        return CG_ALLOW;
    }
    // SAFETY: the context's bpf_sock.
    let (ty, proto) = unsafe { ((*ctx.sock).type_, (*ctx.sock).protocol) };
    const SOCK_RAW: u32 = 3;
    const IPPROTO_ICMP: u32 = 1;
    const IPPROTO_ICMPV6: u32 = 58;
    let raw_or_icmp = ty == SOCK_RAW || proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6;
    let Some(r) = egress_blocking_rule(action::DENY).filter(|_| raw_or_icmp) else {
        return CG_ALLOW;
    };
    // In monitor mode the socket is allowed and the refusal reported as an alert.
    let act = crate::maps::effective(r.action);
    let ret = if act == action::DENY { -1 } else { 0 };
    // SAFETY: the context's bpf_sock.
    let family = unsafe { (*ctx.sock).family };
    socket_refused(
        &proc_,
        family as i32,
        ty as i32,
        proto as i32,
        act,
        ret,
        r.rule,
    );
    if act == action::DENY {
        CG_DENY
    } else {
        CG_ALLOW
    }
}

#[inline(always)]
fn on_sock_addr(ctx: &SockAddrContext, operation: u32, v6: bool) -> i32 {
    let Some(proc_) = current_tracked() else {
        return CG_ALLOW;
    };
    // A sockaddr as the caller would have passed it, for the lookup and the event. The
    // verifier allows only the address fields of the hook's own family (`v6` is a
    // constant per program, so the other branch is compiled out).
    let sa = ctx.sock_addr;
    let mut raw = [0u8; 28];
    // SAFETY: the context's bpf_sock_addr, fields read as the verifier allows.
    let (ty, proto) = unsafe {
        let port_be = core::ptr::read_volatile(&(*sa).user_port);
        let family = if v6 { AF_INET6 } else { AF_INET };
        raw[0..2].copy_from_slice(&family.to_ne_bytes());
        raw[2..4].copy_from_slice(&(port_be as u16).to_ne_bytes());
        if !v6 {
            let ip4 = core::ptr::read_volatile(&(*sa).user_ip4);
            raw[4..8].copy_from_slice(&ip4.to_ne_bytes());
        } else {
            for i in 0..4 {
                let w = core::ptr::read_volatile(&(*sa).user_ip6[i]);
                raw[8 + i * 4..12 + i * 4].copy_from_slice(&w.to_ne_bytes());
            }
        }
        (
            core::ptr::read_volatile(&(*sa).type_),
            core::ptr::read_volatile(&(*sa).protocol),
        )
    };
    // The sockaddr above is rebuilt in the hook's own family.
    let family = if v6 { AF_INET6 } else { AF_INET };
    let Verdict { rule, name } = if proc_.depth == 0 {
        Verdict {
            rule: None,
            name: 0,
        }
    } else if operation == op::BIND {
        bind_refused(u16::from_be_bytes([raw[2], raw[3]]))
    } else {
        egress(raw.as_ptr(), family, operation)
    };
    let (act, verdict, ret, rule_id) = match rule {
        Some(r) => match crate::maps::effective(r.action) {
            action::ALERT => (action::ALERT, CG_ALLOW, 0, r.rule),
            // No signals from here: kill degrades to deny.
            _ => (action::DENY, CG_DENY, -1, r.rule),
        },
        None => (action::NONE, CG_ALLOW, 0, 0),
    };
    let d = Decided {
        action: act,
        rule: rule_id,
        ret,
    };
    if operation != op::BIND && fold(&proc_, kind::NET, operation, fold_sig(&raw), d) {
        return verdict;
    }
    if let Some(mut entry) = reserve::<NetEvent>(act != action::NONE) {
        let ev = entry.as_mut_ptr();
        // SAFETY: reserved ring-buffer memory of the right size.
        unsafe {
            (*ev).header = header(kind::NET, &proc_);
            (*ev).op = operation;
            (*ev).sock_type = ty;
            (*ev).protocol = proto;
            (*ev).addr_len = raw.len() as u32;
            (*ev).action = act;
            (*ev).ret = ret;
            (*ev).rule = rule_id;
            (*ev).sock_family = u32::from(family);
            (*ev).name = name;
            let sa = &mut (*ev).sockaddr;
            *sa = [0; SOCKADDR_LEN];
            sa[..28].copy_from_slice(&raw);
        }
        entry.submit(wakeup(act != action::NONE || operation == op::BIND));
        count(counter::EMITTED);
    }
    verdict
}
