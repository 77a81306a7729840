//! Cargo invocations: the eBPF object, the daemon, the static guest binaries, lint.
//!
//! Every userspace build gets `OPENCLAW_GUARD_EBPF_OBJ` (the daemon's build.rs embeds
//! that object), so nothing under plain cargo has to build eBPF itself.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, toolchain::Toolchain, Ctx};

pub(crate) const EBPF_OBJ_ENV: &str = "OPENCLAW_GUARD_EBPF_OBJ";
const EBPF_PACKAGE: &str = "openclaw-guard-ebpf";
const EBPF_TARGET: &str = "bpfel-unknown-none";
const EBPF_RUSTFLAGS: &str =
    "--cfg=bpf_target_arch=\"x86_64\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf";
/// Debian's compiler (route 2); set explicitly or /usr/bin/cargo picks rustup's rustc.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
pub(crate) const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Without debug info the initramfs shrinks from ~45 to ~21 MB, which every guest
/// unpacks at boot.
const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static -C strip=debuginfo";

/// Static binaries baked into the guests (and run on the host too, so every
/// environment tests the same build).
pub(crate) struct StaticBins {
    pub(crate) daemon: PathBuf,
    pub(crate) integration: PathBuf,
    pub(crate) init: PathBuf,
    pub(crate) bench: PathBuf,
}

/// PATH with bpf-linker first, rustup's tools next (as they already were).
fn ebpf_path(ctx: &Ctx) -> Result<OsString> {
    let mut dirs = vec![ctx.tools.bpf_linker_bin.clone()];
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    env::join_paths(dirs).context("PATH contains a directory with ':' in its name")
}

/// The environment and arguments shared by the eBPF build and its clippy run.
fn ebpf_cargo(ctx: &Ctx, program: &str, subcommand: &str) -> Result<Command> {
    let mut cmd = Command::new(program);
    cmd.current_dir(&ctx.root)
        .env("PATH", ebpf_path(ctx)?)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_ENCODED_RUSTFLAGS", EBPF_RUSTFLAGS)
        .env_remove("RUSTFLAGS");
    match ctx.tools.toolchain {
        Toolchain::Debian => {
            cmd.env("RUSTC", DEBIAN_RUSTC);
        }
        Toolchain::Nightly => {
            cmd.env_remove("RUSTC").env("RUSTUP_TOOLCHAIN", "nightly");
        }
    }
    cmd.arg(subcommand)
        .args([
            "-p",
            EBPF_PACKAGE,
            "--bins",
            "--release",
            "--target",
            EBPF_TARGET,
        ])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(ebpf_target_dir(ctx));
    Ok(cmd)
}

/// One target dir per compiler: mixing them rebuilds everything each time.
fn ebpf_target_dir(ctx: &Ctx) -> PathBuf {
    ctx.root.join(match ctx.tools.toolchain {
        Toolchain::Debian => "target/ebpf",
        Toolchain::Nightly => "target/ebpf-nightly",
    })
}

/// Builds the eBPF crate; returns the absolute path of its object.
pub(crate) fn ebpf(ctx: &Ctx) -> Result<PathBuf> {
    println!("xtask: building the eBPF object");
    let program = match ctx.tools.toolchain {
        Toolchain::Debian => DEBIAN_CARGO,
        Toolchain::Nightly => "cargo",
    };
    cmd::run(&mut ebpf_cargo(ctx, program, "build")?).context("building the eBPF crate")?;
    let obj = ebpf_target_dir(ctx).join(format!("{EBPF_TARGET}/release/openclaw-guard"));
    if !obj.is_file() {
        bail!("the eBPF build succeeded but {} is missing", obj.display());
    }
    Ok(obj)
}

fn userspace_cargo(ctx: &Ctx, obj: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&ctx.root).env(EBPF_OBJ_ENV, obj);
    cmd
}

/// Builds the daemon with the normal (rustup) cargo; returns its path.
pub(crate) fn daemon(ctx: &Ctx, obj: &Path, release: bool) -> Result<PathBuf> {
    let mut cmd = userspace_cargo(ctx, obj);
    cmd.args(["build", "-p", "openclaw-guard", "--bin", "openclaw-guard"]);
    if release {
        cmd.arg("--release");
    }
    cmd::run(&mut cmd).context("building the daemon")?;
    let profile = if release { "release" } else { "debug" };
    Ok(ctx.root.join("target").join(profile).join("openclaw-guard"))
}

/// Builds the daemon, the integration runner and the guest init as static glibc
/// binaries (musl is not installed) in their own target dir (different RUSTFLAGS).
pub(crate) fn static_bins(ctx: &Ctx, obj: &Path, release: bool) -> Result<StaticBins> {
    let target_dir = ctx.root.join("target/static");
    let mut cmd = userspace_cargo(ctx, obj);
    // With --target, RUSTFLAGS stays off build scripts and proc macros.
    cmd.env("RUSTFLAGS", STATIC_RUSTFLAGS)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args(["build", "--target", STATIC_TARGET, "--target-dir"])
        .arg(&target_dir)
        .args(["-p", "openclaw-guard", "-p", "openclaw-guard-tests"])
        .args(["--bin", "openclaw-guard"])
        .args(["--bin", "openclaw-guard-integration"])
        .args(["--bin", "guest-init"])
        .args(["--bin", "openclaw-guard-bench"]);
    if release {
        cmd.arg("--release");
    }
    cmd::run(&mut cmd).context("building the static guest binaries")?;
    let dir = target_dir
        .join(STATIC_TARGET)
        .join(if release { "release" } else { "debug" });
    Ok(StaticBins {
        daemon: dir.join("openclaw-guard"),
        integration: dir.join("openclaw-guard-integration"),
        init: dir.join("guest-init"),
        bench: dir.join("openclaw-guard-bench"),
    })
}

/// `cargo test` for the userspace crates, shown live and captured for the counts.
pub(crate) fn unit_tests(ctx: &Ctx, obj: &Path) -> Result<cmd::Streamed> {
    let mut cmd = userspace_cargo(ctx, obj);
    cmd.args(["test", "--workspace"])
        .args(["--exclude", "openclaw-guard-ebpf"])
        .args(["--exclude", "openclaw-guard-tests"]);
    cmd::stream(&mut cmd, "unit")
}

pub(crate) fn clippy_userspace(ctx: &Ctx, obj: &Path) -> Command {
    let mut cmd = userspace_cargo(ctx, obj);
    cmd.args([
        "clippy",
        "--workspace",
        "--exclude",
        EBPF_PACKAGE,
        "--all-targets",
    ])
    .args(["--", "-D", "warnings"]);
    cmd
}

/// Clippy for the eBPF target needs a clippy built for the compiler that builds it:
/// Debian's rust-web-clippy for route 2, rustup nightly's for route 1.
pub(crate) fn clippy_ebpf(ctx: &Ctx) -> Result<Command> {
    let mut cmd = match ctx.tools.toolchain {
        Toolchain::Debian => {
            // cargo-clippy runs `$CARGO check` with its sibling clippy-driver as the
            // workspace wrapper; without CARGO it would pick rustup's cargo.
            let mut c = ebpf_cargo(ctx, "/usr/bin/cargo-clippy", "clippy")?;
            c.env("CARGO", DEBIAN_CARGO);
            c
        }
        Toolchain::Nightly => ebpf_cargo(ctx, "cargo", "clippy")?,
    };
    cmd.args(["--", "-D", "warnings"]);
    Ok(cmd)
}

pub(crate) fn fmt_check(ctx: &Ctx) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&ctx.root).args(["fmt", "--all", "--check"]);
    cmd
}
