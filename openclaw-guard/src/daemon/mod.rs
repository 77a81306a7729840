//! `openclaw-guard run`: load, calibrate, find the gateways, then stream events.
//!
//! kernel -> ring buffer -> decode -> enrichment -> outputs, in that one direction.
//!
//! - this file: the options and the start-up recipe, in order;
//! - [`discovery`]: finding the gateways and their trees;
//! - [`policy_state`]: the policy in force, what it put into the kernel, reloads;
//! - [`pipeline`]: the event loop (rings, held decisions, enrichment, the sink);
//! - [`status`]: what `openclaw-guard status` shows.

mod discovery;
mod pipeline;
mod policy_state;
mod status;

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use openclaw_guard_common::{InodeKey, TrackedProc};
use serde::Serialize;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    enrich::ProcessCache,
    events::{Clock, Event, Payload},
    kernel::{
        btf,
        calibrate::{calibrate, Calibration},
        loader::{Guard, ProgramStatus},
        procfs,
    },
    openclaw,
    sensors::decode,
};

/// What `openclaw-guard run` was asked to do; `openclaw-guard run --help` (the
/// command line, in `cli::run`) documents each option.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Gateways to track by pid (`--pid`).
    pub pids: Vec<u32>,
    /// Gateways to track by cgroup v2 path (`--cgroup`).
    pub cgroups: Vec<PathBuf>,
    /// Only `pids` and `cgroups`: no discovery by command line and unit.
    pub no_discover: bool,
    /// Files whose reads the trees are denied (`--protect`).
    pub protect: Vec<PathBuf>,
    /// The policy file; `None`: the embedded default.
    pub policy: Option<PathBuf>,
    /// More files kept from the trees like the guard's own (`--guard-path`).
    pub guard_paths: Vec<PathBuf>,
    /// Every rule's mode, overriding the policy's.
    pub mode: Option<crate::policy::Mode>,
    pub sink: crate::sink::SinkOptions,
    /// Where programs and maps are pinned.
    pub pin_dir: PathBuf,
    /// Kills per kill rule per second before it only denies (0: no limit).
    pub kill_limit: u32,
    /// The kernel's folding window for identical ordinary events, in ms (0: off).
    pub fold_ms: u32,
    /// Pin nothing.
    pub no_pin: bool,
    /// The daemon's nice value.
    pub nice: i32,
    pub status_file: PathBuf,
    /// Seconds between `stats` records.
    pub stats_interval: u64,
    /// The tool-call attribution socket, or none.
    pub attribution_socket: crate::attribution::SocketArg,
}

/// `--mode`.
pub fn parse_mode(s: &str) -> Result<crate::policy::Mode, String> {
    match s {
        "monitor" => Ok(crate::policy::Mode::Monitor),
        "enforce" => Ok(crate::policy::Mode::Enforce),
        other => Err(format!(
            "unknown mode {other:?}: expected monitor or enforce"
        )),
    }
}

pub const DEFAULT_STATUS_FILE: &str = "/run/openclaw-guard/status.json";

/// Executable names whose execs may start a gateway (`comm` after exec).
pub(super) const CANDIDATE_COMMS: &[&str] = &["node", "openclaw", "openclaw-gatewa"];

/// Ordinary events handled before the loop looks at its other duties.
pub(super) const EVENTS_SLICE: usize = 1024;
/// Ordinary events handled between two looks at the decisions and process rings: what
/// an alert about a new program waits for at most (a few ms on a slow, flooded
/// machine, where a whole slice took hundreds).
pub(super) const EVENTS_CHUNK: usize = 64;
/// Decisions handled before the other ring gets a slice.
pub(super) const DECISIONS_SLICE: usize = 256;
/// Execs handled before the ordinary events get a slice.
pub(super) const PROCS_SLICE: usize = 256;
/// Slices one drain tick takes at most.
pub(super) const DRAIN_TICK_SLICES: usize = 16;
/// The longest an ordinary event waits in the ring buffer for the daemon.
pub(super) const DRAIN_EVERY: Duration = Duration::from_millis(5);

/// Processes the enrichment cache holds at most.
pub(super) const PROCESS_CACHE_CAPACITY: usize = 65_536;

pub fn run(args: &RunOptions) -> anyhow::Result<i32> {
    // First, so every thread the daemon starts inherits it.
    let nice = set_nice(args.nice);
    check_kernel_version(
        &std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default(),
    )?;
    // Signal handlers first: a SIGTERM during start-up must stop the daemon cleanly,
    // not kill it by the default disposition.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signals = rt.block_on(async { Signals::new() })?;
    raise_nofile_limit();
    let kbtf = btf::Btf::from_sys_fs().context("reading kernel BTF")?;
    let offsets = btf::kernel_offsets(&kbtf).context("finding kernel struct offsets in BTF")?;
    let pins = crate::kernel::pins::Pins::open(
        (!args.no_pin).then_some(args.pin_dir.as_path()),
        crate::kernel::loader::object(),
    )?;
    let mut guard = Guard::load(offsets, &pins)?;
    // Alive before any policy can turn holding on (a hold past this is a kill).
    guard.env_alive(crate::secret_env::boot_ns() + ENV_ALIVE_FOR.as_nanos() as u64)?;
    let pins_persist = pins.should_pin();
    let clock = Clock::now();
    let mut ring = guard.take_events()?;
    let decisions = guard.take_decisions()?;
    let mut execs = guard.take_procs()?;
    let mut calibration = calibrate(&mut guard, &mut ring, &mut execs, &clock);
    if guard.lsm_file_open() && !calibration.lsm_file_open_fired {
        guard.mark_lsm_inert();
    }
    guard.attach_fallbacks(&pins);
    guard.attach_dns(&pins);
    let backlog = std::mem::take(&mut calibration.backlog);
    if pins.adopted {
        log::info!(
            "adopted the pinned maps in {} (tracked trees, protections, unread events)",
            pins.maps_dir().display()
        );
    }

    let policy = load_policy(args.policy.as_deref(), args.mode)?;

    if !args.no_discover {
        for name in CANDIDATE_COMMS {
            guard.add_candidate_comm(name)?;
        }
    }
    let mut cgroups = args.cgroups.clone();
    if !args.no_discover {
        cgroups.extend(gateway_unit_cgroups());
    }
    let mut roots: Vec<u32> = args.pids.clone();
    // Trees the previous daemon followed (the kernel kept following them).
    roots.extend(
        guard
            .tracked_roots()
            .into_iter()
            .filter(|r| std::path::Path::new(&format!("/proc/{r}")).exists()),
    );
    let mut cgroup_ids = Vec::new();
    for cg in &cgroups {
        let meta = std::fs::metadata(cg).with_context(|| format!("cgroup {}", cg.display()))?;
        // A cgroup v2 directory's inode number is the id bpf_get_current_cgroup_id returns.
        cgroup_ids.push(meta.ino());
        roots.extend(cgroup_roots(cg));
    }
    if !args.no_discover {
        roots.extend(discover_gateways());
    }
    roots.sort_unstable();
    roots.dedup();

    // The maps are filled before any process is tracked: no tracked process ever runs
    // against a half-loaded policy.
    for path in &args.protect {
        std::fs::metadata(path).with_context(|| format!("protected file {}", path.display()))?;
    }
    // The canary proves BPF LSM decides (self-protection refuses its open); only
    // where that is claimed.
    let canary = (guard.lsm_file_open() && calibration.ok && !args.sink.record_only)
        .then(|| crate::kernel::canary::path_for(&args.status_file))
        .filter(|p| match crate::kernel::canary::create(p) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("canary: {e:#}: BPF LSM is not re-checked while running");
                false
            }
        });
    let mut state = PolicyState {
        path: args.policy.clone(),
        mtime: args.policy.as_deref().and_then(mtime),
        mode: args.mode,
        extra: args.protect.clone(),
        record_only: args.sink.record_only,
        calibrated: calibration.ok,
        // What adopted maps hold, so that what the new policy drops is removed.
        plan: guard.current_plan()?,
        policy: std::sync::Arc::new(policy),
        guarded: guarded_paths(args),
        kill_limit: args.kill_limit,
        fold_ms: args.fold_ms,
        // Seeded from the clock: a restart that adopts the pinned fold windows must not
        // reuse the previous daemon's generations.
        policy_gen: jiff::Timestamp::now().subsec_nanosecond().unsigned_abs(),
        applied: None,
        anchors: HashMap::new(),
        users: Vec::new(),
        secrets: Default::default(),
        names: Default::default(),
    };
    let enforcement = state.apply(&mut guard, &roots, true)?;
    let plan = &state.plan;
    for (rule, paths) in &plan.protected {
        log::info!(
            "rule {rule} protects {} path(s): {}",
            paths.len(),
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    for id in cgroup_ids {
        guard.add_gateway_cgroup(id)?;
    }
    let calls = std::sync::Arc::new(crate::attribution::Registry::new());
    let mut cache = ProcessCache::new(PROCESS_CACHE_CAPACITY);
    if args.attribution_socket.0.is_some() {
        cache = cache.with_calls(calls.clone());
        // Calls in flight across a restart keep their processes attributed.
        if !args.sink.no_record {
            let since = jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_hours(24))
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let n = calls.restore(&args.sink.state_dir, since);
            if n > 0 {
                log::info!(
                    "attribution: {n} tool call(s) of the last 24 h taken back from the record"
                );
            }
        }
    }
    for &root in &roots {
        calls.add_gateway(root);
        track_tree(&mut guard, &mut cache, root)?;
    }
    // Only now, with this daemon's programs attached and its policy in the maps, do the
    // previous daemon's links go: enforcement never had a gap.
    for retired in pins.retire_others() {
        log::info!("retired {retired}");
    }

    let status = Status {
        pid: std::process::id(),
        started: jiff::Timestamp::now().to_string(),
        uptime_secs: 0,
        programs: guard.programs.clone(),
        calibration,
        enforcement,
        roots,
        tracked_processes: guard.tracked_count(),
        counters: Counters::default(),
        sink: None,
        pinning: pins.describe(),
        policy_file: args.policy.clone(),
        last_reload: None,
        nice,
        attribution: AttributionStatus {
            socket: args.attribution_socket.0.clone(),
            ..AttributionStatus::default()
        },
    };
    report_startup(&status);
    write_status(&args.status_file, &status);

    let sink = crate::sink::Sink::start(&args.sink, state.policy.clone())?;
    // The record directory exists now.
    state.refresh_guard_files(&mut guard)?;
    let mut pipeline = Pipeline {
        guard,
        cache,
        clock,
        sink,
        counters: Counters {
            received: status.calibration.consumed,
            ..Counters::default()
        },
        status,
        status_file: args.status_file.clone(),
        started: Instant::now(),
        policy: state,
        held: Vec::new(),
        names: crate::host::Names::default(),
        host_recorded: None,
        procs_seen_ns: 0,
        procs_idle: true,
        canary,
        lsm_lost: None,
        calls,
    };
    pipeline.refresh_state_dirs();
    pipeline.env_heartbeat();
    for (pid, role) in pipeline.cache.roles() {
        if let Some(bits) = crate::secret_env::carrier_bits(Some(role.as_str())) {
            pipeline.guard.set_carrier(pid, bits)?;
        }
    }
    pipeline.record_host()?;
    for item in backlog {
        pipeline.counters.received += 1;
        match decode(&item, &pipeline.clock, &pipeline.policy.names) {
            Ok(ev) => pipeline.handle(ev)?,
            Err(_) => pipeline.counters.undecodable += 1,
        }
    }
    pipeline.release_all_held()?;
    pipeline.resume_orphans(Duration::ZERO);
    // Listening before `ready`: a gateway's first report must find the socket.
    let attribution = match &args.attribution_socket.0 {
        None => None,
        Some(path) => {
            let _in_runtime = rt.enter();
            match crate::attribution::bind(path) {
                Ok(listener) => {
                    log::info!(
                        "attribution: tool calls reported on {} (OpenClaw plugin: `openclaw-guard plugin write DIR`)",
                        path.display()
                    );
                    Some(listener)
                }
                Err(e) => {
                    log::warn!("attribution: NOT listening: {e:#}");
                    pipeline.status.attribution.error = Some(format!("{e:#}"));
                    None
                }
            }
        }
    };
    // Ready: programs attached, policy in the maps, outputs and record open, the
    // attribution socket listening.
    log::info!("ready");
    rt.block_on(pipeline.stream(
        ring,
        decisions,
        execs,
        signals,
        Duration::from_secs(args.stats_interval.max(1)),
        attribution,
    ))?;
    let c = pipeline.refresh_counters();
    pipeline.emit_stats()?;
    // Also on stderr: the outputs may drop under load (counted), this line cannot.
    log::info!(
        "final-stats {}",
        serde_json::to_string(&pipeline.stats_record()).unwrap_or_default()
    );
    log::info!(
        "stopped; kernel submitted {} events, lost {}, received {}; peak RSS {} KiB",
        c.kernel_submitted,
        c.kernel_lost,
        c.received,
        peak_rss_kib().unwrap_or(0)
    );
    let _ = std::fs::remove_file(&args.status_file);
    pipeline.sink.shutdown()?;
    if pins_persist {
        log::info!(
            "the pinned programs in {} keep enforcing without the daemon; `openclaw-guard unload` removes them",
            args.pin_dir.display()
        );
    }
    Ok(0)
}

/// The daemon's `RLIMIT_NOFILE`.
pub(super) fn nofile_limit() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit on a struct we own.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

/// The daemon holds an `O_PATH` handle on every protected inode (up to the kernel
/// map's size, thousands): the fd limit (often 1024 soft, 4096 hard under a bare init)
/// goes up to 65536, or at least the soft limit to the hard one.
pub(super) fn raise_nofile_limit() {
    const WANT: libc::rlim_t = 65536;
    let Some(mut lim) = nofile_limit().filter(|l| l.rlim_cur < WANT) else {
        return;
    };
    let raised = libc::rlimit {
        rlim_cur: WANT,
        rlim_max: lim.rlim_max.max(WANT),
    };
    // SAFETY: setrlimit with structs we own.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The oldest kernel line the test matrix proves (`cargo xtask test`): below it the
/// guard refuses to start rather than protect less than its README says.
pub(super) const MIN_KERNEL: (u32, u32) = (5, 10);

pub(super) fn check_kernel_version(release: &str) -> anyhow::Result<()> {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
        // Unreadable: the feature probes at load time decide.
        return Ok(());
    };
    if (major, minor) < MIN_KERNEL {
        anyhow::bail!(
            "kernel {} is older than {}.{}, the oldest kernel openclaw-guard is tested on; upgrade the kernel",
            release.trim(),
            MIN_KERNEL.0,
            MIN_KERNEL.1
        );
    }
    Ok(())
}

/// Sets the calling thread's nice value (threads started later inherit it); returns
/// the value it has.
pub(super) fn set_nice(want: i32) -> i32 {
    // SAFETY: plain syscalls on the calling thread (`who` 0).
    unsafe {
        if libc::setpriority(libc::PRIO_PROCESS, 0, want) != 0 {
            log::warn!(
                "cannot set nice {want} ({}): a tree that keeps the CPUs busy can delay alerts",
                std::io::Error::last_os_error()
            );
        }
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    }
}

/// How many protected-inode handles the daemon may hold: its fd limit less room for
/// everything else it opens (outputs, record, maps, /proc).
pub(super) fn anchor_budget() -> usize {
    nofile_limit().map_or(0, |l| {
        usize::try_from(l.rlim_cur)
            .unwrap_or(usize::MAX)
            .saturating_sub(1024)
    })
}

pub use self::status::{AttributionStatus, Counters, Status};
use self::{discovery::*, pipeline::*, policy_state::*, status::*};

#[cfg(test)]
mod kernel_version_tests {
    #[test]
    pub(super) fn kernels_below_the_matrix_are_refused() {
        for ok in [
            "5.10.0-46-cloud-amd64",
            "6.1.0-57-cloud-amd64",
            "6.18.44-fc-v1252",
            "10.0",
            "",
        ] {
            assert!(super::check_kernel_version(ok).is_ok(), "{ok}");
        }
        for old in ["5.4.0-150-generic", "4.19.0-27-amd64", "5.9.16"] {
            let e = super::check_kernel_version(old).expect_err(old).to_string();
            assert!(e.contains(old) && e.contains("5.10"), "{e}");
        }
    }
}
