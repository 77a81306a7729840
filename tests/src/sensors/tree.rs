//! Tests of the in-kernel tree tracking (`sched_process_fork/exit`) and enrichment.

use std::net::TcpListener;

use anyhow::{ensure, Context as _};
use serde_json::Value;

use crate::{
    support::{helper_bin, lineage_pids, GuardProcess, Scratch, StandInGateway},
    Outcome, Test, TestResult,
};

pub(super) fn tests() -> Vec<Test> {
    crate::named_tests![
        exec_tool_command_stream_with_lineage,
        prestarted_doubleforked_and_orphaned_children_tracked,
    ]
}

fn execs<'a>(events: &'a [Value], filename_suffix: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["kind"] == "exec"
                && e["filename"]
                    .as_str()
                    .is_some_and(|f| f.ends_with(filename_suffix))
        })
        .collect()
}

/// The exec tool's shape: the gateway runs `$SHELL --noprofile --norc -c "cat FILE;
/// connect; sh -c 'sleep 0'"`. Every exec arrives with its lineage from the gateway;
/// the same commands run outside the tree produce no event.
fn exec_tool_command_stream_with_lineage() -> TestResult {
    let dir = Scratch::new("tree-stream")?;
    let file = dir.path("notes.txt");
    std::fs::write(&file, "hello\n")?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    // A non-shell program run by `sh -c`: busybox sh runs `sleep` in-process (no exec),
    // so the test's own binary stands in for it.
    let cmd = format!(
        "cat '{}' >/dev/null; exec 3<>/dev/tcp/127.0.0.1/{port}; sh -c '{} helper noop; true'",
        file.display(),
        helper_bin()
    );
    let script = format!("\"$SHELL\" --noprofile --norc -c \"{cmd}\"\n");
    let gateway = StandInGateway::start(&dir, &script)?;
    let gw = u64::from(gateway.pid());
    let guard = GuardProcess::start(&dir, &["--pid".into(), gw.to_string()])?;
    // The same work outside the tree.
    let outsider = std::process::Command::new("bash")
        .args(["--noprofile", "--norc", "-c", &cmd])
        .spawn()
        .context("running the commands outside the tree")?;
    let outsider_pid = u64::from(outsider.id());
    let _ = outsider.wait_with_output();
    let code = gateway.release_and_wait()?;
    ensure!(code == 0, "stand-in gateway exited with {code}");
    let events = guard.stop()?;

    let shell = execs(&events, "bash")
        .into_iter()
        .find(|e| {
            e["argv"]
                .as_array()
                .is_some_and(|a| a.len() == 5 && a[3] == "-c")
        })
        .with_context(|| format!("no exec of $SHELL -c among {events:?}"))?;
    ensure!(
        shell["argv"][1] == "--noprofile" && shell["argv"][2] == "--norc",
        "argv: {}",
        shell["argv"]
    );
    ensure!(
        shell["argv"][4] == cmd.as_str(),
        "argv[4]: {}",
        shell["argv"][4]
    );
    ensure!(
        shell["depth"] == 1 && shell["ppid"] == gw && shell["root"] == gw,
        "shell exec: {shell}"
    );
    let shell_pid = shell["tgid"].as_u64().context("shell tgid")?;
    ensure!(
        lineage_pids(shell) == vec![gw, shell_pid],
        "shell lineage: {}",
        shell["lineage"]
    );
    ensure!(
        shell["lineage"][0]["comm"].is_string(),
        "lineage names: {}",
        shell["lineage"]
    );

    let cat = execs(&events, "/cat")
        .into_iter()
        .next()
        .with_context(|| format!("no exec of cat among {events:?}"))?;
    ensure!(cat["depth"] == 2, "cat depth: {cat}");
    let cat_pid = cat["tgid"].as_u64().context("cat tgid")?;
    ensure!(
        lineage_pids(cat) == vec![gw, shell_pid, cat_pid],
        "cat lineage: {}",
        cat["lineage"]
    );
    ensure!(
        !execs(&events, "/sh").is_empty(),
        "no exec of sh: {events:?}"
    );
    let noop = execs(&events, "openclaw-guard-integration")
        .into_iter()
        .find(|e| e["argv"][2] == "noop")
        .with_context(|| format!("no exec of the helper under sh among {events:?}"))?;
    ensure!(
        noop["root"] == gw && noop["depth"].as_u64() >= Some(2),
        "helper under sh: {noop}"
    );
    let names: Vec<&str> = noop["lineage"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["comm"].as_str())
        .collect();
    ensure!(
        names.iter().rev().nth(1) == Some(&"sh"),
        "helper lineage does not pass through sh: {names:?}"
    );
    let exit = events
        .iter()
        .find(|e| e["kind"] == "exit" && e["tgid"] == cat_pid)
        .context("no exit event for cat")?;
    ensure!(exit["exit_code"] == 0, "cat exit: {exit}");
    ensure!(
        !events
            .iter()
            .any(|e| e["tgid"] == outsider_pid || e["ppid"] == outsider_pid),
        "the outsider produced events"
    );
    ensure!(
        events
            .iter()
            .filter(|e| e["kind"] != "stats" && e["kind"] != "host")
            .all(|e| e["root"] == gw),
        "an event from outside the gateway's tree: {events:?}"
    );
    Ok(Outcome::Passed)
}

/// A child that exists before the guard starts, a double-forked grandchild and a child
/// whose parent exits (re-parented) are all followed.
fn prestarted_doubleforked_and_orphaned_children_tracked() -> TestResult {
    let dir = Scratch::new("tree-orphans")?;
    let go2 = dir.path("go2");
    std::process::Command::new("mkfifo").arg(&go2).status()?;
    let before = format!(
        "bash --noprofile --norc -c \"read -r _ < '{g}'; exec /bin/true prestarted\" &",
        g = go2.display()
    );
    let script = format!(
        "echo go > '{g}'\n\
         ( ( /bin/true doublefork ) & )\n\
         bash --noprofile --norc -c '( sleep 0.5; exec /bin/true orphan ) & exit 0'\n\
         sleep 1.5\n\
         wait\n",
        g = go2.display()
    );
    let gateway = StandInGateway::start_with(&dir, &before, &script)?;
    let gw = u64::from(gateway.pid());
    // Let the prestarted child exist before the guard does.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let guard = GuardProcess::start(&dir, &["--pid".into(), gw.to_string()])?;
    gateway.release_and_wait()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let events = guard.stop()?;
    let trues = execs(&events, "/true");
    for tag in ["prestarted", "doublefork", "orphan"] {
        let e = trues
            .iter()
            .find(|e| e["argv"][1] == tag)
            .with_context(|| format!("no exec of /bin/true {tag} among {events:?}"))?;
        ensure!(e["root"] == gw, "{tag}: root {}", e["root"]);
        ensure!(
            e["depth"].as_u64() >= Some(1),
            "{tag}: depth {}",
            e["depth"]
        );
        if tag == "orphan" {
            // Its spawner exited: the kernel's parent is now init or a subreaper, and
            // the lineage still shows who spawned it.
            let lineage = lineage_pids(e);
            let spawner = lineage
                .iter()
                .rev()
                .nth(1)
                .copied()
                .context("orphan lineage too short")?;
            ensure!(
                e["ppid"] != spawner,
                "orphan was not re-parented (ppid {} = spawner)",
                e["ppid"]
            );
            ensure!(
                lineage.first() == Some(&gw),
                "orphan lineage does not start at the gateway: {lineage:?}"
            );
        }
    }
    Ok(Outcome::Passed)
}
