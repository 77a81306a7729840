//! End-to-end tests against the real OpenClaw gateway (Node), offline, driven by a
//! scripted model on loopback: [`model::Model`] and [`gateway::RealGateway`].
//!
//! The install comes from `cargo xtask` (xtask/src/openclaw.rs) through
//! `OCG_OPENCLAW_DIR`; without one the tests are skipped. `OCG_E2E_MODEL_DUMP=FILE`
//! appends every chat-completion request the model receives to FILE (JSON lines).

mod attribution;
pub(crate) mod bench;
mod egress;
pub(crate) mod gateway;
mod guarded;
pub(crate) mod model;

use std::time::Instant;

use anyhow::{ensure, Context as _};
use serde_json::json;

use crate::{Outcome, Test, TestResult};
use gateway::{Install, Options, RealGateway, FAKE_ANTHROPIC_KEY};
use model::Model;

pub(crate) fn tests() -> Vec<Test> {
    let mut all = crate::named_tests![gateway_runs_tool_calls];
    all.extend(guarded::tests());
    all.extend(egress::tests());
    all.extend(attribution::tests());
    all
}

/// The harness itself, no guard: exec through the spawn broker (pipes) and through
/// node-pty, then the write and read tools, each checked for its effect on the host.
fn gateway_runs_tool_calls() -> TestResult {
    let install = match Install::find() {
        Ok(i) => i,
        Err(reason) => return Ok(Outcome::Skipped(reason)),
    };
    let model = Model::start()?;
    let gw = RealGateway::start(&install, &model, &Options::default())?;
    println!(
        "    gateway pid {} listening on {} after {:.1}s",
        gw.pid(),
        gw.port(),
        gw.startup.as_secs_f64()
    );
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", gw.pid()))?;
    ensure!(comm.trim() == "openclaw-gatewa", "gateway comm is {comm:?}");
    let ws = gw.workspace();

    // exec, pipe mode: the file appears and the output comes back (base64: redaction).
    let started = Instant::now();
    // The state dir's .env reaches tool commands (the secret the guard protects).
    let out = gw.exec(
        "e2e-smoke",
        &format!(
            "echo pipe-ok > pipe.txt && printf pipe-out | base64 && \
             [ \"$ANTHROPIC_API_KEY\" = {FAKE_ANTHROPIC_KEY} ] && echo env-key-ok"
        ),
        false,
    )?;
    println!(
        "    exec (pipe) turn {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let written = std::fs::read_to_string(ws.join("pipe.txt")).context("pipe.txt")?;
    ensure!(written == "pipe-ok\n", "pipe.txt holds {written:?}");
    ensure!(
        out.contains("cGlwZS1vdXQ=") && out.contains("env-key-ok"),
        "exec (pipe) result: {out}"
    );

    // exec, pty mode.
    let started = Instant::now();
    let out = gw.exec("e2e-smoke", "tty > pty.txt; printf pty-out | base64", true)?;
    println!(
        "    exec (pty) turn {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let tty = std::fs::read_to_string(ws.join("pty.txt")).context("pty.txt")?;
    ensure!(
        tty.starts_with("/dev/pts/"),
        "pty exec ran without a pty: tty says {tty:?}"
    );
    ensure!(out.contains("cHR5LW91dA=="), "exec (pty) result: {out}");

    // The tool schemas this harness relies on, as the gateway sent them to the model.
    let tools = model.tools();
    for (tool, param) in [
        ("exec", "command"),
        ("write", "path"),
        ("write", "content"),
        ("read", "path"),
    ] {
        let schema = tools
            .iter()
            .find(|t| t["function"]["name"] == tool)
            .with_context(|| format!("the gateway offers no {tool} tool"))?;
        ensure!(
            schema["function"]["parameters"]["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|p| p == param)),
            "{tool} does not require {param}: {schema}"
        );
    }
    // The spawn broker stays up under the gateway (it runs the pipe-mode commands).
    let broker = gw.descendants().into_iter().any(|p| {
        std::fs::read(format!("/proc/{p}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("spawn-broker/worker.js"))
    });
    ensure!(broker, "no spawn broker under the gateway");

    // write, then read back what the host has.
    let target = ws.join("written.txt");
    let out = gw.tool(
        "e2e-smoke",
        "write",
        &json!({"path": target, "content": "written-by-tool\n"}),
    )?;
    let written =
        std::fs::read_to_string(&target).with_context(|| format!("write result: {out}"))?;
    ensure!(
        written == "written-by-tool\n",
        "written.txt holds {written:?}"
    );

    std::fs::write(ws.join("host.txt"), "host-secret-line\n")?;
    let out = gw.tool("e2e-smoke", "read", &json!({"path": ws.join("host.txt")}))?;
    ensure!(out.contains("host-secret-line"), "read result: {out}");
    Ok(Outcome::Passed)
}
