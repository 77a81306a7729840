//! The gateway's own ordinary activity, summarised instead of recorded event by event.
//!
//! Measured on the real gateway (openclaw 2026.9.6): ~2,200 events per tool call, almost
//! all the gateway's, its workers' and its helpers' opens of node modules, its sqlite
//! files, logs and caches. A responder reads none of them one by one, and they drown
//! what matters. So: file opens without a decision by the gateway (role `gateway`) in
//! ordinary places, and every open by its broker and helpers (roles `broker`,
//! `helper`: they never run the agent's tools), are counted per gateway and role, by
//! directory, and written as one `summary` record a minute (and at shutdown).
//!
//! Loads are summarised for every role, tool commands included: read-only opens of
//! shared libraries, locales and language modules (`node_modules`, `site-packages`,
//! the interpreters' standard libraries). One `npm run` loads ~400 modules; what ran
//! is in its exec event, and a write to any of these places is kept.
//!
//! Kept event by event, always: every decision, exec, fork, exit, connect, bind,
//! tamper; every other open of the exec tool and of tool commands (workspace files,
//! /etc, /proc, homes, anything written); and the gateway's opens outside ordinary
//! places (its in-process `read`/`write` tools, a home's dotfiles), so what the
//! agent's in-process tools touch stays visible.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
};

use crate::events::{Event, Payload};

/// Directories named in one summary at most; the rest are counted together.
const DIRS_KEPT: usize = 48;
/// Folded reopens are summarised when their first open was: remembered per file.
const FOLDED_KEPT: usize = 65_536;

#[derive(Default)]
struct Tally {
    opens: u64,
    repeats: u64,
    first_time: String,
    last_time: String,
    dirs: HashMap<String, u64>,
    other_dirs: u64,
}

const O_ACCMODE: u32 = 0o3;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_APPEND: u32 = 0o2000;
const O_DIRECTORY: u32 = 0o200_000;

/// Opened to read only (nothing created, truncated or appended).
fn read_only(flags: u32) -> bool {
    flags & O_ACCMODE == 0 && flags & (O_CREAT | O_TRUNC | O_APPEND) == 0
}

/// Shared libraries, locales, language runtimes' modules.
fn is_load(p: &Path) -> bool {
    let s = p.to_string_lossy();
    const PREFIXES: &[&str] = &[
        "/usr/lib/",
        "/lib/",
        "/lib64/",
        "/usr/lib64/",
        "/usr/share/",
        "/usr/local/lib/",
        "/usr/local/share/",
        "/etc/ld.so.cache",
        "/etc/localtime",
        "/dev/null",
    ];
    PREFIXES.iter().any(|d| s.starts_with(d))
        || [
            "/node_modules/",
            "/site-packages/",
            "/dist-packages/",
            "/__pycache__/",
        ]
        .iter()
        .any(|d| s.contains(d))
}

/// The workspace files OpenClaw reads into the prompt at every turn.
fn is_bootstrap(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        matches!(
            n,
            "AGENTS.md"
                | "SOUL.md"
                | "USER.md"
                | "IDENTITY.md"
                | "BOOTSTRAP.md"
                | "MEMORY.md"
                | "TOOLS.md"
                | "HEARTBEAT.md"
        )
    })
}

/// Counts of summarised events, per (gateway, role), until the next [`Summaries::take`].
#[derive(Default)]
pub struct Summaries {
    tallies: BTreeMap<(u32, &'static str), Tally>,
    /// (tgid, dev, ino) of summarised opens: their folded reopens are summarised too.
    folded: HashSet<(u32, String, u64)>,
    /// The gateways' state directories (their `workspace/` is not ordinary).
    state_dirs: Vec<PathBuf>,
    /// Events summarised since start.
    pub total: u64,
}

impl Summaries {
    pub fn set_state_dirs(&mut self, dirs: Vec<PathBuf>) {
        self.state_dirs = dirs;
    }

    /// Counts `ev` and returns true when it is ordinary activity of the gateway's own;
    /// false: the event goes on to policy, outputs and record.
    pub fn absorb(&mut self, ev: &Event) -> bool {
        if ev.decision.is_some() {
            return false;
        }
        let Some(role) = ev.role else {
            return false;
        };
        match &ev.payload {
            Payload::FileOpen(f) if f.op == "open" => {
                let path = Path::new(&f.path);
                let read_only = read_only(f.flags);
                let summarised = (read_only && is_load(path))
                    || match role {
                        // The gateway reads its persona files and lists directories at
                        // every turn; its writes there stay events.
                        "gateway" => {
                            self.ordinary(path)
                                || (read_only && (f.flags & O_DIRECTORY != 0 || is_bootstrap(path)))
                        }
                        "broker" | "helper" => true,
                        _ => false,
                    };
                if !summarised {
                    return false;
                }
                if self.folded.len() >= FOLDED_KEPT {
                    self.folded.clear();
                }
                self.folded.insert((ev.tgid, f.dev.clone(), f.ino));
                let t = self.tally(ev, role);
                t.opens += 1;
                let dir = path
                    .parent()
                    .map_or_else(|| "(no path)".to_owned(), |d| d.display().to_string());
                if let Some(n) = t.dirs.get_mut(&dir) {
                    *n += 1;
                } else if t.dirs.len() < DIRS_KEPT {
                    t.dirs.insert(dir, 1);
                } else {
                    t.other_dirs += 1;
                }
            }
            Payload::Repeat(r) if r.of == "file_open" => {
                // Only where the open that opened the window was summarised.
                let key = (
                    ev.tgid,
                    r.dev.clone().unwrap_or_default(),
                    r.ino.unwrap_or(0),
                );
                if !self.folded.contains(&key) {
                    return false;
                }
                let n = u64::from(r.count);
                self.tally(ev, role).repeats += n;
            }
            _ => return false,
        }
        self.total += 1;
        true
    }

    fn tally(&mut self, ev: &Event, role: &'static str) -> &mut Tally {
        let t = self.tallies.entry((ev.root, role)).or_default();
        if t.first_time.is_empty() {
            t.first_time.clone_from(&ev.time);
        }
        t.last_time.clone_from(&ev.time);
        t
    }

    /// Where the gateway's own work goes: modules, system files, its state directory
    /// (but not the workspace), its temporary files.
    fn ordinary(&self, p: &Path) -> bool {
        let s = p.to_string_lossy();
        if s.is_empty() || s.contains("/node_modules/") || s.contains("/node-compile-cache/") {
            return true;
        }
        const SYSTEM: &[&str] = &[
            "/proc/",
            "/sys/",
            "/dev/",
            "/usr/lib/",
            "/usr/share/",
            "/lib/",
            "/lib64/",
            "/etc/ssl/",
            "/etc/ca-certificates",
            "/etc/ld.so.",
            "/etc/localtime",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/etc/nsswitch.conf",
            "/etc/host.conf",
            "/etc/gai.conf",
            "/etc/os-release",
            "/usr/local/lib/",
        ];
        if SYSTEM.iter().any(|d| s.starts_with(d)) {
            return true;
        }
        if p.iter().nth(1).is_some_and(|c| c == "tmp")
            && p.iter()
                .nth(2)
                .is_some_and(|c| c.to_string_lossy().starts_with("openclaw"))
        {
            return true;
        }
        self.state_dirs.iter().any(|d| {
            p.strip_prefix(d).is_ok_and(|rest| {
                !rest
                    .iter()
                    .next()
                    .is_some_and(|c| c.to_string_lossy().starts_with("workspace"))
            })
        })
    }

    /// One `summary` record per (gateway, role) counted since the last call.
    pub fn take(&mut self) -> Vec<SummaryRecord> {
        let now = jiff::Timestamp::now().to_string();
        std::mem::take(&mut self.tallies)
            .into_iter()
            .map(|((root, role), t)| {
                let mut dirs: Vec<(String, u64)> = t.dirs.into_iter().collect();
                dirs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                SummaryRecord {
                    time: now.clone(),
                    kind: "summary",
                    of: "file_open",
                    root,
                    role,
                    opens: t.opens,
                    repeats: t.repeats,
                    first_time: t.first_time,
                    last_time: t.last_time,
                    dirs: dirs
                        .into_iter()
                        .map(|(dir, opens)| DirCount { dir, opens })
                        .collect(),
                    other_dirs: t.other_dirs,
                }
            })
            .collect()
    }
}

/// A `summary` record: the gateway's own ordinary file opens of one role, counted.
#[derive(serde::Serialize)]
pub struct SummaryRecord {
    time: String,
    kind: &'static str,
    of: &'static str,
    root: u32,
    role: &'static str,
    opens: u64,
    repeats: u64,
    first_time: String,
    last_time: String,
    /// The directories opened most, each with its count.
    dirs: Vec<DirCount>,
    /// Opens in the directories past those.
    other_dirs: u64,
}

impl crate::events::OwnRecord for SummaryRecord {
    fn kind(&self) -> &'static str {
        self.kind
    }
}

#[derive(serde::Serialize)]
struct DirCount {
    dir: String,
    opens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::FileOpen;

    fn open(role: &'static str, path: &str) -> Event {
        Event {
            time: "t".into(),
            ktime_ns: 1,
            kind: "file_open",
            pid: 10,
            tgid: 10,
            root: 10,
            depth: 0,
            cgroup_id: 0,
            lineage: Vec::new(),
            role: Some(role),
            tool_call: None,
            payload: Payload::FileOpen(FileOpen {
                op: "open",
                path: path.into(),
                dev: "0:1".into(),
                ino: 5,
                flags: 0,
                ret: 0,
            }),
            decision: None,
        }
    }

    #[test]
    fn gateway_modules_are_summarised_its_tools_reads_are_not() {
        let mut s = Summaries::default();
        s.set_state_dirs(vec![PathBuf::from("/home/u/.openclaw")]);
        assert!(s.absorb(&open("gateway", "/opt/oc/node_modules/openclaw/dist/a.js")));
        assert!(s.absorb(&open("gateway", "/home/u/.openclaw/state/openclaw.sqlite")));
        assert!(s.absorb(&open("broker", "/home/u/notes.txt")));
        // The in-process read tool, the workspace, a tool command's reads: kept.
        assert!(!s.absorb(&open("gateway", "/home/u/.ssh/id_ed25519")));
        assert!(!s.absorb(&open("gateway", "/home/u/.openclaw/workspace/a.txt")));
        assert!(!s.absorb(&open("tool", "/home/u/.openclaw/workspace/a.txt")));
        assert!(!s.absorb(&open("tool", "/etc/shadow")));
        // A tool command's library and module loads: summarised; writes there: kept.
        assert!(s.absorb(&open("tool", "/opt/oc/node_modules/x.js")));
        assert!(s.absorb(&open("exec-tool", "/lib/x86_64-linux-gnu/libc.so.6")));
        let mut w = open("tool", "/usr/lib/x86_64-linux-gnu/libevil.so");
        if let Payload::FileOpen(f) = &mut w.payload {
            f.flags = 0o101; // O_WRONLY | O_CREAT
        }
        assert!(!s.absorb(&w));
        // The gateway's persona files, read each turn; written: kept.
        assert!(s.absorb(&open("gateway", "/srv/ws/SOUL.md")));
        let mut w = open("gateway", "/srv/ws/SOUL.md");
        if let Payload::FileOpen(f) = &mut w.payload {
            f.flags = 0o1001; // O_WRONLY | O_TRUNC
        }
        assert!(!s.absorb(&w));
        let mut denied = open("gateway", "/opt/oc/node_modules/x.js");
        denied.decision = Some(crate::events::Decision {
            rule: "r".into(),
            action: crate::events::Taken::Deny,
            errno: Some(1),
            degraded_from: None,
        });
        assert!(!s.absorb(&denied));
        let recs: Vec<serde_json::Value> = s
            .take()
            .iter()
            .map(|r| serde_json::to_value(r).expect("encodes"))
            .collect();
        let gw = recs.iter().find(|r| r["role"] == "gateway").unwrap();
        assert_eq!(gw["opens"], 3);
        assert_eq!(s.total, 6);
        assert!(s.take().is_empty());
    }
}
