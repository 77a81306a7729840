//! Start-up proof that the struct offsets read from BTF are right on this kernel.
//!
//! A wrong offset loads fine and reads garbage, and then a protected inode would never
//! match. So the daemon execs a file it knows (its own binary) in a tracked child and
//! checks what the exec program reported against `stat` and `getpid`.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use aya::maps::{MapData, RingBuf};
use openclaw_guard_common::TrackedProc;
use serde::Serialize;

use crate::{
    events::{Clock, Payload},
    kernel::loader::Guard,
    sensors::decode,
};

pub use crate::kernel::loader::CALIBRATION_ROOT;

/// Outcome of the calibration, shown at start-up and in `status`.
#[derive(Clone, Debug, Serialize)]
pub struct Calibration {
    pub ok: bool,
    pub detail: String,
    /// Ring-buffer records of the calibration child (they count as received).
    #[serde(skip)]
    pub consumed: u64,
    /// Other records read meanwhile (e.g. left by a previous daemon in adopted maps),
    /// for the pipeline to process first.
    #[serde(skip)]
    pub backlog: Vec<Vec<u8>>,
    /// The LSM `file_open` program reported the calibration child's opens: BPF LSM is
    /// in effect (attaching is not proof: without `bpf` in `lsm=` it never runs).
    pub lsm_file_open_fired: bool,
}

/// Userspace `st_dev` as "major:minor", comparable with `events::dev_string`.
pub fn stat_dev_string(dev: u64) -> String {
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

pub fn calibrate(
    guard: &mut Guard,
    events: &mut RingBuf<MapData>,
    execs: &mut RingBuf<MapData>,
    clock: &Clock,
) -> Calibration {
    let mut consumed = 0;
    let mut backlog = Vec::new();
    let mut fired = false;
    match run(
        guard,
        [events, execs],
        clock,
        &mut consumed,
        &mut backlog,
        &mut fired,
    ) {
        Ok(detail) => Calibration {
            ok: true,
            detail,
            consumed,
            backlog,
            lsm_file_open_fired: fired,
        },
        Err(e) => Calibration {
            ok: false,
            detail: format!("{e:#}"),
            consumed,
            backlog,
            lsm_file_open_fired: fired,
        },
    }
}

fn run(
    guard: &mut Guard,
    rings: [&mut RingBuf<MapData>; 2],
    clock: &Clock,
    consumed: &mut u64,
    backlog: &mut Vec<Vec<u8>>,
    fired: &mut bool,
) -> anyhow::Result<String> {
    let exe = std::fs::read_link("/proc/self/exe").context("reading /proc/self/exe")?;
    let meta = std::fs::metadata(&exe).with_context(|| format!("stat {}", exe.display()))?;
    let child = spawn_gated(&exe)?;
    let result = (|| {
        guard.track(
            child.pid,
            TrackedProc {
                root: CALIBRATION_ROOT,
                depth: 0,
            },
        )?;
        child.release()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let [events, execs] = rings;
        while Instant::now() < deadline {
            // The opens first: they happened before the exec that ends the wait.
            while let Some(item) = events.next().or_else(|| execs.next()) {
                let Ok(ev) = decode(&item, clock, &crate::sensors::Names::default()) else {
                    backlog.push(item.to_vec());
                    continue;
                };
                if ev.root != CALIBRATION_ROOT {
                    backlog.push(item.to_vec());
                    continue;
                }
                *consumed += 1;
                if matches!(ev.payload, Payload::FileOpen(_)) {
                    *fired = true;
                }
                let Payload::Exec(exec) = &ev.payload else {
                    continue;
                };
                if ev.tgid != child.pid {
                    continue;
                }
                let want_dev = stat_dev_string(meta.dev());
                // SAFETY: getpid has no preconditions.
                let me = unsafe { libc::getpid() } as u32;
                if exec.exe_ino != meta.ino() || exec.exe_dev != want_dev {
                    bail!(
                        "exec of {} reported inode {} on {}, stat says {} on {}: struct offsets are wrong for this kernel",
                        exe.display(), exec.exe_ino, exec.exe_dev, meta.ino(), want_dev
                    );
                }
                if exec.ppid != me {
                    bail!("exec reported parent {}, expected {me}: task_struct offsets are wrong for this kernel", exec.ppid);
                }
                if exec.filename != exe.to_string_lossy() {
                    bail!(
                        "exec reported file name {:?}, expected {}",
                        exec.filename,
                        exe.display()
                    );
                }
                return Ok(format!(
                    "exec of {} matched (dev {}, inode {}, parent {me})",
                    exe.display(),
                    exec.exe_dev,
                    exec.exe_ino
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!(
            "no exec event for the calibration child {} within 10 s",
            child.pid
        )
    })();
    child.reap();
    guard.untrack(child.pid);
    result
}

/// A child that waits on a pipe before exec'ing, so it can be tracked first.
struct GatedChild {
    pid: u32,
    gate: libc::c_int,
}

fn spawn_gated(exe: &Path) -> anyhow::Result<GatedChild> {
    let path = CString::new(exe.as_os_str().as_bytes()).context("executable path has a NUL")?;
    let arg1 = CString::new("--version").expect("static string");
    let devnull = CString::new("/dev/null").expect("static string");
    let argv = [path.as_ptr(), arg1.as_ptr(), std::ptr::null()];
    let mut fds = [0; 2];
    // SAFETY: plain syscalls. The child only calls async-signal-safe functions on
    // memory prepared before fork.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            bail!("pipe2: {}", std::io::Error::last_os_error());
        }
        let null = libc::open(devnull.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        match libc::fork() {
            -1 => bail!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                let mut b = 0u8;
                libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
                if null >= 0 {
                    libc::dup2(null, 1);
                }
                libc::execv(path.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
            pid => {
                libc::close(fds[0]);
                if null >= 0 {
                    libc::close(null);
                }
                Ok(GatedChild {
                    pid: pid as u32,
                    gate: fds[1],
                })
            }
        }
    }
}

impl GatedChild {
    fn release(&self) -> anyhow::Result<()> {
        // SAFETY: writes one byte from a valid buffer.
        let n = unsafe { libc::write(self.gate, [1u8].as_ptr().cast(), 1) };
        if n != 1 {
            bail!(
                "releasing calibration child: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    fn reap(&self) {
        // SAFETY: closing our end lets a still-waiting child run; then reap it.
        unsafe {
            libc::close(self.gate);
            let mut status = 0;
            libc::waitpid(self.pid as libc::pid_t, &mut status, 0);
        }
    }
}
