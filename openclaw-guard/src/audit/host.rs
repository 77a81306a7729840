//! What the audit reads: the system root, the homes and state locations, and the
//! gateway processes found in `/proc`.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{AuditOptions, UsageError};
use crate::openclaw::{self, StateLocation};

/// A process whose command line looks like the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GatewayProc {
    pub(super) pid: u32,
    /// Real and effective uid.
    pub(super) uid: u32,
    pub(super) euid: u32,
    pub(super) gid: u32,
    pub(super) argv: Vec<String>,
    /// Its environment, when readable.
    pub(super) env: Option<BTreeMap<String, String>>,
}

impl GatewayProc {
    pub(super) fn cmdline(&self) -> String {
        self.argv.join(" ")
    }
}

/// One OpenClaw installation to audit.
#[derive(Debug, Clone)]
pub(super) struct Install {
    pub(super) loc: StateLocation,
    /// Environment that applies to it (`.env` values are read separately).
    pub(super) env: BTreeMap<String, String>,
    /// The gateway process using it, if found.
    pub(super) gateway: Option<GatewayProc>,
}

/// Resolved options.
#[derive(Debug, Clone)]
pub(super) struct Options {
    /// `/` when live.
    pub(super) root: PathBuf,
    /// No `--root`: read the running system and run `iptables-save`/`nft`.
    pub(super) live: bool,
    pub(super) home: Option<PathBuf>,
}

impl Options {
    pub(super) fn from_args(args: &AuditOptions) -> Result<Self, UsageError> {
        let (root, live) = match &args.root {
            Some(r) if r.is_dir() => (r.clone(), false),
            Some(r) => {
                return Err(UsageError(format!(
                    "--root {}: not a directory",
                    r.display()
                )))
            }
            None => (PathBuf::from("/"), true),
        };
        if let Some(h) = &args.home {
            if !h.is_dir() {
                return Err(UsageError(format!(
                    "--home {}: not a directory",
                    h.display()
                )));
            }
        }
        Ok(Self {
            root,
            live,
            home: args.home.clone(),
        })
    }

    /// A system path (`/etc/ssh/sshd_config`) under the root.
    pub(super) fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        let rel = abs.strip_prefix("/").unwrap_or(abs);
        self.root.join(rel)
    }

    pub(super) fn read(&self, abs: impl AsRef<Path>) -> Option<String> {
        fs::read_to_string(self.path(abs)).ok()
    }
}

fn split_nul(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn status_ids(status: &str, key: &str) -> Option<(u32, u32)> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let mut it = line[key.len()..].split_whitespace();
    let real = it.next()?.parse().ok()?;
    let eff = it.next().and_then(|v| v.parse().ok()).unwrap_or(real);
    Some((real, eff))
}

/// Gateway processes in `ROOT/proc`, by pid.
pub(super) fn gateway_processes(opts: &Options) -> Vec<GatewayProc> {
    let Ok(dir) = fs::read_dir(opts.path("/proc")) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if opts.live && pid == me {
            continue;
        }
        let p = e.path();
        let Ok(cmd) = fs::read(p.join("cmdline")) else {
            continue;
        };
        let argv = split_nul(&cmd);
        if !openclaw::is_gateway_cmdline(&argv) {
            continue;
        }
        let Ok(status) = fs::read_to_string(p.join("status")) else {
            continue;
        };
        let Some((uid, euid)) = status_ids(&status, "Uid:") else {
            continue;
        };
        let gid = status_ids(&status, "Gid:").map_or(uid, |g| g.0);
        let env = fs::read(p.join("environ")).ok().map(|b| {
            split_nul(&b)
                .into_iter()
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect()
        });
        out.push(GatewayProc {
            pid,
            uid,
            euid,
            gid,
            argv,
            env,
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// The installations to audit: with `--home`, that home only (environment ignored);
/// otherwise the gateways' environments, this user's (live) and every
/// `ROOT/root`, `ROOT/home/*` that holds a state directory.
pub(super) fn installs(opts: &Options, gateways: &[GatewayProc]) -> Vec<Install> {
    let mut out: Vec<Install> = Vec::new();
    let push = |inst: Install, out: &mut Vec<Install>| {
        if !out.iter().any(|i| i.loc.state_dir == inst.loc.state_dir) {
            out.push(inst);
        }
    };
    if let Some(home) = &opts.home {
        let none = |_: &str| None;
        let loc = openclaw::resolve_state_location(home, &none);
        let gateway = gateways.first().cloned();
        push(
            Install {
                loc,
                env: BTreeMap::new(),
                gateway,
            },
            &mut out,
        );
        return out;
    }
    for g in gateways {
        let env = g.env.clone().unwrap_or_default();
        let Some(home) = env.get("HOME").cloned() else {
            continue;
        };
        let lookup = |k: &str| env.get(k).cloned();
        let loc =
            openclaw::resolve_state_location(Path::new(&home), &lookup).map_paths(|p| opts.path(p));
        push(
            Install {
                loc,
                env: env.clone(),
                gateway: Some(g.clone()),
            },
            &mut out,
        );
    }
    if opts.live {
        if let Some(home) = std::env::var_os("HOME") {
            let env: BTreeMap<String, String> = std::env::vars()
                .filter(|(k, _)| k.starts_with("OPENCLAW_"))
                .collect();
            let lookup = |k: &str| env.get(k).cloned();
            let loc = openclaw::resolve_state_location(Path::new(&home), &lookup);
            if loc.all_state_dirs().any(exists) {
                push(
                    Install {
                        loc,
                        env,
                        gateway: None,
                    },
                    &mut out,
                );
            }
        }
    }
    let mut homes = vec![opts.path("/root")];
    if let Ok(rd) = fs::read_dir(opts.path("/home")) {
        let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        v.sort();
        homes.extend(v);
    }
    for home in homes {
        let none = |_: &str| None;
        let loc = openclaw::resolve_state_location(&home, &none);
        if loc.all_state_dirs().any(exists) {
            push(
                Install {
                    loc,
                    env: BTreeMap::new(),
                    gateway: None,
                },
                &mut out,
            );
        }
    }
    out
}

/// uid and gid of a path (not following links).
pub(super) fn owner(p: &Path) -> Option<(u32, u32)> {
    p.symlink_metadata().ok().map(|m| (m.uid(), m.gid()))
}

/// `KEY=value` lines of a dotenv file (quotes stripped, `export` allowed).
pub(super) fn parse_dotenv(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("export ").unwrap_or(l);
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}
