//! Driving the real daemon and a stand-in OpenClaw gateway.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use serde_json::Value;

/// This binary, which also serves as the syscall helper (`helper ...`) run inside trees.
pub(crate) fn helper_bin() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The daemon binary under test.
pub(crate) fn guard_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OPENCLAW_GUARD_BIN") {
        return PathBuf::from(p);
    }
    // Built side by side by cargo.
    let me = std::env::current_exe().unwrap_or_default();
    me.with_file_name("openclaw-guard")
}

/// Runs `openclaw-guard ARGS` and returns its stdout; a non-zero exit is an error.
pub(crate) fn run_guard_cli(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(guard_bin())
        .args(args)
        .output()
        .with_context(|| format!("running openclaw-guard {args:?}"))?;
    ensure!(
        out.status.success(),
        "openclaw-guard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The pids of an event's `lineage`, gateway first.
pub(crate) fn lineage_pids(e: &Value) -> Vec<u64> {
    e["lineage"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["pid"].as_u64())
        .collect()
}

/// A scratch directory removed on drop.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn new(tag: &str) -> anyhow::Result<Self> {
        Self::new_in(&std::env::temp_dir(), tag)
    }

    /// A scratch directory under `parent` (another filesystem than the temp dir's).
    pub(crate) fn new_in(parent: &Path, tag: &str) -> anyhow::Result<Self> {
        let base = parent.join(format!("ocg-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        Ok(Self(base))
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A stand-in for the OpenClaw gateway: a process that waits until released, then runs
/// a script whose commands become its children, as the exec tool's commands do.
pub(crate) struct StandInGateway {
    child: Child,
    go: PathBuf,
}

impl StandInGateway {
    /// `script` is bash run by the gateway itself after release.
    pub(crate) fn start(dir: &Scratch, script: &str) -> anyhow::Result<Self> {
        Self::start_with(dir, "", script)
    }

    /// As [`Self::start`], with `before` run at once (children that exist before the
    /// guard starts).
    pub(crate) fn start_with(dir: &Scratch, before: &str, script: &str) -> anyhow::Result<Self> {
        Self::start_env(dir, before, script, &[])
    }

    /// As [`Self::start_with`], with extra environment variables (e.g. the gateway
    /// user's HOME, which the guard reads from /proc/PID/environ).
    pub(crate) fn start_env(
        dir: &Scratch,
        before: &str,
        script: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        Self::start_full(dir, before, script, env, None)
    }

    /// As [`Self::start_env`], optionally inside a network namespace (same pid: `ip
    /// netns exec` execs the shell).
    pub(crate) fn start_full(
        dir: &Scratch,
        before: &str,
        script: &str,
        env: &[(&str, String)],
        netns: Option<&NetNs>,
    ) -> anyhow::Result<Self> {
        let go = dir.path("go");
        let status = Command::new("mkfifo").arg(&go).status().context("mkfifo")?;
        if !status.success() {
            bail!("mkfifo {} failed", go.display());
        }
        let script_path = dir.path("gateway.sh");
        std::fs::write(
            &script_path,
            format!("{before}\nread -r _ < '{}'\n{script}\n", go.display()),
        )?;
        // `read` and the redirections are bash builtins: nothing is exec'd before release.
        // Titled like OpenClaw's gateway, which rewrites its own command line.
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.0, "bash"]);
                c
            }
            None => {
                let mut c = Command::new("bash");
                c.arg0("openclaw-gateway");
                c
            }
        };
        // The gateway's own stderr (job-control notices such as "Killed") goes to a
        // file in the scratch directory, not into the test report.
        let err = std::fs::File::create(dir.path("gateway.err")).context("creating gateway.err")?;
        let child = cmd
            .stderr(err)
            // Its own process group, as the gateway's is, so a test can end all of it.
            .process_group(0)
            .args(["--noprofile", "--norc"])
            .arg(&script_path)
            .env("SHELL", which("bash").unwrap_or_else(|| "/bin/bash".into()))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .spawn()
            .context("starting the stand-in gateway (bash)")?;
        Ok(Self { child, go })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the script run and waits for it to finish.
    pub(crate) fn release_and_wait(self) -> anyhow::Result<i32> {
        self.release()?;
        self.wait()
    }

    /// Lets the script run.
    pub(crate) fn release(&self) -> anyhow::Result<()> {
        std::fs::write(&self.go, b"go\n").context("releasing the stand-in gateway")
    }

    /// Waits for the script to finish.
    pub(crate) fn wait(mut self) -> anyhow::Result<i32> {
        wait_timeout(&mut self.child, Duration::from_secs(120))
    }
}

impl Drop for StandInGateway {
    fn drop(&mut self) {
        // The whole process group: background jobs of the script go too.
        // SAFETY: signalling the group this test created.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> anyhow::Result<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.code().unwrap_or(-1));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("process {} still running after {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Waits (up to a minute) for a file a script writes, complete once it ends in a newline.
pub(crate) fn wait_file(path: &Path) -> anyhow::Result<String> {
    for _ in 0..600 {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return Ok(s);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{} never appeared", path.display())
}

/// `openclaw-guard unload --pin-dir DIR`; returns how many generations it removed.
pub(crate) fn unload(pin_dir: &str) -> anyhow::Result<usize> {
    let out = Command::new(guard_bin())
        .args(["unload", "--pin-dir", pin_dir])
        .output()?;
    if !out.status.success() {
        bail!("unload failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

/// A network namespace with only loopback: nothing sent there leaves the machine.
pub(crate) struct NetNs(pub(crate) String);

impl NetNs {
    pub(crate) fn new(tag: &str) -> anyhow::Result<Self> {
        let name = format!("ocg-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!("ip netns add {name} failed");
        }
        let ns = Self(name);
        Command::new("ip")
            .args(["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"])
            .status()?;
        Ok(ns)
    }

    /// Runs a command inside the namespace.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `f` on a thread that entered the network namespace `ns` (an `ip netns` name):
/// the sockets it makes live there, whatever thread uses them later.
pub(crate) fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("opening network namespace {ns}"))?;
    std::thread::spawn(move || {
        // SAFETY: setns(2) on this thread with an fd that stays open for the call.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread in {ns} panicked"))?
    .with_context(|| format!("entering network namespace {ns}"))
}

/// Whether this machine has any route beyond loopback (the host does; the test guests
/// have no network device at all).
pub(crate) fn has_route_out() -> bool {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    routes.lines().skip(1).any(|l| !l.starts_with("lo"))
        || v6.lines().any(|l| !l.trim_end().ends_with("lo"))
}

/// The daemon, started with given arguments, writing JSON lines to a file.
pub(crate) struct GuardProcess {
    child: Child,
    output: PathBuf,
    /// Start-up lines the daemon printed on stderr.
    pub(crate) startup: Vec<String>,
    stderr_rest: mpsc::Receiver<String>,
}

impl GuardProcess {
    pub(crate) fn start(dir: &Scratch, args: &[String]) -> anyhow::Result<Self> {
        Self::start_wrapped(dir, &[], args)
    }

    /// As [`Self::start`], the daemon run by `wrapper` (e.g. `nsenter -t PID -m --`,
    /// which execs it: the child's pid stays the daemon's).
    pub(crate) fn start_wrapped(
        dir: &Scratch,
        wrapper: &[String],
        args: &[String],
    ) -> anyhow::Result<Self> {
        let output = dir.path("events.jsonl");
        let bin = guard_bin();
        // The forensic record goes to the scratch directory, never the host's.
        let mut args = args.to_vec();
        if !args
            .iter()
            .any(|a| a == "--no-record" || a == "--state-dir")
        {
            args.push("--state-dir".into());
            args.push(dir.path("state").display().to_string());
        }
        // A test that names its gateway follows only that one (other gateways on the
        // machine, e.g. a benchmark's, are not its business).
        if args.iter().any(|a| a == "--pid") && !args.iter().any(|a| a == "--no-discover") {
            args.push("--no-discover".into());
        }
        // Nothing pinned unless the test is about pinning: each test starts clean.
        if !args.iter().any(|a| a == "--pin-dir") {
            args.push("--no-pin".into());
        }
        if !args.iter().any(|a| a == "--status-file") {
            args.push("--status-file".into());
            args.push(dir.path("status.json").display().to_string());
        }
        // Each test's own socket: the host's default is not a test's to take.
        if !args.iter().any(|a| a == "--attribution-socket") {
            args.push("--attribution-socket".into());
            args.push(dir.path("attribution.sock").display().to_string());
        }
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                // The wrapper may start it elsewhere (nsenter -m resets the cwd).
                let bin = std::fs::canonicalize(&bin).unwrap_or(bin.clone());
                let mut c = Command::new(program);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = command
            .arg("run")
            .args(&args)
            .arg("--output")
            .arg(&output)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("daemon stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut startup = Vec::new();
        // Generous: guests run under TCG emulation.
        let deadline = Instant::now() + Duration::from_secs(180);
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
                    bail!(
                        "daemon did not become ready; it printed:\n{}",
                        startup.join("\n")
                    );
                }
            }
        }
        // A kernel with BPF LSM active that refuses one of the programs (the verifier)
        // is a bug of ours, not a missing feature: no test may skip over it.
        if let Some(line) = startup
            .iter()
            .find(|l| l.contains("the kernel lists bpf among its LSMs but refused the program"))
        {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the kernel refused a program of ours: {line}");
        }
        Ok(Self {
            child,
            output,
            startup,
            stderr_rest: rx,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` of the daemon: nothing runs its exit path.
    pub(crate) fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill().context("SIGKILL to the daemon")?;
        self.child.wait()?;
        Ok(())
    }

    /// Waits for a stderr line containing `needle`; returns it and the time it took.
    pub(crate) fn wait_for_line(
        &mut self,
        needle: &str,
        limit: Duration,
    ) -> anyhow::Result<(String, Duration)> {
        let start = Instant::now();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match self.stderr_rest.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok((line, start.elapsed())),
                Ok(_) => {}
                Err(_) => {
                    bail!("the daemon printed no line containing {needle:?} within {limit:?}")
                }
            }
        }
    }

    pub(crate) fn program_attached(&self, name: &str) -> bool {
        let prefix = format!("openclaw-guard: program {name} (");
        self.startup
            .iter()
            // "attached", or "attached, NOT pinned: why" (held by the daemon only).
            .any(|l| l.starts_with(&prefix) && l.contains("): attached"))
    }

    /// Why the named program is not attached, if it is not.
    pub(crate) fn program_unavailable(&self, name: &str) -> Option<String> {
        let prefix = format!("openclaw-guard: program {name} (");
        self.startup
            .iter()
            .find(|l| l.starts_with(&prefix) && l.contains("NOT attached"))
            .map(|l| l.split("NOT attached: ").nth(1).unwrap_or("").to_string())
    }

    /// Stops the daemon (SIGTERM) and returns every record it wrote (events and stats).
    pub(crate) fn stop(self) -> anyhow::Result<Vec<Value>> {
        self.stop_with_stats().map(|(events, _)| events)
    }

    /// As [`Self::stop`], with the final counters the daemon printed on stderr.
    pub(crate) fn stop_with_stats(mut self) -> anyhow::Result<(Vec<Value>, Value)> {
        // Let the last events cross the ring buffer before asking the daemon to stop.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        // Generous: a daemon stopping drains the ring buffer, outputs and record, and
        // guests run under TCG emulation.
        let code = wait_timeout(&mut self.child, Duration::from_secs(240))?;
        // Until the reader thread sees EOF on the daemon's stderr.
        let mut rest = Vec::new();
        while let Ok(line) = self.stderr_rest.recv_timeout(Duration::from_secs(10)) {
            rest.push(line);
        }
        let final_stats = rest
            .iter()
            .find_map(|l| l.strip_prefix("openclaw-guard: final-stats "))
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or(Value::Null);
        if code != 0 {
            bail!(
                "daemon exited with {code}; stderr:\n{}\n{}",
                self.startup.join("\n"),
                rest.join("\n")
            );
        }
        // The output rotates by size (`PATH.N` oldest ... `PATH.1`, then `PATH`).
        let mut text = String::new();
        let rotated = (1..=1000)
            .take_while(|n| rotated_path(&self.output, *n).exists())
            .count();
        for n in (1..=rotated).rev() {
            text += &std::fs::read_to_string(rotated_path(&self.output, n)).unwrap_or_default();
        }
        text += &std::fs::read_to_string(&self.output).unwrap_or_default();
        let events = text
            .lines()
            .map(|l| {
                serde_json::from_str(l).with_context(|| format!("daemon wrote invalid JSON: {l}"))
            })
            .collect::<anyhow::Result<Vec<Value>>>()?;
        Ok((events, final_stats))
    }
}

fn rotated_path(p: &Path, n: usize) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Drop for GuardProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` identical operations in two runs split by another one: each run is one full
/// event and then `repeat` counts, and every operation is accounted for.
pub(crate) fn ensure_folded(
    what: &str,
    n: u64,
    full: u64,
    folded: u64,
    events: &[Value],
) -> anyhow::Result<()> {
    println!("    {n} {what}: {full} full events, {folded} folded into repeat counts");
    ensure!(
        full + folded == n,
        "{full} full + {folded} folded != {n} {what}: {:?}",
        events
            .iter()
            .filter(|e| e["kind"] == "repeat")
            .collect::<Vec<_>>()
    );
    ensure!(
        (2..n / 10).contains(&full),
        "{full} full events for {n} identical {what}: folding did not happen (or the operation in between did not break the run)"
    );
    Ok(())
}

/// A reader in the gateway's tree that opens nothing but the files it is asked to read:
/// one bash process whose control and result fds stay open, so between two reads of a
/// file no other open by that thread ends its fold window.
pub(crate) struct WindowReader {
    ctl: Option<std::fs::File>,
    ctl_path: PathBuf,
    res: PathBuf,
}

impl WindowReader {
    /// Makes the control FIFO in `dir`; returns the reader and the gateway script line
    /// that starts it. Each result is `ok FIRST-LINE` or `denied`; `end CODE` follows
    /// when the reader stops (137: it was killed).
    pub(crate) fn new(dir: &Scratch) -> anyhow::Result<(Self, String)> {
        let ctl_path = dir.path("reader-ctl");
        let res = dir.path("reader-res");
        ensure!(
            Command::new("mkfifo").arg(&ctl_path).status()?.success(),
            "mkfifo {}",
            ctl_path.display()
        );
        let (c, r) = (ctl_path.display(), res.display());
        let script = format!(
            "( exec 3<> '{c}' 4> '{r}'; echo \"pid $BASHPID\" >&4; while read -r f <&3 && [ \"$f\" != stop ]; do \
             if read -r x < \"$f\"; then echo \"ok $x\" >&4; else echo denied >&4; fi; done ); \
             echo \"end $?\" >> '{r}'\n"
        );
        Ok((
            Self {
                ctl: None,
                ctl_path,
                res,
            },
            script,
        ))
    }

    /// Asks for one read of `path` (after the gateway was released). A killed reader
    /// breaks the pipe: that shows in [`WindowReader::results`].
    pub(crate) fn read(&mut self, path: &Path) -> anyhow::Result<()> {
        if self.ctl.is_none() {
            self.ctl = Some(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&self.ctl_path)?,
            );
        }
        if let Some(ctl) = &mut self.ctl {
            let _ = std::io::Write::write_all(ctl, format!("{}\n", path.display()).as_bytes());
        }
        Ok(())
    }

    /// The result lines, once there are `n` or the reader is gone and its `end` line
    /// written (up to 30 s). The `end` line comes from the reader's parent after the
    /// reader died: a dead reader alone is not the end (a 6.12 guest under load showed
    /// the race).
    pub(crate) fn results(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut dead_since: Option<Instant> = None;
        loop {
            let text = std::fs::read_to_string(&self.res).unwrap_or_default();
            let pid = text.lines().find_map(|l| l.strip_prefix("pid "));
            let alive = pid.is_none_or(|p| Path::new(&format!("/proc/{p}")).exists());
            let lines: Vec<String> = text
                .lines()
                .filter(|l| !l.starts_with("pid "))
                .map(str::to_owned)
                .collect();
            let ended = lines.iter().any(|l| l.starts_with("end "));
            if !alive {
                dead_since.get_or_insert_with(Instant::now);
            }
            let gone = dead_since.is_some_and(|t| ended || t.elapsed() > Duration::from_secs(5));
            if lines.len() >= n || gone || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ends the reader's loop (if it still runs).
    pub(crate) fn stop(mut self) {
        if let Some(mut ctl) = self.ctl.take() {
            let _ = std::io::Write::write_all(&mut ctl, b"stop\n");
        }
    }
}

/// A real DNS resolver for the egress tests: dnsmasq on 127.0.0.1:53 (of `netns`, or
/// of this machine: a test guest's own network), answering from a hosts file with a
/// TTL of 1 s; killed on drop.
pub(crate) struct Resolver {
    child: Child,
    pub(crate) hosts: PathBuf,
}

impl Resolver {
    /// `None` when dnsmasq is not installed (`cargo xtask` installs dnsmasq-base).
    pub(crate) fn start(
        dir: &Scratch,
        netns: Option<&NetNs>,
        hosts: &str,
    ) -> anyhow::Result<Option<Self>> {
        let Some(dnsmasq) = which("dnsmasq") else {
            return Ok(None);
        };
        let path = dir.path("dns-hosts");
        std::fs::write(&path, hosts)?;
        let program = dnsmasq.display().to_string();
        let mut cmd = match netns {
            Some(ns) => ns.command(&program),
            None => Command::new(&program),
        };
        let child = cmd
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=53",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--local-ttl=1",
                "--user=root",
                "--pid-file=",
            ])
            .arg(format!("--addn-hosts={}", path.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dnsmasq")?;
        let resolver = Self { child, hosts: path };
        // Answering once busybox's nslookup gets the first name of the file.
        let (first_addr, first_name) = hosts
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .split_first()
            .map(|(a, rest)| {
                (
                    a.to_string(),
                    rest.first().copied().unwrap_or("").to_string(),
                )
            })
            .unwrap_or_default();
        for _ in 0..50 {
            let mut q = match netns {
                Some(ns) => ns.command("busybox"),
                None => Command::new("busybox"),
            };
            let out = q.args(["nslookup", &first_name, "127.0.0.1"]).output()?;
            if String::from_utf8_lossy(&out.stdout).contains(&first_addr) {
                return Ok(Some(resolver));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("dnsmasq does not answer for {first_name}")
    }

    /// New answers: the hosts file rewritten and re-read (SIGHUP).
    pub(crate) fn answer(&self, hosts: &str) -> anyhow::Result<()> {
        std::fs::write(&self.hosts, hosts)?;
        // SAFETY: kill(2) on the child this value owns.
        if unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) } != 0 {
            bail!("SIGHUP to dnsmasq: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `resolv.conf` naming 127.0.0.1 for what runs in `netns` (`ip netns exec` shows
/// /etc/netns/NAME/resolv.conf as /etc/resolv.conf), or for this machine when it is
/// a test guest (which has none); removed on drop, so that later tests' guards do not
/// find 127.0.0.1 among the resolvers. `None` on a machine that is neither (its own
/// resolv.conf is not the test's to change).
pub(crate) struct ResolvConf(PathBuf);

impl ResolvConf {
    pub(crate) fn point_at_loopback(netns: Option<&NetNs>) -> anyhow::Result<Option<Self>> {
        let made = match netns {
            Some(ns) => {
                let dir = PathBuf::from(format!("/etc/netns/{}", ns.0));
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\n")?;
                dir
            }
            None if Path::new("/ocg").exists() && !Path::new("/etc/resolv.conf").exists() => {
                std::fs::write("/etc/resolv.conf", "nameserver 127.0.0.1\n")?;
                PathBuf::from("/etc/resolv.conf")
            }
            None => return Ok(None),
        };
        Ok(Some(Self(made)))
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Adds host addresses (IPv4 or IPv6) to loopback in `netns` or here.
pub(crate) fn add_loopback_addrs(netns: Option<&NetNs>, addrs: &[&str]) -> anyhow::Result<()> {
    for a in addrs {
        let mut c = match netns {
            Some(ns) => ns.command("ip"),
            None => Command::new("ip"),
        };
        let host = if a.contains(':') {
            c.arg("-6");
            format!("{a}/128")
        } else {
            format!("{a}/32")
        };
        let ok = c
            .args(["addr", "add", &host, "dev", "lo"])
            .status()
            .is_ok_and(|s| s.success());
        ensure!(ok, "ip addr add {host} dev lo failed");
    }
    Ok(())
}
