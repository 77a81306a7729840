//! Loading and attaching the kernel programs, and what actually loaded on this kernel.

use anyhow::{bail, Context as _};
use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        links::{CgroupAttachMode, FdLink},
        BtfTracePoint, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr, Lsm, TracePoint,
    },
    Btf, Ebpf, EbpfLoader,
};
use openclaw_guard_common::{counter, names, KernelOffsets, Settings, TrackedProc};
use serde::Serialize;

use crate::sensors;

/// Root id of the calibration child (`crate::kernel::calibrate`): its events are the guard's
/// own, never output, and it is no gateway.
pub const CALIBRATION_ROOT: u32 = u32::MAX;

/// The kernel programs, embedded at build time (see build.rs).
static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/openclaw-guard.bpf.o"));

/// The embedded object (for the pin generation hash).
pub fn object() -> &'static [u8] {
    OBJECT
}

/// One kernel program and how it fared on this kernel.
#[derive(Clone, Debug, Serialize)]
pub struct ProgramStatus {
    pub name: &'static str,
    /// `tp_btf/sched_process_exec`, `lsm/file_open`, ...
    pub hook: &'static str,
    pub attached: bool,
    /// Why it is not attached.
    pub error: Option<String>,
    /// Attached, but held by this daemon only (no bpf_link to pin, e.g. a syscall
    /// tracepoint before 5.15): it detaches when the daemon exits, and a restart
    /// attaches it again. Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unpinned: Option<String>,
    /// Attached as another program of the object, made for this kernel: which, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// The loaded programs and their maps.
pub struct Guard {
    ebpf: Ebpf,
    pub programs: Vec<ProgramStatus>,
    pub offsets: KernelOffsets,
}

/// `result`: attached (with why it is not pinned, if it is not), or why not attached.
fn status(
    name: &'static str,
    hook: &'static str,
    result: anyhow::Result<Option<String>>,
) -> ProgramStatus {
    match result {
        Ok(unpinned) => ProgramStatus {
            name,
            hook,
            attached: true,
            error: None,
            unpinned,
            variant: None,
        },
        Err(e) => ProgramStatus {
            name,
            hook,
            attached: false,
            error: Some(format!("{e:#}")),
            unpinned: None,
            variant: None,
        },
    }
}

/// Syscall tracepoints are attached by name through tracefs; hosts without systemd may
/// not have it mounted.
fn ensure_tracefs() {
    let mounted = [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists());
    if !mounted {
        // SAFETY: mount(2) with static NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"tracefs".as_ptr(),
                c"/sys/kernel/tracing".as_ptr(),
                c"tracefs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            log::info!(
                "mounting tracefs at /sys/kernel/tracing: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The cgroup2 mount point.
pub fn cgroup2_root() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| std::path::PathBuf::from(f[1]))
    })
}

/// Tracepoints the guard cannot run without: the tree's forks and exits, and execs.
const REQUIRED_TRACEPOINTS: &[(&str, &str)] = &[
    sensors::tree::FORK_TRACEPOINT,
    sensors::tree::EXIT_TRACEPOINT,
    sensors::exec::TRACEPOINT,
];

/// LSM programs, sensor by sensor: enforcement where the kernel allows BPF LSM.
fn lsm_programs() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    [
        sensors::file_open::LSM_PROGRAMS,
        sensors::net::LSM_PROGRAMS,
        sensors::exec::LSM_PROGRAMS,
        sensors::tamper::LSM_PROGRAMS,
        sensors::unix::LSM_PROGRAMS,
    ]
    .into_iter()
    .flatten()
}

/// Without BPF LSM: the open and connect syscalls' exits (the check) and entries (the
/// path or fd the caller gave), for `file_open` and the unix-socket hooks.
fn open_exit_tracepoints() -> Vec<&'static str> {
    [
        sensors::file_open::FALLBACK_TRACEPOINTS,
        sensors::unix::FALLBACK_TRACEPOINTS,
    ]
    .concat()
}

fn load_lsm(
    ebpf: &mut Ebpf,
    name: &str,
    hook: &str,
    btf: &Btf,
    pins: &crate::kernel::pins::Pins,
) -> anyhow::Result<()> {
    let prog: &mut Lsm = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?
        .try_into()?;
    prog.load(hook, btf)
        .map_err(|e| anyhow::Error::new(e).context(format!("loading lsm/{hook}")))?;
    let id = prog
        .attach()
        .map_err(|e| anyhow::Error::new(e).context(format!("attaching lsm/{hook}")))?;
    if pins.should_pin() && !pins.keep(name, prog.take_link(id)?.into()) {
        prog.attach()?;
    }
    Ok(())
}

/// Where the programs attach on the BPF LSM tier, one entry per program:
/// `("tp_btf", tracepoint)` and `("lsm", hook)`. Every process on the host runs through
/// these; the benchmark attaches empty programs at the same points to measure that floor.
pub fn lsm_tier_attach_points() -> impl Iterator<Item = (&'static str, &'static str)> {
    let tps = REQUIRED_TRACEPOINTS.iter().map(|&(_, tp)| ("tp_btf", tp));
    tps.chain(lsm_programs().map(|&(_, hook)| ("lsm", hook)))
}

/// The LSM programs that keep the tree off the guard's files: the `guard_*` ones, and
/// `file_open`, which also refuses writes to them.
pub fn guard_file_programs() -> impl Iterator<Item = &'static str> {
    lsm_programs()
        .map(|&(name, _)| name)
        .filter(|n| *n == "file_open" || n.starts_with("guard_"))
}

impl Guard {
    /// The loaded object, for the typed map handles ([`super::maps`]).
    pub(super) fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Loads the programs with this kernel's struct offsets and attaches them. Tracepoints
    /// must attach; LSM programs may fail (no BPF LSM here), which is recorded, not hidden.
    pub fn load(offsets: KernelOffsets, pins: &crate::kernel::pins::Pins) -> anyhow::Result<Self> {
        if OBJECT.is_empty() {
            bail!("this openclaw-guard binary was built without its eBPF programs; build it with `cargo xtask build`");
        }
        raise_memlock_limit();
        let btf = Btf::from_sys_fs().context("reading the kernel's BTF from /sys/kernel/btf/vmlinux (the kernel needs CONFIG_DEBUG_INFO_BTF)")?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global(names::OFFSETS, &offsets, true)
            .default_map_pin_directory(pins.maps_dir())
            .load(OBJECT)
            .context("loading the eBPF object (are you root, with CAP_BPF and CAP_PERFMON?)")?;
        let mut programs = Vec::new();
        for &(name, tp) in REQUIRED_TRACEPOINTS {
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the eBPF object"))?
                .try_into()?;
            prog.load(tp, &btf)
                .with_context(|| format!("loading tp_btf/{tp}"))?;
            let id = prog
                .attach()
                .with_context(|| format!("attaching tp_btf/{tp}"))?;
            if pins.should_pin() && !pins.keep(name, prog.take_link(id)?.into()) {
                prog.attach()
                    .with_context(|| format!("re-attaching tp_btf/{tp}"))?;
            }
            programs.push(ProgramStatus {
                name,
                hook: hook_name("tp_btf", tp),
                attached: true,
                error: None,
                unpinned: None,
                variant: None,
            });
        }
        for &(name, hook) in lsm_programs() {
            let result = load_lsm(&mut ebpf, name, hook, &btf, pins);
            let mut status = ProgramStatus {
                name,
                hook: hook_name("lsm", hook),
                attached: result.is_ok(),
                error: None,
                unpinned: None,
                variant: None,
            };
            if let Err(e) = result {
                // A kernel whose LSM programs may not call bpf_d_path (before 5.11)
                // refuses `file_open`: its compat program takes the path elsewhere.
                let compat = (name == "file_open").then(|| {
                    load_lsm(
                        &mut ebpf,
                        sensors::file_open::COMPAT_PROGRAM,
                        hook,
                        &btf,
                        pins,
                    )
                });
                match compat {
                    Some(Ok(())) => {
                        // The verifier's last word, not its whole log.
                        let text = format!("{e:#}");
                        let why = text
                            .lines()
                            .rev()
                            .find(|l| l.contains("not allowed") || l.contains("invalid"))
                            .or_else(|| text.lines().next())
                            .unwrap_or_default()
                            .to_owned();
                        status.attached = true;
                        status.variant = Some(format!(
                            "{}: paths from the open syscalls' arguments (this kernel refused `file_open`: {why})",
                            sensors::file_open::COMPAT_PROGRAM
                        ));
                    }
                    Some(Err(c)) => {
                        status.error = Some(format!(
                            "{}; {} refused too: {c:#}",
                            lsm_error_text(&e),
                            sensors::file_open::COMPAT_PROGRAM
                        ));
                    }
                    None => status.error = Some(lsm_error_text(&e)),
                }
            }
            programs.push(status);
        }
        Ok(Self {
            ebpf,
            programs,
            offsets,
        })
    }

    /// A kernel booted without `bpf` in `lsm=` loads and attaches LSM programs that then
    /// never run. The calibration checks that `file_open` fired; if it did not, the LSM
    /// programs are marked as not in effect, so the fallback takes over and nothing
    /// claims enforcement it does not have.
    pub fn mark_lsm_inert(&mut self) {
        for p in self
            .programs
            .iter_mut()
            .filter(|p| p.hook.starts_with("lsm/") && p.attached)
        {
            p.attached = false;
            p.error = Some("attached, but never runs: BPF LSM is not active on this kernel (boot with lsm=...,bpf)".into());
        }
    }

    /// The fallback tier, only where the LSM programs are not in effect: syscall
    /// tracepoints cost every process on the host, so they are not attached when BPF
    /// LSM does the job.
    pub fn attach_fallbacks(&mut self, pins: &crate::kernel::pins::Pins) {
        let compat = self
            .program("file_open")
            .is_some_and(|p| p.attached && p.variant.is_some());
        if !self.lsm_file_open() || compat {
            ensure_tracefs();
            let names = if compat {
                sensors::file_open::COMPAT_TRACEPOINTS.to_vec()
            } else {
                open_exit_tracepoints()
            };
            for name in names {
                let result = self.attach_tracepoint(name, pins);
                self.programs
                    .push(status(name, hook_name("tracepoint/syscalls", name), result));
            }
        }
        if !self.program("socket_connect").is_some_and(|p| p.attached) {
            ensure_tracefs();
            let result = self.attach_tracepoint("sys_enter_socket", pins);
            self.programs.push(status(
                "sys_enter_socket",
                hook_name("tracepoint/syscalls", "sys_enter_socket"),
                result,
            ));
            let root = cgroup2_root();
            for &(name, kind) in sensors::net::CGROUP_PROGRAMS {
                let result = match &root {
                    Some(dir) => self.attach_cgroup(name, kind, dir, pins),
                    None => Err(anyhow::anyhow!("no cgroup2 mount found in /proc/mounts")),
                };
                self.programs
                    .push(status(name, hook_name("cgroup", name), result));
            }
        }
    }

    /// The DNS sensor (`dns_answers`, cgroup skb ingress at the cgroup2 root), on both
    /// tiers: egress entries that name hosts are judged by what it learns. Attached
    /// through a bpf_link, which shares the hook with other programs (systemd's IP
    /// accounting) whatever the mode says (the kernel refuses the multi flag there).
    pub fn attach_dns(&mut self, pins: &crate::kernel::pins::Pins) {
        let result = (|| {
            let root = cgroup2_root().context("no cgroup2 mount found in /proc/mounts")?;
            let cgroup = std::fs::File::open(&root)
                .with_context(|| format!("opening cgroup2 root {}", root.display()))?;
            let prog: &mut CgroupSkb = self
                .ebpf
                .program_mut("dns_answers")
                .context("program dns_answers missing from the eBPF object")?
                .try_into()?;
            prog.load().context("loading dns_answers")?;
            let what = || format!("attaching dns_answers at {}", root.display());
            let id = prog
                .attach(
                    &cgroup,
                    CgroupSkbAttachType::Ingress,
                    CgroupAttachMode::Single,
                )
                .with_context(what)?;
            if pins.should_pin()
                && !pins.keep("dns_answers", FdLink::try_from(prog.take_link(id)?)?)
            {
                prog.attach(
                    &cgroup,
                    CgroupSkbAttachType::Ingress,
                    CgroupAttachMode::Single,
                )
                .with_context(what)?;
            }
            Ok(None)
        })();
        self.programs
            .push(status("dns_answers", "cgroup_skb/ingress", result));
    }

    /// Attached, with why it is not pinned when it could not be.
    fn attach_tracepoint(
        &mut self,
        name: &str,
        pins: &crate::kernel::pins::Pins,
    ) -> anyhow::Result<Option<String>> {
        let prog: &mut TracePoint = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the eBPF object"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("loading tracepoint {name}"))?;
        let id = prog
            .attach("syscalls", name)
            .with_context(|| format!("attaching tracepoint syscalls/{name}"))?;
        if !pins.should_pin() {
            return Ok(None);
        }
        match FdLink::try_from(prog.take_link(id)?) {
            Ok(link) => {
                if !pins.keep(name, link) {
                    prog.attach("syscalls", name)?;
                }
                Ok(None)
            }
            // Before 5.15 a perf-event attachment has no bpf_link (the conversion
            // dropped it): attached again and held by the daemon, rather than not at
            // all.
            Err(e) => {
                prog.attach("syscalls", name)
                    .with_context(|| format!("re-attaching tracepoint syscalls/{name}"))?;
                Ok(Some(format!(
                    "no bpf_link to pin ({e}): it detaches when this daemon exits"
                )))
            }
        }
    }

    fn attach_cgroup(
        &mut self,
        name: &str,
        sock: bool,
        root: &std::path::Path,
        pins: &crate::kernel::pins::Pins,
    ) -> anyhow::Result<Option<String>> {
        let cgroup = std::fs::File::open(root)
            .with_context(|| format!("opening cgroup2 root {}", root.display()))?;
        let prog = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the eBPF object"))?;
        let what = || format!("attaching {name} at {}", root.display());
        if sock {
            let prog: &mut CgroupSock = prog.try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
            let id = prog
                .attach(&cgroup, CgroupAttachMode::Single)
                .with_context(what)?;
            if pins.should_pin() && !pins.keep(name, FdLink::try_from(prog.take_link(id)?)?) {
                prog.attach(&cgroup, CgroupAttachMode::Single)
                    .with_context(what)?;
            }
        } else {
            let prog: &mut CgroupSockAddr = prog.try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
            let id = prog
                .attach(&cgroup, CgroupAttachMode::Single)
                .with_context(what)?;
            if pins.should_pin() && !pins.keep(name, FdLink::try_from(prog.take_link(id)?)?) {
                prog.attach(&cgroup, CgroupAttachMode::Single)
                    .with_context(what)?;
            }
        }
        Ok(None)
    }

    pub fn program(&self, name: &str) -> Option<&ProgramStatus> {
        self.programs.iter().find(|p| p.name == name)
    }

    pub fn lsm_file_open(&self) -> bool {
        self.program("file_open").is_some_and(|p| p.attached)
    }

    fn tracked_map(&mut self) -> anyhow::Result<BpfHashMap<&mut MapData, u32, TrackedProc>> {
        self.hash(names::TRACKED)
    }

    pub fn track(&mut self, tgid: u32, proc_: TrackedProc) -> anyhow::Result<()> {
        self.tracked_map()?
            .insert(tgid, proc_, 0)
            .with_context(|| format!("tracking pid {tgid}"))
    }

    pub fn untrack(&mut self, tgid: u32) {
        if let Ok(mut map) = self.tracked_map() {
            let _ = map.remove(&tgid);
        }
    }

    pub fn tracked_count(&mut self) -> usize {
        self.tracked_map()
            .map(|m| m.keys().filter(Result::is_ok).count())
            .unwrap_or(0)
    }

    /// Gateways whose trees the (adopted) map follows.
    pub fn tracked_roots(&mut self) -> Vec<u32> {
        let Ok(map) = self.tracked_map() else {
            return Vec::new();
        };
        let mut roots: Vec<u32> = map
            .iter()
            .filter_map(Result::ok)
            .map(|(_, t)| t.root)
            .filter(|r| *r != 0 && *r != CALIBRATION_ROOT)
            .collect();
        roots.sort_unstable();
        roots.dedup();
        roots
    }

    /// Global switches read by every enforcing program.
    pub fn set_settings(&mut self, settings: Settings) -> anyhow::Result<()> {
        let map = self
            .ebpf
            .map_mut(names::SETTINGS)
            .context("map SETTINGS missing")?;
        let mut arr: Array<&mut MapData, Settings> = Array::try_from(map)?;
        arr.set(0, settings, 0).context("writing SETTINGS")
    }

    /// Reports execs of this executable name even from untracked processes.
    pub fn add_candidate_comm(&mut self, name: &str) -> anyhow::Result<()> {
        let mut key = [0u8; 16];
        let n = name.len().min(15);
        key[..n].copy_from_slice(&name.as_bytes()[..n]);
        self.hash::<[u8; 16], u8>(names::CANDIDATE_COMMS)?
            .insert(key, 1, 0)
            .with_context(|| format!("adding gateway candidate {name}"))
    }

    /// Makes processes exec'ing in this cgroup tracked roots.
    pub fn add_gateway_cgroup(&mut self, id: u64) -> anyhow::Result<()> {
        self.hash::<u64, u8>(names::GATEWAY_CGROUPS)?
            .insert(id, 1, 0)
            .context("adding a gateway cgroup")
    }

    /// Whether a tgid is tracked, and how.
    pub fn tracked(&mut self, tgid: u32) -> Option<TrackedProc> {
        self.tracked_map().ok()?.get(&tgid, 0).ok()
    }

    /// A ring buffer, taken out of the object (once).
    fn take_ring(&mut self, name: &str) -> anyhow::Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(name)
            .with_context(|| format!("map {name} missing or already taken"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// The ordinary events' ring (see `EVENTS` in the kernel programs).
    pub fn take_events(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        self.take_ring(names::EVENTS)
    }

    /// The exec ring (see `PROCS` in the kernel programs).
    pub fn take_procs(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        self.take_ring(names::PROCS)
    }

    /// The decisions ring (see `DECISIONS` in the kernel programs).
    pub fn take_decisions(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        self.take_ring(names::DECISIONS)
    }

    /// Marks `tgid` a carrier of the secret environment (`carrier` bits; 0 removes).
    pub fn set_carrier(&mut self, tgid: u32, bits: u32) -> anyhow::Result<()> {
        let mut map = self.hash::<u32, u32>(names::CARRIERS)?;
        if bits == 0 {
            let _ = map.remove(&tgid);
            return Ok(());
        }
        map.insert(tgid, bits, 0)
            .context("marking a carrier of the secret environment")
    }

    /// Processes stopped at exec for the `env` rule and not yet resumed, with when
    /// (boot ns).
    pub fn env_pending(&mut self) -> Vec<(u32, u64)> {
        self.hash::<u32, u64>(names::ENV_PENDING)
            .map(|m| m.iter().filter_map(Result::ok).collect())
            .unwrap_or_default()
    }

    /// `tgid` was resumed (or is gone).
    pub fn env_resumed(&mut self, tgid: u32) {
        if let Ok(mut map) = self.hash::<u32, u64>(names::ENV_PENDING) {
            let _ = map.remove(&tgid);
        }
    }

    /// The daemon is alive to resume held processes until `until_boot_ns`.
    pub fn env_alive(&mut self, until_boot_ns: u64) -> anyhow::Result<()> {
        let map = self
            .ebpf
            .map_mut(names::ENV_ALIVE)
            .context("map ENV_ALIVE missing")?;
        let mut arr: aya::maps::Array<&mut MapData, u64> = aya::maps::Array::try_from(map)?;
        arr.set(0, until_boot_ns, 0).context("writing ENV_ALIVE")
    }

    /// Sum over CPUs of the kernel-side counters.
    pub fn counters(&self) -> anyhow::Result<KernelCounters> {
        let map = self
            .ebpf
            .map(names::COUNTERS)
            .context("map COUNTERS missing")?;
        let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let sum = |i: u32| -> u64 { arr.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0) };
        Ok(KernelCounters {
            emitted: sum(counter::EMITTED),
            lost: sum(counter::LOST),
            lost_decisions: sum(counter::LOST_DECISIONS),
            track_full: sum(counter::TRACK_FULL),
            env_held: sum(counter::ENV_HELD),
            env_hold_failed: sum(counter::ENV_HOLD_FAILED),
        })
    }
}

/// Kernel-side counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct KernelCounters {
    pub emitted: u64,
    /// Ordinary events dropped for a full `EVENTS` ring.
    pub lost: u64,
    /// Decisions dropped for a full `DECISIONS` ring (should stay 0).
    pub lost_decisions: u64,
    pub track_full: u64,
    /// Execs held for the `env` rule.
    pub env_held: u64,
    /// Execs that should have been held and were killed (ring full, daemon dead).
    pub env_hold_failed: u64,
}

fn hook_name(kind: &str, hook: &str) -> &'static str {
    // A handful of fixed strings: leaking them once keeps ProgramStatus simple.
    Box::leak(format!("{kind}/{hook}").into_boxed_str())
}

/// A kernel that lists `bpf` in its LSMs may still refuse LSM programs (EPERM with an
/// empty verifier log, as on the 6.18 host here): say which case it is.
fn lsm_error_text(e: &anyhow::Error) -> String {
    let lsms = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    let active = lsms.split(',').any(|l| l.trim() == "bpf");
    let why = if active {
        "the kernel lists bpf among its LSMs but refused the program"
    } else {
        "BPF LSM is not active on this kernel (boot with lsm=...,bpf)"
    };
    format!("{why}: {e:#}")
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}
