//! Tool-call attribution on the real gateway: with the guard's plugin loaded, every
//! event of every tool command carries the session, run and tool call the scripted
//! model asked for; `events --tool-call` and `--session` find exactly them; a tool
//! command cannot forge a report nor move itself to another call.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{ensure, Context as _};
use serde_json::{json, Value};

use super::{
    gateway::{Install, Options, RealGateway},
    model::Model,
};
use crate::{
    support::{add_loopback_addrs, run_guard_cli, GuardProcess, NetNs, Scratch},
    Outcome, TestResult,
};

pub(super) fn tests() -> Vec<crate::Test> {
    crate::named_tests![tool_calls_attributed,]
}

/// An address no policy entry allows: the egress call's destination.
const OUTSIDE: &str = "10.77.1.9";

enum Step {
    Exec(&'static str, String, bool),
    Tool(&'static str, &'static str, Value),
}

/// Issue 17's must-show on the real gateway (in a network namespace whose only way
/// out is loopback: the egress call's connect is refused there, nothing leaves).
fn tool_calls_attributed() -> TestResult {
    let install = match Install::find() {
        Ok(i) => i,
        Err(reason) => return Ok(Outcome::Skipped(reason)),
    };
    let ns = NetNs::new("e2e-attrib")?;
    add_loopback_addrs(Some(&ns), &[OUTSIDE])?;
    let dir = Scratch::new("e2e-attrib")?;
    let plugin_dir = dir.path("plugin");
    let socket = dir.path("attribution.sock");
    let wrote = run_guard_cli(&[
        "plugin",
        "write",
        &plugin_dir.display().to_string(),
        "--socket",
        &socket.display().to_string(),
    ])?;
    ensure!(wrote.contains("plugins"), "plugin write: {wrote}");
    let model = Model::start_in(Some(&ns.0))?;
    let options = Options {
        netns: Some(ns.0.clone()),
        plugin: Some((plugin_dir, socket.clone())),
        ..Options::default()
    };
    let gw = RealGateway::start(&install, &model, &options)?;
    let guard = GuardProcess::start(
        &dir,
        &[
            "--pid".into(),
            gw.pid().to_string(),
            "--attribution-socket".into(),
            socket.display().to_string(),
        ],
    )?;
    let secret = gw.state_dir().join(".env");
    let forge = format!(
        "python3 -c \"import socket,json; s=socket.socket(socket.AF_UNIX); s.connect('{}'); \
         s.sendall(json.dumps(dict(v=1,type='start',toolCallId='forged1',toolName='exec')).encode()+b'\\n'); \
         print('reply', s.recv(200).decode())\"; : mark-forge",
        socket.display()
    );
    let main = "agent:main:attrib";
    let other = "agent:main:other";
    let steps: Vec<(&str, Step)> = vec![
        (main, Step::Exec("mark-1", "id -u; : mark-1".into(), false)),
        (
            main,
            Step::Exec("mark-2", "sh -c 'ls / | wc -l'; : mark-2".into(), false),
        ),
        (main, Step::Exec("mark-3", "uname -s; : mark-3".into(), true)),
        (
            main,
            Step::Tool(
                "write",
                "notes.txt",
                json!({"path": "notes.txt", "content": "attributed\n"}),
            ),
        ),
        (
            main,
            Step::Tool("read", "notes.txt", json!({"path": "notes.txt"})),
        ),
        (
            main,
            Step::Exec(
                "mark-6",
                format!("cat {} | wc -c; : mark-6", secret.display()),
                false,
            ),
        ),
        (
            main,
            Step::Exec(
                "mark-7",
                format!("curl -sS -m 3 http://{OUTSIDE}:8080/; echo \" curl-exit=$?\"; : mark-7"),
                false,
            ),
        ),
        (
            main,
            Step::Exec(
                "mark-8",
                "bash -c 'sleep 0.2 & wait; echo bg-done'; : mark-8".into(),
                true,
            ),
        ),
        (main, Step::Exec("mark-forge", forge, false)),
        (
            main,
            Step::Exec(
                "mark-10",
                // A child that claims another call's tag (the first call's, from the
                // record's first tool_call) in its own environment.
                "OCG_TOOL_CALL=$(cat /proc/$$/environ | tr '\\0' '\\n' | sed -n 's/^OCG_TOOL_CALL=//p' | sed 's/-[0-9]*$/-1/') sh -c 'cat /etc/hostname'; : mark-10".into(),
                false,
            ),
        ),
        (
            other,
            Step::Exec("mark-11", "printf other; : mark-11".into(), false),
        ),
        (
            other,
            Step::Exec("mark-12", "ls -d /tmp; : mark-12".into(), true),
        ),
    ];
    // Each call's shell writes its own pid: the ground truth for which processes are
    // the call's, independent of the guard.
    let marks = dir.path("marks");
    std::fs::create_dir_all(&marks)?;
    let mut transcript = Vec::new();
    // Marker -> (session, the model's call id, tool).
    let mut asked: Vec<(&str, &str, String, &str)> = Vec::new();
    for (session, step) in &steps {
        let before = model.calls().len();
        let (mark, tool, out) = match step {
            Step::Exec(mark, cmd, pty) => {
                let cmd = format!("echo $$ > {}/{mark}; {cmd}", marks.display());
                (*mark, "exec", gw.exec(session, &cmd, *pty)?)
            }
            Step::Tool(tool, mark, args) => (*mark, *tool, gw.tool(session, tool, args)?),
        };
        let calls = model.calls();
        let call = calls[before..]
            .iter()
            .find(|c| c.tool == tool)
            .with_context(|| format!("no {tool} call for {mark}"))?;
        transcript.push(format!("{mark} [{}]: {}", call.id, out.trim()));
        asked.push((session, mark, call.id.clone(), tool));
    }
    std::thread::sleep(Duration::from_millis(500));
    let status = run_guard_cli(&[
        "status",
        "--status-file",
        &dir.path("status.json").display().to_string(),
    ])?;
    let (events, stats) = guard.stop_with_stats()?;
    println!("{}", transcript.join("\n"));
    if let Ok(path) = std::env::var("OCG_E2E_DUMP") {
        std::fs::write(
            path,
            events.iter().map(|e| format!("{e}\n")).collect::<String>(),
        )?;
    }
    let attribution_line = status
        .lines()
        .find(|l| l.starts_with("attribution:"))
        .unwrap_or_default();
    println!("    {attribution_line}");

    // The reports, as recorded: one start per call the model made, the model's ids.
    let starts: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "tool_call" && e["phase"] == "start")
        .collect();
    let same = |a: &str, b: &str| {
        a.chars()
            .filter(char::is_ascii_alphanumeric)
            .eq(b.chars().filter(char::is_ascii_alphanumeric))
    };
    let mut runs: Vec<(String, String)> = Vec::new();
    for (session, mark, id, tool) in &asked {
        let start = starts
            .iter()
            .find(|s| same(s["tool_call"]["id"].as_str().unwrap_or(""), id))
            .with_context(|| format!("{mark}: no tool_call record for {id}"))?;
        let call = &start["tool_call"];
        ensure!(
            call["session_key"] == *session && call["tool"] == *tool,
            "{mark}: recorded {call}, asked {session} {tool}"
        );
        let run = call["run_id"].as_str().context("no run id")?.to_owned();
        runs.push((mark.to_string(), run));
        if *tool != "exec" {
            ensure!(
                call["path"] == "notes.txt",
                "{mark}: the in-process tool's record has no path: {call}"
            );
            // The gateway's own opens of the file, during the call, are the call's.
            let opens: Vec<&Value> = events
                .iter()
                .filter(|e| {
                    e["kind"] == "file_open"
                        && e["role"] == "gateway"
                        && e["path"]
                            .as_str()
                            .is_some_and(|p| p.ends_with("/notes.txt"))
                        && e["tool_call"]["tag"] == call["tag"]
                })
                .collect();
            ensure!(
                !opens.is_empty() && opens.iter().all(|e| e["tool_call"]["via"] == "path"),
                "{mark}: no gateway open of notes.txt attributed to the {tool} call"
            );
            continue;
        }
        // The call's shell, found by its command text; everything below it is the
        // call's, by the kernel's tree (lineage), and must say so.
        let shell_pid: u64 = std::fs::read_to_string(marks.join(mark))
            .with_context(|| format!("{mark}: the shell wrote no pid"))?
            .trim()
            .parse()?;
        // From the shell's first exec on: before it, the pid is still the gateway's
        // (or broker's) fork child, which belongs to no call yet (BPF LSM reports its
        // open of the shell's binary).
        let exec_ns = events
            .iter()
            .filter(|e| e["kind"] == "exec" && e["tgid"].as_u64() == Some(shell_pid))
            .filter_map(|e| e["ktime_ns"].as_u64())
            .min()
            .unwrap_or(0);
        let below = |e: &Value| {
            if e["tgid"].as_u64() == Some(shell_pid) {
                return e["ktime_ns"].as_u64().unwrap_or(0) >= exec_ns;
            }
            e["lineage"]
                .as_array()
                .is_some_and(|l| l.iter().any(|a| a["pid"].as_u64() == Some(shell_pid)))
        };
        let mine: Vec<&Value> = events
            .iter()
            .filter(|e| e["kind"] != "tool_call" && below(e))
            .collect();
        ensure!(mine.len() >= 2, "{mark}: only {} events", mine.len());
        for e in &mine {
            let c = &e["tool_call"];
            ensure!(
                c["tag"] == call["tag"] && c["run_id"] == call["run_id"],
                "{mark}: event of the call's tree carries {c}, not {call}: {e}"
            );
        }
        // `events --tool-call ID`: exactly this call's processes and its records.
        let state_dir = dir.path("state").display().to_string();
        let id_s = call["id"].as_str().unwrap_or_default();
        let listed = run_guard_cli(&[
            "events",
            "--state-dir",
            &state_dir,
            "--tool-call",
            id_s,
            "--json",
        ])?;
        let listed: Vec<Value> = listed
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        let pids = |v: &mut dyn Iterator<Item = &Value>| -> BTreeSet<u64> {
            v.filter(|e| e["kind"] != "tool_call")
                .filter_map(|e| e["tgid"].as_u64())
                .collect()
        };
        let got = pids(&mut listed.iter());
        let want = pids(&mut mine.iter().copied());
        ensure!(
            got == want,
            "{mark}: events --tool-call {id_s} lists processes {got:?}, the tree has {want:?}"
        );
        ensure!(
            listed.iter().filter(|e| e["kind"] == "tool_call").count() >= 1,
            "{mark}: events --tool-call has no tool_call record"
        );
    }
    // Runs: one per turn (each call here is its own turn), never shared.
    let distinct: BTreeSet<&String> = runs.iter().map(|(_, r)| r).collect();
    ensure!(
        distinct.len() == runs.len(),
        "turns share run ids: {runs:?}"
    );

    // Every gateway open of notes.txt is one of the two calls'.
    let stray: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["kind"] == "file_open"
                && e["role"] == "gateway"
                && e["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/notes.txt"))
                && e["tool_call"]["via"] != "path"
        })
        .collect();
    ensure!(
        stray.is_empty(),
        "gateway opens of notes.txt outside the calls: {stray:?}"
    );

    // Nothing of a tool command is unattributed.
    let unattributed: Vec<&Value> = events
        .iter()
        .filter(|e| e["tool_call"]["unattributed"].is_string())
        .collect();
    ensure!(
        unattributed.is_empty(),
        "{} unattributed events of tool commands, first: {}",
        unattributed.len(),
        unattributed[0]
    );

    // The secret read was refused in mark-6's call and the connect in mark-7's; the
    // session's timeline shows them under those calls' command text.
    let find_call = |mark: &str| {
        starts
            .iter()
            .find(|s| {
                s["tool_call"]["command"]
                    .as_str()
                    .is_some_and(|c| c.contains(mark))
            })
            .map(|s| s["tool_call"].clone())
            .unwrap_or_default()
    };
    let (read_call, egress_call) = (find_call("mark-6"), find_call("mark-7"));
    ensure!(
        events.iter().any(|e| e["decision"]["rule"] == "secrets"
            && matches!(e["decision"]["action"].as_str(), Some("deny" | "kill"))
            && e["tool_call"]["tag"] == read_call["tag"]),
        "no refused secret read attributed to mark-6's call"
    );
    ensure!(
        events.iter().any(|e| e["decision"]["rule"] == "egress"
            && e["addr"] == OUTSIDE
            && e["tool_call"]["tag"] == egress_call["tag"]),
        "no egress decision attributed to mark-7's call"
    );
    let alert = events
        .iter()
        .find(|e| e["alert"]["rule"] == "secrets")
        .map(|e| e["alert"]["output"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    ensure!(
        alert.contains("in tool call") && alert.contains("mark-6") && alert.contains(main),
        "the secrets alert does not name its call: {alert}"
    );
    let state_dir = dir.path("state").display().to_string();
    let timeline = run_guard_cli(&["events", "--state-dir", &state_dir, "--session", main])?;
    let under = |header_mark: &str, needle: &str| {
        let mut inside = false;
        timeline.lines().any(|l| {
            if l.starts_with("tool call ") {
                inside = l.contains(header_mark);
                return false;
            }
            inside && l.contains(needle)
        })
    };
    ensure!(
        under("mark-6", "rule=secrets") && under("mark-7", "rule=egress"),
        "the session timeline does not show the refusals under their calls:\n{timeline}"
    );
    ensure!(
        !timeline.contains("mark-11"),
        "the other session's call is in this session's timeline"
    );
    // The refused read's group, as a responder sees it.
    let mut inside = false;
    for l in timeline.lines() {
        if l.starts_with("tool call ") {
            inside = l.contains("mark-6");
        }
        if inside && (l.starts_with("tool call ") || l.contains("rule=") || l.contains(" exec ")) {
            println!("    | {}", l.chars().take(220).collect::<String>());
        }
    }
    println!(
        "    timeline of {main}: {} lines, {} calls",
        timeline.lines().count(),
        timeline
            .lines()
            .filter(|l| l.starts_with("tool call "))
            .count()
    );

    // Forgery: the tool command's own report was refused, its tree stayed its call's.
    let forge_out = &transcript
        .iter()
        .find(|t| t.starts_with("mark-forge"))
        .cloned()
        .unwrap_or_default();
    ensure!(
        forge_out.contains("not a tracked gateway"),
        "the forged report was not refused: {forge_out}"
    );
    ensure!(
        !starts.iter().any(|s| s["tool_call"]["id"] == "forged1"),
        "the forged report was recorded"
    );
    let counters = &stats["attribution"];
    ensure!(
        counters["rejected_peer"].as_u64() >= Some(1),
        "the refusal was not counted: {counters}"
    );
    let claimed = find_call("mark-10");
    ensure!(
        events.iter().any(|e| e["kind"] == "exec"
            && e["argv"].to_string().contains("/etc/hostname")
            && e["tool_call"]["tag"] == claimed["tag"]),
        "a child claiming another call's tag moved: {}",
        events
            .iter()
            .filter(|e| e["kind"] == "exec" && e["argv"].to_string().contains("/etc/hostname"))
            .map(|e| e["tool_call"].to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("    attribution counters: {counters}");
    drop(gw);
    Ok(Outcome::Passed)
}
