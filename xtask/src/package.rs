//! `cargo xtask package`: the Debian package a fleet installs (cargo-deb): the static
//! daemon, its systemd unit (enabled and started on install), `/etc/default` for its
//! arguments, an example policy and the `--help` texts. Metadata:
//! `[package.metadata.deb]` in openclaw-guard/Cargo.toml; maintainer scripts:
//! deploy/debian/.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::{build, cmd, kernels, report::EnvResult, toolchain, Ctx};

/// The subcommands whose `--help` goes into /usr/share/doc/openclaw-guard/.
const HELP: &[&str] = &[
    "run", "status", "unload", "audit", "events", "policy", "plugin",
];

/// Builds the daemon and the .deb; returns the .deb's path and the static binaries.
pub(crate) fn deb(ctx: &Ctx) -> Result<(PathBuf, build::StaticBins)> {
    let obj = build::ebpf(ctx)?;
    let bins = build::static_bins(ctx, &obj, true)?;
    Ok((deb_of(ctx, &bins)?, bins))
}

/// The .deb of static binaries already built.
fn deb_of(ctx: &Ctx, bins: &build::StaticBins) -> Result<PathBuf> {
    let out = ctx.root.join("target/package");
    let doc = out.join("doc");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&doc)?;
    write_help(&bins.daemon, &doc)?;
    let policy = cmd::output(Command::new(&bins.daemon).args(["policy", "default"]))
        .context("printing the default policy")?;
    fs::write(
        out.join("policy.example.toml"),
        format!(
            "# The embedded default policy, as `openclaw-guard policy default` prints it.\n\
             # To change it: copy to /etc/openclaw-guard/policy.toml, edit, and add\n\
             # `--policy /etc/openclaw-guard/policy.toml` to /etc/default/openclaw-guard.\n{policy}"
        ),
    )?;
    let cargo_deb = toolchain::cargo_deb(&ctx.cache)?;
    cmd::run(
        Command::new(&cargo_deb)
            .current_dir(&ctx.root)
            // The static build's directory: cargo-deb rewrites `target/release/...`.
            .env("CARGO_TARGET_DIR", ctx.root.join("target/static"))
            .args(["-p", "openclaw-guard", "--no-build", "--no-strip"])
            .args(["--target", build::STATIC_TARGET, "--output"])
            .arg(&out),
    )
    .context("cargo-deb")?;
    let debs: Vec<PathBuf> = fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    match debs.as_slice() {
        [one] => Ok(one.clone()),
        other => bail!("expected one .deb in {}, found {other:?}", out.display()),
    }
}

fn write_help(daemon: &Path, doc: &Path) -> Result<()> {
    let top = cmd::output(Command::new(daemon).arg("--help"))?;
    fs::write(doc.join("openclaw-guard.txt"), top)?;
    for sub in HELP {
        let text = cmd::output(Command::new(daemon).args([sub, "--help"]))?;
        fs::write(doc.join(format!("openclaw-guard-{sub}.txt")), text)?;
    }
    Ok(())
}

/// Seconds the package guest may take (boot to multi-user is ~7 s under TCG; the
/// daemon's start-up under TCG most of the rest).
const GUEST_TIMEOUT: u64 = 600;

/// Builds the .deb and installs it in a fresh Debian 12 guest booting systemd as
/// PID 1 (the 6.1 kernel, bookworm's own, with BPF LSM): `dpkg -i`, `systemctl enable
/// --now`, `openclaw-guard status`, `dpkg --purge` (tests/package/run.sh). One row of
/// `cargo xtask test`.
pub(crate) fn guest_row(ctx: &Ctx, bins: &build::StaticBins, lsm: &str) -> EnvResult {
    let started = Instant::now();
    let mut lines = Vec::new();
    let verdict = guest_test(ctx, bins, lsm, &mut lines);
    let error = verdict.as_ref().err().map(|e| format!("{e:#}"));
    let mut row = EnvResult::from_guest(
        "deb12-package",
        kernels::Line::V6_1.name().to_owned(),
        lsm.to_owned(),
        &lines,
        started.elapsed(),
        verdict.map_err(|e| format!("{e:#}")),
    );
    if row.error.is_none() {
        row.error = error;
    }
    row
}

fn guest_test(
    ctx: &Ctx,
    bins: &build::StaticBins,
    lsm: &str,
    lines: &mut Vec<String>,
) -> Result<i32> {
    let deb = deb_of(ctx, bins)?;
    let vmlinuz = kernels::fetch(ctx, kernels::Line::V6_1)?;
    let scripts = ctx.root.join("xtask/deb12");
    let dir = ctx.cache.join("deb12");
    fs::create_dir_all(&dir)?;
    let rootfs = dir.join("bookworm-systemd.tar");
    if !rootfs.is_file() {
        println!("xtask: package: building a Debian 12 root with systemd (mmdebstrap)");
        cmd::run(
            cmd::as_root(&scripts.join("build-rootfs.sh").to_string_lossy())
                .arg(&dir)
                .arg(&rootfs),
        )
        .context("building the Debian 12 root (mmdebstrap)")?;
    }
    let work = ctx.root.join("target/package/guest");
    fs::create_dir_all(&work)?;
    let image = work.join("root.img");
    cmd::run(
        cmd::as_root(&scripts.join("make-image.sh").to_string_lossy())
            .arg(&rootfs)
            .arg(&image),
    )
    .context("making the guest's root disk")?;
    // The test disk: the package and the flow.
    let payload = work.join("payload");
    let _ = fs::remove_dir_all(&payload);
    fs::create_dir_all(&payload)?;
    fs::copy(&deb, payload.join("openclaw-guard.deb"))?;
    fs::copy(
        ctx.root.join("tests/package/run.sh"),
        payload.join("run.sh"),
    )?;
    // A stand-in gateway for the alert the journal must show (copied as `node`).
    fs::copy(&bins.integration, payload.join("standin"))?;
    let test_disk = work.join("test.img");
    let _ = fs::remove_file(&test_disk);
    cmd::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "ocgtest", "-O", "^has_journal", "-d"])
            .arg(&payload)
            .arg(&test_disk)
            .arg("64M"),
    )?;
    let drive = |path: &Path, id: &str, extra: &str| {
        format!(
            "file={},if=none,id={id},format=raw{extra}",
            path.display().to_string().replace(',', ",,")
        )
    };
    let mut qemu = Command::new("timeout");
    qemu.args(["--kill-after=10", &GUEST_TIMEOUT.to_string()])
        .arg("qemu-system-x86_64")
        .args(["-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2"])
        .args(["-m", "2048", "-nographic", "-no-reboot", "-nodefaults"])
        .args(["-serial", "stdio"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(["-device", "nvme,id=nvme0,serial=ocgroot"])
        .args(["-drive", &drive(&image, "root", ",snapshot=on")])
        .args(["-device", "nvme-ns,drive=root,bus=nvme0,nsid=1"])
        .args(["-drive", &drive(&test_disk, "test", ",readonly=on")])
        .args(["-device", "nvme-ns,drive=test,bus=nvme0,nsid=2"])
        .arg("-kernel")
        .arg(&vmlinuz)
        .arg("-append")
        .arg(format!(
            "root=/dev/nvme0n1 rootfstype=ext4 rootwait rw console=ttyS0 panic=-1 quiet lsm={lsm}"
        ));
    println!("xtask: booting deb12-package (timeout {GUEST_TIMEOUT}s)");
    let out = cmd::stream(&mut qemu, "deb12-package")?;
    *lines = out.lines;
    // isa-debug-exit: (verdict << 1) | 1.
    match out.status.code() {
        Some(1) => Ok(0),
        Some(3) => Ok(1),
        Some(124 | 137) => bail!("the package guest timed out after {GUEST_TIMEOUT}s"),
        other => bail!("the package guest ended without a verdict (QEMU {other:?})"),
    }
}
