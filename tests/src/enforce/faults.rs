//! Faults around the daemon: its policy file deleted, its webhook down, the wall clock
//! set back. Enforcement and the record must carry on; what failed must be counted and
//! shown. docs/faults.md has the whole table.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use serde_json::Value;

use super::files::{denials, home, stopped, tier_or_skip, Tier};
use crate::{
    support::{guard_bin, wait_file, GuardProcess, Scratch, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![
        policy_deleted_keeps_last_good,
        webhook_down_changes_nothing_else,
        clock_jump_keeps_record_valid,
        fork_storm_memory_bounded_every_decision_recorded,
        state_dir_full_enforcement_continues_record_resumes,
        ten_thousand_protected_files_start_and_restart,
    ]
}

/// Issue 18: more protected files than the kernel's maps hold (10,000
/// `agents/*/agent/auth-profiles.json`). The daemon starts, says how many files it
/// could not protect, keeps `.env` (listed first) protected, and starts again.
fn ten_thousand_protected_files_start_and_restart() -> TestResult {
    let h = home("faults-capacity")?;
    let d = h.dir.0.display().to_string();
    let agents = Path::new(&h.state).join("agents");
    for i in 0..10_000 {
        let dir = agents.join(format!("a{i}")).join("agent");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("auth-profiles.json"), "{}")?;
    }
    let script = format!(
        "{}{}",
        read_secret(&h.state, &d, "r1"),
        read_secret(&h.state, &d, "r2")
    );
    let gateway = StandInGateway::start_env(&h.dir, "", &script, &[("HOME", h.home.clone())])?;
    let gw = gateway.pid();
    let args = vec![
        "--pid".to_string(),
        gw.to_string(),
        "--no-discover".into(),
        "--status-file".into(),
        h.dir.path("status.json").display().to_string(),
    ];
    let first = GuardProcess::start(&h.dir, &args)?;
    let tier = match tier_or_skip(&first) {
        Ok(t) => t,
        Err(skip) => return Ok(skip),
    };
    let said = first
        .startup
        .iter()
        .find(|l| l.contains("files NOT protected"))
        .cloned();
    let status = wait_status(&h.dir, "the secrets rule", |v| {
        v["enforcement"]["secrets"].is_string()
    })?;
    let how = status["enforcement"]["secrets"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut failures = Vec::new();
    match &said {
        Some(l) => println!("    start-up: {l}"),
        None => failures.push(format!(
            "start-up did not say what it could not protect:\n{}",
            first.startup.join("\n")
        )),
    }
    // 10,000 files, of which the maps hold up to 4096 less the literal paths.
    let n: Option<usize> = said.as_deref().and_then(|l| {
        l.split("rule secrets: ")
            .nth(1)?
            .split(' ')
            .next()?
            .parse()
            .ok()
    });
    if !n.is_some_and(|n| (10_000 - 4096..10_000).contains(&n)) {
        failures.push(format!(
            "files said NOT protected: {n:?}, expected 5904..10000"
        ));
    }
    if let Some(l) = first
        .startup
        .iter()
        .find(|l| l.contains("NOT protected") && !l.contains("rule secrets"))
    {
        failures.push(format!("a literal path gave way to the glob's files: {l}"));
    }
    if !how.contains("NOT protected") {
        failures.push(format!("status for secrets: {how}"));
    }
    // A restart with the maps adopted and full.
    drop(first.stop()?);
    let second = GuardProcess::start(&h.dir, &args)?;
    gateway.release()?;
    ensure_stopped(tier, &d, "r1")?;
    ensure_stopped(tier, &d, "r2")?;
    gateway.wait()?;
    second.stop()?;
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(Outcome::Passed)
}

/// A script line: a child of the gateway reads `.env`; output and exit code to files.
pub(super) fn read_secret(state: &str, d: &str, name: &str) -> String {
    format!("bash --noprofile --norc -c \"cat '{state}/.env'\" > '{d}/{name}.out' 2>&1; echo $? > '{d}/{name}.rc'\n")
}

/// Waits for the read `name` to end and checks that the kernel stopped it.
pub(super) fn ensure_stopped(tier: Tier, d: &str, name: &str) -> anyhow::Result<()> {
    let rc = wait_file(Path::new(&format!("{d}/{name}.rc")))?;
    let out = std::fs::read_to_string(format!("{d}/{name}.out")).unwrap_or_default();
    ensure!(
        stopped(tier, rc.trim(), &out),
        "read {name} was not stopped ({tier:?} tier): rc {} output {out:?}",
        rc.trim()
    );
    Ok(())
}

pub(super) fn mkfifo(path: &Path) -> anyhow::Result<()> {
    let ok = Command::new("mkfifo").arg(path).status()?.success();
    ensure!(ok, "mkfifo {} failed", path.display());
    Ok(())
}

/// Polls the daemon's status file (rewritten every second) until `ready` holds.
pub(super) fn wait_status(
    dir: &Scratch,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(dir.path("status.json")) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                if ready(&v) {
                    return Ok(v);
                }
                last = v;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the status never showed {what}; last status: {last}")
}

/// `openclaw-guard events verify`; its summary line.
pub(super) fn verify(state: &Path) -> anyhow::Result<String> {
    let out = Command::new(guard_bin())
        .args(["events", "verify", "--state-dir"])
        .arg(state)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "events verify failed: {text}");
    Ok(text.trim().to_string())
}

/// The record as `events --json` exports it.
pub(super) fn recorded(state: &Path) -> anyhow::Result<Vec<Value>> {
    let out = Command::new(guard_bin())
        .args(["events", "--json", "--state-dir"])
        .arg(state)
        .output()?;
    ensure!(
        out.status.success(),
        "events --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("events --json wrote {l}")))
        .collect()
}

/// Kernel decisions on opens, by (ktime_ns, tgid): the same in the outputs and the record.
pub(super) fn open_decisions(events: &[Value]) -> std::collections::BTreeSet<(u64, u64)> {
    denials(events)
        .iter()
        .filter_map(|e| Some((e["ktime_ns"].as_u64()?, e["tgid"].as_u64()?)))
        .collect()
}

/// The policy file is deleted while the daemon runs, then SIGHUP: both reloads are
/// rejected, the policy loaded before stays in the kernel (a child still cannot read
/// `.env`, also after the periodic re-resolution of protected paths), the rejections
/// are in the outputs and the record, and `status` names the error.
fn policy_deleted_keeps_last_good() -> TestResult {
    let h = home("faults-policy")?;
    let d = h.dir.0.display().to_string();
    let p = h.dir.path("policy.toml");
    std::fs::write(
        &p,
        "version = 1\n\n[targets]\ndiscover = false\n\n[[rules]]\nid = \"secrets\"\ndescription = \"secrets\"\naction = \"block\"\nseverity = \"critical\"\n[rules.files]\npaths = [\"~/.openclaw/.env\"]\n",
    )?;
    mkfifo(&h.dir.path("step2"))?;
    let script = format!(
        "{}read -r _ < '{d}/step2'\n{}",
        read_secret(&h.state, &d, "r1"),
        read_secret(&h.state, &d, "r2")
    );
    let gateway = StandInGateway::start_env(&h.dir, "", &script, &[("HOME", h.home.clone())])?;
    let mut guard = GuardProcess::start(
        &h.dir,
        &[
            "--pid".into(),
            gateway.pid().to_string(),
            "--policy".into(),
            p.display().to_string(),
        ],
    )?;
    let tier = match tier_or_skip(&guard) {
        Ok(t) => t,
        Err(skip) => return Ok(skip),
    };
    gateway.release()?;
    ensure_stopped(tier, &d, "r1")?;

    std::fs::remove_file(&p)?;
    let deleted = Instant::now();
    let (line, took) = guard.wait_for_line("REJECTED", Duration::from_secs(60))?;
    println!("    file deleted, {took:?} later: {line}");
    ensure!(
        line.contains("policy file changed"),
        "the rejection was not the file watch's: {line}"
    );
    // SAFETY: signalling the daemon we started.
    unsafe { libc::kill(guard.pid() as libc::pid_t, libc::SIGHUP) };
    let (line, _) = guard.wait_for_line("REJECTED", Duration::from_secs(60))?;
    println!("    SIGHUP: {line}");

    let status = wait_status(&h.dir, "the SIGHUP reload rejected", |v| {
        v["last_reload"]["trigger"] == "SIGHUP" && v["last_reload"]["result"] == "rejected"
    })?;
    let error = status["last_reload"]["error"].as_str().unwrap_or("");
    ensure!(
        error.contains("No such file"),
        "the status does not say the policy file is missing: {}",
        status["last_reload"]
    );
    let text = Command::new(guard_bin())
        .args(["status", "--status-file"])
        .arg(h.dir.path("status.json"))
        .output()?;
    let text = String::from_utf8_lossy(&text.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("policy: "))
        .unwrap_or_default();
    println!("    status: {line}");
    ensure!(
        line.contains("REJECTED")
            && line.contains("previous policy stays in force")
            && line.contains("No such file"),
        "`openclaw-guard status` does not show the missing policy file:\n{text}"
    );

    // The protected paths are re-resolved every 5 s from the policy in force: a read
    // after that must still be stopped.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(deleted.elapsed()));
    std::fs::write(h.dir.path("step2"), "go\n")?;
    ensure_stopped(tier, &d, "r2")?;
    gateway.wait()?;
    let events = guard.stop()?;

    let reloads: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["kind"] == "policy")
        .map(|e| {
            (
                e["result"].as_str().unwrap_or(""),
                e["trigger"].as_str().unwrap_or(""),
            )
        })
        .collect();
    ensure!(
        reloads == [("rejected", "policy file changed"), ("rejected", "SIGHUP")],
        "policy records in the outputs: {reloads:?}"
    );
    ensure!(
        denials(&events).len() >= 2,
        "decisions reported: {:?}",
        denials(&events)
    );
    let state = h.dir.path("state");
    println!("    {}", verify(&state)?);
    let in_record = recorded(&state)?
        .iter()
        .filter(|e| e["kind"] == "policy" && e["result"] == "rejected")
        .count();
    ensure!(
        in_record == 2,
        "{in_record} rejected policy record(s) in the record, expected 2"
    );
    Ok(Outcome::Passed)
}

/// Alerts go to a webhook on a closed loopback port: the daemon keeps running, every
/// read is still stopped, the record holds every decision and verifies, and the
/// webhook's failures are counted in `status` and the final stats.
fn webhook_down_changes_nothing_else() -> TestResult {
    let h = home("faults-webhook")?;
    let d = h.dir.0.display().to_string();
    // A port nothing listens on (bound, then closed): connections are refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    mkfifo(&h.dir.path("step2"))?;
    let (first, second) = (["a1", "a2", "a3"], ["b1", "b2", "b3"]);
    let mut script = String::new();
    for n in first {
        script.push_str(&read_secret(&h.state, &d, n));
    }
    script.push_str(&format!("read -r _ < '{d}/step2'\n"));
    for n in second {
        script.push_str(&read_secret(&h.state, &d, n));
    }
    let gateway = StandInGateway::start_env(&h.dir, "", &script, &[("HOME", h.home.clone())])?;
    let guard = GuardProcess::start(
        &h.dir,
        &[
            "--pid".into(),
            gateway.pid().to_string(),
            "--output".into(),
            format!("webhook:{url}"),
        ],
    )?;
    let tier = match tier_or_skip(&guard) {
        Ok(t) => t,
        Err(skip) => return Ok(skip),
    };
    gateway.release()?;
    for n in first {
        ensure_stopped(tier, &d, n)?;
    }
    let webhook = |v: &Value| -> Value {
        v["sink"]["outputs"]["sinks"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["sink"] == "webhook"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let status = wait_status(&h.dir, "a failed webhook delivery", |v| {
        webhook(v)["failed"].as_u64().unwrap_or(0) >= 1
    })?;
    let w = webhook(&status);
    println!("    status while the webhook is down: {w}");
    ensure!(
        w["last_error"].as_str().unwrap_or("").contains(&url),
        "the webhook's last error does not name it: {w}"
    );
    let proc_state = std::fs::read_to_string(format!("/proc/{}/stat", guard.pid()))?;
    let proc_state = proc_state
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("?");
    ensure!(proc_state != "Z", "the daemon exited");

    // Enforcement while the webhook keeps failing.
    std::fs::write(h.dir.path("step2"), "go\n")?;
    for n in second {
        ensure_stopped(tier, &d, n)?;
    }
    gateway.wait()?;
    let (events, stats) = guard.stop_with_stats()?;

    let w = webhook(&stats);
    let count = |k: &str| w[k].as_u64().unwrap_or(0);
    let alerts = events.iter().filter(|e| e["alert"].is_object()).count() as u64;
    println!(
        "    final: {alerts} alerts; webhook enqueued {} sent {} failed {} dropped {} retries {} queued {}",
        count("enqueued"),
        count("sent"),
        count("failed"),
        count("dropped"),
        count("retries"),
        count("queued")
    );
    ensure!(
        alerts >= 6,
        "{alerts} alerts in the JSON lines, expected 6 or more"
    );
    ensure!(count("sent") == 0, "alerts reached a closed port: {w}");
    ensure!(
        count("failed") >= 1 && count("retries") >= 2,
        "webhook failures not counted: {w}"
    );
    // Each alert failed, was dropped (queue full or shutdown) or was still queued.
    ensure!(
        count("failed") + count("dropped") + count("queued") >= alerts,
        "alerts unaccounted for by the webhook's counters ({alerts} alerts): {w}"
    );

    let state = h.dir.path("state");
    println!("    {}", verify(&state)?);
    let reported = open_decisions(&events);
    let in_record = open_decisions(&recorded(&state)?);
    ensure!(
        reported.len() >= first.len() + second.len(),
        "{} decisions reported for {} reads",
        reported.len(),
        first.len() + second.len()
    );
    ensure!(
        reported == in_record,
        "record and outputs differ: reported {reported:?}, recorded {in_record:?}"
    );
    let gap = &stats["sink"]["recorder"]["gap_events"];
    ensure!(
        gap == 0,
        "the recorder counted a gap: {}",
        stats["sink"]["recorder"]
    );
    Ok(Outcome::Passed)
}

/// Whether this runs inside a test guest of `cargo xtask vm` (its init, `/init`, is
/// pid 1 and reads the test filters from `/ocg/test-args`).
fn in_test_guest() -> bool {
    Path::new("/ocg/test-args").exists()
        && std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "init")
}

fn realtime_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

fn set_realtime_ns(ns: i128) -> std::io::Result<()> {
    let ts = libc::timespec {
        tv_sec: i64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or(0),
        tv_nsec: i64::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or(0),
    };
    // SAFETY: valid pointer to a timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The wall clock set back; restored (to where it would be now) on drop, whatever
/// happened in between.
struct ClockSetBack {
    real_at_set: i128,
    set_at: Instant,
}

impl ClockSetBack {
    fn by(d: Duration) -> std::io::Result<Self> {
        let set_at = Instant::now();
        let real_at_set = realtime_ns();
        set_realtime_ns(real_at_set - i128::try_from(d.as_nanos()).unwrap_or(0))?;
        Ok(Self {
            real_at_set,
            set_at,
        })
    }
}

impl Drop for ClockSetBack {
    fn drop(&mut self) {
        let now = self.real_at_set + i128::try_from(self.set_at.elapsed().as_nanos()).unwrap_or(0);
        if let Err(e) = set_realtime_ns(now) {
            println!("    could not restore the wall clock: {e}");
        }
    }
}

/// Nanoseconds since the epoch of an RFC 3339 UTC time as the daemon writes it
/// (`2026-05-01T12:00:03.610181213Z`).
fn parse_time(s: &str) -> Option<i128> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (hms.next()??, hms.next()??, hms.next()??);
    let frac_ns: i64 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(i128::from(secs) * 1_000_000_000 + i128::from(frac_ns))
}

/// The wall clock is set back an hour while the daemon runs and events happen (a read
/// stopped, a SIGHUP reload), then restored. The record verifies, its seqs run on
/// without a break, and the kernel events' times stay on the boot clock (`time` -
/// `ktime_ns` is the same for all of them: the jump does not reach them).
fn clock_jump_keeps_record_valid() -> TestResult {
    if !in_test_guest() {
        return Ok(Outcome::Skipped(
            "changes the wall clock: runs in the VM guests only".into(),
        ));
    }
    let h = home("faults-clock")?;
    let d = h.dir.0.display().to_string();
    mkfifo(&h.dir.path("step2"))?;
    mkfifo(&h.dir.path("step3"))?;
    let script = format!(
        "{}read -r _ < '{d}/step2'\n{}read -r _ < '{d}/step3'\n{}",
        read_secret(&h.state, &d, "r1"),
        read_secret(&h.state, &d, "r2"),
        read_secret(&h.state, &d, "r3")
    );
    let gateway = StandInGateway::start_env(&h.dir, "", &script, &[("HOME", h.home.clone())])?;
    let mut guard = GuardProcess::start(&h.dir, &["--pid".into(), gateway.pid().to_string()])?;
    let tier = match tier_or_skip(&guard) {
        Ok(t) => t,
        Err(skip) => return Ok(skip),
    };
    gateway.release()?;
    ensure_stopped(tier, &d, "r1")?;
    {
        let _back = match ClockSetBack::by(Duration::from_secs(3600)) {
            Ok(b) => b,
            Err(e) => {
                return Ok(Outcome::Skipped(format!(
                    "the kernel refused to set the wall clock ({e})"
                )))
            }
        };
        // SAFETY: signalling the daemon we started.
        unsafe { libc::kill(guard.pid() as libc::pid_t, libc::SIGHUP) };
        guard.wait_for_line("policy reloaded", Duration::from_secs(60))?;
        std::fs::write(h.dir.path("step2"), "go\n")?;
        ensure_stopped(tier, &d, "r2")?;
        // The recorder's fsync and the status ticks run with the clock back.
        std::thread::sleep(Duration::from_millis(1500));
    }
    std::fs::write(h.dir.path("step3"), "go\n")?;
    ensure_stopped(tier, &d, "r3")?;
    gateway.wait()?;
    let events = guard.stop()?;
    ensure!(
        denials(&events).len() >= 3,
        "decisions reported: {:?}",
        denials(&events)
    );

    let state = h.dir.path("state");
    println!("    {}", verify(&state)?);
    let record = recorded(&state)?;
    let seqs: Vec<u64> = record
        .iter()
        .filter_map(|e| e["record_seq"].as_u64())
        .collect();
    ensure!(
        seqs.len() == record.len() && seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "record seqs are not consecutive: {seqs:?}"
    );
    let offsets: Vec<i128> = record
        .iter()
        .filter_map(|e| {
            Some(parse_time(e["time"].as_str()?)? - i128::from(e["ktime_ns"].as_u64()?))
        })
        .collect();
    ensure!(!offsets.is_empty(), "no kernel events in the record");
    ensure!(
        offsets.iter().all(|o| *o == offsets[0]),
        "kernel event times moved with the wall clock: time - ktime_ns varies: {offsets:?}"
    );
    let decisions = open_decisions(&record).len();
    ensure!(
        decisions >= 3,
        "{decisions} open decisions in the record, expected 3"
    );
    if let Some(p) = record.iter().find(|e| e["kind"] == "policy") {
        let kernel_time = parse_time(
            record
                .iter()
                .find(|e| e["ktime_ns"].is_u64())
                .and_then(|e| e["time"].as_str())
                .unwrap_or(""),
        );
        let apart = kernel_time
            .zip(p["time"].as_str().and_then(parse_time))
            .map_or(f64::NAN, |(k, t)| (t - k) as f64 / 1e9);
        println!(
            "    the SIGHUP's policy record (userspace: wall clock) says {}, {apart:.1} s after the first kernel event (boot clock)",
            p["time"]
        );
    }
    println!(
        "    {} records, seqs {}..={}, {} kernel events on one boot-clock offset",
        record.len(),
        seqs[0],
        seqs[seqs.len() - 1],
        offsets.len()
    );
    Ok(Outcome::Passed)
}

/// The daemon's peak RSS under a storm stays below this (docs/faults.md). What it is
/// made of: the rings' consumer mappings (8 + 1 MiB), the recorder queue (32 MiB of
/// ordinary events at most), the output queues (4096 records each) and the process
/// cache (65 536 entries).
const RSS_BOUND_KIB: u64 = 256 * 1024;

/// Reads of `.env` made by the tree during a fault; each must be stopped and recorded.
const READS: usize = 60;

/// A script line: `n` reads of `.env`, each by its own child (a shell that runs `cat`),
/// exit codes appended to `rcs`, output to `reads.out`.
fn reads(state: &str, d: &str, n: usize, tag: &str) -> String {
    format!(
        "for i in $(seq {n}); do bash --noprofile --norc -c \"cat '{state}/.env'\" >> '{d}/reads.out' 2>&1; echo \"{tag} $?\" >> '{d}/rcs'; done\n"
    )
}

/// Waits up to `limit` for `n` reads in `rcs`; returns how many there are.
fn wait_reads(dir: &Scratch, n: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let done = std::fs::read_to_string(dir.path("rcs"))
            .unwrap_or_default()
            .lines()
            .count();
        if done >= n || Instant::now() >= deadline {
            return done;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every read in `rcs` was stopped the tier's way; returns how many there were.
fn all_reads_stopped(tier: Tier, d: &str) -> anyhow::Result<usize> {
    let out = std::fs::read_to_string(format!("{d}/reads.out")).unwrap_or_default();
    ensure!(!out.contains("sk-ant-"), "a read got the secret: {out}");
    let rcs = std::fs::read_to_string(format!("{d}/rcs"))?;
    let want = match tier {
        Tier::Lsm => "1",
        Tier::Tracepoint => "137",
    };
    let mut n = 0;
    for l in rcs.lines() {
        ensure!(
            l.ends_with(&format!(" {want}")),
            "a read was not stopped ({tier:?} tier, exit {want} expected): {l}"
        );
        n += 1;
    }
    Ok(n)
}

/// Kernel decisions on `.env` in a list of events.
fn secret_decisions(events: &[Value]) -> usize {
    denials(events)
        .iter()
        .filter(|e| e["decision"]["rule"] == "secrets")
        .count()
}

/// A cgroup with a pids limit for the storm (cgroup v2, or the v1 pids hierarchy);
/// its processes are killed and it is removed on drop.
struct PidsCgroup(std::path::PathBuf);

impl PidsCgroup {
    fn new(max: u32) -> anyhow::Result<Option<Self>> {
        let mounts = std::fs::read_to_string("/proc/mounts")?;
        let mut roots = Vec::new();
        for l in mounts.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            if f[2] == "cgroup2" || (f[2] == "cgroup" && f[3].split(',').any(|o| o == "pids")) {
                roots.push(std::path::PathBuf::from(f[1]));
            }
        }
        for root in roots {
            // cgroup v2: the pids controller must be enabled for the root's children.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+pids");
            let cg = root.join(format!("ocg-storm-{}", std::process::id()));
            if std::fs::create_dir(&cg).is_err() {
                continue;
            }
            let me = Self(cg);
            // Made by the kernel in a real cgroup with the pids controller: never a
            // fork bomb without its limit.
            if me.0.join("pids.max").exists()
                && std::fs::write(me.0.join("pids.max"), max.to_string()).is_ok()
            {
                return Ok(Some(me));
            }
        }
        Ok(None)
    }

    /// SIGKILL to every process in the cgroup until it is empty.
    fn kill(&self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        for _ in 0..200 {
            let procs = std::fs::read_to_string(self.0.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() {
                return;
            }
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: signals a process of the test's own storm.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        self.kill();
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A fork bomb and open loops in the tree, held by a pids limit, while other children
/// of the gateway read `.env`: every read is stopped and recorded as a decision, no
/// decision is lost in the kernel or in the daemon, ordinary events lost to the flood
/// are counted, and the daemon's peak RSS stays under [`RSS_BOUND_KIB`].
fn fork_storm_memory_bounded_every_decision_recorded() -> TestResult {
    let h = home("faults-storm")?;
    let d = h.dir.0.display().to_string();
    let Some(cg) = PidsCgroup::new(64)? else {
        return Ok(Outcome::Skipped("no cgroup v2 pids controller here".into()));
    };
    let storm = h.dir.path("storm.sh");
    // The bomb and the loops run in the pids-limited cgroup, or not at all. The test
    // moves the script there: the tree itself may not write cgroupfs (self-protection).
    std::fs::write(
        &storm,
        format!(
            "echo $BASHPID > '{d}/storm.pid'\n\
             for i in $(seq 200); do [ -e '{d}/storm.moved' ] && break; sleep 0.05; done\n\
             grep -q ocg-storm /proc/self/cgroup || exit 1\n\
             for i in 1 2 3 4; do ( while :; do : < /dev/null; done ) & done\n\
             b() {{ b | b & }}\nb\nwait\n"
        ),
    )?;
    let script = format!(
        "bash --noprofile --norc '{storm}' > /dev/null 2>&1 &\nsleep 2\n{}wait\n",
        reads(&h.state, &d, READS, "storm"),
        storm = storm.display(),
    );
    let gateway = StandInGateway::start_env(&h.dir, "", &script, &[("HOME", h.home.clone())])?;
    // Not folded: the open loops are to flood the pipeline.
    let guard = GuardProcess::start(
        &h.dir,
        &[
            "--pid".into(),
            gateway.pid().to_string(),
            "--fold-ms".into(),
            "0".into(),
        ],
    )?;
    let tier = match tier_or_skip(&guard) {
        Ok(t) => t,
        Err(skip) => return Ok(skip),
    };
    gateway.release()?;
    // The file exists before the shell has written the pid into it: wait for a pid.
    let t0 = std::time::Instant::now();
    let pid = loop {
        let read = std::fs::read_to_string(h.dir.path("storm.pid")).unwrap_or_default();
        if let Ok(pid) = read.trim().parse::<u32>() {
            break pid;
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(10),
            "the storm script did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::fs::write(cg.0.join("cgroup.procs"), pid.to_string())
        .context("moving the storm into its pids cgroup")?;
    std::fs::write(h.dir.path("storm.moved"), "")?;
    // Checked after the storm is stopped (how many ran, and how each ended).
    wait_reads(&h.dir, READS, Duration::from_secs(300));
    cg.kill();
    gateway.wait()?;
    let (_, stats) = guard.stop_with_stats()?;
    let n = all_reads_stopped(tier, &d)?;
    ensure!(n == READS, "{n} of {READS} reads ran");
    let c = &stats["counters"];
    let rss = stats["peak_rss_kib"].as_u64().unwrap_or(u64::MAX);
    let rec = &stats["sink"]["recorder"];
    println!(
        "    kernel submitted {} lost {} (decisions lost {}), received {}; recorder recorded {} gap {}; peak RSS {rss} KiB",
        c["kernel_submitted"], c["kernel_lost"], c["kernel_lost_decisions"], c["received"], rec["recorded"], rec["gap_events"]
    );
    let attempted =
        c["kernel_submitted"].as_u64().unwrap_or(0) + c["kernel_lost"].as_u64().unwrap_or(0);
    ensure!(
        attempted >= 5000,
        "the storm did not run: {attempted} kernel events in all"
    );
    ensure!(
        c["kernel_lost_decisions"] == 0,
        "decisions lost in the kernel: {c}"
    );
    ensure!(
        c["received"].as_u64() >= c["kernel_submitted"].as_u64(),
        "submitted events not received: {c}"
    );
    ensure!(
        rec["lost_decisions"] == 0 && rec["held_decisions"] == 0,
        "recorder lost or still holds decisions: {rec}"
    );
    ensure!(
        rss < RSS_BOUND_KIB,
        "peak RSS {rss} KiB over the bound of {RSS_BOUND_KIB} KiB"
    );
    let state = h.dir.path("state");
    verify(&state)?;
    let recorded = secret_decisions(&recorded(&state)?);
    ensure!(
        recorded == READS,
        "{recorded} decisions on .env in the record for {READS} stopped reads"
    );
    Ok(Outcome::Passed)
}

/// A small tmpfs mounted for the test; unmounted on drop.
struct SmallFs(std::path::PathBuf);

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The state directory's filesystem fills up while the tree keeps the daemon busy:
/// every read of `.env` is still stopped, the recorder reports that it is failing and
/// holds the decisions; when space returns it writes them, closes the gap with a
/// `recorder_gap` record, and `events verify` passes over the whole record.
fn state_dir_full_enforcement_continues_record_resumes() -> TestResult {
    let h = home("faults-enospc")?;
    let d = h.dir.0.display().to_string();
    let state = h.dir.path("state");
    std::fs::create_dir_all(&state)?;
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "ocg-enospc"])
        .arg(&state)
        .status()?
        .success();
    if !ok {
        return Ok(Outcome::Skipped("cannot mount a tmpfs here".into()));
    }
    let _fs = SmallFs(state.clone());
    for f in ["fill", "step2"] {
        mkfifo(&h.dir.path(f))?;
    }
    // Ordinary events keep coming (execs, opens) while the disk is full.
    let busy = format!("( while [ ! -e '{d}/quiet' ]; do /bin/true; : < /dev/null; done ) &\n");
    let script = format!(
        "{busy}read -r _ < '{d}/fill'\n{}read -r _ < '{d}/step2'\n{}touch '{d}/quiet'\nwait\n",
        reads(&h.state, &d, READS, "full"),
        reads(&h.state, &d, 10, "resumed"),
    );
    let gateway = StandInGateway::start_env(&h.dir, "", &script, &[("HOME", h.home.clone())])?;
    let guard = GuardProcess::start(
        &h.dir,
        &[
            "--pid".into(),
            gateway.pid().to_string(),
            "--state-dir".into(),
            state.display().to_string(),
        ],
    )?;
    let tier = match tier_or_skip(&guard) {
        Ok(t) => t,
        Err(skip) => return Ok(skip),
    };
    gateway.release()?;
    // Fill the filesystem (the test is not in the tree: it may write there).
    let filler = state.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status()?;
    std::fs::write(h.dir.path("fill"), "go\n")?;
    let failing = wait_status(&h.dir, "the recorder failing", |v| {
        v["sink"]["recorder"]["failing"] == true
    })?;
    println!(
        "    full: recorder {}",
        failing["sink"]["recorder"]["last_error"]
    );
    // Wait for the reads made while full, then give the space back.
    ensure!(
        wait_reads(&h.dir, READS, Duration::from_secs(120)) >= READS,
        "the reads while full did not finish"
    );
    // Every decision has reached the recorder: held, or written where a failed write
    // was cut back and freed a little room (then a gap record closes that stretch).
    let held = wait_status(&h.dir, "the decisions of the reads made while full", |v| {
        let judged: u64 = v["sink"]["findings"]["secrets"]
            .as_object()
            .map_or(0, |a| a.values().filter_map(Value::as_u64).sum());
        judged >= READS as u64 || v["sink"]["recorder"]["failing"] == false
    })?;
    println!("    while full: {}", held["sink"]["recorder"]);
    std::fs::remove_file(&filler)?;
    let resumed = wait_status(&h.dir, "the recorder resumed", |v| {
        v["sink"]["recorder"]["failing"] == false && v["sink"]["recorder"]["held_decisions"] == 0
    })?;
    println!("    resumed: {}", resumed["sink"]["recorder"]);
    std::fs::write(h.dir.path("step2"), "go\n")?;
    ensure!(
        wait_reads(&h.dir, READS + 10, Duration::from_secs(120)) >= READS + 10,
        "the reads after resuming did not finish"
    );
    let (_, stats) = guard.stop_with_stats()?;
    let n = all_reads_stopped(tier, &d)?;
    ensure!(n == READS + 10, "{n} reads ran");
    let rec = &stats["sink"]["recorder"];
    ensure!(
        rec["lost_decisions"] == 0 && rec["held_decisions"] == 0 && rec["gaps"].as_u64() >= Some(1),
        "recorder: {rec}"
    );
    println!("    verify: {}", verify(&state)?);
    let events = recorded(&state)?;
    let gap = events
        .iter()
        .find(|e| e["kind"] == "recorder_gap")
        .with_context(|| "no recorder_gap record".to_string())?;
    println!("    gap record: {gap}");
    let recorded = secret_decisions(&events);
    ensure!(
        recorded == READS + 10,
        "{recorded} decisions on .env in the record for {} stopped reads",
        READS + 10
    );
    Ok(Outcome::Passed)
}
