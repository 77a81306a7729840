//! Test kernels: Debian's cloud kernel images, resolved through apt (never a
//! hard-coded version), downloaded once and cached by package name and version.
//! Lines of an older Debian release (5.10: bullseye) are resolved through an apt
//! state of their own under the cache, never the system's sources.

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
    #[value(name = "5.10")]
    V5_10,
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
}

impl Line {
    pub(crate) fn all() -> &'static [Line] {
        &[Line::V5_10, Line::V6_1, Line::V6_12]
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Line::V5_10 => "5.10",
            Line::V6_1 => "6.1",
            Line::V6_12 => "6.12",
        }
    }

    /// The Debian release whose archive has this line, when it is not the system's:
    /// its suites, resolved through an apt state of its own.
    fn foreign_suites(self) -> Option<(&'static str, [&'static str; 2])> {
        match self {
            Line::V5_10 => Some(("bullseye", ["bullseye", "bullseye-security"])),
            Line::V6_1 | Line::V6_12 => None,
        }
    }

    /// Debian's metapackage that depends on the current image of this line. Cloud
    /// images are the smallest and boot fastest.
    fn metapackage(self) -> &'static str {
        match self {
            Line::V5_10 | Line::V6_1 => "linux-image-cloud-amd64",
            Line::V6_12 => "linux-image-6.12-cloud-amd64",
        }
    }
}

/// Returns the path of the line's cached `vmlinuz`, downloading it if needed.
pub(crate) fn fetch(ctx: &Ctx, line: Line) -> Result<PathBuf> {
    let apt = Apt::for_line(ctx, line)?;
    let (package, version) = resolve(&apt, line)
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
    download(&apt, &package, &version, &dir)
        .with_context(|| format!("downloading {package} {version}"))?;
    Ok(vmlinuz)
}

/// apt options: none for the system's sources, or a private state for another release.
struct Apt {
    options: Vec<String>,
    /// A private state: `apt-get update` needs no root.
    private: bool,
}

impl Apt {
    fn for_line(ctx: &Ctx, line: Line) -> Result<Self> {
        let Some((release, suites)) = line.foreign_suites() else {
            return Ok(Apt {
                options: Vec::new(),
                private: false,
            });
        };
        let dir = ctx.cache.join("apt").join(release);
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let sources = dir.join("sources.list");
        // The archive keyring of the system (debian-archive-keyring) signs every
        // release it knows, bullseye's included.
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let text: String = suites
            .iter()
            .map(|suite| {
                let base = if suite.ends_with("-security") {
                    "http://deb.debian.org/debian-security"
                } else {
                    "http://deb.debian.org/debian"
                };
                format!("deb [signed-by={keyring}] {base} {suite} main\n")
            })
            .collect();
        fs::write(&sources, text).with_context(|| format!("writing {}", sources.display()))?;
        let o = |k: &str, v: &Path| format!("{k}={}", v.display());
        let options = [
            o("Dir::Etc::SourceList", &sources),
            o("Dir::Etc::SourceParts", &dir.join("sources.list.d")),
            o("Dir::State::Lists", &dir.join("lists")),
            o("Dir::Cache", &dir.join("cache")),
            o("Dir::State::status", Path::new("/dev/null")),
        ]
        .into_iter()
        .flat_map(|kv| ["-o".to_owned(), kv])
        .collect();
        Ok(Apt {
            options,
            private: true,
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.args(&self.options);
        c
    }

    /// `apt-get update`: the system's lists need root, a private state does not.
    fn update(&self) -> Command {
        let mut c = if self.private {
            Command::new("apt-get")
        } else {
            cmd::as_root("apt-get")
        };
        c.args(&self.options).arg("update");
        c
    }
}

fn resolve(apt: &Apt, line: Line) -> Result<(String, String)> {
    if let Ok(found) = try_resolve(apt, line) {
        return Ok(found);
    }
    // A bare machine (or a new private state) has no package lists yet.
    cmd::run(&mut apt.update())?;
    try_resolve(apt, line)
}

fn try_resolve(apt: &Apt, line: Line) -> Result<(String, String)> {
    let meta = line.metapackage();
    let deps = cmd::output(apt.command("apt-cache").args(["depends", meta]))?;
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .with_context(|| format!("{meta} depends on no linux-image-* package"))?
        .to_owned();
    let policy = cmd::output(apt.command("apt-cache").args(["policy", &package]))?;
    let version = policy
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .find(|v| *v != "(none)")
        .with_context(|| format!("apt has no candidate version of {package}"))?
        .to_owned();
    Ok((package, version))
}

fn download(apt: &Apt, package: &str, version: &str, dir: &Path) -> Result<()> {
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
        apt.command("apt-get")
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
