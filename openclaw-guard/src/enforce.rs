//! From a compiled policy to the kernel's maps, and an honest account, rule by rule, of
//! how each is enforced on this kernel (deny, kill, alert only) and why.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use openclaw_guard_common::InodeKey;

use crate::{
    kernel::loader::Guard,
    policy::{Action, CompiledPolicy},
};

pub use crate::kernel::plan::{
    blocks_in_kernel, inode_key, user_dirs, KernelPlan, UserDirs, CLI_PROTECT_NAME,
    CLI_PROTECT_RULE,
};

/// The built-in rule protecting the guard from the tree.
pub const SELF_PROTECTION_NAME: &str = "guard-self-protection";

/// How the guard's self-protection is enforced here.
pub fn describe_self_protection(guard: &Guard, record_only: bool) -> String {
    let hooks = ["task_kill", "ptrace_access_check", "bpf"];
    let attached = |h: &&str| guard.program(h).is_some_and(|p| p.attached);
    if record_only {
        "alert only: --record-only".into()
    } else if hooks.iter().all(attached) {
        let files = if crate::kernel::loader::guard_file_programs().all(|h| attached(&h)) {
            "; writes, truncation, unlink, rename and links of the guard's binary, policy, state directory and pins, new entries in those directories and unmounting bpffs refused to the tree"
        } else {
            "; NOT enforced: the guard's files (some file hooks did not attach)"
        };
        format!("deny: signals to and ptrace of the guard, and any bpf() call, refused to the tree (BPF LSM task_kill, ptrace_access_check, bpf){files}; writes to the kernel controls that switch BPF off or run commands outside the tree (ftrace_enabled, core_pattern, modprobe, hotplug, poweroff_cmd, sysrq-trigger, tracefs, debugfs, securityfs, binfmt_misc), to cgroupfs (cgroup.kill, cgroup.freeze, limits, moves) and to the guard's /proc directory (oom_score_adj, ...), changes of the guard's scheduling, mounts in the host's user namespace, and module, kexec and policy loads refused; a canary open every second proves BPF LSM still decides")
    } else {
        "NOT enforced: needs BPF LSM (task_kill, ptrace_access_check, bpf, file hooks); without it the tree could signal the guard or change its files (its pinned programs keep enforcing if it dies)".into()
    }
}

/// The guard's own files as `GUARD_FILES` entries: each existing path by identity with
/// its `tamper::guarded` flags, and for a directory with `FS` its filesystem as
/// (dev, 0). Also returns the path of each entry, for the events.
pub fn guard_files(
    paths: &[(PathBuf, u32)],
) -> (HashMap<InodeKey, u32>, HashMap<InodeKey, PathBuf>) {
    use openclaw_guard_common::tamper::guarded;
    let mut files = HashMap::new();
    let mut names = HashMap::new();
    for (path, flags) in paths {
        // Not there yet (a state directory made later): the next re-plan adds it.
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let key = inode_key(&meta);
        *files.entry(key).or_insert(0) |= flags & !guarded::FS;
        names.insert(key, path.clone());
        // A symbolic link (an enablement link, a policy linked from elsewhere) is
        // guarded itself too: removing or replacing it changes what it names.
        if let Ok(link) = std::fs::symlink_metadata(path) {
            if link.file_type().is_symlink() {
                let lkey = inode_key(&link);
                *files.entry(lkey).or_insert(0) |= guarded::FILE;
                names.insert(lkey, path.clone());
            }
        }
        if flags & guarded::FS != 0 {
            let fs = InodeKey::new(key.dev, 0);
            files.insert(fs, guarded::FS);
            names.insert(fs, path.clone());
        }
    }
    (files, names)
}

/// How an egress rule's host names are judged: by the addresses the gateways'
/// resolvers gave for them, learned in the kernel, or not at all.
fn describe_names(policy: &CompiledPolicy, guard: &Guard, rule: u32) -> String {
    let names: Vec<&str> = policy
        .egress_hosts
        .iter()
        .filter(|h| h.rule == rule)
        .map(|h| h.host.as_str())
        .collect();
    if names.is_empty() {
        return String::new();
    }
    let resolvers: Vec<String> = policy
        .context
        .resolvers
        .iter()
        .map(ToString::to_string)
        .collect();
    match guard.program("dns_answers") {
        Some(p) if p.attached && !resolvers.is_empty() => format!(
            "; {} names ({}) by the addresses DNS answers from {} gave them (dns_answers, for their TTL)",
            names.len(),
            names.join(", "),
            resolvers.join(", ")
        ),
        Some(p) if p.attached => format!(
            "; {} names NOT matched: no resolver found in /etc/resolv.conf, so no DNS answer is believed",
            names.len()
        ),
        p => format!(
            "; {} names NOT matched: the DNS sensor did not attach ({}), so named destinations are judged by address alone",
            names.len(),
            p.and_then(|p| p.error.clone()).unwrap_or_default()
        ),
    }
}

/// How file rules (and `run --protect` paths) are enforced here.
pub fn describe_files(guard: &Guard, calibrated: bool, record_only: bool, act: Action) -> String {
    if act == Action::Alert {
        "alert".into()
    } else if record_only {
        format!("alert only ({act} configured): --record-only")
    } else if !calibrated {
        format!("alert only ({act} configured): calibration failed, offsets not trusted")
    } else {
        crate::sensors::file_open::enforcement(&|n| attached(guard, n), act)
    }
}

/// Whether the program `name` is attached.
fn attached(guard: &Guard, name: &str) -> bool {
    guard.program(name).is_some_and(|p| p.attached)
}

/// How each rule is enforced here, in words, for start-up and `status`.
pub fn describe(
    policy: &CompiledPolicy,
    guard: &Guard,
    calibrated: bool,
    record_only: bool,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for r in &policy.rules {
        let act = r.effective_action;
        let how = if act == Action::Alert {
            "alert".to_string()
        } else if record_only {
            format!("alert only ({act} configured): --record-only")
        } else if !calibrated {
            format!("alert only ({act} configured): calibration failed, offsets not trusted")
        } else {
            match r.kind {
                "files" => describe_files(guard, calibrated, record_only, act),
                "egress" => crate::sensors::net::enforcement(&|n| attached(guard, n), act),
                "exec" => crate::sensors::exec::enforcement(&|n| attached(guard, n), act),
                "env" if act == Action::Block => {
                    crate::sensors::env::enforcement(&|n| attached(guard, n))
                }
                _ => format!("alert only ({act} configured): no kernel hook for this kind of rule"),
            }
        };
        let how = if r.kind == "egress" {
            format!("{how}{}", describe_names(policy, guard, r.index))
        } else {
            how
        };
        out.insert(r.id.clone(), how);
    }
    out
}
