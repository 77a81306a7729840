//! The configurations compared side by side: none, the guard (monitor, enforce), auditd, bpftrace, and the empty programs at the guard's attach points.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Config {
    Baseline,
    Monitor,
    Enforce,
    /// Enforce with `--fold-ms 0`: every event sent one by one.
    EnforceEach,
    Auditd,
    BpftraceEmpty,
    BpftracePrint,
    /// Empty programs at the guard's BPF LSM tier attach points: the floor those cost.
    LsmEmpty,
}

impl Config {
    pub(super) const ALL: [Config; 8] = [
        Config::Baseline,
        Config::Monitor,
        Config::Enforce,
        Config::EnforceEach,
        Config::Auditd,
        Config::BpftraceEmpty,
        Config::BpftracePrint,
        Config::LsmEmpty,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Monitor => "guard-monitor",
            Config::Enforce => "guard-enforce",
            Config::EnforceEach => "guard-enforce-each",
            Config::Auditd => "auditd",
            Config::BpftraceEmpty => "bpftrace-empty",
            Config::BpftracePrint => "bpftrace-print",
            Config::LsmEmpty => "lsm-empty",
        }
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Config::Baseline => "no guard, no tracer; audit neutral (`auditctl -D; auditctl -a never,task` where auditctl exists)",
            Config::Monitor => "`openclaw-guard run --pid GATEWAY --no-discover --mode monitor --output FILE` (default policy, alerts only)",
            Config::Enforce => "`openclaw-guard run --pid GATEWAY --no-discover --output FILE` (default policy, enforced; identical repeated events of a thread within 1 s folded into counted `repeat` events, the default)",
            Config::EnforceEach => "`openclaw-guard run --pid GATEWAY --no-discover --fold-ms 0 --output FILE` (default policy, enforced, every event sent and recorded one by one)",
            Config::Auditd => "Debian auditd (`auditd -n`, Debian's auditd.conf, log in scratch), `-b 8192`, one `always,exit` rule on openat/openat2/open/execve/execveat/connect/sendto/sendmsg/bind/clone/clone3/fork/vfork/link(at)/rename(at,at2) scoped to the tracked tree with `-F auid=` (the gateway's login uid, inherited by its descendants)",
            Config::BpftraceEmpty => "bpftrace, empty actions on the hooks bpftrace would use for the same events: sched_process_fork/exec/exit, syscalls sys_enter/exit_openat, sys_enter_connect, sys_enter_sendto",
            Config::BpftracePrint => "bpftrace on the same probes, following the tracked tree from the gateway (a map filled at fork) and printing one line per event (path, pid, time) to a file",
            Config::LsmEmpty => "empty BPF programs (`return 0`) at every point the guard attaches to on the BPF LSM tier (its `tp_btf` tracepoints and LSM hooks, one program per guard program): what any BPF LSM enforcer on these hooks costs every process before its program does anything",
        }
    }

    pub(super) fn from_name(s: &str) -> Option<Config> {
        Config::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// A tool running for one configuration.
pub(super) enum Tool {
    None,
    Guard(GuardProc),
    Auditd(AuditdProc),
    Bpftrace(BpfProc),
    Floor(FloorProgs),
}

#[derive(Default, Clone, Copy)]
pub(super) struct StopInfo {
    pub(super) peak_rss_kib: Option<u64>,
    pub(super) submitted: Option<u64>,
    pub(super) lost: Option<u64>,
}

pub(super) fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[expect(clippy::cast_precision_loss, reason = "ticks")]
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process, in seconds.
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    #[expect(clippy::cast_precision_loss, reason = "ticks")]
    Some((ut + st) as f64 / clk_tck())
}

pub(super) fn pid_by_comm(comm: &str) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let c = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (c.trim() == comm).then_some(pid)
    })
}

impl Tool {
    pub(super) fn cpu_pids(&self) -> Vec<u32> {
        match self {
            Tool::None => Vec::new(),
            Tool::Guard(g) => vec![g.child.id()],
            Tool::Auditd(a) => {
                let mut v = vec![a.child.id()];
                v.extend(pid_by_comm("kauditd"));
                v
            }
            Tool::Bpftrace(b) => vec![b.child.id()],
            Tool::Floor(_) => Vec::new(),
        }
    }

    pub(super) fn cpu(&self) -> f64 {
        self.cpu_pids().into_iter().filter_map(cpu_seconds).sum()
    }

    /// Waits (up to 20 s) until the tool has stopped using CPU, so the backlog of
    /// one run (events still being decoded, audit records being written) does not
    /// compete with the next run on the shared cores.
    pub(super) fn quiesce(&self) {
        if matches!(self, Tool::None | Tool::Floor(_)) {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = self.cpu();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.cpu();
            // One clock tick (10 ms) in 200 ms: idle enough.
            if now - last <= 0.011 {
                return;
            }
            last = now;
        }
    }

    pub(super) fn stop(self) -> Result<StopInfo> {
        match self {
            Tool::None => Ok(StopInfo::default()),
            Tool::Guard(g) => g.stop(),
            Tool::Auditd(a) => a.stop(),
            Tool::Bpftrace(b) => b.stop(),
            Tool::Floor(f) => {
                drop(f);
                Ok(StopInfo::default())
            }
        }
    }
}

pub(super) fn wait_timeout(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let st = child.wait()?;
            bail!(
                "process {} did not exit within {limit:?} (killed: {st})",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(super) fn signal(child: &Child, sig: i32) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, sig) };
    }
}

pub(super) struct GuardProc {
    pub(super) child: Child,
    pub(super) lines: Arc<Mutex<Vec<String>>>,
    pub(super) output: PathBuf,
    pub(super) status_file: PathBuf,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) startup: Vec<String>,
}

pub(super) struct Env {
    pub(super) guard_bin: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) guard_has_state_dir: bool,
    pub(super) guard_has_no_pin: bool,
    pub(super) startup_timeout: Duration,
}

impl GuardProc {
    pub(super) fn start(env: &Env, gw: u32, monitor: bool, tag: &str) -> Result<Self> {
        Self::start_with(env, gw, monitor, tag, &[])
    }

    pub(super) fn start_with(
        env: &Env,
        gw: u32,
        monitor: bool,
        tag: &str,
        extra: &[String],
    ) -> Result<Self> {
        let output = env.dir.join(format!("guard-{tag}.jsonl"));
        let status_file = env.dir.join(format!("guard-{tag}-status.json"));
        let _ = fs::remove_file(&output);
        let mut cmd = Command::new(&env.guard_bin);
        cmd.args(["run", "--pid", &gw.to_string(), "--no-discover", "--output"])
            .arg(&output)
            .arg("--status-file")
            .arg(&status_file);
        if monitor {
            cmd.args(["--mode", "monitor"]);
        }
        cmd.args(extra);
        // Pinned programs would outlive the daemon and run during the next baseline.
        if env.guard_has_no_pin {
            cmd.arg("--no-pin");
        }
        let state_dir = env
            .guard_has_state_dir
            .then(|| env.dir.join(format!("guard-{tag}-state")));
        if let Some(s) = &state_dir {
            let _ = fs::remove_dir_all(s);
            cmd.arg("--state-dir").arg(s);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", env.guard_bin.display()))?;
        let stderr = child.stderr.take().context("guard stderr")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let keep = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = keep.lock() {
                    l.push(line.clone());
                }
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + env.startup_timeout;
        let mut startup = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.ends_with("openclaw-guard: ready");
                    startup.push(line);
                    if ready {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "openclaw-guard did not become ready; it printed:\n{}",
                        startup.join("\n")
                    );
                }
            }
        }
        Ok(Self {
            child,
            lines,
            output,
            status_file,
            state_dir,
            startup,
        })
    }

    /// (submitted, lost, received) from the status file (rewritten every second).
    pub(super) fn counters(&self) -> Option<(u64, u64, u64)> {
        let v: Value = serde_json::from_str(&fs::read_to_string(&self.status_file).ok()?).ok()?;
        let c = &v["counters"];
        Some((
            c["kernel_submitted"].as_u64()?,
            c["kernel_lost"].as_u64()?,
            c["received"].as_u64()?,
        ))
    }

    /// Waits until the daemon has received everything the kernel submitted and the
    /// status file shows it; returns those counters.
    pub(super) fn settled(&self, limit: Duration) -> Option<(u64, u64, u64)> {
        let since = std::time::SystemTime::now();
        let deadline = Instant::now() + limit;
        loop {
            std::thread::sleep(Duration::from_millis(250));
            // Only a status written after the workload ended counts: a daemon busy
            // draining does not rewrite it.
            let fresh = fs::metadata(&self.status_file)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m > since);
            let c = self.counters();
            if fresh {
                if let Some((s, _, r)) = c {
                    if r >= s {
                        return c;
                    }
                }
            }
            if Instant::now() > deadline {
                return c;
            }
        }
    }

    pub(super) fn stop(mut self) -> Result<StopInfo> {
        // Let the last events cross the ring buffer.
        std::thread::sleep(Duration::from_millis(200));
        signal(&self.child, libc::SIGTERM);
        let st = wait_timeout(&mut self.child, Duration::from_secs(120))?;
        std::thread::sleep(Duration::from_millis(50));
        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        let _ = fs::remove_file(&self.output);
        let _ = fs::remove_file(&self.status_file);
        if let Some(s) = &self.state_dir {
            let _ = fs::remove_dir_all(s);
        }
        if !st.success() {
            bail!(
                "openclaw-guard exited with {st}: {}",
                lines
                    .iter()
                    .rev()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
        let mut info = StopInfo::default();
        // "stopped; kernel submitted N events, lost M, received R; peak RSS K KiB"
        if let Some(l) = lines.iter().rev().find(|l| l.contains("stopped;")) {
            let num_after = |key: &str| -> Option<u64> {
                let at = l.find(key)? + key.len();
                l[at..]
                    .trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            };
            info.submitted = num_after("submitted");
            info.lost = num_after("lost");
            info.peak_rss_kib = num_after("peak RSS");
        }
        Ok(info)
    }
}

pub(super) struct AuditdProc {
    pub(super) child: Child,
    pub(super) dir: PathBuf,
    pub(super) prev_enabled: String,
}

pub(super) fn auditctl(args: &[&str]) -> Result<String> {
    let o = Command::new("auditctl")
        .args(args)
        .output()
        .context("running auditctl")?;
    if !o.status.success() {
        bail!(
            "auditctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

pub(super) fn audit_status() -> Option<BTreeMap<String, String>> {
    let s = auditctl(&["-s"]).ok()?;
    Some(
        s.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect(),
    )
}

/// `auditctl -D` then `-a never,task`: no rules, and new processes get no audit context
/// (the fast syscall path), even after audit has been enabled once since boot.
pub(super) fn audit_neutral() -> Result<()> {
    auditctl(&["-D"])?;
    auditctl(&["-a", "never,task"])?;
    Ok(())
}

pub(super) const AUDIT_SYSCALLS: &[&str] = &[
    "openat",
    "openat2",
    "open",
    "execve",
    "execveat",
    "connect",
    "sendto",
    "sendmsg",
    "bind",
    "clone",
    "clone3",
    "fork",
    "vfork",
    "link",
    "linkat",
    "rename",
    "renameat",
    "renameat2",
];

impl AuditdProc {
    pub(super) fn start(env: &Env) -> Result<Self> {
        let prev_enabled = audit_status()
            .and_then(|s| s.get("enabled").cloned())
            .unwrap_or_else(|| "0".into());
        let dir = env.dir.join("audit");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("plugins.d"))?;
        // Debian's auditd.conf, with the log (bounded) in the scratch dir.
        let base = fs::read_to_string("/etc/audit/auditd.conf").unwrap_or_default();
        let mut conf = String::new();
        for line in base.lines() {
            let key = line.split('=').next().unwrap_or("").trim();
            match key {
                "log_file"
                | "max_log_file"
                | "num_logs"
                | "max_log_file_action"
                | "plugin_dir"
                | "log_group" => {}
                _ => {
                    conf.push_str(line);
                    conf.push('\n');
                }
            }
        }
        let _ = writeln!(
            conf,
            "log_file = {}\nmax_log_file = 64\nnum_logs = 2\nmax_log_file_action = ROTATE\nplugin_dir = {}\nlog_group = root",
            dir.join("audit.log").display(),
            dir.join("plugins.d").display()
        );
        let conf_path = dir.join("auditd.conf");
        fs::write(&conf_path, conf)?;
        fs::set_permissions(
            &conf_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )?;
        let log = fs::File::create(dir.join("auditd.stderr"))?;
        let mut child = Command::new("auditd")
            .arg("-n")
            .arg("-c")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting auditd")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let me = child.id().to_string();
        loop {
            if audit_status().is_some_and(|s| s.get("pid") == Some(&me)) {
                break;
            }
            if let Some(st) = child.try_wait()? {
                bail!(
                    "auditd exited ({st}): {}",
                    fs::read_to_string(dir.join("auditd.stderr"))
                        .unwrap_or_default()
                        .trim()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("auditd did not register with the kernel within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let proc = Self {
            child,
            dir,
            prev_enabled,
        };
        auditctl(&["-D"])?;
        // Debian's /etc/audit/rules.d/audit.rules settings.
        auditctl(&["-b", "8192"])?;
        auditctl(&["--backlog_wait_time", "60000"])?;
        auditctl(&["-f", "1"])?;
        auditctl(&["-e", "1"])?;
        let auid = format!("auid={BENCH_AUID}");
        let mut rule = vec!["-a", "always,exit", "-F", "arch=b64"];
        for s in AUDIT_SYSCALLS {
            rule.extend(["-S", s]);
        }
        rule.extend(["-F", &auid, "-k", "ocg-bench"]);
        auditctl(&rule)?;
        Ok(proc)
    }

    pub(super) fn stop(mut self) -> Result<StopInfo> {
        let lost = audit_status().and_then(|s| s.get("lost").and_then(|v| v.parse().ok()));
        let neutral = audit_neutral();
        signal(&self.child, libc::SIGTERM);
        let st = wait_timeout(&mut self.child, Duration::from_secs(30));
        let _ = auditctl(&["-e", &self.prev_enabled]);
        let _ = fs::remove_dir_all(&self.dir);
        neutral?;
        st?;
        Ok(StopInfo {
            lost,
            ..StopInfo::default()
        })
    }
}

pub(super) struct BpfProc {
    pub(super) child: Child,
    pub(super) out: PathBuf,
}

/// Empty BPF programs attached where the guard attaches on the BPF LSM tier; detached
/// when dropped (closing the link fds).
pub(super) struct FloorProgs {
    pub(super) _links: Vec<std::os::fd::OwnedFd>,
}

impl FloorProgs {
    pub(super) fn attach() -> Result<Self> {
        let btf = openclaw_guard::kernel::btf::Btf::from_sys_fs().context("reading vmlinux BTF")?;
        let mut links = Vec::new();
        for (kind, point) in openclaw_guard::kernel::loader::lsm_tier_attach_points() {
            let (name, prog_type, attach_type) = match kind {
                "lsm" => (format!("bpf_lsm_{point}"), BPF_PROG_TYPE_LSM, BPF_LSM_MAC),
                _ => (
                    format!("btf_trace_{point}"),
                    BPF_PROG_TYPE_TRACING,
                    BPF_TRACE_RAW_TP,
                ),
            };
            let id = btf
                .attach_id(&name)
                .with_context(|| format!("{name} not in this kernel's BTF"))?;
            let prog = bpf_prog_load_empty(prog_type, attach_type, id)
                .with_context(|| format!("loading an empty {kind}/{point} program"))?;
            links.push(
                bpf_raw_tracepoint_open(&prog)
                    .with_context(|| format!("attaching an empty {kind}/{point} program"))?,
            );
        }
        Ok(Self { _links: links })
    }
}

pub(super) const BPF_PROG_LOAD: libc::c_long = 5;
pub(super) const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
pub(super) const BPF_PROG_TYPE_TRACING: u32 = 26;
pub(super) const BPF_PROG_TYPE_LSM: u32 = 29;
pub(super) const BPF_TRACE_RAW_TP: u32 = 23;
pub(super) const BPF_LSM_MAC: u32 = 27;

/// `bpf(cmd, attr)` with a zeroed attribute block (the kernel requires unused bytes 0).
pub(super) fn bpf_cmd(cmd: libc::c_long, attr: &mut [u8; 144]) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: attr is a valid, writable buffer of the size passed.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a new fd the kernel just returned, owned here.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

pub(super) fn put_u32(attr: &mut [u8; 144], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

pub(super) fn put_u64(attr: &mut [u8; 144], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Loads `r0 = 0; exit` attached (by BTF id) to a hook: the least a program can do.
pub(super) fn bpf_prog_load_empty(
    prog_type: u32,
    attach_type: u32,
    btf_id: u32,
) -> Result<std::os::fd::OwnedFd> {
    // mov64 r0, 0; exit
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c"GPL";
    let mut attr = [0u8; 144];
    // union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, ...,
    // expected_attach_type at 68, attach_btf_id at 108.
    put_u32(&mut attr, 0, prog_type);
    put_u32(&mut attr, 4, 2);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    put_u32(&mut attr, 68, attach_type);
    put_u32(&mut attr, 108, btf_id);
    bpf_cmd(BPF_PROG_LOAD, &mut attr)
}

/// Attaches a tracing or LSM program at the point it was loaded for.
pub(super) fn bpf_raw_tracepoint_open(prog: &std::os::fd::OwnedFd) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd as _;
    let mut attr = [0u8; 144];
    // raw_tracepoint: name (NULL: the program's own attach point), prog_fd.
    put_u32(&mut attr, 8, prog.as_raw_fd() as u32);
    bpf_cmd(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
}

pub(super) fn bpftrace_program(print: bool, gw: u32) -> String {
    if !print {
        return "BEGIN { printf(\"ready\\n\"); }\n\
tracepoint:sched:sched_process_fork {}\n\
tracepoint:sched:sched_process_exec {}\n\
tracepoint:sched:sched_process_exit {}\n\
tracepoint:syscalls:sys_enter_openat {}\n\
tracepoint:syscalls:sys_exit_openat {}\n\
tracepoint:syscalls:sys_enter_connect {}\n\
tracepoint:syscalls:sys_enter_sendto {}\n"
            .to_owned();
    }
    format!(
        "BEGIN {{ @t[{gw}] = 1; printf(\"ready\\n\"); }}\n\
tracepoint:sched:sched_process_fork /@t[pid]/ {{ @t[args->child_pid] = 1; printf(\"fork %d %d %llu\\n\", pid, args->child_pid, nsecs); }}\n\
tracepoint:sched:sched_process_exec /@t[pid]/ {{ printf(\"exec %d %s %llu\\n\", pid, str(args->filename), nsecs); }}\n\
tracepoint:sched:sched_process_exit /@t[pid] && tid == pid/ {{ delete(@t[pid]); printf(\"exit %d %llu\\n\", pid, nsecs); }}\n\
tracepoint:syscalls:sys_enter_openat /@t[pid]/ {{ @f[tid] = args->filename; }}\n\
tracepoint:syscalls:sys_exit_openat /@f[tid]/ {{ printf(\"open %d %s %d %llu\\n\", pid, str(@f[tid]), args->ret, nsecs); delete(@f[tid]); }}\n\
tracepoint:syscalls:sys_enter_connect /@t[pid]/ {{ printf(\"connect %d %d %llu\\n\", pid, args->fd, nsecs); }}\n\
tracepoint:syscalls:sys_enter_sendto /@t[pid]/ {{ printf(\"sendto %d %d %llu\\n\", pid, args->len, nsecs); }}\n"
    )
}

impl BpfProc {
    pub(super) fn start(env: &Env, print: bool, gw: u32) -> Result<Self> {
        let prog = env.dir.join("bench.bt");
        fs::write(&prog, bpftrace_program(print, gw))?;
        let out = env.dir.join("bpftrace.out");
        let err = env.dir.join("bpftrace.err");
        // stdout to a file, not `-o`: bpftrace 0.17 buffers `-o` output.
        let mut child = Command::new("bpftrace")
            .arg(&prog)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out)?)
            .stderr(fs::File::create(&err)?)
            .spawn()
            .context("starting bpftrace")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if fs::read_to_string(&out).is_ok_and(|s| s.lines().any(|l| l == "ready")) {
                break;
            }
            if let Some(st) = child.try_wait()? {
                let e = fs::read_to_string(&err).unwrap_or_default();
                let e: Vec<&str> = e
                    .lines()
                    .filter(|l| !l.contains("RLIMIT_MEMLOCK"))
                    .take(3)
                    .collect();
                bail!("bpftrace exited ({st}): {}", e.join(" | "));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("bpftrace did not attach within 120 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // BEGIN runs once the probes are attached; a moment for the last one.
        std::thread::sleep(Duration::from_millis(200));
        Ok(Self { child, out })
    }

    pub(super) fn stop(mut self) -> Result<StopInfo> {
        // bpftrace 0.17 may ignore the first SIGINT when its programs never fired.
        for _ in 0..3 {
            signal(&self.child, libc::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if self.child.try_wait()?.is_some() {
                    let _ = fs::remove_file(&self.out);
                    return Ok(StopInfo::default());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.out);
        Ok(StopInfo::default())
    }
}

pub(super) fn start_tool(env: &Env, cfg: Config, gw: u32, tag: &str) -> Result<Tool> {
    Ok(match cfg {
        Config::Baseline => Tool::None,
        Config::Monitor => Tool::Guard(GuardProc::start(env, gw, true, tag)?),
        Config::Enforce => Tool::Guard(GuardProc::start(env, gw, false, tag)?),
        Config::EnforceEach => Tool::Guard(GuardProc::start_with(
            env,
            gw,
            false,
            tag,
            &["--fold-ms".into(), "0".into()],
        )?),
        Config::Auditd => Tool::Auditd(AuditdProc::start(env)?),
        Config::BpftraceEmpty => Tool::Bpftrace(BpfProc::start(env, false, gw)?),
        Config::BpftracePrint => Tool::Bpftrace(BpfProc::start(env, true, gw)?),
        Config::LsmEmpty => Tool::Floor(FloorProgs::attach()?),
    })
}

pub(super) fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}
