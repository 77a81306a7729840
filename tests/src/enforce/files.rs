//! Secrets unreadable by the agent's children, by every route (BPF LSM `file_open`,
//! `inode_link`, `inode_rename`), with the embedded default policy.

use std::os::unix::fs::MetadataExt as _;

use anyhow::{ensure, Context as _};
use serde_json::Value;

use crate::{
    support::{helper_bin, GuardProcess, Scratch, StandInGateway, WindowReader},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![
        secret_protected_after_leader_leaves,
        secret_protected_after_its_directory_moves,
        secret_blocked_on_every_route,
        replaced_secret_protected_at_once,
        child_cannot_replace_link_or_move_secret,
        monitor_mode_reports_without_blocking,
        secret_reusing_an_inode_number_is_no_repeat,
        refused_repeats_each_refused_and_counted,
    ]
}

/// Issue 15, route 1: a tool command leaves the tracked tree by changing its thread
/// group's leader (the leader exits alone, or a thread execs): the kernel's exit event
/// for the leader is not the process's end, and the secret stays protected.
fn secret_protected_after_leader_leaves() -> TestResult {
    let h = home("enforce-leader")?;
    let s = &h.state;
    let hb = helper_bin();
    let routes = [
        (
            "leader-exit",
            format!("'{hb}' helper leader-exit-read '{s}/.env'"),
        ),
        (
            "thread-exec",
            format!("'{hb}' helper thread-exec /bin/cat '{s}/.env'"),
        ),
    ];
    let (tier, failures, events) = match attempts(&h, "", &routes)? {
        Ok(r) => r,
        Err(skip) => return Ok(skip),
    };
    ensure!(
        failures.is_empty(),
        "reads after the leader left were not stopped (tier {tier:?}):\n{}",
        failures.join("\n")
    );
    ensure!(
        denials(&events).len() >= routes.len(),
        "denials recorded: {:?}",
        denials(&events)
    );
    Ok(Outcome::Passed)
}

/// What [`attempts`] saw: the tier, the routes it did not stop, the events.
type Attempted = (Tier, Vec<String>, Vec<Value>);

/// Runs each `(name, command)` as a child of a stand-in gateway (after `before`) under
/// the guard's default policy. `Err`: the skip outcome where no open sensor loads.
fn attempts(
    h: &Home,
    before: &str,
    routes: &[(&str, String)],
) -> anyhow::Result<Result<Attempted, Outcome>> {
    let d = h.dir.0.display().to_string();
    let mut script = before.to_owned();
    for (name, cmd) in routes {
        script.push_str(&format!(
            "{cmd} > '{d}/{name}.out' 2>&1; echo $? > '{d}/{name}.rc'\n"
        ));
    }
    let gateway = StandInGateway::start_env(&h.dir, "", &script, &[("HOME", h.home.clone())])?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &h.dir,
        &["--pid".into(), gw.to_string(), "--no-discover".into()],
    )?;
    let tier = match tier_or_skip(&guard) {
        Ok(t) => t,
        Err(skip) => return Ok(Err(skip)),
    };
    gateway.release_and_wait()?;
    let events = guard.stop()?;
    let mut failures = Vec::new();
    for (name, _) in routes {
        let rc = std::fs::read_to_string(format!("{d}/{name}.rc")).unwrap_or_default();
        let out = std::fs::read_to_string(format!("{d}/{name}.out")).unwrap_or_default();
        if !stopped(tier, rc.trim(), &out) {
            failures.push(format!("{name}: rc {} output {out:?}", rc.trim()));
        }
    }
    Ok(Ok((tier, failures, events)))
}

/// Issue 15, route 3: the tree renames the state directory; after the next re-plan
/// (every 5 s) its `.env`, found under no protected path any more, is still protected.
fn secret_protected_after_its_directory_moves() -> TestResult {
    let h = home("enforce-moved")?;
    let s = h.state.clone();
    let before = format!("mv '{s}' '{s}.moved'; sleep 7\n");
    let routes = [("moved", format!("cat '{s}.moved/.env'"))];
    let (tier, failures, events) = match attempts(&h, &before, &routes)? {
        Ok(r) => r,
        Err(skip) => return Ok(skip),
    };
    ensure!(
        failures.is_empty(),
        "the moved secret was read (tier {tier:?}): {}",
        failures.join("\n")
    );
    ensure!(!denials(&events).is_empty(), "no denial recorded");
    Ok(Outcome::Passed)
}

pub(super) const SECRET: &str = "ANTHROPIC_API_KEY=sk-ant-test-0123456789";

/// A home with an OpenClaw state dir holding `.env`, as the default policy expects.
pub(super) struct Home {
    pub(super) dir: Scratch,
    pub(super) home: String,
    pub(super) state: String,
}

pub(super) fn home(tag: &str) -> anyhow::Result<Home> {
    let dir = Scratch::new(tag)?;
    let home = dir.path("home");
    let state = home.join(".openclaw");
    std::fs::create_dir_all(&state)?;
    std::fs::write(state.join(".env"), format!("{SECRET}\n"))?;
    Ok(Home {
        home: home.display().to_string(),
        state: state.display().to_string(),
        dir,
    })
}

/// How the kernel stops a read on this kernel.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Tier {
    /// BPF LSM: the open fails with EPERM.
    Lsm,
    /// Open syscall tracepoints: the opener is SIGKILLed before it returns.
    Tracepoint,
}

pub(super) fn tier(guard: &GuardProcess) -> Result<Tier, String> {
    if guard.program_attached("file_open") {
        Ok(Tier::Lsm)
    } else if guard.program_attached("sys_exit_openat") {
        Ok(Tier::Tracepoint)
    } else {
        Err(guard.program_unavailable("file_open").unwrap_or_default())
    }
}

/// How this kernel stops a read of `.env`, or the skip when nothing can.
pub(super) fn tier_or_skip(guard: &GuardProcess) -> Result<Tier, Outcome> {
    tier(guard).map_err(|why| {
        Outcome::Skipped(format!(
            "neither BPF LSM nor open tracepoints load here ({why})"
        ))
    })
}

/// Whether a wrapped attempt (`bash -c CMD; echo $?`) was stopped the tier's way.
pub(super) fn stopped(tier: Tier, rc: &str, out: &str) -> bool {
    !out.contains("sk-ant-")
        && match tier {
            Tier::Lsm => rc != "0" && out.contains("Operation not permitted"),
            // 128 + SIGKILL
            Tier::Tracepoint => rc == "137",
        }
}

pub(super) fn denials(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| {
            e["kind"] == "file_open"
                && (e["decision"]["action"] == "deny" || e["decision"]["action"] == "kill")
        })
        .collect()
}

/// Plain path, symlink, hard link made before the guard, `..`, /proc/self/root,
/// openat2, O_PATH + /proc/self/fd, cp and io_uring: each gets EPERM and is recorded;
/// the gateway itself and an unrelated process still read the file.
fn secret_blocked_on_every_route() -> TestResult {
    let h = home("enforce-files")?;
    let d = h.dir.0.display().to_string();
    let s = &h.state;
    std::os::unix::fs::symlink(format!("{s}/.env"), format!("{d}/link"))?;
    std::fs::hard_link(format!("{s}/.env"), format!("{d}/hard"))?;
    let hb = helper_bin();
    let routes = [
        ("plain", format!("cat '{s}/.env'")),
        ("symlink", format!("cat '{d}/link'")),
        ("hardlink", format!("cat '{d}/hard'")),
        ("dotdot", format!("cat '{s}/../.openclaw/.env'")),
        ("procroot", format!("cat '/proc/self/root{s}/.env'")),
        ("openat2", format!("'{hb}' helper openat2 '{s}/.env'")),
        ("opath", format!("'{hb}' helper opath-reopen '{s}/.env'")),
        (
            "cp",
            format!("cp '{s}/.env' '{d}/copied' && cat '{d}/copied'"),
        ),
        ("uring", format!("'{hb}' helper uring-open '{s}/.env'")),
    ];
    let mut script = String::new();
    for (name, cmd) in &routes {
        script.push_str(&format!("bash --noprofile --norc -c \"{}\" > '{d}/{name}.out' 2>&1; echo $? > '{d}/{name}.rc'\n", cmd.replace('"', "\\\"")));
    }
    script.push_str(&format!(
        "read -r line < '{s}/.env'; echo \"$line\" > '{d}/gateway.out'\n"
    ));
    let gateway = StandInGateway::start_env(&h.dir, "", &script, &[("HOME", h.home.clone())])?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &h.dir,
        &["--pid".into(), gw.to_string(), "--no-discover".into()],
    )?;
    let tier = match tier_or_skip(&guard) {
        Ok(t) => t,
        Err(skip) => return Ok(skip),
    };
    gateway.release_and_wait()?;
    let outsider = std::fs::read_to_string(format!("{s}/.env"))
        .context("an unrelated process reading .env")?;
    let events = guard.stop()?;

    let mut failures = Vec::new();
    // io_uring opens are invisible to the tracepoint tier (the daemon says so at start).
    let covered: Vec<_> = routes
        .iter()
        .filter(|(n, _)| tier == Tier::Lsm || *n != "uring")
        .collect();
    for (name, _) in &covered {
        let rc = std::fs::read_to_string(format!("{d}/{name}.rc")).unwrap_or_default();
        let out = std::fs::read_to_string(format!("{d}/{name}.out")).unwrap_or_default();
        if !stopped(tier, rc.trim(), &out) {
            failures.push(format!("{name}: rc {} output {out:?}", rc.trim()));
        }
    }
    println!("    tier {tier:?}: {} routes stopped", covered.len());
    ensure!(
        failures.is_empty(),
        "routes that were not stopped with EPERM:\n{}",
        failures.join("\n")
    );
    let gw_read = std::fs::read_to_string(format!("{d}/gateway.out"))?;
    ensure!(
        gw_read.contains("sk-ant-test"),
        "the gateway itself could not read .env: {gw_read:?}"
    );
    ensure!(
        outsider.contains("sk-ant-test"),
        "an unrelated process could not read .env"
    );
    let denied = denials(&events);
    ensure!(
        denied.len() >= covered.len(),
        "{} denials recorded for {} routes: {denied:?}",
        denied.len(),
        covered.len()
    );
    ensure!(
        denied
            .iter()
            .all(|e| e["decision"]["rule"] == "secrets" && e["decision"]["errno"] == 1),
        "denials: {denied:?}"
    );
    Ok(Outcome::Passed)
}

/// `.env` is replaced again and again (a temp file renamed over it, as editors and
/// `openclaw` do; here by a process outside the tree) while a child keeps reading it:
/// the child never gets any version of the secret.
fn replaced_secret_protected_at_once() -> TestResult {
    let h = home("enforce-replace")?;
    let d = h.dir.0.display().to_string();
    let s = h.state.clone();
    let script = format!(
        "bash --noprofile --norc -c 'for i in $(seq 400); do cat \"{s}/.env\" 2>/dev/null; done' > '{d}/leaks'\n\
         bash --noprofile --norc -c 'cat \"{s}/.env\"' > '{d}/final.out' 2>&1; echo $? > '{d}/final.rc'\n"
    );
    let gateway = StandInGateway::start_env(&h.dir, "", &script, &[("HOME", h.home.clone())])?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &h.dir,
        &["--pid".into(), gw.to_string(), "--no-discover".into()],
    )?;
    if let Err(why) = tier(&guard) {
        return Ok(Outcome::Skipped(format!(
            "neither BPF LSM nor open tracepoints load here ({why})"
        )));
    }
    gateway.release()?;
    for i in 0..100 {
        let tmp = format!("{s}/.env.tmp");
        std::fs::write(&tmp, format!("ANTHROPIC_API_KEY=sk-ant-new-{i}\n"))?;
        std::fs::rename(&tmp, format!("{s}/.env"))?;
    }
    gateway.wait()?;
    let events = guard.stop()?;
    let leaks = std::fs::read_to_string(format!("{d}/leaks"))?;
    ensure!(
        leaks.is_empty(),
        "the child read the secret during replacement: {:?}",
        &leaks[..leaks.len().min(200)]
    );
    let current = std::fs::read_to_string(format!("{s}/.env"))?;
    ensure!(
        current.contains("sk-ant-new-99"),
        "the replacements did not happen: {current:?}"
    );
    let rc = std::fs::read_to_string(format!("{d}/final.rc"))?;
    ensure!(rc.trim() != "0", "a child read the final replacement");
    ensure!(
        denials(&events).len() >= 400,
        "expected a denial per read, got {}",
        denials(&events).len()
    );
    Ok(Outcome::Passed)
}

/// A child of the gateway may not rename a file over a secret's name, nor hard-link
/// or move the secret itself.
fn child_cannot_replace_link_or_move_secret() -> TestResult {
    let h = home("enforce-rename")?;
    let d = h.dir.0.display().to_string();
    let s = &h.state;
    let script = format!(
        "echo EVIL > '{d}/evil'\n\
         mv '{d}/evil' '{s}/.env' 2> '{d}/over.err'; echo $? > '{d}/over.rc'\n\
         ln '{s}/.env' '{d}/newlink' 2> '{d}/link.err'; echo $? > '{d}/link.rc'\n\
         mv '{s}/.env' '{d}/stolen' 2> '{d}/move.err'; echo $? > '{d}/move.rc'\n"
    );
    let gateway = StandInGateway::start_env(&h.dir, "", &script, &[("HOME", h.home.clone())])?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &h.dir,
        &["--pid".into(), gw.to_string(), "--no-discover".into()],
    )?;
    if let Some(why) = guard.program_unavailable("inode_rename") {
        return Ok(Outcome::Skipped(format!(
            "BPF LSM not loadable on this kernel ({why})"
        )));
    }
    gateway.release_and_wait()?;
    let events = guard.stop()?;
    for op in ["over", "link", "move"] {
        let rc = std::fs::read_to_string(format!("{d}/{op}.rc"))?;
        ensure!(rc.trim() != "0", "{op}: the child succeeded");
    }
    let current = std::fs::read_to_string(format!("{s}/.env"))?;
    ensure!(
        current.contains("sk-ant-test"),
        "the secret was replaced: {current:?}"
    );
    ensure!(
        !std::path::Path::new(&format!("{d}/newlink")).exists(),
        "a hard link was made"
    );
    let ops: Vec<_> = events
        .iter()
        .filter(|e| e["decision"]["rule"] == "secrets")
        .filter_map(|e| e["op"].as_str())
        .collect();
    ensure!(
        ops.contains(&"rename") && ops.contains(&"link"),
        "rename/link decisions not recorded: {ops:?}"
    );
    Ok(Outcome::Passed)
}

/// `--mode monitor`: the read succeeds and is reported as an alert by the same rule.
fn monitor_mode_reports_without_blocking() -> TestResult {
    let h = home("enforce-monitor")?;
    let d = h.dir.0.display().to_string();
    let s = &h.state;
    let script = format!("bash --noprofile --norc -c \"cat '{s}/.env'\" > '{d}/out' 2>&1\n");
    let gateway = StandInGateway::start_env(&h.dir, "", &script, &[("HOME", h.home.clone())])?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &h.dir,
        &[
            "--pid".into(),
            gw.to_string(),
            "--no-discover".into(),
            "--mode".into(),
            "monitor".into(),
        ],
    )?;
    if let Err(why) = tier(&guard) {
        return Ok(Outcome::Skipped(format!(
            "neither BPF LSM nor open tracepoints load here ({why})"
        )));
    }
    gateway.release_and_wait()?;
    let events = guard.stop()?;
    let out = std::fs::read_to_string(format!("{d}/out"))?;
    ensure!(
        out.contains("sk-ant-test"),
        "monitor mode blocked the read: {out:?}"
    );
    let alert = events
        .iter()
        .find(|e| e["kind"] == "file_open" && e["decision"]["rule"] == "secrets")
        .with_context(|| format!("no decision recorded in monitor mode: {events:?}"))?;
    ensure!(
        alert["decision"]["action"] == "alert" && alert["ret"] == 0,
        "monitor decision: {alert}"
    );
    Ok(Outcome::Passed)
}

/// Issue 18 (floods): one thread opening the secret 3000 times. With BPF LSM every
/// open is refused, yet only the first refusal travels in full: the repeats, each
/// checked and refused again, are counted into `repeat` events carrying the decision,
/// and full + counted is exactly 3000 (none lost, none invented). The tracepoint tier
/// kills at the first read, so it runs the same loop in monitor mode: 3000 reported
/// reads, folded the same way.
fn refused_repeats_each_refused_and_counted() -> TestResult {
    const N: u64 = 3000;
    let h = home("enforce-refused-repeats")?;
    let d = h.dir.0.display().to_string();
    let s = &h.state;
    let hb = helper_bin();
    let script = format!("'{hb}' helper open-tally {N} '{s}/.env' > '{d}/out' 2>&1\n");
    let gateway = StandInGateway::start_env(&h.dir, "", &script, &[("HOME", h.home.clone())])?;
    let gw = gateway.pid();
    let mut args = vec!["--pid".into(), gw.to_string(), "--no-discover".into()];
    // Which tier loads is known once a daemon ran: probe with a first one.
    let probe = GuardProcess::start(&h.dir, &args)?;
    let t = tier(&probe);
    drop(probe);
    let t = match t {
        Ok(t) => t,
        Err(why) => {
            return Ok(Outcome::Skipped(format!(
                "neither BPF LSM nor open tracepoints load here ({why})"
            )))
        }
    };
    if t == Tier::Tracepoint {
        args.extend(["--mode".into(), "monitor".into()]);
    }
    let guard = GuardProcess::start(&h.dir, &args)?;
    gateway.release_and_wait()?;
    let events = guard.stop()?;
    let out = std::fs::read_to_string(format!("{d}/out"))?;
    let want = match t {
        Tier::Lsm => format!("opened 0 denied {N} other 0"),
        Tier::Tracepoint => format!("opened {N} denied 0 other 0"),
    };
    ensure!(
        out.trim() == want,
        "{t:?} tier: the loop saw {out:?}, not {want:?}"
    );
    let action = match t {
        Tier::Lsm => "deny",
        Tier::Tracepoint => "alert",
    };
    let ino = std::fs::metadata(format!("{s}/.env"))?.ino();
    let decided = |e: &&Value| {
        e["ino"] == ino && e["decision"]["rule"] == "secrets" && e["decision"]["action"] == action
    };
    let full = events
        .iter()
        .filter(|e| e["kind"] == "file_open")
        .filter(decided)
        .count() as u64;
    let repeats: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "repeat")
        .filter(decided)
        .collect();
    let counted: u64 = repeats.iter().filter_map(|e| e["count"].as_u64()).sum();
    println!(
        "    {t:?} tier: {N} {action} decisions: {full} full events, {counted} counted in {} repeat events",
        repeats.len()
    );
    ensure!(
        full + counted == N,
        "{full} full + {counted} counted != {N}: {repeats:?}"
    );
    ensure!(
        (1..N / 10).contains(&full),
        "{full} full decision events for {N} identical refusals: they were not folded"
    );
    Ok(Outcome::Passed)
}

/// Where a freed inode number goes to the next file created: the test directory's own
/// filesystem (ext4 on most hosts), or the ext4 disk guest-init mounts in the VMs.
fn inode_reusing_dir(tag: &str) -> anyhow::Result<Option<Scratch>> {
    let reuses = |dir: &Scratch| -> anyhow::Result<bool> {
        let (a, b) = (dir.path("probe-a"), dir.path("probe-b"));
        std::fs::write(&a, "a")?;
        let ino = std::fs::metadata(&a)?.ino();
        std::fs::remove_file(&a)?;
        std::fs::write(&b, "b")?;
        let reused = std::fs::metadata(&b)?.ino() == ino;
        std::fs::remove_file(&b)?;
        Ok(reused)
    };
    let here = Scratch::new(tag)?;
    if reuses(&here)? {
        return Ok(Some(here));
    }
    if let Some(base) = std::env::var_os("OCG_INODE_REUSE_DIR") {
        let there = Scratch::new_in(std::path::Path::new(&base), tag)?;
        if reuses(&there)? {
            return Ok(Some(there));
        }
    }
    Ok(None)
}

/// A reopen inside a thread's fold window skips the checks, so the window must hold
/// for that file only. Here the thread reads a harmless file twice (a window), the
/// file is deleted and the secret rewritten, and the new secret gets the freed inode
/// number (journaled ext4 hands it out again at once). Its read is still stopped.
fn secret_reusing_an_inode_number_is_no_repeat() -> TestResult {
    let Some(dir) = inode_reusing_dir("files-ino-reuse")? else {
        return Ok(Outcome::Skipped(
            "no filesystem here reuses inode numbers (tmpfs never does; the VM runs give one)"
                .into(),
        ));
    };
    let home = dir.path("home");
    let state = home.join(".openclaw");
    std::fs::create_dir_all(&state)?;
    let env = state.join(".env");
    std::fs::write(&env, format!("{SECRET}\n"))?;
    let notes = state.join("notes.txt");
    std::fs::write(&notes, "harmless\n")?;
    let policy = dir.path("policy.toml");
    std::fs::write(
        &policy,
        super::reload::policy_for("block", "~/.openclaw/.env"),
    )?;
    let (mut reader, script) = WindowReader::new(&dir)?;
    let gateway =
        StandInGateway::start_env(&dir, "", &script, &[("HOME", home.display().to_string())])?;
    // A long window, so that only the file's identity can end it.
    let guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gateway.pid().to_string(),
            "--no-discover".into(),
            "--policy".into(),
            policy.display().to_string(),
            "--fold-ms".into(),
            "600000".into(),
        ],
    )?;
    let tier = match tier_or_skip(&guard) {
        Ok(t) => t,
        Err(skip) => return Ok(skip),
    };
    gateway.release()?;
    reader.read(&notes)?;
    reader.read(&notes)?;
    let before = reader.results(2);
    ensure!(
        before == ["ok harmless", "ok harmless"],
        "reads of the harmless file: {before:?}"
    );
    // The owner rewrites the secret (write, then rename over) just after the harmless
    // file is gone: the new secret takes the harmless file's inode number.
    let freed = std::fs::metadata(&notes)?.ino();
    std::fs::remove_file(&notes)?;
    let tmp = state.join(".env.new");
    std::fs::write(&tmp, format!("{SECRET}\n"))?;
    let reused = std::fs::metadata(&tmp)?.ino();
    std::fs::rename(&tmp, &env)?;
    reader.read(&env)?;
    let after = reader.results(3);
    reader.stop();
    gateway.wait()?;
    let events = guard.stop()?;
    if reused != freed {
        return Ok(Outcome::Skipped(format!(
            "the new secret got inode {reused}, not the freed {freed}: nothing to test"
        )));
    }
    println!("    {tier:?} tier: inode {freed} reused by the secret; reads: {after:?}");
    // The harmless file's second read was folded: the window the secret's read fell in.
    ensure!(
        events
            .iter()
            .any(|e| e["kind"] == "repeat" && e["of"] == "file_open" && e["ino"] == freed),
        "the harmless file's reads were not folded: no window to test"
    );
    ensure!(
        !after.iter().any(|l| l.contains("sk-ant-")),
        "the secret was read inside the harmless file's fold window (inode {freed} reused): {after:?}"
    );
    let expected = match tier {
        Tier::Lsm => "denied",
        Tier::Tracepoint => "end 137",
    };
    ensure!(
        after.get(2).map(String::as_str) == Some(expected),
        "the read of the secret ended {:?}, expected {expected:?}",
        after.get(2)
    );
    ensure!(
        events
            .iter()
            .any(|e| e["kind"] == "file_open" && e["decision"]["rule"] == "secrets"),
        "no decision on the secret's read"
    );
    Ok(Outcome::Passed)
}
