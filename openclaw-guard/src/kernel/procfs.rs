//! Seeding the kernel's tracked tree from /proc: gateways that already run when the
//! guard starts, and every descendant they already have.

use std::collections::{HashMap, VecDeque};

use openclaw_guard_common::TrackedProc;

/// (tgid, ppid) of every process in /proc.
pub fn proc_parents() -> HashMap<u32, u32> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = read_ppid(pid) {
            out.insert(pid, ppid);
        }
    }
    out
}

/// ppid from /proc/PID/stat; the comm field may hold spaces and parentheses, so parse
/// after its last ')'.
pub fn read_ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// argv from /proc/PID/cmdline (split at NULs, empty arguments kept in place).
pub fn read_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// The environment from /proc/PID/environ (`KEY=VALUE` entries; others skipped).
pub fn read_environ(pid: u32) -> std::io::Result<HashMap<String, String>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))?;
    Ok(raw
        .split(|&b| b == 0)
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect())
}

/// Where a gateway process keeps its state and config: its own environment
/// (`OPENCLAW_STATE_DIR`, `OPENCLAW_CONFIG_PATH`, ...) over its user's home.
pub fn gateway_location(pid: u32) -> crate::openclaw::StateLocation {
    let vars = read_environ(pid).unwrap_or_default();
    let home = vars
        .get("HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| home_of_pid(pid))
        .unwrap_or_else(|| "/root".into());
    crate::openclaw::resolve_state_location(&home, &|k| vars.get(k).cloned())
}

/// The home of the process's owner, from /etc/passwd.
fn home_of_pid(pid: u32) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(format!("/proc/{pid}")).ok()?;
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 5 && f[2].parse::<u32>().ok() == Some(meta.uid()))
            .then(|| std::path::PathBuf::from(f[5]))
    })
}

/// Every existing descendant of `root`, with its depth below it.
pub fn descendants(root: u32, parents: &HashMap<u32, u32>) -> Vec<(u32, TrackedProc)> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &ppid) in parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut queue = VecDeque::from([(root, 0u32)]);
    while let Some((pid, depth)) = queue.pop_front() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            out.push((
                child,
                TrackedProc {
                    root,
                    depth: depth + 1,
                },
            ));
            queue.push_back((child, depth + 1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_walks_the_whole_tree_with_depths() {
        let parents = HashMap::from([(10, 1), (11, 10), (12, 11), (13, 10), (20, 1)]);
        let mut d = descendants(10, &parents);
        d.sort_by_key(|(p, _)| *p);
        let got: Vec<(u32, u32)> = d.iter().map(|(p, t)| (*p, t.depth)).collect();
        assert_eq!(got, vec![(11, 1), (12, 2), (13, 1)]);
        assert!(d.iter().all(|(_, t)| t.root == 10));
    }

    #[test]
    fn reads_own_ppid() {
        let me = std::process::id();
        // SAFETY: getppid has no preconditions.
        let ppid = unsafe { libc::getppid() } as u32;
        assert_eq!(read_ppid(me), Some(ppid));
    }
}
