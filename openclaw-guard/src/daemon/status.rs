//! What the daemon reports about itself: the status file it rewrites every second,
//! its start-up report, and `openclaw-guard status`, which reads them.

use super::*;

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
    pub sink: Option<crate::sink::SinkStats>,
    /// Whether enforcement outlives the daemon.
    pub pinning: String,
    /// The policy file (`None`: the embedded default).
    pub policy_file: Option<PathBuf>,
    /// The `policy` record of the last reload (`result` applied, rejected or failed,
    /// `trigger`, `error`); `None` until the first reload.
    pub last_reload: Option<crate::events::DaemonRecord>,
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

pub(super) fn report_startup(status: &Status) {
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
pub(super) fn write_status(path: &Path, status: &Status) {
    let Some(dir) = path.parent() else { return };
    let _ = std::fs::create_dir_all(dir);
    let tmp = path.with_extension("tmp");
    if let Ok(json) = serde_json::to_vec_pretty(status) {
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

pub(super) fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
