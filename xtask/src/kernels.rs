//! Test kernels: Debian's cloud kernel images, resolved through apt (never a
//! hard-coded version), downloaded once and cached by package name and version.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};
use clap::ValueEnum;

use crate::{cmd, Ctx};

/// A kernel line of the test matrix.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Line {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
}

impl Line {
    pub(crate) fn all() -> &'static [Line] {
        &[Line::V6_1, Line::V6_12]
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Line::V6_1 => "6.1",
            Line::V6_12 => "6.12",
        }
    }

    /// Debian's metapackage that depends on the current image of this line. Cloud
    /// images are the smallest and boot fastest.
    fn metapackage(self) -> &'static str {
        match self {
            Line::V6_1 => "linux-image-cloud-amd64",
            Line::V6_12 => "linux-image-6.12-cloud-amd64",
        }
    }
}

/// Returns the path of the line's cached `vmlinuz`, downloading it if needed.
pub(crate) fn fetch(ctx: &Ctx, line: Line) -> Result<PathBuf> {
    let (package, version) = resolve(line)
        .with_context(|| format!("resolving the {} kernel package through apt", line.name()))?;
    // apt spells an epoch's ':' as %3a in file names; do the same.
    let dir = ctx
        .cache
        .join("kernels")
        .join(format!("{package}_{}", version.replace(':', "%3a")));
    let vmlinuz = dir.join("vmlinuz");
    if vmlinuz.is_file() {
        println!(
            "xtask: kernel {}: {package} {version} (cached)",
            line.name()
        );
        return Ok(vmlinuz);
    }
    println!(
        "xtask: kernel {}: downloading {package} {version}",
        line.name()
    );
    download(&package, &version, &dir)
        .with_context(|| format!("downloading {package} {version}"))?;
    Ok(vmlinuz)
}

fn resolve(line: Line) -> Result<(String, String)> {
    if let Ok(found) = try_resolve(line) {
        return Ok(found);
    }
    // A bare machine has no package lists yet.
    cmd::run(cmd::as_root("apt-get").arg("update"))?;
    try_resolve(line)
}

fn try_resolve(line: Line) -> Result<(String, String)> {
    let meta = line.metapackage();
    let deps = cmd::output(Command::new("apt-cache").args(["depends", meta]))?;
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .with_context(|| format!("{meta} depends on no linux-image-* package"))?
        .to_owned();
    let policy = cmd::output(Command::new("apt-cache").args(["policy", &package]))?;
    let version = policy
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .find(|v| *v != "(none)")
        .with_context(|| format!("apt has no candidate version of {package}"))?
        .to_owned();
    Ok((package, version))
}

fn download(package: &str, version: &str, dir: &Path) -> Result<()> {
    // Work in a scratch dir and rename at the end, so an interrupted download never
    // looks like a cached kernel.
    let mut scratch = dir.as_os_str().to_owned();
    scratch.push(".partial");
    let scratch = PathBuf::from(scratch);
    if scratch.exists() {
        fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    }
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    cmd::run(
        Command::new("apt-get")
            .current_dir(&scratch)
            .arg("download")
            .arg(format!("{package}={version}")),
    )?;
    let deb = fs::read_dir(&scratch)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download produced no .deb")?;

    println!(
        "xtask:   extracting ./boot/vmlinuz-* from {}",
        deb.display()
    );
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start dpkg-deb")?;
    let tar_in = dpkg.stdout.take().context("dpkg-deb has no stdout")?;
    let tar = Command::new("tar")
        .current_dir(&scratch)
        .args(["-x", "--wildcards", "./boot/vmlinuz-*"])
        .stdin(tar_in)
        .status()
        .context("cannot start tar")?;
    let dpkg = dpkg.wait().context("waiting for dpkg-deb")?;
    if !dpkg.success() || !tar.success() {
        bail!("extracting the kernel failed (dpkg-deb: {dpkg}, tar: {tar})");
    }
    let image = fs::read_dir(scratch.join("boot"))
        .context("the package has no ./boot")?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("the package has no ./boot/vmlinuz-*")?;
    fs::rename(&image, scratch.join("vmlinuz"))?;
    // The image is all we need; the .deb and the emptied boot dir go.
    fs::remove_file(&deb)?;
    fs::remove_dir_all(scratch.join("boot"))?;
    fs::rename(&scratch, dir)
        .with_context(|| format!("moving {} to {}", scratch.display(), dir.display()))?;
    Ok(())
}
