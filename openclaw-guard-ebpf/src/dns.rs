//! The DNS sensor: answers of the gateways' resolvers, read as the packet reaches its
//! socket (cgroup skb ingress at the cgroup2 root, so every network namespace), teach
//! `DNS_ADDRS` which addresses a name stands for, before the asker can read them: its
//! connect a moment later is judged by name (`net::egress`). What the host actually
//! got is what counts, so a CDN's rotating addresses and the agent's own lookups agree.
//!
//! Only UDP answers from a `RESOLVERS` address and port 53 are read, one question, up
//! to `MAX_ANSWERS` records, answer names compressed (as resolvers send them); anything
//! else teaches nothing, and an unnamed address is judged by its prefix alone.

use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, macros::cgroup_skb, programs::SkBuffContext};
use openclaw_guard_common::{
    counter,
    dns::{
        hash_step, mapped, DnsAddr, DnsEvent, EVENT_ADDRS, HASH_INIT, MAX_ANSWERS, MAX_TTL_S,
        MIN_TTL_S, QNAME_LEN,
    },
    kind, EventHeader,
};

use crate::maps::{count, DNS_ADDRS, DNS_SCRATCH, PROCS, RESOLVERS};

/// Packets always pass: this program only learns.
const PASS: i32 = 1;

#[cgroup_skb(ingress)]
pub(crate) fn dns_answers(ctx: SkBuffContext) -> i32 {
    let _ = learn(&ctx);
    PASS
}

const IPPROTO_UDP: u8 = 17;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

fn learn(ctx: &SkBuffContext) -> Option<()> {
    // The skb starts at the network header here.
    let first: u8 = ctx.load(0).ok()?;
    let (udp, src) = match first >> 4 {
        4 => {
            if ctx.load::<u8>(9).ok()? != IPPROTO_UDP {
                return None;
            }
            (
                usize::from(first & 0x0f) * 4,
                mapped(ctx.load::<[u8; 4]>(12).ok()?),
            )
        }
        // Extension headers before UDP are not followed.
        6 => {
            if ctx.load::<u8>(6).ok()? != IPPROTO_UDP {
                return None;
            }
            (40, ctx.load::<[u8; 16]>(8).ok()?)
        }
        _ => return None,
    };
    if be16(ctx.load::<[u8; 2]>(udp).ok()?) != 53 {
        return None;
    }
    // Anyone may send from port 53; only the resolvers the gateways use are believed.
    // SAFETY: map lookup, value copied out at once.
    unsafe { RESOLVERS.get(src) }?;
    let msg = udp + 8;
    let head: [u8; 12] = ctx.load(msg).ok()?;
    // A response (QR), standard query, no error, one question.
    if head[2] & 0xf8 != 0x80 || head[3] & 0x0f != 0 || be16([head[4], head[5]]) != 1 {
        return None;
    }
    let answers = u32::from(be16([head[6], head[7]]));
    if answers == 0 {
        return None;
    }
    let ev = DNS_SCRATCH.get_ptr_mut(0)?;
    // Cleared whole, not from where the name ends: indexing by a length learned from
    // the packet would make the verifier walk each length's path separately.
    // SAFETY: per-CPU scratch of this program.
    unsafe {
        (*ev).qname = [0; QNAME_LEN];
        (*ev).addrs = [[0; 16]; EVENT_ADDRS];
    }
    // The question name, hashed in wire form (length bytes and case-folded labels, up
    // to its root byte; a name that does not end within QNAME_LEN is not learned) and
    // kept for the event.
    let mut name = HASH_INIT;
    let mut qlen = 0usize;
    for i in 0..QNAME_LEN {
        let b: u8 = ctx.load(msg + 12 + i).unwrap_or(0xff);
        // SAFETY: per-CPU scratch of this program; i < QNAME_LEN.
        unsafe { (*ev).qname[i] = b };
        if b == 0 {
            qlen = i + 1;
            break;
        }
        name = hash_step(name, b);
    }
    if qlen == 0 {
        return None;
    }
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut at = msg + 12 + qlen + 4;
    let mut learned = 0u32;
    let mut ttl_first = 0;
    for k in 0..MAX_ANSWERS {
        if k >= answers {
            break;
        }
        // The record's owner name: a compression pointer, or the root.
        let b: u8 = match ctx.load(at) {
            Ok(b) => b,
            Err(_) => break,
        };
        if b & 0xc0 == 0xc0 {
            at += 2;
        } else if b == 0 {
            at += 1;
        } else {
            break;
        }
        let rr: [u8; 10] = match ctx.load(at) {
            Ok(rr) => rr,
            Err(_) => break,
        };
        at += 10;
        let ty = be16([rr[0], rr[1]]);
        let class = be16([rr[2], rr[3]]);
        let ttl = u32::from_be_bytes([rr[4], rr[5], rr[6], rr[7]]);
        let rdlen = usize::from(be16([rr[8], rr[9]]));
        let addr = if class != CLASS_IN {
            None
        } else if ty == TYPE_A && rdlen == 4 {
            ctx.load::<[u8; 4]>(at).ok().map(mapped)
        } else if ty == TYPE_AAAA && rdlen == 16 {
            ctx.load::<[u8; 16]>(at).ok()
        } else {
            None
        };
        at += rdlen;
        let Some(addr) = addr else {
            continue;
        };
        let ttl = ttl.clamp(MIN_TTL_S, MAX_TTL_S);
        if learned == 0 {
            ttl_first = ttl;
        }
        let value = DnsAddr {
            name,
            expires_ns: now + u64::from(ttl) * 1_000_000_000,
        };
        let _ = DNS_ADDRS.insert(addr, value, 0);
        let i = learned as usize;
        if i < EVENT_ADDRS {
            // SAFETY: per-CPU scratch; i < EVENT_ADDRS.
            unsafe { (*ev).addrs[i] = addr };
        }
        learned += 1;
    }
    if learned == 0 {
        return None;
    }
    // SAFETY: per-CPU scratch of this program.
    unsafe {
        (*ev).header = EventHeader {
            ktime_ns: now,
            kind: kind::DNS,
            pid: 0,
            tgid: 0,
            root: 0,
            depth: 0,
            _pad: 0,
            cgroup_id: 0,
        };
        (*ev).name = name;
        (*ev).ttl = ttl_first;
        (*ev).naddrs = learned;
        (*ev).resolver = src;
    }
    // SAFETY: per-CPU scratch, filled above.
    if PROCS.output::<DnsEvent>(unsafe { &*ev }, 0).is_ok() {
        count(counter::EMITTED);
    } else {
        count(counter::LOST);
    }
    Some(())
}
