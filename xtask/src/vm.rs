//! Booting QEMU guests and reading their verdict, and the same runner on the host.

use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{
    build::StaticBins,
    cmd,
    report::{parse_results, Counts, EnvResult},
};

pub(crate) const DEFAULT_LSM: &str = "lockdown,capability,landlock,yama,apparmor,bpf";
/// The guest's scratch disk (sparse on the host).
const SCRATCH_DISK_BYTES: u64 = 64 << 20;
/// `timeout`'s exit codes for a command it had to stop (TERM, then KILL).
const TIMEOUT_CODES: [i32; 2] = [124, 137];

/// What one guest boot produced.
pub(crate) struct GuestOutcome {
    pub(crate) lines: Vec<String>,
    pub(crate) elapsed: Duration,
    /// QEMU's exit code: (value << 1) | 1 for a debug-exit write, 0 for a power-off.
    qemu_code: Option<i32>,
    timeout: u64,
}

impl GuestOutcome {
    /// Its row of the test table.
    pub(crate) fn row(&self, name: &str) -> EnvResult {
        EnvResult::from_guest(
            name,
            self.kernel(),
            self.lsm(),
            &self.lines,
            self.elapsed,
            self.verdict(),
        )
    }

    fn marker(&self, prefix: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| l.find(prefix).map(|at| l[at + prefix.len()..].trim()))
    }

    pub(crate) fn lsm(&self) -> String {
        self.marker("OCG-LSM ").unwrap_or("?").to_owned()
    }

    pub(crate) fn kernel(&self) -> String {
        self.marker("OCG-KERNEL ").unwrap_or("?").to_owned()
    }

    /// The guest command's exit code, or why there is no trustworthy one. A panic, a
    /// hang or a missing marker is never a pass.
    pub(crate) fn verdict(&self) -> Result<i32, String> {
        if let Some(panic) = self.lines.iter().find(|l| l.contains("Kernel panic")) {
            return Err(format!("kernel panic: {}", panic.trim()));
        }
        let qemu = match self.qemu_code {
            Some(code) if TIMEOUT_CODES.contains(&code) => {
                return Err(format!(
                    "guest hung: no exit within {}s (killed)",
                    self.timeout
                ))
            }
            Some(code) => code,
            None => return Err("QEMU was killed by a signal".into()),
        };
        let Some(marker) = self.marker("OCG-VERDICT exit=") else {
            return Err(format!(
                "the guest printed no OCG-VERDICT marker (QEMU exited {qemu})"
            ));
        };
        let code: i32 = marker
            .parse()
            .map_err(|_| format!("unreadable verdict marker `exit={marker}`"))?;
        let expected = (i32::from(code != 0) << 1) | 1;
        if qemu != expected {
            return Err(format!(
                "the marker says exit={code} but QEMU exited {qemu} (expected {expected} from isa-debug-exit)"
            ));
        }
        Ok(code)
    }
}

/// How QEMU runs the guest's two vCPUs under TCG.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Vcpus {
    /// One host thread for both vCPUs: with multi-threaded TCG, a vCPU can run stale
    /// code while the other live-patches kernel text (BPF trampolines attaching and
    /// detaching at LSM call sites), seen as "Oops: int3" at bprm_execve in a 6.12
    /// guest. The tests attach and detach all the time; they take ~5% longer.
    Serial,
    /// One host thread per vCPU: two CPUs that really run side by side, as the
    /// benchmark's ratios assume (a daemon on one CPU, the workload on the other). On
    /// one serial thread the daemon's work lands in the workload's time.
    Parallel,
}

/// Boots `vmlinuz` with `initrd` under TCG, streaming the console prefixed with `name`.
pub(crate) fn boot(
    name: &str,
    vmlinuz: &Path,
    initrd: &Path,
    lsm: &str,
    timeout: u64,
    vcpus: Vcpus,
) -> Result<GuestOutcome> {
    // A disk with a filesystem that reuses inode numbers (the guest's own are tmpfs,
    // which never does), fresh for each boot; guest-init mounts it. ext4 with its
    // journal: without one (ext2) the driver holds a freed number back for a while.
    let disk = initrd.with_file_name(format!("scratch-{}.img", name.replace('/', "_")));
    fs::File::create(&disk)
        .and_then(|f| f.set_len(SCRATCH_DISK_BYTES))
        .with_context(|| format!("creating {}", disk.display()))?;
    cmd::run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&disk))
        .context("formatting the guest's scratch disk (e2fsprogs)")?;
    let mut cmd = Command::new("timeout");
    // QEMU can pause instead of exiting after an internal error: always bound it.
    cmd.args([
        "--kill-after=10",
        &timeout.to_string(),
        "qemu-system-x86_64",
    ])
    // /dev/kvm here is paravirtual and cannot run stock kernels.
    .args([
        "-accel",
        match vcpus {
            Vcpus::Serial => "tcg,thread=single",
            Vcpus::Parallel => "tcg,thread=multi",
        },
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "2048",
    ])
    .args([
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
    ])
    .arg("-kernel")
    .arg(vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
    // NVMe: built into Debian's cloud kernels (virtio-blk is a module there).
    .arg("-drive")
    .arg(format!(
        "file={},if=none,id=scratch,format=raw",
        disk.display().to_string().replace(',', ",,")
    ))
    .args(["-device", "nvme,serial=ocgscratch,drive=scratch"])
    .arg("-append")
    .arg(format!("console=ttyS0 panic=-1 quiet lsm={lsm}"));
    println!("xtask: booting {name} (timeout {timeout}s)");
    let started = Instant::now();
    let streamed = cmd::stream(&mut cmd, name)?;
    Ok(GuestOutcome {
        lines: streamed.lines,
        elapsed: started.elapsed(),
        qemu_code: streamed.status.code(),
        timeout,
    })
}

/// Runs the integration runner on the host kernel, as root.
/// Which integration tests one host row runs.
pub(crate) enum HostTier<'a> {
    /// Everything but the end-to-end tier (stand-in gateways, the kernel's sensors).
    Kernel,
    /// The end-to-end tier on the real gateway installed in this directory.
    RealGateway(&'a Path),
}

/// The end-to-end tests' names start with this (tests/src/e2e).
const E2E_PREFIX: &str = "e2e::";
/// Where the end-to-end tests find the real gateway (tests/src/e2e/gateway.rs).
const OPENCLAW_DIR_ENV: &str = "OCG_OPENCLAW_DIR";
/// Where the output tests find their Python packages (tests/src/outputs.rs).
const PYTHONPATH_ENV: &str = "OCG_PYTHONPATH";

pub(crate) fn host_tests(bins: &StaticBins, tier: &HostTier<'_>, filter: &[String]) -> EnvResult {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().to_owned());
    let lsm = host_lsm();
    let program = bins.integration.to_string_lossy();
    let mut cmd = cmd::as_root(&program);
    cmd.env("OPENCLAW_GUARD_BIN", &bins.daemon);
    // The output tests' receivers (tests/otlp, tests/ocsf) import from here.
    if let Ok(cache) = crate::toolchain::cache_dir() {
        cmd.env(PYTHONPATH_ENV, crate::toolchain::python_dir(&cache));
    }
    let name = match tier {
        HostTier::Kernel => {
            cmd.args(["--skip", E2E_PREFIX]);
            "host"
        }
        HostTier::RealGateway(dir) => {
            cmd.env(OPENCLAW_DIR_ENV, dir).args(["--only", E2E_PREFIX]);
            "host-e2e"
        }
    };
    cmd.args(filter);
    let started = Instant::now();
    let (counts, error) = match cmd::stream(&mut cmd, name) {
        Ok(out) => {
            let counts = parse_results(&out.lines);
            let error = if counts.summaries == 0 {
                Some(format!("the runner printed no summary ({})", out.status))
            } else if !out.status.success() && counts.failed == 0 {
                Some(format!("the runner failed ({})", out.status))
            } else {
                None
            };
            (counts, error)
        }
        Err(err) => (Counts::default(), Some(format!("{err:#}"))),
    };
    EnvResult {
        name: name.into(),
        kernel,
        lsm,
        counts,
        elapsed: started.elapsed(),
        error,
    }
}

/// The host's active LSM list. securityfs is often not mounted on a host; as root,
/// mount it in a private mount namespace so the host's mounts stay untouched.
fn host_lsm() -> String {
    const LSM: &str = "/sys/kernel/security/lsm";
    if let Ok(list) = fs::read_to_string(LSM) {
        return list.trim().to_owned();
    }
    if !cmd::is_root() {
        return "? (securityfs not mounted)".into();
    }
    cmd::output(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t securityfs securityfs /sys/kernel/security && cat /sys/kernel/security/lsm",
    ]))
    .map_or_else(
        |_| "? (securityfs not mounted)".into(),
        |s| s.trim().to_owned(),
    )
}
