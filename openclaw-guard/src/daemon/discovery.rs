//! Finding the gateways: by their process names, their systemd units' cgroups, and
//! following each one's tree into the kernel.

use super::*;

/// Tracks `root` as a gateway and every descendant it already has.
pub(super) fn track_tree(
    guard: &mut Guard,
    cache: &mut ProcessCache,
    root: u32,
) -> anyhow::Result<()> {
    guard.track(root, TrackedProc { root, depth: 0 })?;
    cache.seed_from_proc(root, 0);
    // Two passes: children forked during the first scan had a not-yet-tracked parent.
    for _ in 0..2 {
        let parents = procfs::proc_parents();
        for (pid, entry) in procfs::descendants(root, &parents) {
            let entry_depth = entry.depth;
            if guard.tracked(pid).is_none() {
                guard.track(pid, entry)?;
            }
            cache.seed_from_proc(pid, entry_depth);
        }
    }
    Ok(())
}

/// Gateway processes running now, by command line.
pub(super) fn discover_gateways() -> Vec<u32> {
    let mut out = Vec::new();
    let parents = procfs::proc_parents();
    for &pid in parents.keys() {
        if pid == std::process::id() {
            continue;
        }
        if let Some(argv) = procfs::read_cmdline(pid) {
            if openclaw::is_gateway_cmdline(&argv) {
                out.push(pid);
            }
        }
    }
    // A gateway's own child that looks like a gateway is part of its tree, not a root.
    let set: std::collections::HashSet<u32> = out.iter().copied().collect();
    out.retain(|p| parents.get(p).is_none_or(|pp| !set.contains(pp)));
    out
}

/// `openclaw-gateway*.service` cgroups anywhere under the cgroup2 root (user units
/// live a few levels down: user.slice/user-1000.slice/user@1000.service/app.slice/...).
pub(super) fn gateway_unit_cgroups() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Some(root) = crate::kernel::loader::cgroup2_root() else {
        return out;
    };
    let mut stack = vec![(root, 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("openclaw-gateway") && name.ends_with(".service") {
                out.push(e.path());
            } else if depth < 8 {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    out
}

/// Processes of a cgroup whose parent is outside it: the roots of its trees.
pub(super) fn cgroup_roots(cg: &Path) -> Vec<u32> {
    let procs: Vec<u32> = std::fs::read_to_string(cg.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let set: std::collections::HashSet<u32> = procs.iter().copied().collect();
    procs
        .into_iter()
        .filter(|p| procfs::read_ppid(*p).is_none_or(|pp| !set.contains(&pp)))
        .collect()
}
