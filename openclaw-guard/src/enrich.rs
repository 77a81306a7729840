//! Enrichment: each event gets its lineage (gateway -> ... -> process) as pids and
//! names, from a process cache seeded from /proc and kept current by the kernel's
//! fork, exec and exit events. Bounded in memory.

use std::collections::HashMap;

use serde::Serialize;

use crate::events::{Event, Payload};

/// One ancestor in a lineage.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LineageEntry {
    pub pid: u32,
    pub comm: String,
}

#[derive(Clone, Debug)]
struct ProcInfo {
    /// The process that forked it (kept when it is re-parented: lineage is who spawned whom).
    ppid: u32,
    comm: String,
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
        }
    }

    /// Seeds a process from /proc (those that existed before the guard).
    pub fn seed_from_proc(&mut self, pid: u32) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if let Some(ppid) = crate::tree::read_ppid(pid) {
            self.insert(
                pid,
                ProcInfo {
                    ppid,
                    comm: comm.trim_end().to_string(),
                },
            );
        }
    }

    fn insert(&mut self, pid: u32, info: ProcInfo) {
        if self.procs.len() >= self.capacity && !self.procs.contains_key(&pid) {
            self.overflow += 1;
            return;
        }
        self.procs.insert(pid, info);
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Updates the cache from the event, then fills in its lineage.
    pub fn enrich(&mut self, ev: &mut Event) {
        match &ev.payload {
            Payload::Fork(f) => {
                let comm = self
                    .procs
                    .get(&ev.tgid)
                    .map(|p| p.comm.clone())
                    .unwrap_or_default();
                self.insert(
                    f.child_tgid,
                    ProcInfo {
                        ppid: ev.tgid,
                        comm,
                    },
                );
            }
            Payload::Exec(x) => {
                let ppid = self.procs.get(&ev.tgid).map_or(x.ppid, |p| p.ppid);
                self.insert(
                    ev.tgid,
                    ProcInfo {
                        ppid,
                        comm: x.comm.clone(),
                    },
                );
            }
            _ => {}
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
        c.insert(
            10,
            ProcInfo {
                ppid: 1,
                comm: "openclaw".into(),
            },
        );
        c.insert(
            11,
            ProcInfo {
                ppid: 10,
                comm: "bash".into(),
            },
        );
        c.insert(
            12,
            ProcInfo {
                ppid: 11,
                comm: "curl".into(),
            },
        );
        let l = c.lineage(12, 10);
        let pids: Vec<u32> = l.iter().map(|e| e.pid).collect();
        assert_eq!(pids, vec![10, 11, 12]);
        assert_eq!(l[0].comm, "openclaw");
    }

    #[test]
    fn full_cache_counts_overflow() {
        let mut c = ProcessCache::new(1);
        c.insert(
            1,
            ProcInfo {
                ppid: 0,
                comm: "a".into(),
            },
        );
        c.insert(
            2,
            ProcInfo {
                ppid: 1,
                comm: "b".into(),
            },
        );
        assert_eq!((c.len(), c.overflow), (1, 1));
    }
}
