//! Enforcement that outlives the daemon: maps and links pinned in bpffs.
//!
//! Layout: `<pin dir>/<generation>/` holds the maps (pinned by name) and `links/`,
//! one pinned link per program and daemon (`<program>-<pid>`). The generation is a hash
//! of the eBPF object, so a daemon of the same build adopts the maps of the one before
//! it (tracked tree, protections, unread events), and a new build starts fresh maps.
//! A starting daemon attaches and pins its own links first and only then retires the
//! previous daemon's links and older generations: there is no moment without programs.

use std::{
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::programs::links::FdLink;
use sha2::Digest as _;

/// Where pins live unless `--pin-dir` says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/openclaw-guard";

/// bpffs mount point.
const BPFFS: &str = "/sys/fs/bpf";

pub struct Pins {
    root: PathBuf,
    generation: PathBuf,
    /// No pins wanted (`--no-pin`): the directory is removed once loaded, and programs
    /// detach when the daemon exits.
    ephemeral: bool,
    /// The generation's maps existed before this daemon: it adopted them.
    pub adopted: bool,
    /// Why links could not be pinned here (they then live only as long as the daemon).
    failure: std::cell::RefCell<Option<String>>,
}

impl Pins {
    pub fn open(root: Option<&Path>, object: &[u8]) -> anyhow::Result<Self> {
        ensure_bpffs()?;
        let (root, ephemeral) = match root {
            Some(r) => (r.to_path_buf(), false),
            None => (
                PathBuf::from(format!(
                    "{BPFFS}/openclaw-guard-ephemeral-{}",
                    std::process::id()
                )),
                true,
            ),
        };
        let hash = sha2::Sha256::digest(object);
        let generation = root.join(
            hash.iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        );
        let adopted = generation.join("TRACKED").exists();
        std::fs::create_dir_all(generation.join("links")).with_context(|| {
            format!(
                "creating pin directory {} (is bpffs mounted at {BPFFS}?)",
                generation.display()
            )
        })?;
        Ok(Self {
            root,
            generation,
            ephemeral,
            adopted,
            failure: std::cell::RefCell::new(None),
        })
    }

    /// Directory the loader pins maps in (and adopts them from).
    pub fn maps_dir(&self) -> &Path {
        &self.generation
    }

    /// Whether links should be taken and pinned (no `--no-pin`, no refusal so far).
    pub fn should_pin(&self) -> bool {
        !self.ephemeral && self.failure.borrow().is_none()
    }

    /// Pins a link so it stays attached beyond this process. On refusal the link is
    /// gone (pinning consumes it): returns false, and the caller attaches again and
    /// keeps that link in the daemon; later links are not taken at all.
    pub fn keep(&self, program: &str, link: FdLink) -> bool {
        let path = self
            .generation
            .join("links")
            // bpffs refuses names with a dot.
            .join(format!("{program}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        match link.pin(&path) {
            Ok(_) => true,
            Err(e) => {
                let why = match &e {
                    aya::pin::PinError::SyscallError(s) => format!("{}: {}", s.call, s.io_error),
                    other => other.to_string(),
                };
                *self.failure.borrow_mut() =
                    Some(format!("pinning {} refused ({why})", path.display()));
                false
            }
        }
    }

    /// How pinning went, for start-up and `status`.
    pub fn describe(&self) -> String {
        if self.ephemeral {
            "not pinned (--no-pin): the programs detach when the daemon exits".into()
        } else if let Some(why) = self.failure.borrow().as_ref() {
            format!(
                "NOT pinned, {why}: the programs detach if the daemon dies (maps are pinned in {})",
                self.generation.display()
            )
        } else {
            format!(
                "programs and maps pinned in {}: enforcement continues if the daemon dies",
                self.generation.display()
            )
        }
    }

    /// After this daemon's programs are attached: the previous daemons' links and older
    /// generations go. Returns what was retired.
    pub fn retire_others(&self) -> Vec<String> {
        let mut retired = Vec::new();
        if self.ephemeral {
            let _ = std::fs::remove_dir_all(&self.root);
            return retired;
        }
        let suffix = format!("-{}", std::process::id());
        if let Ok(rd) = std::fs::read_dir(self.generation.join("links")) {
            for e in rd.flatten() {
                let name = e.file_name();
                if !name.as_bytes().ends_with(suffix.as_bytes())
                    && std::fs::remove_file(e.path()).is_ok()
                {
                    retired.push(format!("link {}", name.to_string_lossy()));
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(&self.root) {
            for e in rd.flatten() {
                if e.path() != self.generation && remove_generation(&e.path()).is_ok() {
                    retired.push(format!("generation {}", e.file_name().to_string_lossy()));
                }
            }
        }
        retired
    }
}

/// Links first (they hold the programs), then the maps.
fn remove_generation(dir: &Path) -> std::io::Result<()> {
    let links = dir.join("links");
    if links.exists() {
        for e in std::fs::read_dir(&links)?.flatten() {
            std::fs::remove_file(e.path())?;
        }
        std::fs::remove_dir(&links)?;
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        std::fs::remove_file(e.path())?;
    }
    std::fs::remove_dir(dir)
}

/// `openclaw-guard unload`: every pinned link and map goes; enforcement stops.
pub fn unload(root: &Path) -> anyhow::Result<usize> {
    if !root.exists() {
        return Ok(0);
    }
    let mut n = 0;
    for e in std::fs::read_dir(root)
        .with_context(|| format!("reading {}", root.display()))?
        .flatten()
    {
        remove_generation(&e.path()).with_context(|| format!("removing {}", e.path().display()))?;
        n += 1;
    }
    std::fs::remove_dir(root).with_context(|| format!("removing {}", root.display()))?;
    Ok(n)
}

fn ensure_bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("bpf"))
    {
        return Ok(());
    }
    // SAFETY: mount(2) with static NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        anyhow::bail!(
            "bpffs is not mounted and mounting it at {BPFFS} failed: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
