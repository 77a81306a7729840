//! Workloads, each run in its own process, tracked or not: opens, forks, execs, TCP and UDP, a mix; storms and probes.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Workload {
    Open,
    Exec,
    Tcp,
    Udp,
    Mixed,
}

impl Workload {
    pub(super) const ALL: [Workload; 5] = [
        Workload::Open,
        Workload::Exec,
        Workload::Tcp,
        Workload::Udp,
        Workload::Mixed,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Workload::Open => "open_close",
            Workload::Exec => "exec_true",
            Workload::Tcp => "tcp_connect",
            Workload::Udp => "udp_sendto",
            Workload::Mixed => "mixed_script",
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Workload::Open => "open+close",
            Workload::Exec => "fork+exec /bin/true",
            Workload::Tcp => "TCP connect+close (lo, SO_LINGER 0)",
            Workload::Udp => "UDP sendto (lo)",
            Workload::Mixed => "mixed shell script (iteration)",
        }
    }

    pub(super) fn from_name(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == s)
    }

    /// Operations per run at scale 1; five rounds give the totals (1M opens,
    /// 10k execs, 50k connects, 1M sends) per configuration and mode.
    pub(super) fn base_count(self) -> u64 {
        match self {
            Workload::Open | Workload::Udp => 200_000,
            Workload::Exec => 2_000,
            Workload::Tcp => 10_000,
            Workload::Mixed => 200,
        }
    }
}

pub(super) fn work(args: &[String]) -> Result<()> {
    let [kind, n, dir] = args else {
        bail!("usage: work KIND N DIR");
    };
    let w = Workload::from_name(kind).with_context(|| format!("unknown workload {kind}"))?;
    let n: u64 = n.parse().context("count")?;
    let dir = Path::new(dir);
    let ns = match w {
        Workload::Open => open_loop(&dir.join("open-target"), n, 0)?,
        Workload::Exec => exec_loop(n)?,
        Workload::Tcp => tcp_loop(n)?,
        Workload::Udp => udp_loop(n)?,
        Workload::Mixed => mixed(dir, n)?,
    };
    println!("OK {ns} {n}");
    Ok(())
}

pub(super) fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).context("path with a NUL byte")
}

/// `n` open+close of `path`, paced at `rate` per second (0 = as fast as possible).
/// Returns the elapsed nanoseconds.
pub(super) fn open_loop(path: &Path, n: u64, rate: u64) -> Result<u128> {
    let c = cstring(path)?;
    let start = Instant::now();
    for i in 0..n {
        if rate > 0 && i % 64 == 0 {
            pace(start, i, rate);
        }
        // SAFETY: a valid NUL-terminated path; the fd is closed at once.
        let fd =
            unsafe { libc::openat(libc::AT_FDCWD, c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            bail!(
                "open {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: fd was returned by openat above.
        unsafe { libc::close(fd) };
    }
    Ok(start.elapsed().as_nanos())
}

/// Sleeps until operation `done` is due at `rate` per second.
pub(super) fn pace(start: Instant, done: u64, rate: u64) {
    #[expect(clippy::cast_precision_loss, reason = "pacing")]
    let due = Duration::from_secs_f64(done as f64 / rate as f64);
    let now = start.elapsed();
    if due > now {
        std::thread::sleep(due - now);
    }
}

pub(super) fn fork_exit() -> Result<i32> {
    // SAFETY: the child only calls _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: async-signal-safe exit of the forked child.
        unsafe { libc::_exit(0) };
    }
    Ok(pid)
}

pub(super) fn reap(pid: i32) -> Result<()> {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let rc = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    if rc != pid {
        bail!("waitpid {pid}: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("child {pid} failed (wait status {status:#x})");
    }
    Ok(())
}

pub(super) fn exec_loop(n: u64) -> Result<u128> {
    let prog = c"/bin/true";
    let argv = [prog.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: the child calls only execve and _exit (async-signal-safe).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: valid NUL-terminated argv/envp arrays built before the fork.
            unsafe {
                libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        reap(pid)?;
    }
    Ok(start.elapsed().as_nanos())
}

pub(super) fn sockaddr_in(addr: std::net::SocketAddr) -> Result<libc::sockaddr_in> {
    let std::net::SocketAddr::V4(v4) = addr else {
        bail!("expected an IPv4 address, got {addr}");
    };
    // SAFETY: sockaddr_in is plain old data.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = v4.port().to_be();
    sa.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
    Ok(sa)
}

pub(super) const SOCKADDR_IN_LEN: libc::socklen_t =
    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

pub(super) fn tcp_loop(n: u64) -> Result<u128> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("TCP listener")?;
    // A deep accept queue: a dropped SYN would cost a one-second retransmit.
    // SAFETY: listen(2) again on a listening socket only changes its backlog.
    unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 4096) };
    let sa = sockaddr_in(listener.local_addr()?)?;
    std::thread::spawn(move || {
        while let Ok((s, _)) = listener.accept() {
            drop(s);
        }
    });
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: plain socket calls on an fd owned here and closed below.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                bail!("socket: {}", std::io::Error::last_os_error());
            }
            // RST on close: 50k connections would otherwise exhaust the ephemeral
            // ports through TIME_WAIT.
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                std::ptr::from_ref(&linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
            if libc::connect(fd, std::ptr::from_ref(&sa).cast(), SOCKADDR_IN_LEN) != 0 {
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                bail!("connect: {err}");
            }
            libc::close(fd);
        }
    }
    Ok(start.elapsed().as_nanos())
}

pub(super) fn udp_loop(n: u64) -> Result<u128> {
    // The receiver is never read: once its buffer is full the kernel drops datagrams,
    // which costs less than an ICMP port-unreachable per send.
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").context("UDP receiver")?;
    let sa = sockaddr_in(rx.local_addr()?)?;
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    let buf = [0u8; 64];
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: valid buffer and address.
        let rc = unsafe {
            libc::sendto(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                0,
                std::ptr::from_ref(&sa).cast(),
                SOCKADDR_IN_LEN,
            )
        };
        if rc < 0 {
            bail!("sendto: {}", std::io::Error::last_os_error());
        }
    }
    let ns = start.elapsed().as_nanos();
    drop(rx);
    Ok(ns)
}

/// A shell loop as an agent's exec tool runs them: two external commands, a
/// redirection and a builtin per iteration.
pub(super) fn mixed(dir: &Path, n: u64) -> Result<u128> {
    let d = dir.display();
    let script = format!(
        "for ((i=0;i<{n};i++)); do cat {d}/open-target >/dev/null; echo $i > {d}/mixed-out; ls {d} >/dev/null; done"
    );
    let start = Instant::now();
    let status = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", &script])
        .status()
        .context("running bash")?;
    if !status.success() {
        bail!("the mixed script failed: {status}");
    }
    Ok(start.elapsed().as_nanos())
}

/// `storm open|fork RATE SECS DIR`: as many operations as RATE per second allows for
/// SECS seconds (RATE 0: unpaced). Prints `{"ops":N,"secs":S}`.
pub(super) fn storm(args: &[String]) -> Result<()> {
    let [kind, rate, secs, dir] = args else {
        bail!("usage: storm KIND RATE SECS DIR");
    };
    let rate: u64 = rate.parse()?;
    let secs: f64 = secs.parse()?;
    let path = cstring(&Path::new(dir).join("open-target"))?;
    let start = Instant::now();
    let end = Duration::from_secs_f64(secs);
    let mut ops: u64 = 0;
    let mut children = Vec::new();
    while start.elapsed() < end {
        for _ in 0..32 {
            if kind == "open" {
                // SAFETY: valid path; fd closed at once.
                let fd = unsafe {
                    libc::openat(
                        libc::AT_FDCWD,
                        path.as_ptr(),
                        libc::O_RDONLY | libc::O_CLOEXEC,
                    )
                };
                if fd < 0 {
                    bail!("open: {}", std::io::Error::last_os_error());
                }
                // SAFETY: fd from openat.
                unsafe { libc::close(fd) };
            } else {
                children.push(fork_exit()?);
                if children.len() >= 64 {
                    for pid in children.drain(..) {
                        reap(pid)?;
                    }
                }
            }
            ops += 1;
        }
        if rate > 0 {
            pace(start, ops, rate);
        }
    }
    for pid in children {
        reap(pid)?;
    }
    println!(
        "{}",
        json!({"ops": ops, "secs": start.elapsed().as_secs_f64()})
    );
    Ok(())
}

pub(super) fn boottime_ns() -> u64 {
    // SAFETY: timespec is plain old data; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// `probe open|fork|deny N OUTPUT DIR`: N single operations, each followed by waiting for its
/// JSON line in the daemon's OUTPUT (inotify). Prints the latency summary as JSON.
pub(super) fn probe(args: &[String]) -> Result<()> {
    let [kind, n, output, dir] = args else {
        bail!("usage: probe KIND N OUTPUT DIR");
    };
    let n: usize = n.parse()?;
    let target = if kind == "deny" {
        // Made and protected by the suite before the guard started.
        Path::new(dir).join("probe-secret")
    } else {
        let t = Path::new(dir).join("probe-target");
        fs::write(&t, b"probe\n")?;
        t
    };
    let target_c = cstring(&target)?;
    let target_s = target.display().to_string();
    // The tracepoint tier reports dev/inode without a path.
    let target_ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&target)?);
    let me = i64::from(std::process::id());
    let mut out = fs::File::open(output).with_context(|| format!("opening {output}"))?;
    out.seek(SeekFrom::End(0))?;
    // SAFETY: plain inotify calls on a path we own.
    let ino = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if ino < 0 {
        bail!("inotify_init1: {}", std::io::Error::last_os_error());
    }
    let out_c = CString::new(output.as_bytes())?;
    // SAFETY: valid inotify fd and path.
    if unsafe { libc::inotify_add_watch(ino, out_c.as_ptr(), libc::IN_MODIFY) } < 0 {
        bail!("inotify_add_watch: {}", std::io::Error::last_os_error());
    }
    let mut pending = Vec::new();
    let mut e2e = Vec::new();
    let mut hook = Vec::new();
    let mut missed = 0;
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(3));
        let t0 = boottime_ns();
        let child = if kind == "deny" {
            // A child: the fallback tier kills the opener of a protected file.
            // SAFETY: the child only opens, closes and exits.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                bail!("fork: {}", std::io::Error::last_os_error());
            }
            if pid == 0 {
                // SAFETY: valid path; async-signal-safe calls only.
                unsafe {
                    let fd = libc::openat(
                        libc::AT_FDCWD,
                        target_c.as_ptr(),
                        libc::O_RDONLY | libc::O_CLOEXEC,
                    );
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    libc::_exit(0);
                }
            }
            pid
        } else if kind == "open" {
            // SAFETY: valid path; fd closed at once.
            let fd = unsafe {
                libc::openat(
                    libc::AT_FDCWD,
                    target_c.as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC,
                )
            };
            // SAFETY: fd from openat.
            unsafe { libc::close(fd) };
            0
        } else {
            fork_exit()?
        };
        let matches = |v: &Value| -> bool {
            if kind == "deny" {
                v["kind"] == "file_open"
                    && v["tgid"].as_i64() == Some(i64::from(child))
                    && v["decision"].is_object()
            } else if kind == "open" {
                v["kind"] == "file_open"
                    && v["tgid"].as_i64() == Some(me)
                    && (v["path"].as_str() == Some(target_s.as_str())
                        || v["ino"].as_u64() == Some(target_ino))
            } else {
                v["kind"] == "fork" && v["child_tgid"].as_i64() == Some(i64::from(child))
            }
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = None;
        'wait: loop {
            let mut chunk = Vec::new();
            out.read_to_end(&mut chunk)?;
            pending.extend_from_slice(&chunk);
            while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    let k = v["ktime_ns"].as_u64().unwrap_or(0);
                    if k >= t0 && matches(&v) {
                        found = Some((boottime_ns(), k));
                        break 'wait;
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut pfd = libc::pollfd {
                fd: ino,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis()).unwrap_or(5000).max(1);
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&raw mut pfd, 1, ms) } > 0 {
                let mut buf = [0u8; 4096];
                // SAFETY: draining the inotify fd into a local buffer.
                unsafe { libc::read(ino, buf.as_mut_ptr().cast(), buf.len()) };
            }
        }
        if child > 0 {
            if kind == "deny" {
                let mut status = 0;
                // SAFETY: waiting for our own child (killed or not).
                unsafe { libc::waitpid(child, &raw mut status, 0) };
            } else {
                reap(child)?;
            }
        }
        match found {
            Some((t1, k)) => {
                e2e.push(t1.saturating_sub(t0));
                hook.push(k.saturating_sub(t0));
            }
            None => missed += 1,
        }
    }
    e2e.sort_unstable();
    hook.sort_unstable();
    println!(
        "{}",
        json!({
            "kind": kind,
            "probes": n,
            "missed": missed,
            "e2e_us": percentiles_us(&e2e),
            "syscall_to_hook_us": percentiles_us(&hook),
        })
    );
    Ok(())
}

/// The daemon's hottest symbols (self time) from a `perf record` of the unpaced storm.
pub(super) fn perf_report(data: &Path) -> Value {
    let Ok(o) = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "--sort",
            "dso,symbol",
            "--percent-limit",
            "1.5",
            "-g",
            "none",
            "-i",
        ])
        .arg(data)
        .output()
    else {
        return Value::Null;
    };
    let _ = fs::remove_file(data);
    let lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('%'))
        .take(20)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    json!(lines)
}

pub(super) fn percentiles_us(sorted: &[u64]) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let at = |q: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a short list"
        )]
        let i = ((sorted.len() - 1) as f64 * q).round() as usize;
        #[expect(clippy::cast_precision_loss, reason = "report")]
        let us = sorted[i] as f64 / 1000.0;
        (us * 10.0).round() / 10.0
    };
    json!({"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0)})
}
