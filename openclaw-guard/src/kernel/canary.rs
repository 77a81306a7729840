//! The BPF LSM canary: proof, every second, that BPF LSM still decides. A child of the
//! daemon, tracked for the moment, opens a file self-protection guards for writing;
//! the kernel must refuse it. An open that goes through means BPF LSM decisions are
//! no longer being made, whatever caused it (a kernel knob such as `ftrace_enabled`,
//! a detached program, a kernel bug): `status` and an alert say so at once.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use openclaw_guard_common::TrackedProc;

use crate::kernel::{calibrate::CALIBRATION_ROOT, loader::Guard};

/// What one check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The open was refused (EPERM): BPF LSM decides.
    Refused,
    /// The open went through: BPF LSM does not decide.
    Opened,
    /// The check could not be made (say why; not a verdict on BPF LSM).
    Unknown(String),
}

/// The guarded file the canary opens: next to the status file, created empty.
pub fn path_for(status_file: &Path) -> PathBuf {
    let mut p = status_file.as_os_str().to_owned();
    p.push(".canary");
    PathBuf::from(p)
}

/// Creates the canary file (empty, root-only).
pub fn create(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, b"").with_context(|| format!("creating {}", path.display()))
}

/// One check: a gated child, tracked before it opens `path` for writing.
pub fn check(guard: &mut Guard, path: &Path) -> Verdict {
    match run(guard, path) {
        Ok(v) => v,
        Err(e) => Verdict::Unknown(format!("{e:#}")),
    }
}

fn run(guard: &mut Guard, path: &Path) -> anyhow::Result<Verdict> {
    let cpath = CString::new(path.as_os_str().as_bytes()).context("canary path has a NUL")?;
    let mut fds = [0; 2];
    // SAFETY: plain syscalls; the child only calls async-signal-safe functions on
    // memory prepared before fork.
    let pid = unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            bail!("pipe2: {}", std::io::Error::last_os_error());
        }
        match libc::fork() {
            -1 => {
                libc::close(fds[0]);
                libc::close(fds[1]);
                bail!("fork: {}", std::io::Error::last_os_error());
            }
            0 => {
                let mut b = 0u8;
                libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
                let fd = libc::open(cpath.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                let code = if fd >= 0 {
                    1
                } else if *libc::__errno_location() == libc::EPERM {
                    0
                } else {
                    2
                };
                libc::_exit(code);
            }
            pid => {
                libc::close(fds[0]);
                pid
            }
        }
    };
    let tracked = guard.track(
        pid as u32,
        TrackedProc {
            root: CALIBRATION_ROOT,
            depth: 0,
        },
    );
    // SAFETY: one byte from a valid buffer; then the write end is closed (a child
    // whose gate closes unread runs on: never left blocked).
    unsafe {
        if tracked.is_ok() {
            libc::write(fds[1], [1u8].as_ptr().cast(), 1);
        }
        libc::close(fds[1]);
    }
    let mut status = 0;
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    guard.untrack(pid as u32);
    tracked?;
    Ok(match libc::WEXITSTATUS(status) {
        0 if libc::WIFEXITED(status) => Verdict::Refused,
        1 => Verdict::Opened,
        _ => Verdict::Unknown(format!("canary child ended with status {status:#x}")),
    })
}
