//! `openclaw-guard status`: what the running daemon wrote last in its status file.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::daemon::DEFAULT_STATUS_FILE;

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
pub fn run(args: &StatusArgs) -> anyhow::Result<i32> {
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
