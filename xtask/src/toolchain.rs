//! Set-up: install what a fresh Debian 12 machine lacks, idempotently, with a cache.
//!
//! The default eBPF route ("debian") needs only apt: Debian's rustc-web 1.96 ships the
//! exact std source `-Z build-std=core` needs. The nightly route depends on what rustup
//! can fetch, so it is opt-in and CI never uses it.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::ValueEnum;

use crate::cmd;

/// Debian packages the build, the VM harness and the guest initramfs use.
const APT_PACKAGES: &[&str] = &[
    // bpf-linker links against LLVM 22, the LLVM of every rustc used here.
    "llvm-22-dev",
    // Route 2 compiler for the eBPF crate, with its std source and clippy.
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "rust-web-clippy",
    // VM harness and guest userland.
    "qemu-system-x86",
    "cpio",
    "bash-static",
    "busybox-static",
    "iproute2",
    // mkfs.ext4 for the guests' scratch disk.
    "e2fsprogs",
    // The egress tests' DNS resolver (host and guests) and HTTP client (host).
    "dnsmasq-base",
    "curl",
    // journald for the journald output's test (run in a private mount namespace).
    "systemd",
    // The package test's Debian 12 root (cargo xtask package --test).
    "mmdebstrap",
];

/// Python packages of the output tests' independent receivers: the official OTLP
/// protobuf definitions and the published OCSF schemas (tests/otlp, tests/ocsf).
const PYTHON_PACKAGES: &[&str] = &["opentelemetry-proto==1.45.2", "ocsf-json-schema==1.2.0"];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// The default feature (llvm-23) builds but fails to link eBPF with LLVM 22 bitcode.
const BPF_LINKER_FEATURE: &str = "llvm-22";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_MAJOR: &str = "22";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Toolchain {
    /// Debian's rustc-web + rust-web-src (apt only).
    Debian,
    /// rustup nightly with the rust-src component.
    Nightly,
}

/// Resolved tools for the eBPF build.
pub(crate) struct Tools {
    pub(crate) toolchain: Toolchain,
    /// Directory holding `bpf-linker`; goes first on PATH for eBPF builds.
    pub(crate) bpf_linker_bin: PathBuf,
}

/// `$OPENCLAW_GUARD_CACHE`, else `~/.cache/openclaw-guard`.
pub(crate) fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = env::var_os("OPENCLAW_GUARD_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let home = env::var_os("HOME").context("neither OPENCLAW_GUARD_CACHE nor HOME is set")?;
    Ok(Path::new(&home).join(".cache/openclaw-guard"))
}

pub(crate) fn setup(cache: &Path, toolchain: Toolchain) -> Result<Tools> {
    apt_packages().context("installing Debian packages")?;
    python_packages(cache).context("installing the output tests' Python packages")?;
    let bpf_linker_bin = bpf_linker(cache).context("installing bpf-linker")?;
    if toolchain == Toolchain::Nightly {
        nightly().context("installing rustup nightly with rust-src")?;
    }
    Ok(Tools {
        toolchain,
        bpf_linker_bin,
    })
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        println!("xtask: setup: apt packages present");
        return Ok(());
    }
    println!("xtask: setup: installing {}", missing.join(" "));
    if missing.iter().any(|p| !apt_has_candidate(p)) {
        // Only when needed: a bare CI image has no package lists yet.
        cmd::run(cmd::as_root("apt-get").arg("update"))?;
    }
    cmd::run(
        cmd::as_root("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )
}

/// Where the Python packages are installed (`PYTHONPATH` for the tests).
pub(crate) fn python_dir(cache: &Path) -> PathBuf {
    cache.join("python")
}

fn python_packages(cache: &Path) -> Result<()> {
    let dir = python_dir(cache);
    let marker = dir.join(".installed");
    let want = PYTHON_PACKAGES.join(" ");
    if fs::read_to_string(&marker).is_ok_and(|m| m == want) {
        return Ok(());
    }
    println!("xtask: setup: pip installing {want} into {}", dir.display());
    let _ = fs::remove_dir_all(&dir);
    cmd::run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("--target")
            .arg(&dir)
            .args(PYTHON_PACKAGES),
    )?;
    fs::write(&marker, want)?;
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", package])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"ii"))
}

/// Whether apt knows an installable version (false before the first `apt-get update`).
pub(crate) fn apt_has_candidate(package: &str) -> bool {
    cmd::output(Command::new("apt-cache").args(["policy", package])).is_ok_and(|out| {
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("Candidate:"))
            .any(|c| c.trim() != "(none)")
    })
}

fn bpf_linker(cache: &Path) -> Result<PathBuf> {
    let dir = format!(
        "bpf-linker-{BPF_LINKER_VERSION}-{}",
        BPF_LINKER_FEATURE.replace('-', "")
    );
    cargo_tool(
        cache,
        &dir,
        ("bpf-linker", BPF_LINKER_VERSION, BPF_LINKER_FEATURE),
        &[("LLVM_PREFIX", LLVM_PREFIX)],
        "against LLVM 22 (about a minute)",
    )
}

const CARGO_DEB_VERSION: &str = "3.8.0";

/// cargo-deb, for `cargo xtask package`: built on first use, gzip only (the default
/// xz needs liblzma's C build; dpkg reads either).
pub(crate) fn cargo_deb(cache: &Path) -> Result<PathBuf> {
    let bin = cargo_tool(
        cache,
        &format!("cargo-deb-{CARGO_DEB_VERSION}"),
        ("cargo-deb", CARGO_DEB_VERSION, "gzip"),
        &[],
        "(a few minutes, once)",
    )?;
    Ok(bin.join("cargo-deb"))
}

/// `cargo install NAME --locked --version V --no-default-features --features F` (with
/// `env`) into `<cache>/tools/DIR` unless it is there. Returns its bin dir.
fn cargo_tool(
    cache: &Path,
    dir: &str,
    (name, version, features): (&str, &str, &str),
    env: &[(&str, &str)],
    note: &str,
) -> Result<PathBuf> {
    let root = cache.join("tools").join(dir);
    let bin = root.join("bin");
    let exe = bin.join(name);
    // cargo install writes the binary last, so its presence means a complete install.
    if Command::new(&exe)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!("xtask: setup: {name} cached at {}", exe.display());
        return Ok(bin);
    }
    println!("xtask: setup: building {name} {version} {note}");
    cmd::run(
        Command::new("cargo")
            .envs(env.iter().copied())
            .args(["install", name, "--locked", "--version", version])
            .args(["--no-default-features", "--features", features])
            .arg("--root")
            .arg(&root),
    )?;
    if !exe.exists() {
        bail!("cargo install finished but {} is missing", exe.display());
    }
    Ok(bin)
}

fn nightly() -> Result<()> {
    let installed = cmd::output(Command::new("rustc").args(["+nightly", "-vV"])).ok();
    if installed.is_none() {
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
        .context(
            "rustup could not install nightly; the default --toolchain debian needs only apt",
        )?;
    }
    let version = match installed {
        Some(v) => v,
        None => cmd::output(Command::new("rustc").args(["+nightly", "-vV"]))?,
    };
    // bpf-linker links the compiler's bitcode with Debian's LLVM 22 (the only LLVM
    // apt offers here); another major version fails with "Invalid record".
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .unwrap_or("?");
    if llvm != LLVM_MAJOR {
        bail!(
            "rustup nightly uses LLVM {llvm}, but bpf-linker is built against LLVM {LLVM_MAJOR}; \
             use the default --toolchain debian, or a nightly whose LLVM is {LLVM_MAJOR}"
        );
    }
    let sysroot = cmd::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    if Path::new(sysroot.trim())
        .join("lib/rustlib/src/rust/library/Cargo.lock")
        .exists()
    {
        println!("xtask: setup: rustup nightly with rust-src present");
        return Ok(());
    }
    // component add, not toolchain install: that would also update the nightly.
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
    .context("rustup could not add rust-src; the default --toolchain debian needs only apt")
}
