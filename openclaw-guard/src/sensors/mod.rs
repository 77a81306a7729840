//! The kernel's sensors, userspace side: one module per sensor, named like its kernel
//! program (`openclaw-guard-ebpf/src/<name>.rs`) and its tests
//! (`tests/src/sensors/<name>.rs`). Each holds what userspace knows of that sensor:
//! the decoder of its ring-buffer records into the schema ([`crate::events`]), and
//! where it has them, its programs, how it enforces (for start-up and `status`) and how
//! a kernel decision of it reads in an alert.

pub mod dns;
pub mod env;
pub mod exec;
pub mod file_open;
pub mod fold;
pub mod net;
pub mod tamper;
pub mod tree;
pub mod unix;

use std::{collections::HashMap, mem::size_of, path::PathBuf};

use openclaw_guard_common::{action, kind, EventHeader, InodeKey};

use crate::events::{kind_name, Clock, Decision, DecodeError, Event, Payload, Taken};

/// What the decoders name from the daemon's state, kept by the daemon beside the
/// policy it applied: rule ids as the policy names them, and the guard's own files by
/// inode (self-protection). Empty: `rule-N` and `dev M:N inode I`.
#[derive(Clone, Debug, Default)]
pub struct Names {
    pub rules: HashMap<u32, String>,
    pub guard_paths: HashMap<InodeKey, PathBuf>,
}

impl Names {
    fn rule(&self, id: u32) -> String {
        self.rules
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("rule-{id}"))
    }
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8], clock: &Clock, names: &Names) -> Result<Event, DecodeError> {
    let header: EventHeader = read_pod(bytes).ok_or(DecodeError::Short(bytes.len()))?;
    let (payload, decision) = match header.kind {
        kind::EXEC => exec::decode(bytes)?,
        kind::FILE_OPEN => file_open::decode(bytes, names)?,
        kind::FORK => tree::decode_fork(bytes)?,
        kind::EXIT => tree::decode_exit(bytes)?,
        kind::NET => net::decode(bytes, names)?,
        kind::TAMPER => tamper::decode(bytes, names)?,
        kind::REPEAT => fold::decode(bytes, clock, names)?,
        kind::DNS => dns::decode(bytes)?,
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(Event {
        time: clock.rfc3339(header.ktime_ns),
        ktime_ns: header.ktime_ns,
        kind: kind_name(header.kind),
        pid: header.pid,
        tgid: header.tgid,
        root: header.root,
        depth: header.depth,
        cgroup_id: header.cgroup_id,
        lineage: Vec::new(),
        role: None,
        tool_call: None,
        payload,
        decision,
    })
}

/// What a kernel decision on a sensor's event was about, as an alert line says it
/// (`open of `PATH``, `connect to ADDR port N`, ...); `None` for kinds no rule
/// decides.
pub fn decision_target(event: &Event) -> Option<String> {
    Some(match &event.payload {
        Payload::FileOpen(f) => file_open::target(f),
        Payload::Exec(x) => exec::target(x),
        Payload::Net(n) => net::target(n),
        Payload::Repeat(r) => fold::target(r),
        Payload::Tamper(t) => tamper::target(t),
        Payload::Fork(_) | Payload::Exit(_) | Payload::Dns(_) => return None,
    })
}

/// A record of kind `T`, or how it is malformed (its size from its header's kind).
fn record<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        // The header is read again on this error path only.
        let header: EventHeader = read_pod(bytes).ok_or(DecodeError::Short(bytes.len()))?;
        return Err(DecodeError::Size {
            kind: header.kind,
            len: bytes.len(),
            expected: size_of::<T>(),
        });
    }
    read_pod(bytes).ok_or(DecodeError::Short(bytes.len()))
}

/// A kernel decision, named by the rule table the daemon loaded (see `rule_name`).
pub(super) fn decision(names: &Names, act: u32, rule: u32, ret: i32) -> Option<Decision> {
    Taken::from_kernel(act).map(|action| Decision {
        rule: names.rule(rule),
        action,
        errno: (ret < 0).then_some(-ret),
        degraded_from: (act == action::KILL_LIMITED).then_some("kill"),
    })
}

/// Reads a plain-data struct from the front of a byte slice.
fn read_pod<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is one of the repr(C) integer-only wire structs, valid
    // for any bit pattern; read_unaligned because ring-buffer records are 8-aligned only.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use openclaw_guard_common::{
        action, exec::ExecEvent, file_open::FileOpenEvent, flags, kind, EventHeader,
    };

    use super::{decode, dns::qname_text, exec::split_args, net::decode_sockaddr};
    use crate::events::{Clock, Decision, DecodeError, Taken};

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a repr(C) struct as bytes.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    #[test]
    fn decodes_exec_with_truncation_flag() {
        let mut ev: ExecEvent = unsafe { std::mem::zeroed() };
        ev.header.kind = kind::EXEC;
        ev.header.tgid = 42;
        ev.ppid = 7;
        ev.comm[..4].copy_from_slice(b"true");
        ev.filename[..9].copy_from_slice(b"/bin/true");
        ev.filename_len = 9;
        ev.flags = flags::TRUNCATED;
        ev.exe_dev = openclaw_guard_common::kernel_dev(8, 1);
        let e = decode(&bytes_of(&ev), &Clock::now(), &super::Names::default()).unwrap();
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "exec");
        assert_eq!(json["filename"], "/bin/true");
        assert_eq!(json["comm"], "true");
        assert_eq!(json["ppid"], 7);
        assert_eq!(json["exe_dev"], "8:1");
        assert_eq!(json["filename_truncated"], true);
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(
            decode(&[0u8; 3], &Clock::now(), &super::Names::default()).unwrap_err(),
            DecodeError::Short(3)
        );
        let mut h = EventHeader {
            kind: 99,
            ..EventHeader::default()
        };
        assert_eq!(
            decode(&bytes_of(&h), &Clock::now(), &super::Names::default()).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
        h.kind = kind::EXEC;
        assert!(matches!(
            decode(&bytes_of(&h), &Clock::now(), &super::Names::default()),
            Err(DecodeError::Size { .. })
        ));
    }

    #[test]
    fn deny_becomes_a_decision() {
        let mut ev: FileOpenEvent = unsafe { std::mem::zeroed() };
        ev.header.kind = kind::FILE_OPEN;
        ev.action = action::DENY;
        ev.ret = -1;
        ev.rule = 7;
        let e = decode(&bytes_of(&ev), &Clock::now(), &super::Names::default()).unwrap();
        assert_eq!(
            e.decision,
            Some(Decision {
                rule: "rule-7".into(),
                action: Taken::Deny,
                errno: Some(1),
                degraded_from: None,
            })
        );
        // The daemon's names for its rule ids, passed in: no process-wide state.
        let names = super::Names {
            rules: [(7, "secrets".to_owned())].into(),
            ..Default::default()
        };
        let e = decode(&bytes_of(&ev), &Clock::now(), &names).unwrap();
        assert_eq!(e.decision.map(|d| d.rule).as_deref(), Some("secrets"));
        ev.action = action::KILL_LIMITED;
        let e = decode(&bytes_of(&ev), &Clock::now(), &super::Names::default()).unwrap();
        let d = e.decision.unwrap();
        assert_eq!((d.action, d.degraded_from), (Taken::Deny, Some("kill")));
    }

    #[test]
    fn question_names_as_text() {
        assert_eq!(
            qname_text(b"\x03api\x07Example\x03com\x00junk"),
            "api.example.com"
        );
        assert_eq!(qname_text(b"\x02a\x01\x00"), "a\\x01");
        assert_eq!(qname_text(b"\x00"), "");
        // A hash of the text form is the kernel's hash of the wire form.
        assert_eq!(
            openclaw_guard_common::dns::name_hash("api.example.com"),
            b"\x03api\x07example\x03com"
                .iter()
                .fold(openclaw_guard_common::dns::HASH_INIT, |h, b| {
                    openclaw_guard_common::dns::hash_step(h, *b)
                })
        );
    }

    #[test]
    fn sockaddr_decoding_folds_ipv4_mapped() {
        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[18..20].copy_from_slice(&[0xff, 0xff]);
        v6[20..24].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(
            decode_sockaddr(&v6),
            ("inet6".into(), "10.1.2.3".into(), 443, true)
        );
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&53u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            decode_sockaddr(&v4),
            ("inet".into(), "127.0.0.1".into(), 53, false)
        );
        let mut un = vec![0u8; 8];
        un[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        un[2..7].copy_from_slice(b"\0abcd");
        assert_eq!(decode_sockaddr(&un).1, "@abcd");
    }

    #[test]
    fn args_split_on_nul() {
        assert_eq!(
            split_args(b"sh\0-c\0echo hi\0"),
            vec!["sh", "-c", "echo hi"]
        );
        assert!(split_args(b"").is_empty());
    }
}
