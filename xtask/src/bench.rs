//! `cargo xtask bench [--host | --vm KERNEL] [--quick]`: overhead of openclaw-guard
//! side by side with auditd and bpftrace, the pipeline's throughput and latency, and
//! the recorder's ingest rate. Writes target/bench/results.json and BENCHMARKS.md.
//!
//! The measuring itself is `openclaw-guard-bench suite` (tests/src/bin/bench.rs), the
//! same static binary on the host and in the QEMU guests. BENCHMARKS.md is generated:
//! each environment's section sits between markers and is replaced by a new run of that
//! environment, the others are kept.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{build, cmd, initramfs, kernels, vm, Ctx};

/// Where the bench runs.
pub(crate) enum Target {
    Host,
    Vm(kernels::Line),
}

impl Target {
    fn env_name(&self) -> String {
        match self {
            Target::Host => "host".into(),
            Target::Vm(line) => format!("vm-{}", line.name()),
        }
    }
}

/// Rounds and workload scale. Scale 1 is the issue's counts over five rounds (1M
/// opens, 10k execs, 50k connects, 1M sends per configuration and mode). On the 2-core
/// host, seven configurations at 0.6 took 5.5 minutes (2026-12-01; auditd's tracked
/// rows are most of it), so the host runs the full counts. A TCG guest is 3-7x slower.
fn sizing(target: &Target, quick: bool) -> (usize, f64, usize) {
    match (target, quick) {
        (Target::Host, false) => (5, 1.0, 300),
        (Target::Host, true) => (3, 0.1, 100),
        (Target::Vm(_), false) => (5, 0.1, 100),
        (Target::Vm(_), true) => (3, 0.03, 50),
    }
}

pub(crate) fn run(ctx: &Ctx, target: &Target, quick: bool) -> Result<()> {
    let out_dir = ctx.root.join("target/bench");
    fs::create_dir_all(&out_dir)?;
    let obj = build::ebpf(ctx)?;
    // Release: the daemon's pipeline is what is measured.
    let bins = build::static_bins(ctx, &obj, true)?;

    let command = format!(
        "cargo xtask bench {}{}",
        match target {
            Target::Host => "--host".to_owned(),
            Target::Vm(line) => format!("--vm {}", line.name()),
        },
        if quick { " --quick" } else { "" }
    );
    let env = target.env_name();
    let (rounds, scale, probes) = sizing(target, quick);
    let suite_args = [
        "suite".to_owned(),
        "--env".into(),
        env.clone(),
        "--rounds".into(),
        rounds.to_string(),
        "--scale".into(),
        scale.to_string(),
        "--probes".into(),
        probes.to_string(),
    ];

    let recorder = recorder_bench(ctx, &obj, quick);
    let mut real_gateway = None;
    let json_path = out_dir.join(format!("{env}.json"));
    match target {
        Target::Host => {
            install_peers();
            let program = bins.bench.to_string_lossy();
            let mut c = cmd::as_root(&program);
            c.env("OPENCLAW_GUARD_BIN", &bins.daemon)
                .args(&suite_args)
                .arg("--out")
                .arg(&json_path)
                .arg("--command")
                .arg(&command);
            let out = cmd::stream(&mut c, "bench")?;
            if !out.status.success() {
                bail!("the bench suite failed ({})", out.status);
            }
            real_gateway = Some(real_gateway_bench(ctx, &bins, quick)?);
        }
        Target::Vm(line) => {
            let quoted: Vec<String> = suite_args.iter().map(|a| shell_quote(a)).collect();
            let script = format!(
                "/bin/openclaw-guard-bench {} --out /tmp/bench.json --command {}",
                quoted.join(" "),
                shell_quote(&command)
            );
            let initrd = initramfs::build(ctx, &bins, &initramfs::Mode::Run(script))?;
            let vmlinuz = kernels::fetch(ctx, *line)?;
            let outcome = vm::boot(
                line.name(),
                &vmlinuz,
                &initrd,
                vm::DEFAULT_LSM,
                1800,
                vm::Vcpus::Parallel,
            )?;
            let code = outcome
                .verdict()
                .map_err(|why| anyhow::anyhow!("[{}] {why}", line.name()))?;
            let json = outcome
                .lines
                .iter()
                .find_map(|l| {
                    l.find("OCG-BENCH-JSON ")
                        .map(|at| l[at + 15..].trim().to_owned())
                })
                .with_context(|| format!("the guest printed no results (exit {code})"))?;
            fs::write(&json_path, format!("{json}\n"))?;
        }
    }

    let section = cmd::output(Command::new(&bins.bench).arg("render").arg(&json_path))
        .context("rendering the results")?;
    fs::write(out_dir.join(format!("{env}.md")), &section)?;
    if let Some(lines) = &recorder {
        fs::write(out_dir.join("recorder.jsonl"), lines.join("\n") + "\n")?;
    }
    write_results_json(&out_dir)?;
    let doc_path = ctx.root.join("BENCHMARKS.md");
    let old = fs::read_to_string(&doc_path).unwrap_or_default();
    let mut sections = parse_sections(&old);
    upsert(&mut sections, &env, section);
    if let Some(lines) = &recorder {
        upsert(&mut sections, "recorder", recorder_section(lines, quick));
    }
    if let Some(section) = real_gateway {
        upsert(&mut sections, "real-gateway", section);
    }
    fs::write(&doc_path, compose(&sections))?;
    println!(
        "xtask: wrote {} and {}",
        doc_path.display(),
        out_dir.join("results.json").display()
    );
    print!("{}", fs::read_to_string(out_dir.join(format!("{env}.md")))?);
    Ok(())
}

/// `cargo xtask bench --real-gateway`: that section alone.
pub(crate) fn real_gateway_only(ctx: &Ctx, quick: bool) -> Result<()> {
    let obj = build::ebpf(ctx)?;
    let bins = build::static_bins(ctx, &obj, true)?;
    let section = real_gateway_bench(ctx, &bins, quick)?;
    replace_section(ctx, "real-gateway", &section)
}

/// The flood phase alone (`openclaw-guard-bench flood`): its BENCHMARKS.md section.
pub(crate) fn flood_only(ctx: &Ctx, quick: bool) -> Result<()> {
    let obj = build::ebpf(ctx)?;
    let bins = build::static_bins(ctx, &obj, true)?;
    let program = bins.bench.to_string_lossy();
    let mut c = cmd::as_root(&program);
    c.env("OPENCLAW_GUARD_BIN", &bins.daemon)
        .args(["flood", if quick { "20" } else { "100" }]);
    let out = cmd::stream(&mut c, "flood")?;
    if !out.status.success() {
        bail!("the flood bench failed ({})", out.status);
    }
    let section = between(&out.lines, "OCG-FLOOD-BEGIN", "OCG-FLOOD-END")
        .context("the flood bench printed no section")?;
    replace_section(ctx, "flood", &section)
}

/// The lines a run printed between its markers (to the end if the end marker is
/// missing), as one markdown section.
fn between(lines: &[String], begin: &str, end: &str) -> Option<String> {
    let from = lines.iter().position(|l| l == begin)?;
    let to = lines.iter().position(|l| l == end).unwrap_or(lines.len());
    Some(lines[from + 1..to].join("\n") + "\n")
}

/// Replaces (or adds) one generated section of BENCHMARKS.md and prints it.
fn replace_section(ctx: &Ctx, name: &str, section: &str) -> Result<()> {
    let doc_path = ctx.root.join("BENCHMARKS.md");
    let old = fs::read_to_string(&doc_path).unwrap_or_default();
    let mut sections = parse_sections(&old);
    upsert(&mut sections, name, section.to_owned());
    fs::write(&doc_path, compose(&sections))?;
    println!("xtask: wrote {}", doc_path.display());
    print!("{section}");
    Ok(())
}

/// The real gateway's tool-call round trip with and without the guard (the runner's
/// `bench-e2e`, tests/src/e2e/bench.rs): its markdown section.
fn real_gateway_bench(ctx: &Ctx, bins: &build::StaticBins, quick: bool) -> Result<String> {
    let install = crate::openclaw::install(&ctx.cache)?;
    let (rounds, calls) = if quick { ("2", "3") } else { ("5", "8") };
    let program = bins.integration.to_string_lossy();
    let mut c = cmd::as_root(&program);
    c.env("OPENCLAW_GUARD_BIN", &bins.daemon)
        .env("OCG_OPENCLAW_DIR", &install.dir)
        .args(["bench-e2e", rounds, calls]);
    let out = cmd::stream(&mut c, "bench-e2e")?;
    if !out.status.success() {
        bail!("the real-gateway bench failed ({})", out.status);
    }
    between(&out.lines, "OCG-E2E-BENCH-BEGIN", "OCG-E2E-BENCH-END")
        .context("the real-gateway bench printed no section")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Debian's auditd and bpftrace, the peers of the side-by-side table. Best effort: a
/// peer that is missing shows in the table as not loaded, with the reason.
fn install_peers() {
    let missing: Vec<&str> = [
        ("auditd", "/usr/sbin/auditd"),
        ("bpftrace", "/usr/bin/bpftrace"),
    ]
    .into_iter()
    .filter(|(_, path)| !Path::new(path).exists())
    .map(|(pkg, _)| pkg)
    .collect();
    if missing.is_empty() {
        return;
    }
    let mut c = cmd::as_root("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing);
    if let Err(e) = cmd::run(&mut c) {
        eprintln!("xtask: could not install {}: {e:#}", missing.join(", "));
    }
}

/// `cargo bench -p openclaw-guard --bench recorder`: its JSON lines, or None if it failed.
fn recorder_bench(ctx: &Ctx, obj: &Path, quick: bool) -> Option<Vec<String>> {
    let mut c = Command::new("cargo");
    c.current_dir(&ctx.root)
        .env(build::EBPF_OBJ_ENV, obj)
        .args(["bench", "-p", "openclaw-guard", "--bench", "recorder"]);
    if quick {
        c.env("RECORDER_BENCH_EVENTS", "20000");
    }
    match cmd::stream(&mut c, "recorder") {
        Ok(out) if out.status.success() => Some(
            out.lines
                .into_iter()
                .filter(|l| l.starts_with('{'))
                .collect(),
        ),
        Ok(out) => {
            eprintln!("xtask: recorder bench failed ({})", out.status);
            None
        }
        Err(e) => {
            eprintln!("xtask: recorder bench failed: {e:#}");
            None
        }
    }
}

fn recorder_section(lines: &[String], quick: bool) -> String {
    let mut s = String::from("## Recorder ingest (host)\n\n");
    s.push_str(&format!(
        "`cargo bench -p openclaw-guard --bench recorder`{} (run by `cargo xtask bench`; records/s with hash chaining, a ~400-byte exec event; the last line is the summary):\n\n```\n",
        if quick { " with RECORDER_BENCH_EVENTS=20000" } else { "" }
    ));
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str("```\n\n");
    s
}

/// target/bench/results.json: every environment's results side by side (each file is
/// already one JSON document; no parsing needed to nest them).
fn write_results_json(out_dir: &Path) -> Result<()> {
    let mut parts = Vec::new();
    let mut names: Vec<PathBuf> = fs::read_dir(out_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_stem().is_some_and(|s| s != "results")
        })
        .collect();
    names.sort();
    for p in names {
        let name = p
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let text = fs::read_to_string(&p)?;
        parts.push(format!("\"{name}\": {}", text.trim()));
    }
    if let Ok(rec) = fs::read_to_string(out_dir.join("recorder.jsonl")) {
        let lines: Vec<&str> = rec.lines().filter(|l| !l.trim().is_empty()).collect();
        parts.push(format!("\"recorder\": [{}]", lines.join(",")));
    }
    fs::write(
        out_dir.join("results.json"),
        format!("{{{}}}\n", parts.join(",\n")),
    )?;
    Ok(())
}

const BEGIN: &str = "<!-- bench-section: ";
const END: &str = "<!-- end bench-section -->";

/// (name, body) of each generated section of an existing BENCHMARKS.md.
fn parse_sections(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(at) = rest.find(BEGIN) {
        let after = &rest[at + BEGIN.len()..];
        let Some(name_end) = after.find(" -->") else {
            break;
        };
        let name = after[..name_end].to_owned();
        let body_start = name_end + " -->".len();
        let Some(end) = after.find(END) else { break };
        out.push((
            name,
            after[body_start..end].trim_start_matches('\n').to_owned(),
        ));
        rest = &after[end + END.len()..];
    }
    out
}

fn upsert(sections: &mut Vec<(String, String)>, name: &str, body: String) {
    if let Some(s) = sections.iter_mut().find(|(n, _)| n == name) {
        s.1 = body;
    } else {
        sections.push((name.to_owned(), body));
    }
    // Host first, then the guests by kernel, the recorder last.
    let rank = |n: &str| match n {
        "host" => 0,
        "recorder" => 2,
        _ => 1,
    };
    sections.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then(a.0.cmp(&b.0)));
}

fn compose(sections: &[(String, String)]) -> String {
    let mut s = String::from(
        "# Benchmarks\n\n\
Generated by `cargo xtask bench --host` and `cargo xtask bench --vm KERNEL` (each run \
replaces its own section; do not edit by hand). Raw figures: `target/bench/results.json`. \
Method: every configuration runs the same workloads in one session, configurations \
alternating within each round (baseline, guard monitor, guard enforce, guard enforce with \
every event sent one by one, auditd, bpftrace empty, bpftrace printing, empty BPF LSM \
programs, then again: those that load on the kernel in use), each workload once untracked \
and once in a child of the tracked stand-in gateway; ratios are taken against the baseline \
of the same round. VM sections run in QEMU under TCG with one host thread per vCPU. \
Before any baseline the audit state is made neutral (`auditctl -D`, `auditctl -a never,task`: \
once kernel audit has been enabled, new processes stay on the slower syscall path until \
that rule is loaded). No test asserts timings; these are reports.\n\n",
    );
    for (name, body) in sections {
        s.push_str(&format!("{BEGIN}{name} -->\n{body}{END}\n\n"));
    }
    s
}
