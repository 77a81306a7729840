//! Folded repeats (openclaw-guard-ebpf/src/fold.rs): a thread's identical ordinary
//! events after the first, sent as one count.

use openclaw_guard_common::{kind, net::op, repeat::RepeatEvent};

use super::{decision, net::decode_sockaddr};
use crate::events::{dev_string, kind_name, Clock, Decision, DecodeError, Payload, Repeat};

/// A `repeat` record.
pub(super) fn decode(
    bytes: &[u8],
    clock: &Clock,
    names: &super::Names,
) -> Result<(Payload, Option<Decision>), DecodeError> {
    let ev: RepeatEvent = super::record(bytes)?;
    let st = ev.state;
    let mut r = Repeat {
        of: kind_name(st.kind),
        op: "unknown",
        count: st.count,
        first_time: clock.rfc3339(st.start_ns),
        first_ktime_ns: st.start_ns,
        last_time: clock.rfc3339(st.last_ns),
        dev: None,
        ino: None,
        flags: None,
        family: None,
        addr: None,
        port: None,
    };
    if st.kind == kind::FILE_OPEN {
        r.op = "open";
        r.ino = Some(st.sig[0]);
        // The high bits hold the inode's generation (see the eBPF `open_sig`).
        r.dev = Some(dev_string(st.sig[1] as u32));
        r.flags = Some(st.sig[2]);
    } else {
        r.op = match st.op {
            op::CONNECT => "connect",
            op::SENDMSG => "sendmsg",
            _ => "unknown",
        };
        let raw: Vec<u8> = st.sig.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let (family, addr, port, _) = decode_sockaddr(&raw[..28]);
        r.family = Some(family);
        r.addr = Some(addr);
        r.port = Some(port);
    }
    // Refusals fold too: each repeat was checked and decided like the first.
    Ok((
        Payload::Repeat(r),
        decision(names, st.action, st.rule, st.ret),
    ))
}

/// What a decision on this event was about, as an alert line says it.
pub(super) fn target(r: &Repeat) -> String {
    let target = match r.of {
        "file_open" => format!(
            "the same file (dev {} inode {})",
            r.dev.as_deref().unwrap_or(""),
            r.ino.unwrap_or(0)
        ),
        _ => format!(
            "{} port {}",
            r.addr.as_deref().unwrap_or(""),
            r.port.unwrap_or(0)
        ),
    };
    // The first of them was reported in full (at `first_time`).
    format!(
        "{} more {} attempts on {target} by the same thread (like the one at {}):",
        r.count, r.op, r.first_time
    )
}
