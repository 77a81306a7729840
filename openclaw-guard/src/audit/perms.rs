//! File modes and ownership inside the state directories, and `--fix`.
//!
//! The walk never follows symbolic links and only looks at directories and regular
//! files. A fix re-checks the path before changing it (same inode, still not a link,
//! a regular file with a single link) and changes it through a file descriptor opened
//! with `O_NOFOLLOW`, so nothing outside the state directories is touched.

use std::{
    fs::{self, OpenOptions, Permissions},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use super::report::FixRecord;
use crate::openclaw;

/// Stop walking after this many entries (a workspace can hold a large checkout).
const MAX_ENTRIES: usize = 100_000;
/// Group and other permission bits.
const GO_BITS: u32 = 0o077;

/// One planned change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FixAction {
    pub(super) path: PathBuf,
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) change: Change,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Chmod { old: u32, new: u32 },
    Chown { old: (u32, u32), new: (u32, u32) },
}

/// Whose files these should be.
#[derive(Debug, Clone)]
pub(super) struct ExpectedOwner {
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// `the gateway (pid N)` or `owner of <state dir>`.
    pub(super) source: String,
}

/// Findings of one scan, as evidence lines, and the fixes for them.
#[derive(Debug, Default)]
pub(super) struct PermScan {
    pub(super) state_dir: Vec<String>,
    pub(super) secret_files: Vec<String>,
    pub(super) state_files: Vec<String>,
    pub(super) owner: Vec<String>,
    pub(super) plan: Vec<FixAction>,
    pub(super) truncated: bool,
}

fn mode_line(path: &Path, mode: u32, want: u32, extra: &str) -> String {
    format!(
        "{} mode {mode:04o} (want {want:04o}){extra}",
        path.display()
    )
}

/// Scans one state directory (the directory itself and everything below it).
pub(super) fn scan(dir: &Path, expected: &ExpectedOwner, out: &mut PermScan) {
    let Ok(meta) = dir.symlink_metadata() else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(path) = stack.pop() {
        seen += 1;
        if seen > MAX_ENTRIES {
            out.truncated = true;
            return;
        }
        let Ok(m) = path.symlink_metadata() else {
            continue;
        };
        if !(m.is_dir() || m.is_file()) {
            continue;
        }
        let mode = m.mode() & 0o7777;
        let links = if m.is_file() && m.nlink() > 1 {
            format!(", hard link ({} links)", m.nlink())
        } else {
            String::new()
        };
        if mode & GO_BITS != 0 {
            let want = mode & !GO_BITS;
            let line = mode_line(&path, mode, want, &links);
            let rel = path.strip_prefix(dir).unwrap_or(&path);
            if path == dir {
                out.state_dir.push(line);
            } else if openclaw::is_secret_relative(rel) {
                out.secret_files.push(line);
            } else {
                out.state_files.push(line);
            }
            out.plan.push(FixAction {
                path: path.clone(),
                dev: m.dev(),
                ino: m.ino(),
                change: Change::Chmod {
                    old: mode,
                    new: want,
                },
            });
        }
        if m.uid() != expected.uid {
            out.owner.push(format!(
                "{} owned by uid {} (want {}, {}){links}",
                path.display(),
                m.uid(),
                expected.uid,
                expected.source
            ));
            out.plan.push(FixAction {
                path: path.clone(),
                dev: m.dev(),
                ino: m.ino(),
                change: Change::Chown {
                    old: (m.uid(), m.gid()),
                    new: (expected.uid, expected.gid),
                },
            });
        }
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(&path) {
                let mut children: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                children.sort_by(|a, b| b.cmp(a));
                stack.extend(children);
            }
        }
    }
}

fn apply_one(a: &FixAction) -> Result<(), String> {
    let m = a
        .path
        .symlink_metadata()
        .map_err(|e| format!("stat: {e}"))?;
    if m.dev() != a.dev || m.ino() != a.ino || m.file_type().is_symlink() {
        return Err("changed since the audit; not touched".to_owned());
    }
    if m.is_file() && m.nlink() > 1 {
        return Err(format!(
            "hard link ({} links): the same file may live outside the state dir; fix by hand",
            m.nlink()
        ));
    }
    if !(m.is_file() || m.is_dir()) {
        return Err("not a regular file or directory".to_owned());
    }
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&a.path)
        .map_err(|e| format!("open: {e}"))?;
    let fm = f.metadata().map_err(|e| format!("fstat: {e}"))?;
    if fm.dev() != a.dev || fm.ino() != a.ino {
        return Err("changed since the audit; not touched".to_owned());
    }
    match a.change {
        Change::Chmod { new, .. } => f
            .set_permissions(Permissions::from_mode(new))
            .map_err(|e| format!("chmod: {e}")),
        Change::Chown { new, .. } => std::os::unix::fs::fchown(&f, Some(new.0), Some(new.1))
            .map_err(|e| format!("chown: {e}")),
    }
}

/// Applies the plan and records exactly what was (and was not) changed.
pub(super) fn apply_fixes(plan: &[FixAction]) -> Vec<FixRecord> {
    plan.iter()
        .map(|a| {
            let (action, old, new) = match a.change {
                Change::Chmod { old, new } => ("chmod", format!("{old:04o}"), format!("{new:04o}")),
                Change::Chown { old, new } => (
                    "chown",
                    format!("{}:{}", old.0, old.1),
                    format!("{}:{}", new.0, new.1),
                ),
            };
            let result = apply_one(a);
            FixRecord {
                path: a.path.display().to_string(),
                action,
                old,
                new,
                applied: result.is_ok(),
                error: result.err(),
            }
        })
        .collect()
}
