//! The default `delegation` rules (openclaw-guard-ebpf/src/unix.rs, the files and
//! egress sensors): the tree cannot get a service outside it to act (issue 15,
//! route 4). The services here are the test's own listeners at the default policy's
//! paths, outside the tree; the agent's own server (inside the tree) stays reachable.

use std::{
    io::Read as _,
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::ensure;

use super::files::{home, tier, Tier};
use crate::{
    support::{GuardProcess, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![outside_services_refused,]
}

/// A directory created for the test (removed after, with what is in it, only if the
/// test created it).
struct Made(Option<PathBuf>);

impl Made {
    fn dir(path: &str) -> anyhow::Result<Self> {
        let p = Path::new(path);
        if p.exists() {
            return Ok(Self(None));
        }
        std::fs::create_dir_all(p)?;
        Ok(Self(Some(p.to_owned())))
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Bytes a listener outside the tree received.
type Received = Arc<Mutex<Vec<u8>>>;

fn serve_unix(path: &Path, stop: Instant) -> anyhow::Result<Received> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    let got: Received = Arc::default();
    let out = got.clone();
    std::thread::spawn(move || {
        while Instant::now() < stop {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = Vec::new();
                    let _ = s.read_to_end(&mut buf);
                    if let Ok(mut g) = out.lock() {
                        g.extend(buf);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Ok(got)
}

fn serve_tcp(port: u16, stop: Instant) -> anyhow::Result<Received> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    let got: Received = Arc::default();
    let out = got.clone();
    std::thread::spawn(move || {
        while Instant::now() < stop {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = Vec::new();
                    let _ = s.read_to_end(&mut buf);
                    if let Ok(mut g) = out.lock() {
                        g.extend(buf);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Ok(got)
}

/// A child of the gateway tries each delegation channel of the default policy; a
/// server the tree started itself stays reachable.
fn outside_services_refused() -> TestResult {
    let h = home("enforce-delegation")?;
    let d = h.dir.0.display().to_string();
    let tag = std::process::id();
    let outside = format!("/tmp/tmux-{tag}0");
    let own = format!("/tmp/tmux-{tag}1");
    // Dropped in reverse: the spool's subdirectory before the spool.
    let _spool = Made::dir("/var/spool/cron")?;
    let _crontabs = Made::dir("/var/spool/cron/crontabs")?;
    let _dirs = [Made::dir(&outside)?, Made::dir(&own)?];
    let stop = Instant::now() + Duration::from_secs(60);
    let outside_sock = format!("{outside}/default");
    let got_unix = serve_unix(Path::new(&outside_sock), stop)?;
    // ssh's port: free on a test machine; skipped when something already listens.
    let got_tcp = match serve_tcp(22, stop) {
        Ok(g) => Some(g),
        Err(e) => {
            println!("    port 22 busy ({e}): the loopback ssh case is not run");
            None
        }
    };
    let helper = format!("'{}' helper", crate::support::helper_bin());
    let crontab = "/var/spool/cron/crontabs/ocg-test";
    let own_sock = format!("{own}/default");
    // Each attempt's exit status is its errno (1: EPERM) or 137 (killed).
    let script = format!(
        "{helper} unix-connect '{outside_sock}' > '{d}/unix.out' 2>&1; echo $? > '{d}/unix.rc'\n\
         {helper} connect 127.0.0.1 22 > '{d}/tcp.out' 2>&1; echo $? > '{d}/tcp.rc'\n\
         bash -c \"echo '* * * * * root cat /root/.openclaw/.env' > {crontab}\" > '{d}/cron.out' 2>&1; echo $? > '{d}/cron.rc'\n\
         {helper} unix-serve '{own_sock}' '{d}/ready' > '{d}/serve.out' 2>&1 &\n\
         for i in $(seq 100); do [ -e '{d}/ready' ] && break; sleep 0.05; done\n\
         {helper} unix-connect '{own_sock}' > '{d}/own.out' 2>&1; echo $? > '{d}/own.rc'\n\
         wait\n"
    );
    let gateway = StandInGateway::start_env(&h.dir, "", &script, &[("HOME", h.home.clone())])?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &h.dir,
        &["--pid".into(), gw.to_string(), "--no-discover".into()],
    )?;
    let tier = match tier(&guard) {
        Ok(t) => t,
        Err(why) => return Ok(Outcome::Skipped(why)),
    };
    gateway.release_and_wait()?;
    let events = guard.stop()?;
    let read = |f: &str| {
        std::fs::read_to_string(format!("{d}/{f}"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let refused = |what: &str| -> bool {
        let rc = read(&format!("{what}.rc"));
        match tier {
            Tier::Lsm => rc == "1",
            // Killed at the syscall's exit: nothing written.
            Tier::Tracepoint => rc == "137",
        }
    };
    let mut failures = Vec::new();
    if !refused("unix") {
        failures.push(format!(
            "unix socket outside the tree: {:?}",
            read("unix.out")
        ));
    }
    if got_unix.lock().map(|g| !g.is_empty()).unwrap_or(true) {
        failures.push("the outside unix server received the order".into());
    }
    if let Some(got) = &got_tcp {
        // An egress refusal is EPERM on both tiers (LSM or cgroup connect4).
        if read("tcp.rc") != "1" {
            failures.push(format!("ssh on loopback: {:?}", read("tcp.out")));
        }
        if got.lock().map(|g| !g.is_empty()).unwrap_or(true) {
            failures.push("the loopback ssh port received the order".into());
        }
    }
    // bash reports a refused redirection with status 1; a killed bash is 137 (its
    // open created the file, empty: the kill comes at the open's exit).
    let written = std::fs::metadata(crontab).is_ok_and(|m| m.len() > 0);
    if !(refused("cron") || read("cron.rc") == "1") || written {
        failures.push(format!("crontab spool: {:?}", read("cron.out")));
    }
    let _ = std::fs::remove_file(crontab);
    if read("own.out") != "ok" || read("serve.out") != "ok" {
        failures.push(format!(
            "the tree's own server was not reachable: client {:?}, server {:?}",
            read("own.out"),
            read("serve.out")
        ));
    }
    ensure!(
        failures.is_empty(),
        "{:?} tier:\n{}",
        tier,
        failures.join("\n")
    );
    let decisions: Vec<String> = events
        .iter()
        .filter(|e| {
            e["decision"]["rule"]
                .as_str()
                .is_some_and(|r| r.starts_with("delegation"))
        })
        .map(|e| format!("{} {}", e["kind"], e["path"]))
        .collect();
    let want = if got_tcp.is_some() { 3 } else { 2 };
    ensure!(
        decisions.len() >= want,
        "{} delegation decisions recorded: {decisions:?}",
        decisions.len()
    );
    ensure!(
        events
            .iter()
            .any(|e| e["decision"]["rule"] == "delegation" && e["path"] == outside_sock.as_str()),
        "the unix refusal does not name the socket: {decisions:?}"
    );
    Ok(Outcome::Passed)
}
