//! The `env` rule (openclaw-guard/src/secret_env.rs, openclaw-guard-ebpf/src/env.rs):
//! the gateway's secret variables reach its children blanked, the gateway keeps them,
//! and its tree cannot read them out of the gateway (issue 15, route 2).

use anyhow::ensure;

use super::files::{home, tier, Tier, SECRET};
use crate::{
    support::{GuardProcess, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "enforce::env::secret_values_blanked_in_children",
            run: secret_values_blanked_in_children,
        },
        Test {
            name: "enforce::env::gateway_environment_and_memory_closed",
            run: gateway_environment_and_memory_closed,
        },
    ]
}

/// The stand-in gateway has `.env`'s variable in its environment, as the real one has
/// after loading it; `env`, `printenv`, /proc/self/environ and a copy under another
/// name in its children show no value; the gateway itself still has it.
fn secret_values_blanked_in_children() -> TestResult {
    let h = home("enforce-env")?;
    let d = h.dir.0.display().to_string();
    let (name, value) = SECRET.split_once('=').unwrap_or_default();
    let script = format!(
        "env > '{d}/env.out'\n\
         bash -c 'printenv {name}; echo end' > '{d}/printenv.out'\n\
         tr '\\0' '\\n' < /proc/self/environ > '{d}/self.out'\n\
         COPIED=\"x${name}\" python3 -c 'import os; print(repr(os.environ.get(\"COPIED\")))' > '{d}/copied.out'\n\
         ( exec /usr/bin/env ) > '{d}/subshell.out'\n\
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
    ensure!(
        read("printenv.out") == "\nend\n",
        "printenv: {:?}",
        read("printenv.out")
    );
    ensure!(
        read("copied.out").trim() == "''",
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
    // $$ is the stand-in gateway's pid, as its children see it.
    let python = format!(
        r#"
import ctypes, os, sys
gw = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
out = []
# Where the gateway's environment is, from its stat (readable: no ptrace check).
f = open("/proc/%d/stat" % gw).read().rsplit(")", 1)[1].split()
start, end = int(f[47]), int(f[48])
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(end - start)
local = iovec(ctypes.cast(buf, ctypes.c_void_p), end - start)
remote = iovec(start, end - start)
n = libc.process_vm_readv(gw, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
out.append("vm_readv:%s:%s" % ("ok" if n > 0 else "err", ctypes.get_errno() if n < 0 else ""))
out.append("vm_data:" + ("LEAK" if b"{value}" in buf.raw else "none"))
PTRACE_ATTACH = 16
r = libc.ptrace(PTRACE_ATTACH, gw, 0, 0)
out.append("ptrace:%s:%s" % ("ok" if r == 0 else "err", ctypes.get_errno() if r != 0 else ""))
if r == 0:
    os.waitpid(gw, 0)
    libc.ptrace(17, gw, 0, 0)
open("{d}/py.out", "w").write("\n".join(out) + "\n")
"#
    );
    std::fs::write(h.dir.path("peek.py"), python)?;
    let script = format!(
        "bash -c 'cat /proc/$PPID/environ' > '{d}/environ.out' 2>&1; echo $? > '{d}/environ.rc'\n\
         bash -c 'cat /proc/$PPID/task/$PPID/environ' > '{d}/task.out' 2>&1; echo $? > '{d}/task.rc'\n\
         python3 -c 'import sys; f=open(\"/proc/%s/mem\" % sys.argv[1], \"rb\"); print(\"opened\")' $$ > '{d}/mem.out' 2>&1; echo $? > '{d}/mem.rc'\n\
         python3 '{d}/peek.py' $$ > '{d}/py.err' 2>&1; echo $? > '{d}/py.rc'\n\
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
        let py = read("py.out");
        for want in ["vm_readv:err:1", "vm_data:none", "ptrace:err:1"] {
            if !py.lines().any(|l| l == want) {
                failures.push(format!(
                    "python: {want} expected, got {py:?} ({})",
                    read("py.err")
                ));
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
    ensure!(refused >= 3, "{refused} secret-env decisions recorded");
    if tier == Tier::Tracepoint {
        println!("    /proc opens killed; process_vm_readv and ptrace are refused only with BPF LSM (the guests check them)");
    }
    Ok(Outcome::Passed)
}
