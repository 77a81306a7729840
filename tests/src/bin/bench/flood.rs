//! Alert latency under a flood (issue 18): while 4 workers read a protected file in a
//! loop (each read a decision: EPERM with BPF LSM, a kill without it, the worker then
//! started again) and 4 threads open two ordinary files in turn (nothing folds), a
//! renamed copy of bash is started again and again; each time, the time from its
//! fork to the critical `shell-spawn` alert received on an alert output (syslog
//! datagrams to a socket of the probe's: the path an operator's alerts take; the JSON
//! lines file carries every ordinary event too). Afterwards: how many decisions the
//! kernel or the recorder lost.

use std::{
    ffi::CString,
    fs,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use super::{boottime_ns, cstring, invoke, log, percentiles_us, Env, Gateway, GuardProc};

const DENY_WORKERS: usize = 4;
const OPEN_THREADS: usize = 4;
/// Reads a worker's child makes before it exits and is counted (a killed child counts
/// one): small enough that a slow guest counts them during the run.
const READS_PER_CHILD: u64 = 20_000;

/// `flood-probe N OUTPUT DIR`: run as a child of the stand-in gateway (tracked).
pub(super) fn probe(args: &[String]) -> Result<()> {
    let [n, output, dir] = args else {
        bail!("usage: flood-probe N OUTPUT DIR");
    };
    let n: usize = n.parse()?;
    let dir = Path::new(dir);
    let secret = cstring(&dir.join("probe-secret"))?;
    let files = [dir.join("flood-a"), dir.join("flood-b")];
    for f in &files {
        fs::write(f, b"flood\n")?;
    }
    let files = [cstring(&files[0])?, cstring(&files[1])?];
    // A shell by another name: the guard must know it by what it is.
    let shell = dir.join("notbash");
    fs::copy("/bin/bash", &shell).context("copying /bin/bash")?;
    let shell_c = cstring(&shell)?;
    let argv0 = CString::new("notbash")?;
    let dash_c = CString::new("-c")?;
    let script = CString::new("true")?;

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let opens = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..DENY_WORKERS {
        let (stop, reads, secret) = (Arc::clone(&stop), Arc::clone(&reads), secret.clone());
        threads.push(std::thread::spawn(move || {
            deny_worker(&stop, &reads, &secret)
        }));
    }
    for _ in 0..OPEN_THREADS {
        let (stop, opens, files) = (Arc::clone(&stop), Arc::clone(&opens), files.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for f in &files {
                    // SAFETY: valid path; fd closed at once.
                    let fd = unsafe { libc::openat(libc::AT_FDCWD, f.as_ptr(), libc::O_RDONLY) };
                    if fd >= 0 {
                        // SAFETY: fd from openat.
                        unsafe { libc::close(fd) };
                    }
                }
                opens.fetch_add(2, Ordering::Relaxed);
            }
        }));
    }
    // Let the flood fill the rings first.
    std::thread::sleep(Duration::from_secs(1));

    let _ = output;
    let alerts = Alerts::bind(&dir.join(ALERT_SOCKET))?;
    let mut lat = Vec::new();
    // (pid, fork, alert) per trial, for the split at the exec (see `phase`).
    let mut trials: Vec<[u64; 3]> = Vec::new();
    let mut missed = 0;
    let started = Instant::now();
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(20));
        let t0 = boottime_ns();
        // SAFETY: the child only calls execv and _exit (async-signal-safe).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            let argv = [
                argv0.as_ptr(),
                dash_c.as_ptr(),
                script.as_ptr(),
                std::ptr::null(),
            ];
            // SAFETY: NUL-terminated argv of valid C strings.
            unsafe {
                libc::execv(shell_c.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        let found = alerts.wait_for(Duration::from_secs(5), &format!("notbash[{pid}]"))?;
        let t1 = boottime_ns();
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, &raw mut status, 0) };
        match found {
            true => {
                lat.push(t1.saturating_sub(t0));
                trials.push([u64::from(pid.unsigned_abs()), t0, t1]);
            }
            false => missed += 1,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    lat.sort_unstable();
    #[expect(clippy::cast_precision_loss, reason = "rates")]
    let rate = |c: &AtomicU64| (c.load(Ordering::Relaxed) as f64 / secs).round();
    println!(
        "{}",
        json!({
            "probes": n,
            "missed": missed,
            "alert_us": percentiles_us(&lat),
            "trials": trials,
            "denied_reads_per_s": rate(&reads),
            "opens_per_s": rate(&opens),
        })
    );
    Ok(())
}

/// Reads the protected file in a child until it is refused for good or killed; a
/// killed child is replaced (the fallback tier kills the reader).
fn deny_worker(stop: &AtomicBool, reads: &AtomicU64, secret: &CString) {
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: the child only opens, closes and exits (async-signal-safe).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return;
        }
        if pid == 0 {
            for _ in 0..READS_PER_CHILD {
                // SAFETY: valid path.
                unsafe {
                    let fd = libc::openat(libc::AT_FDCWD, secret.as_ptr(), libc::O_RDONLY);
                    if fd >= 0 {
                        libc::close(fd);
                    }
                }
            }
            // SAFETY: leaving the child.
            unsafe { libc::_exit(0) };
        }
        // Refused reads return EPERM: the child loops until stopped.
        loop {
            let mut status = 0;
            // SAFETY: our own child.
            let r = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
            if r != 0 {
                // Every read refused (EPERM), or the first one killed.
                let n = if libc::WIFEXITED(status) {
                    READS_PER_CHILD
                } else {
                    1
                };
                reads.fetch_add(n, Ordering::Relaxed);
                break;
            }
            if stop.load(Ordering::Relaxed) {
                // SAFETY: our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &raw mut status, 0);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The probe's end of the guard's syslog output (`--output syslog:PATH`).
const ALERT_SOCKET: &str = "alerts.sock";

struct Alerts(std::os::unix::net::UnixDatagram);

impl Alerts {
    fn bind(path: &Path) -> Result<Self> {
        let _ = fs::remove_file(path);
        let sock = std::os::unix::net::UnixDatagram::bind(path)
            .with_context(|| format!("binding {}", path.display()))?;
        // Drained by the probe only: a roomy receive buffer keeps the guard's sends
        // from failing while it waits.
        Ok(Self(sock))
    }

    /// Waits for a critical `shell-spawn` alert naming `pid_text` (`comm[PID]`).
    fn wait_for(&self, limit: Duration, pid_text: &str) -> Result<bool> {
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.0.set_read_timeout(Some(left))?;
            let n = match self.0.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return Ok(false)
                }
                Err(e) => return Err(e.into()),
            };
            let msg = String::from_utf8_lossy(&buf[..n]);
            if msg.contains("Critical rule=shell-spawn") && msg.contains(pid_text) {
                return Ok(true);
            }
        }
    }
}

/// The suite's phase: a guard with the default policy (folding on) and the protected
/// file, the flood probe through the stand-in gateway, then the daemon's loss counters.
pub(super) fn phase(env: &Env, gw: &mut Gateway, probes: usize) -> Result<Value> {
    let secret = env.dir.join("probe-secret");
    fs::write(&secret, b"secret\n")?;
    let guard = GuardProc::start_with(
        env,
        gw.pid(),
        false,
        "flood",
        &[
            "--protect".into(),
            secret.display().to_string(),
            "--output".into(),
            format!("syslog:{}", env.dir.join(ALERT_SOCKET).display()),
        ],
    )?;
    let line = invoke(
        gw,
        true,
        &[
            "flood-probe".into(),
            probes.to_string(),
            guard.output.display().to_string(),
            env.dir.display().to_string(),
        ],
    );
    let settled = guard.settled(Duration::from_secs(120));
    let status: Value = fs::read_to_string(&guard.status_file)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let mut v: Value = serde_json::from_str(&line?).context("flood-probe output")?;
    // Before `stop`, which removes the output.
    split_at_exec(&mut v, &guard.output);
    let info = guard.stop()?;
    log(&format!(
        "flood: critical alert p99 {} us, missed {}",
        v["alert_us"]["p99"], v["missed"]
    ));
    v["kernel_lost_decisions"] = status["counters"]["kernel_lost_decisions"].clone();
    v["kernel_lost"] = json!(settled.map(|c| c.1));
    v["recorder_lost_decisions"] = status["sink"]["recorder"]["lost_decisions"].clone();
    v["recorder_gap_events"] = status["sink"]["recorder"]["gap_events"].clone();
    v["kernel_submitted"] = json!(info.submitted);
    v["tier"] = json!(if status["calibration"]["lsm_file_open_fired"] == true {
        "BPF LSM (denied reads refused with EPERM)"
    } else {
        "tracepoint fallback (denied reads killed, their workers restarted)"
    });
    v["kernel"] = json!(fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim());
    Ok(v)
}

/// Splits each trial's latency at its exec as the kernel stamped it (the guard's
/// output has every exec event): fork to exec is the flooded machine's scheduler
/// reaching the child; exec to alert is the guard's own part (its rings, enrichment,
/// policy and output).
fn split_at_exec(v: &mut Value, output: &Path) {
    let Ok(text) = fs::read_to_string(output) else {
        return;
    };
    let mut exec_ns = std::collections::HashMap::new();
    for line in text.lines().filter(|l| l.contains("\"kind\":\"exec\"")) {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let (Some(pid), Some(t)) = (e["tgid"].as_u64(), e["ktime_ns"].as_u64()) {
            if e["filename"]
                .as_str()
                .is_some_and(|f| f.ends_with("notbash"))
            {
                exec_ns.insert(pid, t);
            }
        }
    }
    let (mut to_exec, mut to_alert) = (Vec::new(), Vec::new());
    for t in v["trials"].as_array().into_iter().flatten() {
        let [pid, fork, alert] = [0, 1, 2].map(|i| t[i].as_u64().unwrap_or(0));
        if let Some(&exec) = exec_ns.get(&pid) {
            to_exec.push(exec.saturating_sub(fork));
            to_alert.push(alert.saturating_sub(exec));
        }
    }
    to_exec.sort_unstable();
    to_alert.sort_unstable();
    v["fork_to_exec_us"] = percentiles_us(&to_exec);
    v["exec_to_alert_us"] = percentiles_us(&to_alert);
    if let Some(o) = v.as_object_mut() {
        o.remove("trials");
    }
}

/// The phase's lines in BENCHMARKS.md.
pub(super) fn render(f: &Value, s: &mut String) {
    use std::fmt::Write as _;
    if !f.is_object() {
        return;
    }
    let a = &f["alert_us"];
    let _ = writeln!(
        s,
        "\n### Alert latency under a flood (guard, default policy)\n\nKernel {}, {} tier. {DENY_WORKERS} workers reading a protected file in a loop ({} refused or killed reads/s) and {OPEN_THREADS} threads opening two files in turn ({} opens/s), all in the tracked tree; meanwhile a renamed copy of bash is started {} times. From its fork to the critical `shell-spawn` alert received on the syslog output (alerts only): p50 {} us, p90 {} us, p99 **{} us**, max {} us; missed {} (target: p99 under 100 ms). Split at the exec the kernel stamped: fork to exec (the flooded scheduler reaching the child) p50 {} us, p99 {} us; exec to alert (the guard's part) p50 {} us, p99 {} us. Decisions lost: kernel {}, recorder {}; ordinary events lost in the kernel: {}, recorder gap: {}.",
        f["kernel"].as_str().unwrap_or("?"), f["tier"].as_str().unwrap_or("?"),
        f["denied_reads_per_s"], f["opens_per_s"], f["probes"],
        a["p50"], a["p90"], a["p99"], a["max"], f["missed"],
        f["fork_to_exec_us"]["p50"], f["fork_to_exec_us"]["p99"],
        f["exec_to_alert_us"]["p50"], f["exec_to_alert_us"]["p99"],
        f["kernel_lost_decisions"], f["recorder_lost_decisions"], f["kernel_lost"], f["recorder_gap_events"]
    );
}

/// `flood [PROBES]`: the phase alone (the suite runs it after the pipeline phase).
pub(super) fn standalone(args: &[String]) -> Result<()> {
    let probes: usize = args.first().map_or(Ok(100), |s| s.parse())?;
    let dir = std::env::temp_dir().join(format!("ocg-bench-flood-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let guard_bin = std::env::var_os("OPENCLAW_GUARD_BIN").map_or_else(
        || super::self_exe().with_file_name("openclaw-guard"),
        std::path::PathBuf::from,
    );
    let env = Env {
        guard_bin,
        dir: dir.clone(),
        guard_has_state_dir: true,
        guard_has_no_pin: true,
        startup_timeout: Duration::from_secs(300),
    };
    let mut gw = Gateway::start()?;
    std::thread::sleep(Duration::from_millis(100));
    let v = phase(&env, &mut gw, probes);
    drop(gw);
    let _ = fs::remove_dir_all(&dir);
    let v = v?;
    println!("{v}");
    let mut section = String::new();
    render(&v, &mut section);
    println!("OCG-FLOOD-BEGIN\n{}\nOCG-FLOOD-END", section.trim());
    Ok(())
}
