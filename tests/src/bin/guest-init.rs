//! PID 1 of the QEMU test guests built by `cargo xtask vm`.
//!
//! Mounts the kernel filesystems the guard needs, runs either the integration runner
//! (`/ocg/test-args`) or a user command (`/ocg/run.sh`), and reports the exit code to
//! the host twice: as an `OCG-VERDICT exit=N` console line (the exact code) and through
//! the isa-debug-exit port (QEMU keeps only a success/failure bit of it).
#![allow(
    unused_crate_dependencies,
    reason = "the package's dependencies serve the integration runner"
)]

// A dependency of the bench binary (one package, one dependency list).
use openclaw_guard as _;
use std::{
    ffi::CString,
    fs,
    io::Write as _,
    os::unix::process::ExitStatusExt as _,
    path::Path,
    process::{Command, ExitStatus},
};

const RUN_SCRIPT: &str = "/ocg/run.sh";
const TEST_ARGS: &str = "/ocg/test-args";
/// Port of QEMU's `-device isa-debug-exit,iobase=0xf4`.
const DEBUG_EXIT_PORT: u16 = 0xf4;

fn main() {
    let code = match run() {
        Ok(code) => code,
        Err(err) => {
            println!("guest-init: {err}");
            // Distinct from any exit code a test runner returns on its own.
            125
        }
    };
    println!("OCG-VERDICT exit={code}");
    let _ = std::io::stdout().flush();
    // The serial driver transmits asynchronously: without draining, QEMU exits on the
    // port write below before the marker has left the guest.
    // SAFETY: tcdrain on our stdout fd; an error (not a tty) is harmless.
    unsafe { libc::tcdrain(1) };
    power_off(code);
}

fn run() -> Result<i32, String> {
    mount_all()?;
    if let Err(err) = loopback_up() {
        // Tests that need networking fail on their own with a clearer message.
        println!("guest-init: cannot bring lo up: {err}");
    }
    // What the tests and a user's `--run` command see as their environment.
    std::env::set_var("PATH", "/bin");
    std::env::set_var("HOME", "/root");
    std::env::set_var("SHELL", "/bin/bash");
    std::env::set_var("OPENCLAW_GUARD_BIN", "/bin/openclaw-guard");
    match scratch_disk() {
        Ok(dir) => std::env::set_var(REUSE_DIR_VAR, dir),
        // The tests that need it skip and say so.
        Err(err) => println!("guest-init: no scratch filesystem: {err}"),
    }

    let lsm = fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_else(|e| format!("?({e})"));
    println!("OCG-LSM {}", lsm.trim());
    println!("OCG-KERNEL {}", kernel_release());

    let status = if Path::new(RUN_SCRIPT).exists() {
        Command::new("/bin/bash")
            .arg(RUN_SCRIPT)
            .current_dir("/root")
            .status()
            .map_err(|e| format!("cannot run /bin/bash {RUN_SCRIPT}: {e}"))?
    } else {
        let args = fs::read_to_string(TEST_ARGS).unwrap_or_default();
        Command::new("/bin/openclaw-guard-integration")
            .args(args.lines().filter(|l| !l.is_empty()))
            .current_dir("/root")
            .status()
            .map_err(|e| format!("cannot run /bin/openclaw-guard-integration: {e}"))?
    };
    Ok(exit_code(status))
}

/// Shell convention: 128 + signal for a killed process.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

fn mount_all() -> Result<(), String> {
    // Order matters: /sys before the filesystems mounted below it.
    let mounts: [(&str, &str, &str); 11] = [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("securityfs", "/sys/kernel/security", "securityfs"),
        ("debugfs", "/sys/kernel/debug", "debugfs"),
        ("tracefs", "/sys/kernel/tracing", "tracefs"),
        ("bpffs", "/sys/fs/bpf", "bpf"),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2"),
        ("tmpfs", "/tmp", "tmpfs"),
        ("tmpfs", "/run", "tmpfs"),
        ("devpts", "/dev/pts", "devpts"),
    ];
    for (source, target, fstype) in mounts {
        fs::create_dir_all(target).map_err(|e| format!("cannot create {target}: {e}"))?;
        let c = |s: &str| CString::new(s).map_err(|e| format!("{s}: {e}"));
        let (source_c, target_c, fstype_c) = (c(source)?, c(target)?, c(fstype)?);
        // SAFETY: valid NUL-terminated strings, no data argument.
        let rc = unsafe {
            libc::mount(
                source_c.as_ptr(),
                target_c.as_ptr(),
                fstype_c.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "cannot mount {fstype} on {target}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    fs::create_dir_all("/root").map_err(|e| format!("cannot create /root: {e}"))?;
    Ok(())
}

/// Where tests find a filesystem that hands a freed inode number to the next file (the
/// tests' own scratch space here is tmpfs, which never reuses one).
const REUSE_DIR_VAR: &str = "OCG_INODE_REUSE_DIR";
const SCRATCH_DISK: &str = "/dev/nvme0n1";
const SCRATCH_MOUNT: &str = "/mnt/ext4";

/// Mounts xtask's scratch disk (NVMe, formatted ext4 on the host).
fn scratch_disk() -> Result<&'static str, String> {
    if !Path::new(SCRATCH_DISK).exists() {
        return Err(format!("{SCRATCH_DISK} is missing"));
    }
    fs::create_dir_all(SCRATCH_MOUNT).map_err(|e| format!("{SCRATCH_MOUNT}: {e}"))?;
    let st = Command::new("/bin/mount")
        .args(["-t", "ext4", SCRATCH_DISK, SCRATCH_MOUNT])
        .status()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !st.success() {
        return Err(format!("mount {SCRATCH_DISK}: {st}"));
    }
    Ok(SCRATCH_MOUNT)
}

fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket(2); the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // Writing (not reading) a union field is safe.
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: fd is a valid socket and req a valid ifreq for SIOCSIFFLAGS.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, std::ptr::from_ref(&req)) };
    let result = if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    };
    // SAFETY: fd came from socket(2) above.
    unsafe { libc::close(fd) };
    result
}

fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a utsname.
    if unsafe { libc::uname(std::ptr::from_mut(&mut uts)) } != 0 {
        return "?".into();
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c.to_ne_bytes()[0])
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Never returns: PID 1 exiting would panic the kernel and hide the verdict.
fn power_off(code: i32) -> ! {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let value: u8 = u8::from(code != 0);
    // SAFETY: ioperm grants this process access to the debug-exit port only; the
    // `out` writes to a port QEMU owns and makes QEMU exit.
    unsafe {
        if libc::ioperm(u64::from(DEBUG_EXIT_PORT), 4, 1) == 0 {
            std::arch::asm!(
                "out dx, al",
                in("dx") DEBUG_EXIT_PORT,
                in("al") value,
                options(nomem, nostack, preserves_flags)
            );
        } else {
            println!(
                "guest-init: ioperm failed: {}",
                std::io::Error::last_os_error()
            );
        }
        // Without the debug-exit device QEMU sees a plain power-off; the host then
        // relies on the console marker and its status check reports the mismatch.
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
