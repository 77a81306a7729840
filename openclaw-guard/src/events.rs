//! The event schema userspace works with: kernel records decoded once, here, into
//! [`Event`]s that enrichment, policy, outputs and the recorder all share. Field names
//! are stable (documented in the README).

use std::mem::size_of;

use openclaw_guard_common::{
    action, exec::ExecEvent, file_open::FileOpenEvent, flags, kernel_dev_major_minor, kind,
    EventHeader,
};
use serde::Serialize;

/// One event, as printed (JSON lines) and recorded.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Wall-clock time of the kernel hook, RFC 3339 with nanoseconds.
    pub time: String,
    /// Kernel boot-time clock at the hook.
    pub ktime_ns: u64,
    pub kind: &'static str,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// tgid of the gateway this process descends from.
    pub root: u32,
    /// Generations below the gateway (0 = the gateway itself).
    pub depth: u32,
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub payload: Payload,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// Per-kind fields.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Payload {
    Exec(Exec),
    FileOpen(FileOpen),
}

#[derive(Clone, Debug, Serialize)]
pub struct Exec {
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub filename: String,
    pub filename_truncated: bool,
    /// The executable the kernel loaded, as "major:minor".
    pub exe_dev: String,
    pub exe_ino: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FileOpen {
    /// "major:minor".
    pub dev: String,
    pub ino: u64,
    /// `open(2)` flags as the kernel holds them.
    pub flags: u32,
    /// 0, or the negative errno the guard returned.
    pub ret: i32,
}

/// What the guard decided about the event.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Decision {
    pub rule: String,
    /// "deny", "kill" or "alert".
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
}

/// Converts the kernel's boot-time clock to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    realtime_minus_boottime_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let read = |id| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: valid pointer to a timespec.
            unsafe { libc::clock_gettime(id, &mut ts) };
            i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
        };
        Self {
            realtime_minus_boottime_ns: read(libc::CLOCK_REALTIME) - read(libc::CLOCK_BOOTTIME),
        }
    }

    pub fn rfc3339(&self, ktime_ns: u64) -> String {
        let ns = i128::from(ktime_ns) + self.realtime_minus_boottime_ns;
        match jiff::Timestamp::from_nanosecond(ns) {
            Ok(ts) => format!("{ts:.9}"),
            Err(_) => String::from("1970-01-01T00:00:00.000000000Z"),
        }
    }
}

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event header")]
    Short(usize),
    #[error("record of kind {kind} has {len} bytes, expected {expected}")]
    Size {
        kind: u32,
        len: usize,
        expected: usize,
    },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8], clock: &Clock) -> Result<Event, DecodeError> {
    let header: EventHeader = read_pod(bytes).ok_or(DecodeError::Short(bytes.len()))?;
    let expect = |expected: usize| {
        if bytes.len() < expected {
            Err(DecodeError::Size {
                kind: header.kind,
                len: bytes.len(),
                expected,
            })
        } else {
            Ok(())
        }
    };
    let (payload, decision) = match header.kind {
        kind::EXEC => {
            expect(size_of::<ExecEvent>())?;
            let ev: ExecEvent = read_pod(bytes).ok_or(DecodeError::Short(bytes.len()))?;
            let len = (ev.filename_len as usize).min(ev.filename.len());
            (
                Payload::Exec(Exec {
                    ppid: ev.ppid,
                    uid: ev.uid,
                    gid: ev.gid,
                    comm: c_string(&ev.comm),
                    filename: String::from_utf8_lossy(&ev.filename[..len]).into_owned(),
                    filename_truncated: ev.flags & flags::TRUNCATED != 0,
                    exe_dev: dev_string(ev.exe_dev),
                    exe_ino: ev.exe_ino,
                }),
                None,
            )
        }
        kind::FILE_OPEN => {
            expect(size_of::<FileOpenEvent>())?;
            let ev: FileOpenEvent = read_pod(bytes).ok_or(DecodeError::Short(bytes.len()))?;
            let decision = (ev.action != action::NONE).then(|| Decision {
                rule: String::from("protected-file"),
                action: action_name(ev.action),
                errno: (ev.ret < 0).then_some(-ev.ret),
            });
            (
                Payload::FileOpen(FileOpen {
                    dev: dev_string(ev.dev),
                    ino: ev.ino,
                    flags: ev.flags,
                    ret: ev.ret,
                }),
                decision,
            )
        }
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
        payload,
        decision,
    })
}

pub fn kind_name(k: u32) -> &'static str {
    match k {
        kind::EXEC => "exec",
        kind::FILE_OPEN => "file_open",
        kind::FORK => "fork",
        kind::EXIT => "exit",
        _ => "unknown",
    }
}

pub fn action_name(a: u32) -> &'static str {
    match a {
        action::ALERT => "alert",
        action::DENY => "deny",
        action::KILL => "kill",
        _ => "none",
    }
}

/// "major:minor" of a kernel `s_dev`.
pub fn dev_string(dev: u32) -> String {
    let (major, minor) = kernel_dev_major_minor(dev);
    format!("{major}:{minor}")
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
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
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a repr(C) struct as bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
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
        let e = decode(&bytes_of(&ev), &Clock::now()).unwrap();
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
            decode(&[0u8; 3], &Clock::now()).unwrap_err(),
            DecodeError::Short(3)
        );
        let mut h = EventHeader {
            kind: 99,
            ..EventHeader::default()
        };
        assert_eq!(
            decode(&bytes_of(&h), &Clock::now()).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
        h.kind = kind::EXEC;
        assert!(matches!(
            decode(&bytes_of(&h), &Clock::now()),
            Err(DecodeError::Size { .. })
        ));
    }

    #[test]
    fn deny_becomes_a_decision() {
        let mut ev: FileOpenEvent = unsafe { std::mem::zeroed() };
        ev.header.kind = kind::FILE_OPEN;
        ev.action = action::DENY;
        ev.ret = -1;
        let e = decode(&bytes_of(&ev), &Clock::now()).unwrap();
        assert_eq!(
            e.decision,
            Some(Decision {
                rule: "protected-file".into(),
                action: "deny",
                errno: Some(1)
            })
        );
    }
}
