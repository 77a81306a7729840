//! The guest's root filesystem: a newc cpio archive written here (uncompressed: the
//! kernel accepts it and it skips a compression step on every run).

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::{build::StaticBins, cmd, Ctx};

const BASH_STATIC: &str = "/bin/bash-static";
const BUSYBOX_STATIC: &str = "/bin/busybox";
/// The egress tests' DNS resolver, with the shared libraries it links (from `ldd`).
const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// What the guest init runs.
pub(crate) enum Mode {
    /// The integration runner with these filter arguments.
    Test(Vec<String>),
    /// A bash script, as root.
    Run(String),
}

/// Writes the initramfs under target/vm and returns its path.
pub(crate) fn build(ctx: &Ctx, bins: &StaticBins, mode: &Mode) -> Result<PathBuf> {
    let dir = ctx.root.join("target/vm");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(match mode {
        Mode::Test(_) => "initramfs-test.cpio",
        Mode::Run(_) => "initramfs-run.cpio",
    });
    let mut cpio = Newc::default();
    for d in [
        "bin", "dev", "etc", "ocg", "proc", "root", "run", "sys", "tmp",
    ] {
        cpio.dir(d, 0o755);
    }
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.char_dev("dev/null", 0o666, 1, 3);
    cpio.file("init", 0o755, &read(&bins.init)?);
    cpio.file("bin/openclaw-guard", 0o755, &read(&bins.daemon)?);
    cpio.file(
        "bin/openclaw-guard-integration",
        0o755,
        &read(&bins.integration)?,
    );
    cpio.file("bin/openclaw-guard-bench", 0o755, &read(&bins.bench)?);
    // A real bash: tests need a real $SHELL, not busybox's ash.
    cpio.file("bin/bash", 0o755, &read(Path::new(BASH_STATIC))?);
    cpio.file("bin/busybox", 0o755, &read(Path::new(BUSYBOX_STATIC))?);
    let taken: BTreeSet<&str> = ["bash", "busybox"].into();
    let applets = cmd::output(Command::new(BUSYBOX_STATIC).arg("--list"))
        .context("listing busybox applets")?;
    for applet in applets.lines().map(str::trim) {
        if !applet.is_empty() && !applet.contains('/') && !taken.contains(applet) {
            cpio.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    add_dynamic(&mut cpio, Path::new(DNSMASQ), "bin/dnsmasq")?;
    cpio.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    );
    cpio.file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n");
    match mode {
        Mode::Test(args) => {
            let mut text = args.join("\n");
            text.push('\n');
            cpio.file("ocg/test-args", 0o644, text.as_bytes());
        }
        Mode::Run(script) => {
            let mut text = script.clone();
            text.push('\n');
            cpio.file("ocg/run.sh", 0o755, text.as_bytes());
        }
    }
    fs::write(&path, cpio.finish()).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A dynamically linked program at `dest`, with its loader and libraries at the paths
/// `ldd` names (the guest has no other userland that could provide them).
fn add_dynamic(cpio: &mut Newc, program: &Path, dest: &str) -> Result<()> {
    let listing = cmd::output(Command::new("ldd").arg(program))
        .with_context(|| format!("listing the libraries of {}", program.display()))?;
    let mut dirs = BTreeSet::new();
    let mut libs = Vec::new();
    for line in listing.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, or the loader's
        // `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let rel = path.trim_start_matches('/').to_string();
        let mut parent = Path::new(&rel).parent();
        while let Some(d) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_string_lossy().into_owned());
            parent = d.parent();
        }
        libs.push((rel, PathBuf::from(path)));
    }
    // Parents before children.
    let mut dirs: Vec<String> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| d.matches('/').count());
    for d in dirs {
        cpio.dir(&d, 0o755);
    }
    for (rel, path) in libs {
        // Follow the symlinks: the archive holds the library itself.
        cpio.file(
            &rel,
            0o755,
            &read(&fs::canonicalize(&path).unwrap_or(path))?,
        );
    }
    cpio.file(dest, 0o755, &read(program)?);
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    let data =
        fs::read(path).with_context(|| format!("reading {} for the initramfs", path.display()))?;
    if u32::try_from(data.len()).is_err() {
        anyhow::bail!("{} is too large for a cpio archive", path.display());
    }
    Ok(data)
}

/// A newc ("070701") cpio writer: the format the kernel unpacks into its rootfs.
#[derive(Default)]
struct Newc {
    out: Vec<u8>,
    next_ino: u32,
}

impl Newc {
    fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, libc::S_IFDIR | perm, 0, b"");
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, libc::S_IFREG | perm, 0, data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, libc::S_IFLNK | 0o777, 0, target.as_bytes());
    }

    fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, libc::S_IFCHR | perm, (major << 8) | minor, b"");
    }

    /// `rdev` packs (major << 8 | minor); split into the header's two fields.
    fn entry(&mut self, name: &str, mode: u32, rdev: u32, data: &[u8]) {
        self.next_ino += 1;
        let name_size = name.len() + 1;
        let fields = [
            self.next_ino,
            mode,
            0, // uid
            0, // gid
            if mode & libc::S_IFMT == libc::S_IFDIR {
                2
            } else {
                1
            },
            0, // mtime: fixed, so the archive is reproducible
            len_u32(data.len()),
            0, // devmajor
            0, // devminor
            rdev >> 8,
            rdev & 0xff,
            len_u32(name_size),
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, b"");
        self.out
    }
}

/// cpio sizes are 32-bit; `read` refuses larger files.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
