//! The `env` rule (openclaw-guard/src/secret_env.rs, openclaw-guard-ebpf/src/env.rs):
//! the gateway's secret variables reach its children blanked, the gateway keeps them,
//! and its tree cannot read them out of the gateway (issue 15, route 2).

use std::time::{Duration, Instant};

use anyhow::ensure;

use super::files::{home, tier, Tier, SECRET};
use crate::{
    support::{GuardProcess, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![
        secret_values_blanked_in_children,
        gateway_environment_and_memory_closed,
        held_process_cannot_be_continued_early,
    ]
}

/// The stand-in gateway has `.env`'s variable in its environment, as the real one has
/// after loading it; `env`, `printenv`, /proc/self/environ and a copy under another
/// name in its children show no value; the gateway itself still has it.
fn secret_values_blanked_in_children() -> TestResult {
    let h = home("enforce-env")?;
    let d = h.dir.0.display().to_string();
    let (name, value) = SECRET.split_once('=').unwrap_or_default();
    let helper = crate::support::helper_bin();
    let script = format!(
        "env > '{d}/env.out'\n\
         bash -c 'printenv {name}; echo end' > '{d}/printenv.out'\n\
         tr '\\0' '\\n' < /proc/self/environ > '{d}/self.out'\n\
         COPIED=\"x${name}\" '{helper}' helper env-get COPIED > '{d}/copied.out'\n\
         ( exec env ) > '{d}/subshell.out'\n\
         echo \"gateway:${name}\" > '{d}/gateway.out'\n"
    );
    let gateway = StandInGateway::start_env(
        &h.dir,
        "",
        &script,
        &[("HOME", h.home.clone()), (name, value.to_owned())],
    )?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &h.dir,
        &["--pid".into(), gw.to_string(), "--no-discover".into()],
    )?;
    gateway.release_and_wait()?;
    let events = guard.stop()?;
    let read = |f: &str| std::fs::read_to_string(format!("{d}/{f}")).unwrap_or_default();
    for f in [
        "env.out",
        "printenv.out",
        "self.out",
        "copied.out",
        "subshell.out",
    ] {
        let out = read(f);
        ensure!(
            !out.contains(value),
            "{f}: the value reached a child: {out:?}"
        );
    }
    ensure!(
        read("env.out").lines().any(|l| l == format!("{name}=")),
        "env shows no blanked {name}: {:?}",
        read("env.out")
    );
    // GNU printenv prints the empty value; others print nothing for it.
    ensure!(
        matches!(read("printenv.out").as_str(), "\nend\n" | "end\n"),
        "printenv: {:?}",
        read("printenv.out")
    );
    ensure!(
        read("copied.out").trim().is_empty(),
        "a copy of the value under another name: {:?}",
        read("copied.out")
    );
    ensure!(
        read("gateway.out").trim() == format!("gateway:{value}"),
        "the gateway lost its own variable: {:?}",
        read("gateway.out")
    );
    let blanked: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "exec" && e["env_held"] == true)
        .filter(|e| {
            e["env_blanked"]
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n == name))
        })
        .collect();
    ensure!(
        blanked.len() >= 5,
        "{} exec events say {name} was blanked (5 children)",
        blanked.len()
    );
    Ok(Outcome::Passed)
}

/// A child of the gateway reads the gateway's environment and memory through /proc
/// (by pid and by a thread's id), and with process_vm_readv and ptrace: refused with
/// BPF LSM; on the tracepoint tier the /proc opens kill the reader.
fn gateway_environment_and_memory_closed() -> TestResult {
    let h = home("enforce-env-peek")?;
    let d = h.dir.0.display().to_string();
    let (name, value) = SECRET.split_once('=').unwrap_or_default();
    // $$ is the stand-in gateway's pid, as its children see it. ptrace and
    // process_vm_readv only where BPF LSM refuses them (`lsm` written by the test
    // before release): elsewhere the attach would succeed and stop the stand-in.
    let helper = crate::support::helper_bin();
    let script = format!(
        "bash -c 'cat /proc/$PPID/environ' > '{d}/environ.out' 2>&1; echo $? > '{d}/environ.rc'\n\
         bash -c 'cat /proc/$PPID/task/$PPID/environ' > '{d}/task.out' 2>&1; echo $? > '{d}/task.rc'\n\
         '{helper}' helper open-only /proc/$$/mem > '{d}/mem.out' 2>&1; echo $? > '{d}/mem.rc'\n\
         if [ -e '{d}/lsm' ]; then\n\
           '{helper}' helper vm-readv $$ '{value}' > '{d}/vm.out' 2>&1; echo $? > '{d}/vm.rc'\n\
           '{helper}' helper ptrace-attach $$ > '{d}/ptrace.out' 2>&1; echo $? > '{d}/ptrace.rc'\n\
         fi\n\
         n=0; while IFS= read -r -d '' l; do case \"$l\" in {name}=*) n=$((n+1));; esac; done < /proc/$$/environ; echo $n > '{d}/own.out'\n"
    );
    let gateway = StandInGateway::start_env(
        &h.dir,
        "",
        &script,
        &[("HOME", h.home.clone()), (name, value.to_owned())],
    )?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &h.dir,
        &["--pid".into(), gw.to_string(), "--no-discover".into()],
    )?;
    let tier = match tier(&guard) {
        Ok(t) => t,
        Err(why) => return Ok(Outcome::Skipped(why)),
    };
    if tier == Tier::Lsm {
        std::fs::write(h.dir.path("lsm"), "")?;
    }
    gateway.release_and_wait()?;
    let events = guard.stop()?;
    let read = |f: &str| {
        std::fs::read_to_string(format!("{d}/{f}"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let mut failures = Vec::new();
    for f in ["environ", "task", "mem"] {
        let (out, rc) = (read(&format!("{f}.out")), read(&format!("{f}.rc")));
        if out.contains(value) || out.contains("opened") || rc == "0" {
            failures.push(format!("/proc/<gateway>/{f}: rc {rc}, {out:?}"));
        }
        if tier == Tier::Tracepoint && rc != "137" {
            failures.push(format!("/proc/<gateway>/{f}: rc {rc}, expected a kill"));
        }
    }
    if tier == Tier::Lsm {
        for f in ["vm", "ptrace"] {
            let (out, rc) = (read(&format!("{f}.out")), read(&format!("{f}.rc")));
            if rc != "1" || out.contains("LEAK") {
                failures.push(format!("{f}: rc {rc} (EPERM expected), {out:?}"));
            }
        }
    }
    // The gateway reads its own.
    if read("own.out") != "1" {
        failures.push(format!("the gateway's own environ: {:?}", read("own.out")));
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    let refused = events
        .iter()
        .filter(|e| e["decision"]["rule"] == "secret-env")
        .count();
    let want = if tier == Tier::Lsm { 5 } else { 3 };
    ensure!(refused >= want, "{refused} secret-env decisions recorded");
    if tier == Tier::Tracepoint {
        println!("    /proc opens killed; process_vm_readv and ptrace are refused only with BPF LSM (the guests check them)");
    }
    Ok(Outcome::Passed)
}

/// A sibling on the agent's side sends SIGCONT to a process held at exec, to run it
/// before its secrets are blanked. The daemon is frozen meanwhile so that the hold
/// lasts: with BPF LSM the signal is refused and the process still runs blanked.
fn held_process_cannot_be_continued_early() -> TestResult {
    let h = home("enforce-env-sigcont")?;
    let d = h.dir.0.display().to_string();
    let (name, value) = SECRET.split_once('=').unwrap_or_default();
    // Builtins only in the gateway while the daemon is frozen: its children wait.
    let script = format!(
        "bash -c 'echo $$ > {d}/sib.pid; while [ ! -e {d}/go2 ]; do sleep 0.05; done; kill -CONT $(cat {d}/held.pid); echo $? > {d}/sig.rc' 2>/dev/null &\n\
         while [ ! -e '{d}/frozen' ]; do :; done\n\
         bash -c 'printenv {name} > {d}/held.out' &\n\
         echo $! > '{d}/held.pid'\n\
         : > '{d}/go2'\n\
         wait\n"
    );
    let gateway = StandInGateway::start_env(
        &h.dir,
        "",
        &script,
        &[("HOME", h.home.clone()), (name, value.to_owned())],
    )?;
    let gw = gateway.pid();
    let guard = GuardProcess::start(
        &h.dir,
        &["--pid".into(), gw.to_string(), "--no-discover".into()],
    )?;
    let lsm = guard.program_attached("task_kill");
    gateway.release()?;
    let wait_for = |f: &str| -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let p = h.dir.path(f);
        while Instant::now() < deadline {
            if let Ok(s) = std::fs::read_to_string(&p) {
                if !s.is_empty() {
                    return Ok(s.trim().to_owned());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("{f} never written")
    };
    wait_for("sib.pid")?;
    // SAFETY: kill(2) on the daemon the test started.
    unsafe { libc::kill(guard.pid() as i32, libc::SIGSTOP) };
    std::fs::write(h.dir.path("frozen"), "")?;
    let sig = wait_for("sig.rc");
    // Whatever happened, the daemon runs again and resumes what it holds.
    // SAFETY: as above.
    unsafe { libc::kill(guard.pid() as i32, libc::SIGCONT) };
    let sig = sig?;
    gateway.wait()?;
    let events = guard.stop()?;
    let held = std::fs::read_to_string(h.dir.path("held.out")).unwrap_or_default();
    if !lsm {
        return Ok(Outcome::Skipped(format!(
            "without BPF LSM a held process can be continued early (kill -CONT returned {sig}, the process printed {} bytes); the guests refuse it",
            held.trim().len()
        )));
    }
    ensure!(sig != "0", "kill -CONT of the held process succeeded");
    ensure!(
        !held.contains(value),
        "the held process ran with the secret: {held:?}"
    );
    ensure!(
        events.iter().any(|e| e["kind"] == "tamper"
            && e["op"] == "signal-held"
            && e["decision"]["rule"] == "secret-env"),
        "no signal-held decision recorded"
    );
    Ok(Outcome::Passed)
}
