//! Enrichment: each event gets its lineage (gateway -> ... -> process) as pids and
//! names and its process's role (see [`crate::machinery`]), from a process cache
//! seeded from /proc and kept current by the kernel's fork, exec and exit events;
//! execs also get where their stdio goes and what their image really is
//! ([`crate::kernel::probe`]). Bounded in memory.

use std::{collections::HashMap, sync::Arc};

use crate::{
    attribution::Registry,
    events::{Attribution, Event, Payload},
    kernel::probe,
    machinery::{self, ExecShape, Role},
};

pub use crate::events::LineageEntry;

#[derive(Clone, Debug)]
struct ProcInfo {
    /// The process that forked it (kept when it is re-parented: lineage is who spawned whom).
    ppid: u32,
    comm: String,
    role: Role,
    /// A rule denied or killed something of this process (or, for the exec tool and
    /// tool commands, of a process below it in the same tool call).
    tainted: bool,
    /// Its executable ("major:minor", inode), where known.
    exe: Option<(String, u64)>,
    /// Its working directory as last read from /proc (at its exec) or inherited at
    /// fork: relative paths of processes gone before /proc could be read resolve
    /// against it.
    cwd: Option<std::path::PathBuf>,
    /// Kernel time of the exec that made this entry (0: made by a fork or from /proc).
    /// Execs travel on a ring of their own and may come before their fork.
    exec_ns: u64,
    /// The tool call it serves: read from the environment of the shell the gateway or
    /// its broker starts, inherited by everything below (never read again there).
    call: Option<Attribution>,
}

impl ProcInfo {
    fn new(ppid: u32, comm: String, role: Role) -> Self {
        Self {
            ppid,
            comm,
            role,
            tainted: false,
            exe: None,
            cwd: None,
            exec_ns: 0,
            call: None,
        }
    }
}

/// Processes of the tracked trees, by tgid.
pub struct ProcessCache {
    procs: HashMap<u32, ProcInfo>,
    /// Exited processes, oldest first. They stay a while as ancestors of orphans that
    /// outlive them; the oldest are forgotten beyond [`EXITED_KEPT`].
    exited: std::collections::VecDeque<u32>,
    capacity: usize,
    /// Entries refused because the cache was full (their lineage stops short).
    pub overflow: u64,
    shells: probe::Shells,
    /// Reported tool calls, to resolve tags (none: attribution off).
    calls: Option<Arc<Registry>>,
}

/// Ancestors walked at most; deeper trees are cut (and the cut is visible: the lineage
/// does not start at the gateway).
const MAX_DEPTH: usize = 64;

/// Exited processes remembered as ancestors.
const EXITED_KEPT: usize = 4096;

impl ProcessCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            procs: HashMap::new(),
            exited: std::collections::VecDeque::new(),
            capacity,
            overflow: 0,
            shells: probe::Shells::from_host(),
            calls: None,
        }
    }

    /// Resolve tool-call tags against `calls` (the attribution socket's reports).
    #[must_use]
    pub fn with_calls(mut self, calls: Arc<Registry>) -> Self {
        self.calls = Some(calls);
        self
    }

    /// The call of a process that is the first of a tool call (an `exec-tool` shell
    /// the gateway or its broker started), from its environment's tag.
    fn call_at_start(&self, pid: u32) -> Option<Attribution> {
        let calls = self.calls.as_ref()?;
        Some(match crate::attribution::read_tag(pid) {
            Ok(Some(tag)) => calls.resolve(&tag),
            Ok(None) => Attribution::NO_TAG,
            Err(_) => Attribution::UNREADABLE,
        })
    }

    /// Seeds a process from /proc (those that existed before the guard), parents
    /// before children: a gateway's broker and tool calls already running get their
    /// roles from their command lines as if their execs had been seen.
    pub fn seed_from_proc(&mut self, pid: u32, depth: u32) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let Some(ppid) = crate::kernel::procfs::read_ppid(pid) else {
            return;
        };
        let exe = std::fs::metadata(format!("/proc/{pid}/exe"))
            .ok()
            .map(|md| probe::dev_ino(&md));
        let role = if depth == 0 {
            Role::Gateway
        } else {
            let argv = crate::kernel::procfs::read_cmdline(pid).unwrap_or_default();
            let filename = argv.first().cloned().unwrap_or_default();
            let kinds = probe::fd_kinds(pid);
            self.role_at_exec(
                ppid,
                Role::Other,
                &filename,
                &argv,
                exe.as_ref(),
                kinds.as_deref(),
            )
        };
        let mut info = ProcInfo::new(ppid, comm.trim_end().to_string(), role);
        info.exe = exe;
        info.call = self.procs.get(&ppid).and_then(|p| p.call.clone());
        if role == Role::ExecTool && info.call.is_none() {
            info.call = self.call_at_start(pid);
        }
        self.insert(pid, info);
    }

    /// The role a process (child of `ppid`, `current` before) has after exec'ing
    /// `filename` with `argv`.
    fn role_at_exec(
        &self,
        ppid: u32,
        current: Role,
        filename: &str,
        argv: &[String],
        exe: Option<&(String, u64)>,
        kinds: Option<&[&str]>,
    ) -> Role {
        let parent = self.procs.get(&ppid);
        let parent_role = parent.map_or(Role::Other, |p| p.role);
        // The gateway's executable: the parent's, when the parent is the gateway.
        let same_exe_as_gateway = parent_role == Role::Gateway
            && parent
                .and_then(|p| p.exe.as_ref())
                .is_some_and(|g| Some(g) == exe);
        machinery::classify(&ExecShape {
            current,
            parent: parent_role,
            base: filename.rsplit('/').next().unwrap_or(filename),
            argv,
            same_exe_as_gateway,
            stdio: probe::stdio_class(kinds),
        })
    }

    fn tainted_above(&self, pid: u32) -> bool {
        let mut cur = pid;
        for _ in 0..MAX_DEPTH {
            let Some(info) = self.procs.get(&cur) else {
                return false;
            };
            if info.tainted {
                return true;
            }
            if matches!(info.role, Role::Gateway | Role::Broker) || info.ppid == 0 {
                return false;
            }
            cur = info.ppid;
        }
        false
    }

    /// A denial or kill marks the process and its tool call: every shell the call
    /// starts from then on is "after a denial".
    fn taint(&mut self, pid: u32) {
        let mut cur = pid;
        for _ in 0..MAX_DEPTH {
            let Some(info) = self.procs.get_mut(&cur) else {
                return;
            };
            info.tainted = true;
            if !matches!(info.role, Role::Tool | Role::ExecTool) {
                return;
            }
            cur = info.ppid;
        }
    }

    fn insert(&mut self, pid: u32, info: ProcInfo) {
        if self.procs.len() >= self.capacity && !self.procs.contains_key(&pid) {
            self.overflow += 1;
            return;
        }
        self.procs.insert(pid, info);
    }

    /// The role of `pid`, if known.
    pub fn role(&self, pid: u32) -> Option<Role> {
        self.procs.get(&pid).map(|p| p.role)
    }

    /// Every known process with its role.
    pub fn roles(&self) -> Vec<(u32, Role)> {
        self.procs.iter().map(|(pid, p)| (*pid, p.role)).collect()
    }

    /// Whether `pid` is in the cache (its fork or exec was seen, or it was seeded).
    pub fn knows(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Updates the cache from the event, then fills in its lineage and role (and an
    /// exec's probes).
    pub fn enrich(&mut self, ev: &mut Event) {
        if ev.depth == 0 && !self.procs.contains_key(&ev.tgid) {
            self.seed_from_proc(ev.tgid, 0);
        }
        match &mut ev.payload {
            // The child's exec came first (its own ring): that entry stands.
            Payload::Fork(f)
                if self
                    .procs
                    .get(&f.child_tgid)
                    .is_some_and(|c| c.exec_ns > ev.ktime_ns) => {}
            Payload::Fork(f) => {
                let (comm, role, tainted) = self.procs.get(&ev.tgid).map_or_else(
                    || (String::new(), Role::Other, false),
                    |p| (p.comm.clone(), Role::of_fork_child(p.role), p.tainted),
                );
                let cwd = self.procs.get(&ev.tgid).and_then(|p| p.cwd.clone());
                let mut info = ProcInfo::new(ev.tgid, comm, role);
                info.tainted = tainted;
                info.cwd = cwd;
                info.call = self.procs.get(&ev.tgid).and_then(|p| p.call.clone());
                self.insert(f.child_tgid, info);
                self.forget_exited(f.child_tgid);
            }
            Payload::Exec(x) => {
                // The entry of a process that exited is not this one's: its pid was
                // reused (and the new one's fork event was lost or not seen).
                let stale = self.exited.contains(&ev.tgid);
                let old = self.procs.get(&ev.tgid).filter(|_| !stale);
                let ppid = old.map_or(x.ppid, |p| p.ppid);
                // Before its fork event (execs travel ahead): what the fork would have
                // given it, from the parent.
                let parent = self.procs.get(&x.ppid);
                let tainted = old.map_or_else(|| parent.is_some_and(|p| p.tainted), |p| p.tainted);
                let current = match old {
                    Some(p) => p.role,
                    None if ev.depth == 0 => Role::Gateway,
                    None => parent.map_or(Role::Other, |p| Role::of_fork_child(p.role)),
                };
                let kinds = probe::with_kernel_stdio(probe::fd_kinds(ev.tgid), x.stdio_families);
                let cwd = std::fs::read_link(format!("/proc/{}/cwd", ev.tgid))
                    .ok()
                    .or_else(|| old.or(parent).and_then(|p| p.cwd.clone()));
                let facts = self.shells.exe_facts(
                    ev.tgid,
                    &x.exe_dev,
                    x.exe_ino,
                    &x.filename,
                    &x.argv,
                    cwd.as_deref(),
                );
                let exe = (x.exe_dev.clone(), x.exe_ino);
                let role = if ev.depth == 0 {
                    Role::Gateway
                } else {
                    self.role_at_exec(
                        ppid,
                        current,
                        &x.filename,
                        &x.argv,
                        Some(&exe),
                        kinds.as_deref(),
                    )
                };
                if let Some(k) = kinds {
                    x.stdio_socket = probe::stdio_network(&k);
                    x.stdio = k;
                }
                x.exe = facts.exe;
                x.fileless = facts.fileless;
                x.shell = facts.shell;
                let inherited = old.or(parent).and_then(|p| p.call.clone());
                let starts_call = role == Role::ExecTool
                    && matches!(
                        self.procs.get(&ppid).map(|p| p.role),
                        Some(Role::Gateway | Role::Broker)
                    );
                let call = match inherited {
                    Some(c) => Some(c),
                    None if starts_call => self.call_at_start(ev.tgid),
                    None => None,
                };
                let mut info = ProcInfo::new(ppid, x.comm.clone(), role);
                info.tainted = tainted;
                info.exe = Some(exe);
                info.call = call;
                info.cwd = cwd;
                info.exec_ns = ev.ktime_ns;
                self.insert(ev.tgid, info);
                if stale {
                    self.forget_exited(ev.tgid);
                }
                x.after_denial = self.tainted_above(ev.tgid);
            }
            // Tracepoint tier: the path is the caller's; a relative one is made whole
            // against the process's working directory (best effort: it may be gone).
            Payload::FileOpen(f) if !f.path.is_empty() && !f.path.starts_with('/') => {
                let cwd = std::fs::read_link(format!("/proc/{}/cwd", ev.tgid))
                    .ok()
                    .or_else(|| self.procs.get(&ev.tgid).and_then(|p| p.cwd.clone()));
                if let Some(cwd) = cwd {
                    f.path = cwd.join(&f.path).to_string_lossy().into_owned();
                }
            }
            _ => {}
        }
        if ev
            .decision
            .as_ref()
            .is_some_and(|d| d.action > crate::events::Taken::Alert)
        {
            self.taint(ev.tgid);
        }
        ev.role = Some(
            self.procs
                .get(&ev.tgid)
                .map_or_else(
                    || {
                        if ev.depth == 0 {
                            Role::Gateway
                        } else {
                            Role::Other
                        }
                    },
                    |p| p.role,
                )
                .as_str(),
        );
        ev.tool_call = self.procs.get(&ev.tgid).and_then(|p| p.call.clone());
        if ev.tool_call.is_none()
            && self.calls.is_some()
            && matches!(ev.role, Some(r) if r == Role::Tool.as_str() || r == Role::ExecTool.as_str())
        {
            ev.tool_call = Some(Attribution::UNSEEN);
        }
        ev.lineage = self.lineage(ev.tgid, ev.root);
        if matches!(ev.payload, Payload::Exit(_)) {
            self.exited.push_back(ev.tgid);
            while self.exited.len() > EXITED_KEPT {
                if let Some(old) = self.exited.pop_front() {
                    self.procs.remove(&old);
                }
            }
        }
    }

    /// A reused pid is no longer the exited process's: its new entry must not be
    /// forgotten with the old one's.
    fn forget_exited(&mut self, pid: u32) {
        if self.exited.contains(&pid) {
            self.exited.retain(|p| *p != pid);
        }
    }

    /// From the root down to `pid`.
    pub fn lineage(&self, pid: u32, root: u32) -> Vec<LineageEntry> {
        let mut out = Vec::new();
        let mut cur = pid;
        for _ in 0..MAX_DEPTH {
            let Some(info) = self.procs.get(&cur) else {
                break;
            };
            out.push(LineageEntry {
                pid: cur,
                comm: info.comm.clone(),
            });
            if cur == root || info.ppid == 0 {
                break;
            }
            cur = info.ppid;
        }
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lineage_runs_from_root_and_survives_reparenting() {
        let mut c = ProcessCache::new(16);
        c.insert(10, ProcInfo::new(1, "openclaw".into(), Role::Gateway));
        c.insert(11, ProcInfo::new(10, "bash".into(), Role::ExecTool));
        c.insert(12, ProcInfo::new(11, "curl".into(), Role::Tool));
        let l = c.lineage(12, 10);
        let pids: Vec<u32> = l.iter().map(|e| e.pid).collect();
        assert_eq!(pids, vec![10, 11, 12]);
        assert_eq!(l[0].comm, "openclaw");
    }

    #[test]
    fn full_cache_counts_overflow() {
        let mut c = ProcessCache::new(1);
        c.insert(1, ProcInfo::new(0, "a".into(), Role::Other));
        c.insert(2, ProcInfo::new(1, "b".into(), Role::Other));
        assert_eq!((c.len(), c.overflow), (1, 1));
    }
}
