//! `cargo xtask`: the one entry point to set up, build, lint and test openclaw-guard.
//!
//! Every subcommand first runs `setup` (idempotent, cached), so a fresh Debian 12
//! machine needs only rustup stable and this repository.

mod bench;
mod build;
mod cmd;
mod initramfs;
mod kernels;
mod openclaw;
mod package;
mod report;
mod toolchain;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};

use crate::{
    report::{EnvResult, Table},
    toolchain::Toolchain,
};

#[derive(Parser)]
#[command(about = "Build, lint and test openclaw-guard (set-up included)")]
struct Cli {
    /// Compiler for the eBPF crate: Debian's rustc-web (apt only, the default and what
    /// CI uses) or rustup nightly with rust-src.
    #[arg(long, global = true, value_enum, default_value_t = Toolchain::Debian)]
    toolchain: Toolchain,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what this machine lacks: apt packages, bpf-linker, compilers.
    Setup,
    /// Build the eBPF object and the daemon.
    Build {
        /// Build the daemon with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Build, then run the guard here (`openclaw-guard run ARGS`, embedded default
    /// policy unless ARGS say otherwise). Needs root.
    Run {
        /// Arguments for `openclaw-guard run`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Clippy (-D warnings) on userspace and on the eBPF crate, and rustfmt --check.
    Lint,
    /// Build the Debian package (static daemon, systemd unit, /etc/default, docs)
    /// into target/package/.
    Package {
        /// Then install, start and purge it in a Debian 12 guest booting systemd.
        #[arg(long)]
        test: bool,
    },
    /// Unit tests, root tests on the host kernel, then the VM kernel matrix.
    Test {
        #[command(flatten)]
        vm: VmOpts,
        /// Test name filters for the integration runner.
        #[arg(last = true)]
        filter: Vec<String>,
    },
    /// Overhead side by side with auditd and bpftrace, pipeline throughput and
    /// latency, recorder ingest: writes BENCHMARKS.md and target/bench/results.json.
    Bench {
        /// Measure on this machine's kernel (the default).
        #[arg(long, conflicts_with = "vm")]
        host: bool,
        /// Measure in a QEMU guest of this kernel line (BPF LSM tier).
        #[arg(long, value_enum, value_name = "KERNEL")]
        vm: Option<kernels::Line>,
        /// Fewer rounds and smaller counts (a smoke run).
        #[arg(long)]
        quick: bool,
        /// Only the real gateway's tool-call round trip (host), its section replaced.
        #[arg(long, conflicts_with = "vm")]
        real_gateway: bool,
        /// Only the alert latency under a flood of denied reads and opens (host), its
        /// section replaced.
        #[arg(long, conflicts_with_all = ["vm", "real_gateway"])]
        flood: bool,
    },
    /// Run the integration tests (or one command) in QEMU guests.
    Vm {
        /// Kernel line to boot; repeat for several (default: all).
        #[arg(long = "kernel", value_enum)]
        kernels: Vec<kernels::Line>,
        /// Run this bash command in the guest instead of the tests and return its
        /// exit code.
        #[arg(long)]
        run: Option<String>,
        #[command(flatten)]
        vm: VmOpts,
        /// Test name filters for the integration runner.
        #[arg(last = true)]
        filter: Vec<String>,
    },
}

#[derive(Args, Clone)]
struct VmOpts {
    /// Kernel `lsm=` list for the guests (drop `bpf` to test the fallback tier).
    #[arg(long, default_value = vm::DEFAULT_LSM)]
    lsm: String,
    /// Seconds before a guest counts as hung and is killed.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Build the test binaries (host and guests) with the debug profile instead of
    /// release. Release is the default: under TCG emulation a debug daemon cannot keep
    /// up with the storm tests.
    #[arg(long)]
    debug: bool,
}

/// What every subcommand needs: where the repository and the cache are, and the tools.
pub(crate) struct Ctx {
    pub(crate) root: PathBuf,
    pub(crate) cache: PathBuf,
    pub(crate) tools: toolchain::Tools,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let root = workspace_root();
    let cache = toolchain::cache_dir()?;
    let tools = toolchain::setup(&cache, cli.toolchain)?;
    let ctx = Ctx { root, cache, tools };
    match cli.command {
        Command::Setup => {
            println!("xtask: set-up complete (cache: {})", ctx.cache.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Package { test } => {
            let (deb, bins) = package::deb(&ctx)?;
            println!("xtask: package: {}", deb.display());
            if !test {
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::default();
            table.push(package::guest_row(&ctx, &bins, vm::DEFAULT_LSM));
            table.print();
            Ok(if table.all_passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Build { release } => {
            let obj = build::ebpf(&ctx)?;
            let daemon = build::daemon(&ctx, &obj, release)?;
            println!("xtask: eBPF object: {}", obj.display());
            println!("xtask: daemon: {}", daemon.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { args } => {
            let obj = build::ebpf(&ctx)?;
            let daemon = build::daemon(&ctx, &obj, true)?;
            println!("xtask: $ {} run {}", daemon.display(), args.join(" "));
            let status = std::process::Command::new(&daemon)
                .arg("run")
                .args(&args)
                .status()
                .with_context(|| format!("running {}", daemon.display()))?;
            Ok(ExitCode::from(
                u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
            ))
        }
        Command::Lint => {
            lint(&ctx)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { vm, filter } => test(&ctx, &vm, &filter),
        Command::Bench {
            host: _,
            vm,
            quick,
            real_gateway,
            flood,
        } => {
            if flood {
                bench::flood_only(&ctx, quick)?;
                return Ok(ExitCode::SUCCESS);
            }
            if real_gateway {
                bench::real_gateway_only(&ctx, quick)?;
                return Ok(ExitCode::SUCCESS);
            }
            let target = vm.map_or(bench::Target::Host, bench::Target::Vm);
            bench::run(&ctx, &target, quick)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Vm {
            kernels,
            run,
            vm,
            filter,
        } => vm_command(&ctx, &kernels, run.as_deref(), &vm, &filter),
    }
}

fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn lint(ctx: &Ctx) -> Result<()> {
    let obj = build::ebpf(ctx)?;
    let mut failed = Vec::new();
    let steps: [(&str, Result<std::process::Command>); 3] = [
        ("clippy (userspace)", Ok(build::clippy_userspace(ctx, &obj))),
        ("clippy (eBPF)", build::clippy_ebpf(ctx)),
        ("rustfmt", Ok(build::fmt_check(ctx))),
    ];
    for (name, command) in steps {
        // Run every step so one report lists all problems.
        if let Err(err) = command.and_then(|mut c| cmd::run(&mut c)) {
            eprintln!("xtask: {name} failed: {err:#}");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    println!("xtask: lint clean");
    Ok(())
}

fn test(ctx: &Ctx, opts: &VmOpts, filter: &[String]) -> Result<ExitCode> {
    let obj = build::ebpf(ctx)?;
    let mut table = Table::default();

    let started = Instant::now();
    let unit = build::unit_tests(ctx, &obj);
    table.push(EnvResult::from_unit_tests(unit, started.elapsed()));

    let bins = build::static_bins(ctx, &obj, !opts.debug)?;
    table.push(vm::host_tests(&bins, &vm::HostTier::Kernel, filter));
    // The reference workload: the real OpenClaw gateway, on this kernel.
    let openclaw = openclaw::install(&ctx.cache)?;
    table.push(vm::host_tests(
        &bins,
        &vm::HostTier::RealGateway(&openclaw.dir),
        filter,
    ));

    // Every kernel line with BPF LSM, then the fallback tier in guests too: the
    // oldest and the newest line booted without `bpf` in `lsm=`, where the guard must
    // fall back to tracepoints and cgroup programs (the oldest is where those differ
    // most: no bpf_link for tracepoints on 5.10).
    let kernels = kernels::Line::all();
    let mut rows: Vec<Row> = kernels
        .iter()
        .map(|&line| Row::new(line, opts.clone(), ""))
        .collect();
    let fallback = VmOpts {
        lsm: opts
            .lsm
            .split(',')
            .filter(|l| *l != "bpf")
            .collect::<Vec<_>>()
            .join(","),
        ..opts.clone()
    };
    let mut ends: Vec<kernels::Line> = kernels.first().into_iter().copied().collect();
    ends.extend(
        kernels
            .last()
            .copied()
            .filter(|l| Some(l) != kernels.first()),
    );
    rows.extend(
        ends.into_iter()
            .map(|line| Row::new(line, fallback.clone(), "-nobpf")),
    );
    table.extend(matrix(ctx, &bins, &rows, filter)?);
    // The package a fleet installs, on a Debian 12 that boots systemd (no filter:
    // it is one flow, run whole; release only: the package holds a release build).
    if filter.is_empty() && !opts.debug {
        table.push(package::guest_row(ctx, &bins, &opts.lsm));
    }

    table.print();
    Ok(if table.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn vm_command(
    ctx: &Ctx,
    lines: &[kernels::Line],
    run: Option<&str>,
    opts: &VmOpts,
    filter: &[String],
) -> Result<ExitCode> {
    let lines = if lines.is_empty() {
        kernels::Line::all().to_vec()
    } else {
        lines.to_vec()
    };
    let obj = build::ebpf(ctx)?;
    let bins = build::static_bins(ctx, &obj, !opts.debug)?;
    if let Some(script) = run {
        if !filter.is_empty() {
            bail!("--run and test filters exclude each other");
        }
        let initrd = initramfs::build(ctx, &bins, &initramfs::Mode::Run(script.to_owned()))?;
        let mut code = 0;
        for line in lines {
            let outcome = boot_test_guest(ctx, line, &initrd, opts)?;
            match outcome.verdict() {
                Ok(guest_code) => {
                    println!("xtask: [{}] command exited {guest_code}", line.name());
                    if code == 0 {
                        code = guest_code;
                    }
                }
                Err(why) => bail!("[{}] {why}", line.name()),
            }
        }
        // Exit codes are 0..=255 in the guest; anything else maps to failure.
        return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
    }
    let mut table = Table::default();
    let rows: Vec<Row> = lines
        .iter()
        .map(|&line| Row::new(line, opts.clone(), ""))
        .collect();
    table.extend(matrix(ctx, &bins, &rows, filter)?);
    table.print();
    Ok(if table.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Fetches a kernel line and boots it with `initrd` as the tests do (serial vCPUs).
fn boot_test_guest(
    ctx: &Ctx,
    line: kernels::Line,
    initrd: &std::path::Path,
    opts: &VmOpts,
) -> Result<vm::GuestOutcome> {
    let vmlinuz = kernels::fetch(ctx, line)?;
    vm::boot(
        line.name(),
        &vmlinuz,
        initrd,
        &opts.lsm,
        opts.timeout,
        vm::Vcpus::Serial,
    )
}

/// One guest of the matrix: a kernel line, its options (`lsm=`), the row's name.
struct Row {
    line: kernels::Line,
    opts: VmOpts,
    name: String,
}

impl Row {
    fn new(line: kernels::Line, opts: VmOpts, suffix: &str) -> Self {
        Self {
            line,
            opts,
            name: format!("{}{suffix}", line.name()),
        }
    }
}

/// Boots one guest per row, as many at a time as the host has CPUs: each TCG guest
/// runs on one host thread (`Vcpus::Serial`), so a second guest uses a core the
/// first leaves idle. Results come back in the rows' order.
fn matrix(
    ctx: &Ctx,
    bins: &build::StaticBins,
    rows: &[Row],
    filter: &[String],
) -> Result<Vec<EnvResult>> {
    // The real gateway (Node and openclaw, ~830 MB) runs on the host tier only
    // (`host-e2e`): it would not fit the guests' initramfs, nor TCG's time budget.
    let args = [
        vec!["--skip".to_owned(), "e2e::".to_owned()],
        filter.to_vec(),
    ]
    .concat();
    let initrd = initramfs::build(ctx, bins, &initramfs::Mode::Test(args))?;
    // Kernels first, one by one: apt is not for concurrent use.
    let images = rows
        .iter()
        .map(|r| kernels::fetch(ctx, r.line))
        .collect::<Result<Vec<_>>>()?;
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(rows.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Result<EnvResult>>>> =
        std::sync::Mutex::new(rows.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (Some(row), Some(image)) = (rows.get(i), images.get(i)) else {
                    break;
                };
                let result = vm::boot(
                    &row.name,
                    image,
                    &initrd,
                    &row.opts.lsm,
                    row.opts.timeout,
                    vm::Vcpus::Serial,
                )
                .map(|outcome| outcome.row(&row.name));
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a guest runner panicked"))?
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("a guest row did not run"))))
        .collect()
}
