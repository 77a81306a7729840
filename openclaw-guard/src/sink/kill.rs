//! Kills decided in userspace: SIGKILL through a pidfd, after checking that the pid
//! still names the process of the event, and the process group where asked.

use serde::Serialize;

use crate::events::{Event, Payload};

/// What a userspace kill did; recorded in the event's `decision`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KillReport {
    /// `process` or `process_group`.
    pub scope: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgid: Option<i32>,
    /// `killed`, `gone` (exited before the signal), `changed` (the pid now runs
    /// another program: not signalled), `refused` (pid 0/1, the guard itself) or
    /// `failed: <errno text>`.
    pub result: String,
}

impl KillReport {
    pub fn killed(&self) -> bool {
        self.result == "killed"
    }
}

fn report(scope: &'static str, pgid: Option<i32>, result: impl Into<String>) -> KillReport {
    KillReport {
        scope,
        pgid,
        result: result.into(),
    }
}

/// Sends SIGKILL to the event's process (`tgid`); with `group`, first to its process
/// group when the process leads one that is neither the guard's nor the gateway's
/// (`root`): a shell's pipeline lives in the shell's group.
pub fn kill_event_process(event: &Event, group: bool) -> KillReport {
    let Ok(pid) = i32::try_from(event.tgid) else {
        return report("process", None, "refused: pid out of range");
    };
    let own = i32::try_from(std::process::id()).unwrap_or(0);
    if pid <= 1 || pid == own {
        return report("process", None, "refused: pid 0/1 or the guard itself");
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => report("process", None, "gone"),
            _ => report("process", None, format!("failed: pidfd_open: {e}")),
        };
    }
    let Ok(fd) = i32::try_from(fd) else {
        return report("process", None, "failed: pidfd out of range");
    };
    // SAFETY: the fd was just returned by pidfd_open and is owned here only.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // The pidfd pins the process; if the pid was reused since the event, its
    // executable differs from the one the event reports (0: none reported).
    let exe_ino = match &event.payload {
        Payload::Exec(x) => x.exe_ino,
        _ => 0,
    };
    if exe_ino != 0 {
        if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/exe")) {
            if std::os::unix::fs::MetadataExt::ino(&m) != exe_ino {
                return report("process", None, "changed");
            }
        }
    }
    let mut scope = "process";
    let mut pgid_out = None;
    if group {
        // SAFETY: getpgid/getpgrp only read process state.
        let pgid = unsafe { libc::getpgid(pid) };
        let ours = unsafe { libc::getpgrp() };
        let root_pgid = i32::try_from(event.root)
            .ok()
            .filter(|r| *r > 0)
            // SAFETY: as above.
            .map(|r| unsafe { libc::getpgid(r) });
        if pgid == pid && pgid > 1 && pgid != ours && Some(pgid) != root_pgid {
            // SAFETY: kill with a negative pid signals the group; no memory involved.
            if unsafe { libc::kill(-pgid, libc::SIGKILL) } == 0 {
                scope = "process_group";
                pgid_out = Some(pgid);
            }
        }
    }
    // SAFETY: pidfd_send_signal on an fd we own, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if rc == 0 || pgid_out.is_some() {
        return report(scope, pgid_out, "killed");
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ESRCH) => report(scope, pgid_out, "gone"),
        _ => report(scope, pgid_out, format!("failed: {e}")),
    }
}
