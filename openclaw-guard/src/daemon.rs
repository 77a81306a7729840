//! `openclaw-guard run`: load, calibrate, find the gateways, then stream events.
//!
//! kernel -> ring buffer -> decode -> enrichment -> outputs, in that one direction.

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
    bpf::{Guard, ProgramStatus},
    btf,
    calibrate::{calibrate, Calibration},
    enrich::ProcessCache,
    events::{Clock, Event, Payload},
    openclaw,
    sensors::decode,
    tree,
};

/// Command-line arguments of `openclaw-guard run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Track this process (a gateway) and all its descendants. Repeatable.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Track the processes of this cgroup (v2 path) as gateways. Repeatable.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,
    /// Do not look for gateways by command line and systemd unit; only --pid/--cgroup.
    #[arg(long)]
    pub no_discover: bool,
    /// Deny reads of this file to the tracked processes' descendants. Repeatable.
    #[arg(long = "protect", value_name = "PATH")]
    pub protect: Vec<PathBuf>,
    /// Policy file (TOML); without it the embedded OpenClaw default applies.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Also keep the tree from changing this file or directory, like the guard's own
    /// (what starts the guard: a unit file, its drop-ins; its configuration).
    /// Repeatable. Under systemd the daemon's own unit file, drop-in directories and
    /// enablement links are added by themselves.
    #[arg(long = "guard-path", value_name = "PATH")]
    pub guard_paths: Vec<PathBuf>,
    /// Override every rule's mode: `monitor` turns blocks and kills into alerts.
    #[arg(long, value_name = "monitor|enforce", value_parser = parse_mode)]
    pub mode: Option<crate::policy::Mode>,
    #[command(flatten)]
    pub sink: crate::sink::SinkArgs,
    /// bpffs directory where programs and maps are pinned, so enforcement continues if
    /// the daemon dies; a restarted daemon adopts what it finds there.
    #[arg(long, value_name = "DIR", default_value = crate::pins::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Kills per kill rule per second; past it the rule denies without killing (still
    /// refused, reported with `degraded_from: kill`), so a flood can neither turn the
    /// guard into a process-killing storm nor switch enforcement off. 0: no limit.
    /// Applies where the kernel can refuse (BPF LSM); elsewhere kills are not limited.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub kill_limit: u32,
    /// A thread's identical ordinary events (the same file opened the same way, the
    /// same destination) within this many ms of the first are sent once and then as a
    /// count (`repeat` events), not one by one: a loop over one file costs the agent
    /// and the guard almost nothing. Repeated refusals fold too (each still refused);
    /// kills and execs never do. 0: off.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub fold_ms: u32,
    /// Pin nothing: programs detach when the daemon exits (development, tests).
    #[arg(long)]
    pub no_pin: bool,
    /// The daemon's nice value (-20..19), set at start-up: ahead of the agent's tree
    /// (nice 0), so a tree that keeps every CPU busy cannot starve the guard and delay
    /// its alerts (the tree may not change the guard's scheduling). Needs CAP_SYS_NICE
    /// (root has it); without, the daemon says so and runs as it is.
    #[arg(long, value_name = "N", default_value_t = -10, allow_hyphen_values = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub nice: i32,
    /// Where the daemon keeps its status for `openclaw-guard status`.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_STATUS_FILE)]
    pub status_file: PathBuf,
    /// Seconds between counter records in the JSON stream.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub stats_interval: u64,
    /// Unix socket the guard's OpenClaw plugin reports tool calls to (events are then
    /// stamped with their session, run and tool call); `none`: no attribution.
    #[arg(long, value_name = "PATH|none", default_value = crate::attribution::DEFAULT_SOCKET,
          value_parser = crate::attribution::socket_arg)]
    pub attribution_socket: crate::attribution::SocketArg,
}

fn parse_mode(s: &str) -> Result<crate::policy::Mode, String> {
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
const CANDIDATE_COMMS: &[&str] = &["node", "openclaw", "openclaw-gatewa"];

/// Ordinary events handled before the loop looks at its other duties.
const EVENTS_SLICE: usize = 1024;
/// Ordinary events handled between two looks at the decisions and process rings: what
/// an alert about a new program waits for at most (a few ms on a slow, flooded
/// machine, where a whole slice took hundreds).
const EVENTS_CHUNK: usize = 64;
/// Decisions handled before the other ring gets a slice.
const DECISIONS_SLICE: usize = 256;
/// Execs handled before the ordinary events get a slice.
const PROCS_SLICE: usize = 256;
/// Slices one drain tick takes at most.
const DRAIN_TICK_SLICES: usize = 16;
/// The longest an ordinary event waits in the ring buffer for the daemon.
const DRAIN_EVERY: Duration = Duration::from_millis(5);

/// Processes the enrichment cache holds at most.
const PROCESS_CACHE_CAPACITY: usize = 65_536;

/// What `openclaw-guard status` shows.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub pid: u32,
    pub started: String,
    pub uptime_secs: u64,
    pub programs: Vec<ProgramStatus>,
    pub calibration: Calibration,
    /// Rule -> how it is enforced on this kernel.
    pub enforcement: BTreeMap<String, String>,
    pub roots: Vec<u32>,
    pub tracked_processes: usize,
    pub counters: Counters,
    /// Outputs, recorder and verdict counters of the sink.
    pub sink: serde_json::Value,
    /// Whether enforcement outlives the daemon.
    pub pinning: String,
    /// The policy file (`None`: the embedded default).
    pub policy_file: Option<PathBuf>,
    /// The `policy` record of the last reload (`result` applied, rejected or failed,
    /// `trigger`, `error`); `None` until the first reload.
    pub last_reload: Option<serde_json::Value>,
    /// The daemon's nice value (`--nice`, or what it had when that was refused).
    pub nice: i32,
    /// Tool-call attribution: the socket, whether it listens, what it took and refused.
    pub attribution: AttributionStatus,
}

/// `status.attribution`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AttributionStatus {
    pub socket: Option<PathBuf>,
    /// Why it does not listen, when it should.
    pub error: Option<String>,
    pub counters: crate::attribution::Counters,
}

/// Kernel and userspace counters: attempted = submitted + lost; received == submitted
/// once the ring buffer is drained. The kernel's count from when the programs were
/// loaded (the counters are pinned with them), userspace's from this daemon's start:
/// after a restart that adopted the pins, submitted also covers what the previous
/// daemon received.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Counters {
    pub kernel_submitted: u64,
    /// Ordinary events the kernel dropped for a full ring buffer.
    pub kernel_lost: u64,
    /// Decisions the kernel dropped for a full decisions ring (their own, so a flood
    /// of ordinary events cannot cause this).
    pub kernel_lost_decisions: u64,
    pub kernel_track_full: u64,
    pub received: u64,
    pub undecodable: u64,
    pub cache_overflow: u64,
    /// DNS answers the kernel learned from (names for the net events).
    pub dns_answers: u64,
}

pub fn run(args: &RunArgs) -> anyhow::Result<i32> {
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
    let pins = crate::pins::Pins::open(
        (!args.no_pin).then_some(args.pin_dir.as_path()),
        crate::bpf::object(),
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
        .then(|| crate::canary::path_for(&args.status_file))
        .filter(|p| match crate::canary::create(p) {
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
        sink: serde_json::Value::Null,
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
    log::info!("final-stats {}", pipeline.stats_record());
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
fn nofile_limit() -> Option<libc::rlimit> {
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
fn raise_nofile_limit() {
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
const MIN_KERNEL: (u32, u32) = (5, 10);

fn check_kernel_version(release: &str) -> anyhow::Result<()> {
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

#[cfg(test)]
mod kernel_version_tests {
    #[test]
    fn kernels_below_the_matrix_are_refused() {
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

/// Sets the calling thread's nice value (threads started later inherit it); returns
/// the value it has.
fn set_nice(want: i32) -> i32 {
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
fn anchor_budget() -> usize {
    nofile_limit().map_or(0, |l| {
        usize::try_from(l.rlim_cur)
            .unwrap_or(usize::MAX)
            .saturating_sub(1024)
    })
}

/// Tracks `root` as a gateway and every descendant it already has.
fn track_tree(guard: &mut Guard, cache: &mut ProcessCache, root: u32) -> anyhow::Result<()> {
    guard.track(root, TrackedProc { root, depth: 0 })?;
    cache.seed_from_proc(root, 0);
    // Two passes: children forked during the first scan had a not-yet-tracked parent.
    for _ in 0..2 {
        let parents = tree::proc_parents();
        for (pid, entry) in tree::descendants(root, &parents) {
            let entry_depth = entry.depth;
            if guard.tracked(pid).is_none() {
                guard.track(pid, entry)?;
            }
            cache.seed_from_proc(pid, entry_depth);
        }
    }
    Ok(())
}

/// Gateway processes running now, by command line.
fn discover_gateways() -> Vec<u32> {
    let mut out = Vec::new();
    let parents = tree::proc_parents();
    for &pid in parents.keys() {
        if pid == std::process::id() {
            continue;
        }
        if let Some(argv) = tree::read_cmdline(pid) {
            if openclaw::is_gateway_cmdline(&argv) {
                out.push(pid);
            }
        }
    }
    // A gateway's own child that looks like a gateway is part of its tree, not a root.
    let set: std::collections::HashSet<u32> = out.iter().copied().collect();
    out.retain(|p| parents.get(p).is_none_or(|pp| !set.contains(pp)));
    out
}

/// `openclaw-gateway*.service` cgroups anywhere under the cgroup2 root (user units
/// live a few levels down: user.slice/user-1000.slice/user@1000.service/app.slice/...).
fn gateway_unit_cgroups() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Some(root) = crate::bpf::cgroup2_root() else {
        return out;
    };
    let mut stack = vec![(root, 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("openclaw-gateway") && name.ends_with(".service") {
                out.push(e.path());
            } else if depth < 8 {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    out
}

/// Processes of a cgroup whose parent is outside it: the roots of its trees.
fn cgroup_roots(cg: &Path) -> Vec<u32> {
    let procs: Vec<u32> = std::fs::read_to_string(cg.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let set: std::collections::HashSet<u32> = procs.iter().copied().collect();
    procs
        .into_iter()
        .filter(|p| tree::read_ppid(*p).is_none_or(|pp| !set.contains(&pp)))
        .collect()
}

fn report_startup(status: &Status) {
    for p in &status.programs {
        if let Some(v) = &p.variant {
            log::info!("program {} ({}): as {v}", p.name, p.hook);
        }
        match &p.error {
            None => match &p.unpinned {
                None => log::info!("program {} ({}): attached", p.name, p.hook),
                Some(why) => log::warn!(
                    "program {} ({}): attached, NOT pinned: {why}",
                    p.name,
                    p.hook
                ),
            },
            Some(e) => log::warn!("program {} ({}): NOT attached: {e}", p.name, p.hook),
        }
    }
    if status.calibration.ok {
        log::info!("calibration: ok: {}", status.calibration.detail);
    } else {
        log::warn!(
            "calibration: FAILED: {}; no enforcement is claimed",
            status.calibration.detail
        );
    }
    for (rule, how) in &status.enforcement {
        log::info!("rule {rule}: {how}");
    }
    log::info!("pinning: {}", status.pinning);
    log::info!(
        "tracking {} gateway(s): {:?}",
        status.roots.len(),
        status.roots
    );
}

/// Writes the status atomically (temp file + rename) so readers never see half of it.
fn write_status(path: &Path, status: &Status) {
    let Some(dir) = path.parent() else { return };
    let _ = std::fs::create_dir_all(dir);
    let tmp = path.with_extension("tmp");
    if let Ok(json) = serde_json::to_vec_pretty(status) {
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The signals the daemon handles, registered before anything else.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            term: tokio::signal::unix::signal(SignalKind::terminate())?,
            int: tokio::signal::unix::signal(SignalKind::interrupt())?,
            hup: tokio::signal::unix::signal(SignalKind::hangup())?,
        })
    }
}

struct Pipeline {
    guard: Guard,
    cache: ProcessCache,
    clock: Clock,
    sink: crate::sink::Sink,
    counters: Counters,
    status: Status,
    status_file: PathBuf,
    started: Instant,
    policy: PolicyState,
    /// Decisions of processes enrichment does not know yet: they travel on their own
    /// ring, ahead of the fork that introduces their process on the process ring, so
    /// they wait until that ring is read up to their time (or is empty, or
    /// [`HELD_FOR_NS`] passed) to get their lineage and role (bounded: [`HELD_MAX`]).
    held: Vec<Event>,
    /// The names behind the DNS sensor's hashes.
    names: crate::host::Names,
    /// The host knowledge last written to the record.
    host_recorded: Option<crate::policy::CompileContext>,
    /// Kernel time of the last process event (fork, exec, exit) handled, and whether
    /// that ring was found empty at the last read: what the held decisions wait for.
    procs_seen_ns: u64,
    procs_idle: bool,
    /// The file the BPF LSM canary opens (`None`: no BPF LSM to check).
    canary: Option<PathBuf>,
    /// Since when (and what the canary saw) BPF LSM no longer decides.
    lsm_lost: Option<String>,
    /// Tool calls the gateways reported, and which gateways may report.
    calls: std::sync::Arc<crate::attribution::Registry>,
}

/// Decisions held back at most; beyond, they go out with what is known.
const HELD_MAX: usize = 1024;
/// How long a decision waits at most for the process events before it (a flood of
/// processes may put its fork behind): then it goes out with what is known.
const HELD_FOR_NS: u64 = 20_000_000;

/// How long the kernel trusts the daemon to resume a held exec after its last
/// heartbeat (sent every second): past it, such an exec is killed instead.
const ENV_ALIVE_FOR: Duration = Duration::from_secs(3);

/// The policy in force and what it put into the kernel, for reloads.
struct PolicyState {
    path: Option<PathBuf>,
    mtime: Option<std::time::SystemTime>,
    mode: Option<crate::policy::Mode>,
    extra: Vec<PathBuf>,
    record_only: bool,
    calibrated: bool,
    plan: crate::enforce::KernelPlan,
    policy: std::sync::Arc<crate::policy::CompiledPolicy>,
    /// The guard's own files and their `tamper::guarded` flags (self-protection).
    guarded: Vec<(PathBuf, u32)>,
    kill_limit: u32,
    fold_ms: u32,
    /// `Settings.policy_gen` of the policy applied last.
    policy_gen: u32,
    /// The switches and the guard's files as last written, to tell a re-plan that
    /// changes nothing (most) from one that does.
    applied: Option<(openclaw_guard_common::Settings, HashMap<InodeKey, u32>)>,
    /// An `O_PATH` handle on every protected inode: while held, the inode is not freed
    /// (its number cannot go to another file), and a re-plan can tell that a protected
    /// file whose path no longer resolves (a directory above it was moved) still exists.
    anchors: HashMap<InodeKey, std::fs::File>,
    /// The gateway users' homes and state directories the last plan resolved.
    users: Vec<crate::enforce::UserDirs>,
    /// What the `env` rules blank (names and values, from the policy and the users'
    /// secrets files as the last plan read them).
    secrets: crate::secret_env::Secrets,
    /// The rule ids and guarded files the decoders name (from what was applied).
    names: crate::sensors::Names,
}

/// What a policy names on this host now: the gateway users' directories, the secrets
/// their files hold, the kernel plan. Built off the event loop on a re-plan: with
/// thousands of protected files it walks the file system for a second or more, and
/// held processes and decisions must not wait for that.
struct Resolved {
    /// The policy resolved for (a reload may overtake it).
    policy: std::sync::Arc<crate::policy::CompiledPolicy>,
    /// The same compiled with what the host says now (`crate::host`): the policy in
    /// force once committed.
    compiled: std::sync::Arc<crate::policy::CompiledPolicy>,
    users: Vec<crate::enforce::UserDirs>,
    secrets: crate::secret_env::Secrets,
    plan: crate::enforce::KernelPlan,
}

impl Resolved {
    fn new(
        policy: std::sync::Arc<crate::policy::CompiledPolicy>,
        roots: &[u32],
        extra: &[PathBuf],
    ) -> Self {
        let users = crate::enforce::user_dirs(roots);
        let ctx = crate::host::context(roots, &users);
        let compiled = if ctx == policy.context {
            policy.clone()
        } else {
            std::sync::Arc::new(crate::policy::CompiledPolicy::new(
                &policy.policy,
                Some(policy.mode),
                &ctx,
            ))
        };
        let state_dirs: Vec<PathBuf> = users.iter().map(|u| u.state_dir.clone()).collect();
        let secrets = crate::secret_env::Secrets::from_policy(&compiled, &state_dirs);
        let plan = crate::enforce::KernelPlan::build(&compiled, &users, extra);
        Self {
            policy,
            compiled,
            users,
            secrets,
            plan,
        }
    }
}

/// What the tree may not change: this binary, the policy file, the state directory and
/// the pins (with their bpffs, which may not be unmounted).
fn guarded_paths(args: &RunArgs) -> Vec<(PathBuf, u32)> {
    use openclaw_guard_common::tamper::guarded;
    let mut paths = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        paths.push((exe, guarded::FILE));
    }
    if let Some(p) = &args.policy {
        paths.push((p.clone(), guarded::FILE));
    }
    if !args.sink.no_record {
        paths.push((args.sink.state_dir.clone(), guarded::DIR));
    }
    if !args.no_pin {
        paths.push((args.pin_dir.clone(), guarded::DIR | guarded::FS));
    }
    paths.push((crate::canary::path_for(&args.status_file), guarded::FILE));
    let unit = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| own_unit(&c));
    let extra = args
        .guard_paths
        .iter()
        .cloned()
        .chain(unit.iter().flat_map(|u| unit_paths(Path::new("/"), u)));
    for p in extra {
        let flag = if p.is_dir() {
            guarded::DIR
        } else {
            guarded::FILE
        };
        paths.push((p, flag));
    }
    paths
}

/// The systemd unit the daemon runs in (`openclaw-guard.service`), from the last
/// component of its cgroup v2 path.
fn own_unit(proc_cgroup: &str) -> Option<String> {
    let path = proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim();
    let last = path.rsplit('/').next()?;
    last.ends_with(".service").then(|| last.to_owned())
}

/// What starts `unit` at boot and what changes it, under `root`: its unit file and
/// drop-in directory in each directory systemd reads, its enablement links, and the
/// arguments and configuration the package gives it (`/etc/default/openclaw-guard`,
/// the unit's EnvironmentFile; `/etc/openclaw-guard`): an agent that rewrote those
/// would start the next guard in monitor mode or without its outputs.
/// Those that exist now; a drop-in directory made later is not covered (it takes
/// effect at a reload, through the service manager's socket the `delegation` rule
/// closes, or at the next boot).
fn unit_paths(root: &Path, unit: &str) -> Vec<PathBuf> {
    const DIRS: &[&str] = &[
        "etc/systemd/system",
        "run/systemd/system",
        "usr/local/lib/systemd/system",
        "usr/lib/systemd/system",
        "lib/systemd/system",
    ];
    let mut out = Vec::new();
    for dir in DIRS.iter().map(|d| root.join(d)) {
        for p in [dir.join(unit), dir.join(format!("{unit}.d"))] {
            if p.symlink_metadata().is_ok() {
                out.push(p);
            }
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".wants") || name.ends_with(".requires") {
                let link = e.path().join(unit);
                if link.symlink_metadata().is_ok() {
                    out.push(link);
                }
            }
        }
    }
    let stem = unit.trim_end_matches(".service");
    for p in [
        root.join("etc/default").join(stem),
        root.join("etc").join(stem),
    ] {
        if p.symlink_metadata().is_ok() {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod unit_tests {
    use std::path::Path;

    #[test]
    fn own_unit_from_cgroup() {
        assert_eq!(
            super::own_unit("0::/system.slice/openclaw-guard.service\n").as_deref(),
            Some("openclaw-guard.service")
        );
        assert_eq!(
            super::own_unit("0::/user.slice/user-0.slice/session-3.scope\n"),
            None
        );
        assert_eq!(super::own_unit("12:pids:/\n"), None);
    }

    #[test]
    fn unit_files_drop_ins_and_links_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let etc = root.join("etc/systemd/system");
        std::fs::create_dir_all(etc.join("multi-user.target.wants")).expect("mkdir");
        std::fs::create_dir_all(etc.join("openclaw-guard.service.d")).expect("mkdir");
        std::fs::create_dir_all(root.join("lib/systemd/system")).expect("mkdir");
        std::fs::write(root.join("lib/systemd/system/openclaw-guard.service"), "").expect("unit");
        std::os::unix::fs::symlink(
            "/lib/systemd/system/openclaw-guard.service",
            etc.join("multi-user.target.wants/openclaw-guard.service"),
        )
        .expect("link");
        std::fs::write(etc.join("other.service"), "").expect("other");
        std::fs::create_dir_all(root.join("etc/default")).expect("mkdir");
        std::fs::write(root.join("etc/default/openclaw-guard"), "").expect("default");
        std::fs::write(root.join("etc/default/other"), "").expect("other default");
        std::fs::create_dir_all(root.join("etc/openclaw-guard")).expect("config dir");
        let mut found = super::unit_paths(root, "openclaw-guard.service");
        found.sort();
        let rel: Vec<_> = found
            .iter()
            .map(|p| p.strip_prefix(root).expect("under root").to_path_buf())
            .collect();
        assert_eq!(
            rel,
            [
                Path::new("etc/default/openclaw-guard"),
                Path::new("etc/openclaw-guard"),
                Path::new("etc/systemd/system/multi-user.target.wants/openclaw-guard.service"),
                Path::new("etc/systemd/system/openclaw-guard.service.d"),
                Path::new("lib/systemd/system/openclaw-guard.service"),
            ]
        );
    }
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Loads and compiles the policy file, or the embedded default.
fn load_policy(
    path: Option<&Path>,
    mode: Option<crate::policy::Mode>,
) -> anyhow::Result<crate::policy::CompiledPolicy> {
    let file = match path {
        Some(p) => crate::policy::load_file(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => crate::policy::default_policy(),
    };
    Ok(crate::policy::CompiledPolicy::new(
        &file,
        mode,
        &crate::policy::CompileContext::default(),
    ))
}

impl PolicyState {
    /// Protection follows the files, not the paths they had: an inode this policy
    /// protected whose path no longer resolves (the state directory, or one below it,
    /// was renamed) stays in the plan while it still has a link. Then the handles are
    /// renewed for what the plan protects. A new policy starts from its own paths.
    fn follow_moved_files(&mut self, plan: &mut crate::enforce::KernelPlan, new_policy: bool) {
        use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
        let mut anchors = HashMap::new();
        if !new_policy {
            for (key, ra) in &self.plan.inodes {
                if plan.inodes.contains_key(key) {
                    continue;
                }
                let Some(handle) = self.anchors.remove(key) else {
                    continue;
                };
                let room = plan.inodes.len() < openclaw_guard_common::PROTECTED_MAX as usize;
                if room && handle.metadata().is_ok_and(|m| m.nlink() > 0) {
                    log::info!(
                        "protected inode {}:{} moved away from its path; still protected",
                        key.dev,
                        key.ino
                    );
                    plan.inodes.insert(*key, *ra);
                    anchors.insert(*key, handle);
                }
            }
        }
        let budget = anchor_budget();
        let mut unanchored = 0usize;
        for (key, path) in &plan.found_at {
            if anchors.len() >= budget {
                unanchored += 1;
                continue;
            }
            let handle = self.anchors.remove(key).or_else(|| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH)
                    .open(path)
                    .ok()
            });
            if let Some(h) = handle {
                anchors.insert(*key, h);
            }
        }
        if unanchored > 0 {
            // Still protected by inode; only a move of a directory above them followed
            // by a re-plan would lose them, and the fd limit is what says so.
            plan.problems.push(format!(
                "{unanchored} protected files are not followed across a move of their directory: the daemon's fd limit leaves room for {budget} handles"
            ));
        }
        self.anchors = anchors;
    }

    /// The switches for the policy in force (`policy_gen` left 0).
    fn settings(&self) -> openclaw_guard_common::Settings {
        let policy = &*self.policy;
        // Raw and ICMP sockets are refused for a rule that blocks beyond loopback (they
        // reach the network without a connect); a loopback-only deny list does not
        // need that.
        let beyond_loopback = |rule: u32| {
            policy.egress.iter().any(|e| {
                e.rule == rule
                    && e.list == crate::policy::List::Deny
                    && !crate::policy::loopback_nets()
                        .iter()
                        .any(|l| l.contains(e.net.addr()) && e.net.prefix() >= l.prefix())
            }) || policy.egress_hosts.iter().any(|h| h.rule == rule)
        };
        let blocking_egress = policy
            .rules
            .iter()
            .find(|r| {
                r.kind == "egress"
                    && crate::enforce::blocks_in_kernel(policy, r)
                    && beyond_loopback(r.index)
            })
            .map(|r| r.index);
        let enforce = self.calibrated && !self.record_only;
        let env_rule = policy
            .secret_env
            .iter()
            .find(|r| r.action == crate::policy::Action::Block);
        openclaw_guard_common::Settings {
            monitor: u32::from(policy.mode == crate::policy::Mode::Monitor),
            enforce: u32::from(enforce),
            env_hold: u32::from(enforce && env_rule.is_some()),
            env_rule: env_rule.map_or(0, |r| r.rule),
            egress_blocks: u32::from(blocking_egress.is_some()),
            egress_rule: blocking_egress.unwrap_or(0),
            guard_tgid: std::process::id(),
            kill_limit: self.kill_limit,
            fold_ms: self.fold_ms,
            policy_gen: 0,
        }
    }

    /// Writes the switches last: with a new `policy_gen` when anything the kernel
    /// checks changed (`changed`), which ends every fold window, since a reopen inside
    /// one skips the checks. The maps hold the new state by then.
    fn write_settings(
        &mut self,
        guard: &mut Guard,
        settings: openclaw_guard_common::Settings,
        files: HashMap<InodeKey, u32>,
        changed: bool,
    ) -> anyhow::Result<()> {
        let same = !changed
            && self
                .applied
                .as_ref()
                .is_some_and(|(s, f)| *s == settings && *f == files);
        if !same {
            self.policy_gen = self.policy_gen.wrapping_add(1);
        }
        guard.set_settings(openclaw_guard_common::Settings {
            policy_gen: self.policy_gen,
            ..settings
        })?;
        self.applied = Some((settings, files));
        Ok(())
    }

    /// Puts the guard's own files into `GUARD_FILES`, as they are now (an edited
    /// policy is a new inode; the state directory may appear after start-up).
    fn guard_files(&mut self, guard: &mut Guard) -> anyhow::Result<HashMap<InodeKey, u32>> {
        let (files, names) = crate::enforce::guard_files(&self.guarded);
        guard.set_guard_files(&files)?;
        self.names.guard_paths = names;
        Ok(files)
    }

    /// [`PolicyState::guard_files`] on its own (the record directory appeared).
    fn refresh_guard_files(&mut self, guard: &mut Guard) -> anyhow::Result<()> {
        let files = self.guard_files(guard)?;
        self.write_settings(guard, self.settings(), files, false)
    }

    /// Puts `self.policy` into the kernel: new entries first, then the stale ones out,
    /// so what both policies protect stays protected throughout; then the switches.
    /// `new_policy` (start-up, reload) always ends the fold windows; a re-plan only
    /// when what it resolved differs. Returns how each rule is enforced here.
    fn apply(
        &mut self,
        guard: &mut Guard,
        roots: &[u32],
        new_policy: bool,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let policy = self.policy.clone();
        let mut names: std::collections::HashMap<u32, String> = policy
            .rules
            .iter()
            .map(|r| (r.index, r.id.clone()))
            .collect();
        names.insert(
            crate::enforce::CLI_PROTECT_RULE,
            crate::enforce::CLI_PROTECT_NAME.into(),
        );
        names.insert(
            openclaw_guard_common::tamper::RULE,
            crate::enforce::SELF_PROTECTION_NAME.into(),
        );
        self.names.rules = names;
        let resolved = Resolved::new(policy, roots, &self.extra);
        self.commit(guard, resolved, new_policy)
    }

    /// Puts what [`Resolved::new`] found into the kernel (see [`PolicyState::apply`]).
    /// For the policy in force only: the re-plan drops a resolution a reload overtook.
    fn commit(
        &mut self,
        guard: &mut Guard,
        resolved: Resolved,
        new_policy: bool,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let Resolved {
            compiled,
            users,
            secrets,
            mut plan,
            ..
        } = resolved;
        let resolvers: Vec<[u8; 16]> = compiled
            .context
            .resolvers
            .iter()
            .map(|a| crate::host::mapped(*a))
            .collect();
        guard.set_resolvers(&resolvers)?;
        self.policy = compiled;
        self.users = users;
        self.secrets = secrets;
        self.follow_moved_files(&mut plan, new_policy);
        plan.write(guard, &self.plan)?;
        guard.remove_stale(&self.plan, &plan)?;
        for p in plan
            .problems
            .iter()
            .filter(|p| !self.plan.problems.contains(p))
        {
            log::warn!("policy: {p}");
        }
        let changed = new_policy || !plan.same_kernel_entries(&self.plan);
        self.plan = plan;
        let files = self.guard_files(guard)?;
        self.write_settings(guard, self.settings(), files, changed)?;
        let policy = &self.policy;
        let mut enforcement =
            crate::enforce::describe(policy, guard, self.calibrated, self.record_only);
        for (rule, n) in &self.plan.unprotected {
            if let Some(how) = enforcement.get_mut(rule) {
                how.push_str(&format!(
                    "; {n} files NOT protected (the kernel's map of protected files is full)"
                ));
            }
        }
        enforcement.insert(
            crate::enforce::SELF_PROTECTION_NAME.to_string(),
            crate::enforce::describe_self_protection(guard, self.record_only),
        );
        if !self.extra.is_empty() {
            let how = crate::enforce::describe_files(
                guard,
                self.calibrated,
                self.record_only,
                crate::policy::Action::Block,
            );
            enforcement.insert(crate::enforce::CLI_PROTECT_NAME.to_string(), how);
        }
        Ok(enforcement)
    }
}

impl Pipeline {
    async fn stream(
        &mut self,
        ring: RingBuf<MapData>,
        decisions: RingBuf<MapData>,
        execs: RingBuf<MapData>,
        signals: Signals,
        stats_every: Duration,
        attribution: Option<tokio::net::UnixListener>,
    ) -> anyhow::Result<()> {
        let Signals {
            mut term,
            mut int,
            mut hup,
        } = signals;
        // SAFETY: the ring buffer owns its fd for as long as the AsyncFd holds it.
        let mut fd = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow::anyhow!("registering the ring buffer with tokio: {e}"))?;
        // SAFETY: as above.
        let mut dfd = unsafe { AsyncFd::register(decisions) }
            .map_err(|e| anyhow::anyhow!("registering the decisions ring with tokio: {e}"))?;
        // SAFETY: as above.
        let mut xfd = unsafe { AsyncFd::register(execs) }
            .map_err(|e| anyhow::anyhow!("registering the exec ring with tokio: {e}"))?;
        let mut replan_tick = tokio::time::interval(Duration::from_secs(5));
        replan_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut replan: Option<tokio::task::JoinHandle<Resolved>> = None;
        // Ordinary events are submitted without a wakeup until a batch piles up (see
        // `wakeup` in the kernel programs): this bounds their delay.
        let mut drain_tick = tokio::time::interval(DRAIN_EVERY);
        drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status_tick = tokio::time::interval(Duration::from_secs(1));
        let mut stats_tick = tokio::time::interval(stats_every);
        stats_tick.tick().await;
        // Reports come in on tasks of their own; their records join the pipeline here.
        let (records_tx, mut records) = tokio::sync::mpsc::channel(1024);
        let socket = self.status.attribution.socket.clone();
        if let Some(listener) = attribution {
            tokio::spawn(crate::attribution::serve(
                listener,
                self.calls.clone(),
                records_tx,
            ));
        }
        loop {
            // `biased`: decisions first, whatever else is ready.
            tokio::select! {
                biased;
                // Once a second, whatever floods the rings: the heartbeat that keeps
                // held processes alive and the BPF LSM canary must not be starved.
                _ = status_tick.tick() => {
                    let changed = self.policy.path.as_deref().map(mtime);
                    if changed.is_some_and(|m| m != self.policy.mtime) {
                        if let Err(e) = self.reload("policy file changed") {
                            log::warn!("policy reload: {e:#}");
                        }
                    }
                    self.refresh_counters();
                    self.check_lsm()?;
                    write_status(&self.status_file, &self.status);
                    self.env_heartbeat();
                    // Safety net: a held process whose event was lost.
                    self.resume_orphans(Duration::from_secs(2));
                }
                guard = dfd.readable_mut() => {
                    let mut guard = guard?;
                    // A slice of decisions, then one of the process ring (what introduces
                    // their processes, and the execs a flood of decisions must not
                    // starve), and a few ordinary events (not starved either); the ring
                    // stays ready while more decisions wait.
                    if self.drain_some(guard.get_inner_mut(), DECISIONS_SLICE)? < DECISIONS_SLICE {
                        guard.clear_ready();
                    }
                    self.drain_procs(xfd.get_mut())?;
                    self.drain_some(fd.get_mut(), EVENTS_CHUNK)?;
                    self.release_held()?;
                    self.sink.flush();
                }
                guard = xfd.readable_mut() => {
                    let mut guard = guard?;
                    // Processes ahead of the ordinary events: a flood of opens delays
                    // no alert about a new program.
                    if self.drain_procs(guard.get_inner_mut())? < PROCS_SLICE {
                        guard.clear_ready();
                    }
                    // Decisions that waited for their processes.
                    self.release_held()?;
                    self.sink.flush();
                }
                guard = fd.readable_mut() => {
                    let mut guard = guard?;
                    // One slice, then back to the loop, which looks at the others first.
                    if !self.drain_slice(dfd.get_mut(), xfd.get_mut(), guard.get_inner_mut())? {
                        guard.clear_ready();
                    }
                    self.sink.flush();
                }
                _ = drain_tick.tick() => {
                    // Bounded: under a flood the other arms get their turn.
                    for _ in 0..DRAIN_TICK_SLICES {
                        if !self.drain_slice(dfd.get_mut(), xfd.get_mut(), fd.get_mut())? {
                            break;
                        }
                    }
                    self.sink.flush();
                }
                Some(record) = records.recv() => {
                    self.sink.event(record)?;
                    self.sink.flush();
                }
                _ = hup.recv() => {
                    if let Err(e) = self.reload("SIGHUP") {
                        log::warn!("policy reload: {e:#}");
                    }
                }
                _ = replan_tick.tick(), if replan.is_none() => {
                    // State directories and gateway users appear after start-up.
                    let roots = self.status.roots.clone();
                    let policy = self.policy.policy.clone();
                    let extra = self.policy.extra.clone();
                    replan = Some(tokio::task::spawn_blocking(move || {
                        Resolved::new(policy, &roots, &extra)
                    }));
                }
                resolved = async { replan.as_mut().expect("guarded").await }, if replan.is_some() => {
                    replan = None;
                    // A reload while it ran applied its own resolution: this one is moot.
                    if resolved
                        .as_ref()
                        .is_ok_and(|r| !std::sync::Arc::ptr_eq(&r.policy, &self.policy.policy))
                    {
                        continue;
                    }
                    let applied = resolved
                        .map_err(anyhow::Error::from)
                        .and_then(|r| self.policy.commit(&mut self.guard, r, false));
                    match applied {
                        Ok(enforcement) => {
                            self.status.enforcement = enforcement;
                            self.sink.set_policy(self.policy.policy.clone());
                            self.record_host()?;
                            self.mark_lsm_lost();
                        }
                        Err(e) => log::warn!("re-resolving protected paths: {e:#}"),
                    }
                    self.refresh_state_dirs();
                }
                _ = stats_tick.tick() => {
                    self.refresh_counters();
                    self.emit_stats()?;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        // Nothing will resume a held process once this daemon is gone: holding stops
        // first, then what is held is handled with the rest of the events.
        let settings = self.policy.settings();
        let files = self
            .policy
            .applied
            .as_ref()
            .map(|(_, f)| f.clone())
            .unwrap_or_default();
        if let Err(e) = self.policy.write_settings(
            &mut self.guard,
            openclaw_guard_common::Settings {
                env_hold: 0,
                ..settings
            },
            files,
            false,
        ) {
            log::warn!("env: turning holding off: {e:#}");
        }
        // What the kernel wrote before the signal is still owed to the outputs.
        self.drain(dfd.get_mut())?;
        self.drain(xfd.get_mut())?;
        self.drain(fd.get_mut())?;
        self.release_all_held()?;
        self.resume_orphans(Duration::ZERO);
        while let Ok(record) = records.try_recv() {
            self.sink.event(record)?;
        }
        self.sink.flush();
        if let Some(path) = &socket {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// Validates and swaps in the policy file; a policy that does not load is rejected
    /// with its errors and the one in force stays, untouched.
    fn reload(&mut self, why: &str) -> anyhow::Result<()> {
        self.policy.mtime = self.policy.path.as_deref().and_then(mtime);
        let path = self.policy.path.as_ref().map_or_else(
            || "(embedded default)".to_string(),
            |p| p.display().to_string(),
        );
        let mut record = match load_policy(self.policy.path.as_deref(), self.policy.mode) {
            Err(e) => {
                log::warn!(
                    "policy reload ({why}) REJECTED, the previous policy stays in force:\n{e:#}"
                );
                serde_json::json!({"time": jiff::Timestamp::now().to_string(), "kind": "policy", "result": "rejected", "path": path, "error": format!("{e:#}")})
            }
            Ok(policy) => {
                let policy = std::sync::Arc::new(policy);
                let old = std::mem::replace(&mut self.policy.policy, policy.clone());
                let roots = self.status.roots.clone();
                match self.policy.apply(&mut self.guard, &roots, true) {
                    Ok(enforcement) => {
                        self.status.enforcement = enforcement;
                        self.sink.set_policy(self.policy.policy.clone());
                        self.record_host()?;
                        log::info!("policy reloaded ({why}) from {path}");
                        for (rule, how) in &self.status.enforcement {
                            log::info!("rule {rule}: {how}");
                        }
                        serde_json::json!({"time": jiff::Timestamp::now().to_string(), "kind": "policy", "result": "applied", "path": path})
                    }
                    Err(e) => {
                        // The maps hold the new entries as far as they were written:
                        // put the old policy back entirely.
                        self.policy.policy = old;
                        self.status.enforcement =
                            self.policy.apply(&mut self.guard, &roots, true)?;
                        log::error!("policy reload ({why}) failed in the kernel, the previous policy restored: {e:#}");
                        serde_json::json!({"time": jiff::Timestamp::now().to_string(), "kind": "policy", "result": "failed", "path": path, "error": format!("{e:#}")})
                    }
                }
            }
        };
        record["trigger"] = why.into();
        self.status.last_reload = Some(record.clone());
        write_status(&self.status_file, &self.status);
        self.sink.event(record)?;
        self.sink.flush();
        Ok(())
    }

    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> anyhow::Result<()> {
        self.drain_some(ring, usize::MAX).map(drop)
    }

    /// A slice of decisions, one of process events, then one of ordinary events: a
    /// decision is never held up behind more than a slice, nor an exec behind more
    /// than a slice of decisions. True when a slice of processes or events was full
    /// (more may wait).
    fn drain_slice(
        &mut self,
        decisions: &mut RingBuf<MapData>,
        procs: &mut RingBuf<MapData>,
        events: &mut RingBuf<MapData>,
    ) -> anyhow::Result<bool> {
        self.drain_some(decisions, DECISIONS_SLICE)?;
        let more_procs = self.drain_procs(procs)? == PROCS_SLICE;
        let mut taken = 0;
        while taken < EVENTS_SLICE {
            let n = self.drain_some(events, EVENTS_CHUNK)?;
            taken += n;
            // What came on the urgent rings meanwhile goes out before more bulk.
            let urgent = self.drain_some(decisions, DECISIONS_SLICE)? + self.drain_procs(procs)?;
            if urgent > 0 {
                self.release_held()?;
                self.sink.flush();
            }
            if n < EVENTS_CHUNK {
                break;
            }
        }
        self.release_held()?;
        Ok(taken == EVENTS_SLICE || more_procs)
    }

    /// One slice of the process ring, noting whether it is now empty.
    fn drain_procs(&mut self, procs: &mut RingBuf<MapData>) -> anyhow::Result<usize> {
        let n = self.drain_some(procs, PROCS_SLICE)?;
        self.procs_idle = n < PROCS_SLICE;
        Ok(n)
    }

    /// The held events whose wait is over, enriched with what came since; the others
    /// stay (everything goes at shutdown: `release_all_held`).
    fn release_held(&mut self) -> anyhow::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let now = crate::secret_env::boot_ns();
        let (seen, idle) = (self.procs_seen_ns, self.procs_idle);
        let (due, wait): (Vec<Event>, Vec<Event>) =
            std::mem::take(&mut self.held).into_iter().partition(|ev| {
                idle || ev.ktime_ns <= seen || now.saturating_sub(ev.ktime_ns) > HELD_FOR_NS
            });
        self.held = wait;
        for mut ev in due {
            self.cache.enrich(&mut ev);
            self.names.name(&mut ev);
            self.secret_env(&mut ev);
            self.sink.kernel_event(&ev)?;
        }
        Ok(())
    }

    /// A `host` record when the host knowledge the policy was compiled with changed.
    fn record_host(&mut self) -> anyhow::Result<()> {
        let ctx = &self.policy.policy.context;
        if self.host_recorded.as_ref() == Some(ctx) {
            return Ok(());
        }
        self.host_recorded = Some(ctx.clone());
        self.sink.event(crate::host::record(ctx))
    }

    /// Every held event, whatever came (shutdown, start-up backlog).
    fn release_all_held(&mut self) -> anyhow::Result<()> {
        self.procs_idle = true;
        self.release_held()
    }

    /// Handles up to `max` events of a ring; returns how many it took.
    fn drain_some(&mut self, ring: &mut RingBuf<MapData>, max: usize) -> anyhow::Result<usize> {
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else {
                break;
            };
            n += 1;
            self.counters.received += 1;
            match decode(&item, &self.clock, &self.policy.names) {
                Ok(ev) => {
                    drop(item);
                    self.handle(ev)?;
                }
                Err(e) => {
                    self.counters.undecodable += 1;
                    log::warn!("undecodable event: {e}");
                }
            }
        }
        Ok(n)
    }

    fn handle(&mut self, mut ev: Event) -> anyhow::Result<()> {
        if ev.root == crate::calibrate::CALIBRATION_ROOT {
            return Ok(());
        }
        // DNS answers travel on the process ring too: a decision naming an address
        // learned a moment ago waits for its name like one of an unknown process.
        if let Payload::Dns(d) = &ev.payload {
            self.procs_seen_ns = self.procs_seen_ns.max(ev.ktime_ns);
            self.names.learn(d);
            self.counters.dns_answers += 1;
            return Ok(());
        }
        // Root 0: an untracked exec of a candidate executable; it is a gateway only if
        // its command line says so, and then it is tracked from here on.
        if ev.root == 0 {
            let Payload::Exec(x) = &ev.payload else {
                return Ok(());
            };
            if !openclaw::is_gateway_cmdline(&x.argv) {
                return Ok(());
            }
            let pid = ev.tgid;
            track_tree(&mut self.guard, &mut self.cache, pid)?;
            self.calls.add_gateway(pid);
            self.status.roots.push(pid);
            log::info!("new gateway pid {pid}: {:?}", x.argv);
            ev.root = pid;
            ev.depth = 0;
        }
        // A decision travels on its own ring, ahead of the fork that made its process:
        // one of a process not known yet waits for the process ring up to its time.
        if matches!(
            ev.payload,
            Payload::Exec(_) | Payload::Fork(_) | Payload::Exit(_)
        ) {
            self.procs_seen_ns = self.procs_seen_ns.max(ev.ktime_ns);
        }
        let unnamed = matches!(&ev.payload, Payload::Net(n) if n.name_hash != 0 && !self.names.knows(n.name_hash));
        let unknown = ev.decision.is_some()
            && !matches!(ev.payload, Payload::Exec(_))
            && (unnamed || !self.cache.knows(ev.tgid));
        if unknown && self.held.len() < HELD_MAX {
            self.held.push(ev);
            return Ok(());
        }
        self.cache.enrich(&mut ev);
        self.names.name(&mut ev);
        if ev.depth == 0 && ev.tool_call.is_none() {
            ev.tool_call = self.calls.in_process(&ev);
        }
        self.secret_env(&mut ev);
        self.sink.kernel_event(&ev)
    }

    /// The `env` rule at an exec (after enrichment gave the role): the gateway's own
    /// machinery is marked a carrier; a held image of the agent's side has its secret
    /// values blanked; then a held image is resumed. One that cannot be blanked is
    /// killed: it carries the secrets.
    fn secret_env(&mut self, ev: &mut Event) {
        let Payload::Exec(x) = &mut ev.payload else {
            return;
        };
        let bits = crate::secret_env::carrier_bits(ev.role);
        if let Some(bits) = bits {
            if let Err(e) = self.guard.set_carrier(ev.tgid, bits) {
                log::warn!("env: {e:#}");
            }
        }
        if !x.env_held {
            return;
        }
        if bits.is_none() {
            match crate::secret_env::blank(ev.tgid, &self.policy.secrets) {
                Ok(names) => x.env_blanked = names,
                Err(e) => {
                    crate::secret_env::kill(ev.tgid);
                    x.env_error = Some(format!("{e:#}; killed"));
                }
            }
        }
        crate::secret_env::resume(ev.tgid);
        self.guard.env_resumed(ev.tgid);
    }

    /// Held processes no exec event will resume (held longer than `min_age`): left by
    /// a daemon that died, or whose event was lost. Blanked (unless the gateway's own)
    /// and resumed.
    fn resume_orphans(&mut self, min_age: Duration) {
        let now = crate::secret_env::boot_ns();
        for (pid, since) in self.guard.env_pending() {
            if now.saturating_sub(since) < min_age.as_nanos() as u64 {
                continue;
            }
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                self.guard.env_resumed(pid);
                continue;
            }
            if !self.cache.knows(pid) {
                self.cache.seed_from_proc(pid, 1);
            }
            let role = self.cache.role(pid).map(|r| r.as_str());
            if crate::secret_env::carrier_bits(role).is_none() {
                if let Err(e) = crate::secret_env::blank(pid, &self.policy.secrets) {
                    log::warn!("env: pid {pid} held and not blankable ({e:#}): killed");
                    crate::secret_env::kill(pid);
                }
            }
            crate::secret_env::resume(pid);
            self.guard.env_resumed(pid);
        }
    }

    /// The canary (see `canary.rs`): on a change, `status` and one health record
    /// (critical when BPF LSM stopped deciding, informational when it is back).
    fn check_lsm(&mut self) -> anyhow::Result<()> {
        let Some(path) = self.canary.clone() else {
            return Ok(());
        };
        let s = self.policy.settings();
        if s.monitor != 0 || s.enforce == 0 {
            return Ok(());
        }
        let now = jiff::Timestamp::now().to_string();
        let (detail, priority) = match (
            crate::canary::check(&mut self.guard, &path),
            &self.lsm_lost,
        ) {
            (crate::canary::Verdict::Opened, None) => {
                let detail = format!(
                    "BPF LSM stopped deciding: the canary opened {} for writing at {now} (a kernel knob such as ftrace_enabled, or detached programs); every BPF LSM rule is NOT enforced",
                    path.display()
                );
                self.lsm_lost = Some(detail.clone());
                (detail, "critical")
            }
            (crate::canary::Verdict::Refused, Some(_)) => {
                self.lsm_lost = None;
                self.status.enforcement = crate::enforce::describe(
                    &self.policy.policy,
                    &self.guard,
                    self.policy.calibrated,
                    self.policy.record_only,
                );
                self.status.enforcement.insert(
                    crate::enforce::SELF_PROTECTION_NAME.to_string(),
                    crate::enforce::describe_self_protection(&self.guard, self.policy.record_only),
                );
                (
                    format!("BPF LSM decides again (canary refused at {now})"),
                    "informational",
                )
            }
            _ => return Ok(()),
        };
        log::warn!("{detail}");
        self.mark_lsm_lost();
        write_status(&self.status_file, &self.status);
        self.sink.event(serde_json::json!({
            "time": now,
            "kind": "health",
            "check": "bpf-lsm",
            "detail": detail,
            "decision": {"rule": "guard-health", "action": "alert", "priority": priority},
        }))?;
        self.sink.flush();
        Ok(())
    }

    /// While BPF LSM does not decide, every rule that relies on it says so.
    fn mark_lsm_lost(&mut self) {
        let Some(why) = &self.lsm_lost else {
            return;
        };
        for how in self.status.enforcement.values_mut() {
            if how.contains("LSM") && !how.starts_with("NOT enforced") {
                *how = format!("NOT enforced ({why}); configured: {how}");
            }
        }
        self.status
            .enforcement
            .insert("bpf-lsm".into(), format!("NOT enforced: {why}"));
    }

    /// The daemon is alive to resume held processes for the next few seconds.
    fn env_heartbeat(&mut self) {
        let until = crate::secret_env::boot_ns() + ENV_ALIVE_FOR.as_nanos() as u64;
        if let Err(e) = self.guard.env_alive(until) {
            log::warn!("env: {e:#}");
        }
    }

    /// The gateways' state directories (as the last plan resolved them), for what
    /// counts as their ordinary activity.
    fn refresh_state_dirs(&mut self) {
        if let Some(s) = &mut self.sink.summaries {
            s.set_state_dirs(
                self.policy
                    .users
                    .iter()
                    .map(|u| u.state_dir.clone())
                    .collect(),
            );
        }
    }

    fn refresh_counters(&mut self) -> Counters {
        let k = self.guard.counters().unwrap_or_default();
        self.counters.kernel_submitted = k.emitted;
        self.counters.kernel_lost = k.lost;
        self.counters.kernel_lost_decisions = k.lost_decisions;
        self.counters.kernel_track_full = k.track_full;
        self.counters.cache_overflow = self.cache.overflow;
        self.status.counters = self.counters;
        self.status.uptime_secs = self.started.elapsed().as_secs();
        self.status.tracked_processes = self.guard.tracked_count();
        self.status.sink = self.sink.stats();
        self.status.attribution.counters = self.calls.counters();
        self.counters
    }

    /// A counters record in the JSON stream.
    fn stats_record(&self) -> serde_json::Value {
        serde_json::json!({
            "time": jiff::Timestamp::now().to_string(),
            "kind": "stats",
            "counters": self.counters,
            "tracked_processes": self.status.tracked_processes,
            "peak_rss_kib": peak_rss_kib(),
            "sink": self.sink.stats(),
            "attribution": self.status.attribution.counters,
        })
    }

    fn emit_stats(&mut self) -> anyhow::Result<()> {
        self.sink.flush_summaries()?;
        let rec = self.stats_record();
        self.sink.event(rec)?;
        self.sink.flush();
        Ok(())
    }
}

/// Whether `pid` is a running openclaw-guard (not a reused pid).
fn daemon_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| c.trim_end().starts_with("openclaw-guard"))
}

/// Command-line arguments of `openclaw-guard status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The running daemon's status file.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_STATUS_FILE)]
    pub status_file: PathBuf,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

/// `openclaw-guard status`: what the running daemon reported last (it rewrites the file
/// every second).
pub fn status(args: &StatusArgs) -> anyhow::Result<i32> {
    let text = match std::fs::read_to_string(&args.status_file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "openclaw-guard is not running (no status at {}: {e})",
                args.status_file.display()
            );
            return Ok(3);
        }
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", args.status_file.display()))?;
    // A daemon killed (SIGKILL, OOM) leaves its last status behind: say so rather
    // than show a dead daemon's figures as current.
    let pid = v["pid"].as_u64().unwrap_or(0);
    let alive = pid > 0 && daemon_alive(pid);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(if alive { 0 } else { 3 });
    }
    if !alive {
        println!(
            "openclaw-guard is NOT running: pid {pid} is gone (killed?); what follows is its last status. Pinned programs keep enforcing (see `pinning`); start the daemon again to adopt them."
        );
    }
    println!("openclaw-guard pid {} up {} s", v["pid"], v["uptime_secs"]);
    println!("programs:");
    for p in v["programs"].as_array().into_iter().flatten() {
        let state = if p["attached"] == true {
            let pinned = match p["unpinned"].as_str() {
                Some(why) => format!("attached, NOT pinned (not kept across a restart): {why}"),
                None => "attached".to_string(),
            };
            match p["variant"].as_str() {
                Some(v) => format!("{pinned}; as {v}"),
                None => pinned,
            }
        } else {
            format!("NOT attached: {}", p["error"].as_str().unwrap_or(""))
        };
        println!(
            "  {:<20} {:<28} {state}",
            p["name"].as_str().unwrap_or(""),
            p["hook"].as_str().unwrap_or("")
        );
    }
    println!(
        "calibration: {} ({})",
        if v["calibration"]["ok"] == true {
            "ok"
        } else {
            "FAILED"
        },
        v["calibration"]["detail"].as_str().unwrap_or("")
    );
    println!("enforcement:");
    for (rule, how) in v["enforcement"].as_object().into_iter().flatten() {
        println!("  {rule}: {}", how.as_str().unwrap_or(""));
    }
    println!("pinning: {}", v["pinning"].as_str().unwrap_or(""));
    let file = v["policy_file"].as_str().unwrap_or("(embedded default)");
    let r = &v["last_reload"];
    match r["result"].as_str() {
        None => println!("policy: {file}"),
        Some("applied") => println!(
            "policy: {file} (reloaded on {} at {})",
            r["trigger"].as_str().unwrap_or(""),
            r["time"].as_str().unwrap_or("")
        ),
        Some(result) => println!(
            "policy: {file}: the last reload ({} at {}) was {}; the previous policy stays in force: {}",
            r["trigger"].as_str().unwrap_or(""),
            r["time"].as_str().unwrap_or(""),
            result.to_uppercase(),
            r["error"].as_str().unwrap_or("").replace('\n', " ")
        ),
    }
    println!(
        "gateways: {}  tracked processes: {}",
        v["roots"], v["tracked_processes"]
    );
    let c = &v["counters"];
    println!(
        "events: kernel submitted {} lost {} (decisions lost {}); received {}; undecodable {}; untracked for a full map {}",
        c["kernel_submitted"], c["kernel_lost"], c["kernel_lost_decisions"], c["received"], c["undecodable"], c["kernel_track_full"]
    );
    let a = &v["attribution"];
    match (a["socket"].as_str(), a["error"].as_str()) {
        (None, _) => println!("attribution: off (--attribution-socket none)"),
        (Some(p), Some(e)) => println!("attribution: NOT listening on {p}: {e}"),
        (Some(p), None) => println!("attribution: tool calls reported on {p}: {}", a["counters"]),
    }
    if !v["sink"].is_null() {
        println!("outputs and record: {}", v["sink"]);
    }
    Ok(if alive { 0 } else { 3 })
}
