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

/// Whether `pid` is a running openclaw-guard (not a reused pid).
pub(super) fn daemon_alive(pid: u64) -> bool {
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
