//! From a compiled policy to the kernel's maps, and an honest account, rule by rule, of
//! how each is enforced on this kernel (deny, kill, alert only) and why.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use openclaw_guard_common::{
    egress_flags, kernel_dev, EgressRule, InodeKey, NameKey, RuleAction, EGRESS_PORT_RANGES,
    NAME_LEN,
};

use crate::{
    bpf::Guard,
    openclaw,
    policy::{Action, CompiledPolicy, List},
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
        let files = if crate::bpf::guard_file_programs().all(|h| attached(&h)) {
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

/// Rule id of `run --protect PATH` (outside any policy file).
pub const CLI_PROTECT_RULE: u32 = 1;
pub const CLI_PROTECT_NAME: &str = "cli-protect";

/// Kernel map contents derived from a policy, before they are written.
#[derive(Debug, Default)]
pub struct KernelPlan {
    pub inodes: HashMap<InodeKey, RuleAction>,
    pub names: HashMap<NameKey, RuleAction>,
    /// Executables the tree may not run.
    pub exec_deny: HashMap<InodeKey, RuleAction>,
    pub egress_v4: HashMap<(u32, [u8; 4]), EgressRule>,
    pub egress_v6: HashMap<(u32, [u8; 16]), EgressRule>,
    /// Egress entries by destination name ([`openclaw_guard_common::dns::name_hash`]).
    pub egress_names: HashMap<u64, EgressRule>,
    /// Things the plan could not hold, said out loud.
    pub problems: Vec<String>,
    /// Per rule: resolved paths protected.
    pub protected: BTreeMap<String, Vec<PathBuf>>,
    /// Where each protected inode was found (the daemon holds a handle on each, so a
    /// protection follows its file when a directory above it moves).
    pub found_at: HashMap<InodeKey, PathBuf>,
    /// Per rule: paths left out because the kernel's maps are full (the plan is built
    /// in priority order, so what comes first stays).
    pub unprotected: BTreeMap<String, usize>,
    left_out: std::collections::HashSet<PathBuf>,
    /// Entries the kernel refused at the last write.
    refused: usize,
    listed: std::collections::HashSet<(String, PathBuf)>,
}

/// Where a gateway user's OpenClaw files live.
#[derive(Debug, Clone)]
pub struct UserDirs {
    pub home: PathBuf,
    pub state_dir: PathBuf,
}

impl KernelPlan {
    /// Whether `other` puts the same entries into the kernel's maps.
    pub fn same_kernel_entries(&self, other: &KernelPlan) -> bool {
        self.inodes == other.inodes
            && self.names == other.names
            && self.exec_deny == other.exec_deny
            && self.egress_v4 == other.egress_v4
            && self.egress_v6 == other.egress_v6
            && self.egress_names == other.egress_names
    }
}

/// Home and state directories to protect: every gateway's user (with its environment),
/// plus every home on the host that has OpenClaw state, so a gateway started later is
/// covered from its first moment.
pub fn user_dirs(roots: &[u32]) -> Vec<UserDirs> {
    let mut out: Vec<UserDirs> = Vec::new();
    let mut push = |loc: openclaw::StateLocation| {
        for dir in loc.all_state_dirs() {
            let d = UserDirs {
                home: loc.home.clone(),
                state_dir: dir.to_path_buf(),
            };
            if !out.iter().any(|o| o.state_dir == d.state_dir) {
                out.push(d);
            }
        }
    };
    for &pid in roots {
        push(crate::tree::gateway_location(pid));
    }
    let mut homes = vec![PathBuf::from("/root")];
    if let Ok(rd) = std::fs::read_dir("/home") {
        homes.extend(rd.flatten().map(|e| e.path()));
    }
    if let Some(h) = std::env::var_os("HOME") {
        homes.push(PathBuf::from(h));
    }
    for home in homes {
        push(openclaw::resolve_state_location(&home, &|k| {
            std::env::var(k).ok()
        }));
    }
    out
}

pub fn inode_key(meta: &std::fs::Metadata) -> InodeKey {
    InodeKey::new(
        kernel_dev(libc::major(meta.dev()), libc::minor(meta.dev())),
        meta.ino(),
    )
}

impl KernelPlan {
    /// Protects a path by identity (if it exists) and by name in its directory (so a
    /// replacement is protected too).
    pub fn protect_path(&mut self, rule_name: &str, path: &Path, ra: RuleAction) {
        let max = openclaw_guard_common::PROTECTED_MAX as usize;
        let inode = std::fs::metadata(path).ok().map(|m| inode_key(&m));
        let name = match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => std::fs::metadata(parent)
                .ok()
                .map(|pmeta| (inode_key(&pmeta), name.as_bytes())),
            _ => None,
        };
        let name = match name {
            Some((_, bytes)) if bytes.len() >= NAME_LEN => {
                self.problems.push(format!(
                    "rule {rule_name}: {} is protected by inode only: names of {NAME_LEN} bytes or more do not fit the name map",
                    path.display()
                ));
                None
            }
            Some((dir, bytes)) => {
                let mut key = NameKey {
                    dir,
                    name: [0; NAME_LEN],
                };
                key.name[..bytes.len()].copy_from_slice(bytes);
                Some(key)
            }
            None => None,
        };
        // Capacity: the kernel's maps hold PROTECTED_MAX entries each. A path that would
        // need one more is left out whole and counted (never a start-up failure).
        let full_inodes =
            inode.is_some_and(|k| !self.inodes.contains_key(&k)) && self.inodes.len() >= max;
        let full_names =
            name.is_some_and(|k| !self.names.contains_key(&k)) && self.names.len() >= max;
        if full_inodes || full_names {
            // Several patterns may name one file: it is counted once.
            if self.left_out.insert(path.to_path_buf()) {
                *self.unprotected.entry(rule_name.to_string()).or_default() += 1;
            }
            return;
        }
        if let Some(k) = inode {
            self.inodes.insert(k, ra);
            self.found_at.insert(k, path.to_path_buf());
        }
        if let Some(k) = name {
            self.names.insert(k, ra);
        }
        // A set beside the list: thousands of globbed files made this check quadratic.
        if self
            .listed
            .insert((rule_name.to_string(), path.to_path_buf()))
        {
            let list = self.protected.entry(rule_name.to_string()).or_default();
            list.push(path.to_path_buf());
        }
    }

    pub fn build(policy: &CompiledPolicy, users: &[UserDirs], extra: &[PathBuf]) -> Self {
        let mut plan = Self::default();
        let name_of = |idx: u32| {
            policy
                .rules
                .iter()
                .find(|r| r.index == idx)
                .map_or_else(|| format!("rule-{idx}"), |r| r.id.clone())
        };
        // The operator's own --protect paths first.
        for path in extra {
            plan.protect_path(
                CLI_PROTECT_NAME,
                path,
                RuleAction {
                    rule: CLI_PROTECT_RULE,
                    action: Action::Block.kernel_code(),
                },
            );
        }
        // Literal paths (`.env`, sockets, every user's) are planned before what globs
        // expand to: when the maps cannot hold everything, the many
        // `agents/*/agent/auth-profiles.json` give way, not `.env`.
        for globbed in [false, true] {
            for p in &policy.protected_paths {
                if p.pattern.is_glob() != globbed {
                    continue;
                }
                let ra = RuleAction {
                    rule: p.rule,
                    action: p.action.kernel_code(),
                };
                let rule = name_of(p.rule);
                for u in users {
                    for path in p.pattern.resolve(&u.home, &u.state_dir) {
                        plan.protect_path(&rule, &path, ra);
                    }
                }
            }
        }
        for x in &policy.exec_deny {
            let ra = RuleAction {
                rule: x.rule,
                action: x.action.kernel_code(),
            };
            for path in expand_glob(&x.path) {
                match std::fs::metadata(&path) {
                    Ok(meta) => {
                        plan.exec_deny.insert(inode_key(&meta), ra);
                        let list = plan.protected.entry(name_of(x.rule)).or_default();
                        if !list.contains(&path) {
                            list.push(path);
                        }
                    }
                    Err(_) => continue,
                }
            }
        }
        // Alert-only egress rules are judged in userspace from the connect events; the
        // kernel's one-entry-per-prefix tries hold only the rules that block or kill.
        let in_kernel = |rule: u32| {
            policy
                .rules
                .iter()
                .any(|r| r.index == rule && blocks_in_kernel(policy, r))
        };
        for e in policy.egress.iter().filter(|e| in_kernel(e.rule)) {
            let slot = match e.net.addr() {
                IpAddr::V4(a) => plan
                    .egress_v4
                    .entry((u32::from(e.net.prefix()), a.octets()))
                    .or_insert_with(|| fresh_slot(e.rule, e.action, e.list, e.net.prefix())),
                IpAddr::V6(a) => plan
                    .egress_v6
                    .entry((u32::from(e.net.prefix()), a.octets()))
                    .or_insert_with(|| fresh_slot(e.rule, e.action, e.list, e.net.prefix())),
            };
            if let Err(p) = merge_slot(slot, e.rule, e.action, e.list, e.ports, &name_of) {
                plan.problems
                    .push(format!("rule {}: {}: {p}", name_of(e.rule), e.net.addr()));
            }
        }
        for h in policy.egress_hosts.iter().filter(|h| in_kernel(h.rule)) {
            let slot = plan
                .egress_names
                .entry(openclaw_guard_common::dns::name_hash(&h.host))
                .or_insert_with(|| fresh_slot(h.rule, h.action, h.list, 0));
            if let Err(p) = merge_slot(slot, h.rule, h.action, h.list, h.ports, &name_of) {
                plan.problems
                    .push(format!("rule {}: {}: {p}", name_of(h.rule), h.host));
            }
        }
        let max = openclaw_guard_common::PROTECTED_MAX;
        for (rule, n) in &plan.unprotected {
            plan.problems.push(format!(
                "rule {rule}: {n} files NOT protected: the kernel's map of protected files holds {max}; literal paths such as .env come first, then what globs name"
            ));
        }
        plan
    }

    /// Writes the plan into the kernel maps: what `old` (the plan in force) did not
    /// already put there. An entry the kernel refuses (a full map) is said in
    /// `problems`, and the rest still goes in.
    pub fn write(&mut self, guard: &mut Guard, old: &KernelPlan) -> anyhow::Result<()> {
        // After a refusal `old` does not say what the kernel holds: all of it again.
        let fresh =
            |v: &RuleAction, in_old: Option<&RuleAction>| old.refused > 0 || in_old != Some(v);
        for (k, v) in &self.exec_deny {
            guard.exec_deny(*k, *v)?;
        }
        let mut refused = 0usize;
        for (k, v) in &self.inodes {
            if fresh(v, old.inodes.get(k)) {
                refused += usize::from(guard.protect(*k, *v).is_err());
            }
        }
        for (k, v) in &self.names {
            if fresh(v, old.names.get(k)) {
                refused += usize::from(guard.protect_name(*k, *v).is_err());
            }
        }
        self.refused = refused;
        if refused > 0 {
            self.problems.push(format!(
                "{refused} protected-file entries refused by the kernel (its maps are full until the stale entries go): retried at the next re-plan"
            ));
        }
        for ((len, a), v) in &self.egress_v4 {
            guard.egress_v4(*len, *a, *v)?;
        }
        for ((len, a), v) in &self.egress_v6 {
            guard.egress_v6(*len, *a, *v)?;
        }
        for (k, v) in &self.egress_names {
            guard.egress_name(*k, *v)?;
        }
        Ok(())
    }
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

/// An egress slot (one prefix or name) as its first entry starts it: no ports yet.
fn fresh_slot(rule: u32, action: Action, list: List, prefix: u8) -> EgressRule {
    let allow = if list == List::Allow {
        egress_flags::ALLOW
    } else {
        0
    };
    EgressRule {
        rule,
        action: action.kernel_code(),
        flags: allow | (u32::from(prefix) << egress_flags::PREFIX_SHIFT),
        nports: u32::MAX,
        ports: [0; EGRESS_PORT_RANGES],
    }
}

/// Adds one entry's ports to its slot. The slot's listed ports get its verdict; the
/// others go to the next less specific prefix, unless `REST_ALLOW` says another rule
/// allows the whole slot (the default policy's `loopback` in `egress` beside
/// `loopback:22` in `delegation-loopback`). Allow entries of several rules merge;
/// other mixes keep the first rule and say so. `nports` is `u32::MAX` until the first
/// entry (every port: 0).
fn merge_slot(
    slot: &mut EgressRule,
    rule: u32,
    action: Action,
    list: List,
    ports: Option<crate::policy::PortRange>,
    name_of: &dyn Fn(u32) -> String,
) -> Result<(), String> {
    let allow = list == List::Allow;
    let slot_allow = slot.flags & egress_flags::ALLOW != 0;
    let add = |slot: &mut EgressRule| -> Result<(), String> {
        match ports {
            None => slot.nports = 0,
            Some(_) if slot.nports == 0 => {}
            Some(r) if (slot.nports as usize) < EGRESS_PORT_RANGES => {
                slot.ports[slot.nports as usize] = (u32::from(r.lo) << 16) | u32::from(r.hi);
                slot.nports += 1;
            }
            Some(_) => return Err(format!("more than {EGRESS_PORT_RANGES} port ranges")),
        }
        Ok(())
    };
    if slot.nports == u32::MAX {
        slot.nports = 0;
        if let Some(r) = ports {
            slot.ports[0] = (u32::from(r.lo) << 16) | u32::from(r.hi);
            slot.nports = 1;
        }
        return Ok(());
    }
    if slot_allow && allow {
        return add(slot);
    }
    if slot.rule == rule && slot_allow == allow {
        return add(slot);
    }
    // Another rule allows every port of a slot that denies some.
    if !slot_allow && slot.nports > 0 && allow && ports.is_none() {
        slot.flags |= egress_flags::REST_ALLOW;
        return Ok(());
    }
    if slot_allow && slot.nports == 0 && !allow && ports.is_some() {
        let prefix = egress_flags::prefix(slot.flags) as u8;
        *slot = fresh_slot(rule, action, list, prefix);
        merge_slot(slot, rule, action, list, ports, name_of)?;
        slot.flags |= egress_flags::REST_ALLOW;
        return Ok(());
    }
    Err(format!(
        "already decided by rule {} here; the first rule wins in the kernel",
        name_of(slot.rule)
    ))
}

/// Whether a rule's entries belong in the kernel's egress tries: configured to block or
/// kill (under a global `--mode monitor` too: the kernel then reports them as alerts,
/// like the file rules). Alert-only rules are judged in userspace from the events.
pub fn blocks_in_kernel(policy: &CompiledPolicy, r: &crate::policy::RuleSummary) -> bool {
    r.action != Action::Alert
        && (r.effective_action != Action::Alert || policy.mode == crate::policy::Mode::Monitor)
}

/// The existing paths an absolute path glob names (`*`, `?` in its components).
fn expand_glob(pattern: &str) -> Vec<PathBuf> {
    let mut cur = vec![PathBuf::from("/")];
    for comp in Path::new(pattern).components().skip(1) {
        let c = comp.as_os_str().to_string_lossy().into_owned();
        let mut next = Vec::new();
        for dir in &cur {
            if crate::policy::is_glob(&c) {
                if let Ok(rd) = std::fs::read_dir(dir) {
                    next.extend(
                        rd.flatten()
                            .filter(|e| {
                                e.file_name()
                                    .to_str()
                                    .is_some_and(|n| crate::policy::glob_match(&c, n))
                            })
                            .map(|e| e.path()),
                    );
                }
            } else {
                next.push(dir.join(&c));
            }
        }
        cur = next;
    }
    cur.into_iter().filter(|p| p.exists()).collect()
}

/// How file rules (and `run --protect` paths) are enforced here.
pub fn describe_files(guard: &Guard, calibrated: bool, record_only: bool, act: Action) -> String {
    let attached = |name: &str| guard.program(name).is_some_and(|p| p.attached);
    if act == Action::Alert {
        "alert".into()
    } else if record_only {
        format!("alert only ({act} configured): --record-only")
    } else if !calibrated {
        format!("alert only ({act} configured): calibration failed, offsets not trusted")
    } else if attached("file_open") {
        let unix = if attached("unix_stream_connect") && attached("unix_may_send") {
            "; unix sockets bound at protected paths: EPERM at unix_stream_connect, unix_may_send"
        } else {
            "; unix sockets bound at protected paths NOT refused (unix hooks not attached)"
        };
        format!(
            "{act}: EPERM at BPF LSM file_open, inode_link, inode_rename (io_uring opens included){unix}"
        )
    } else if ["sys_exit_openat", "sys_exit_openat2", "sys_exit_open"]
        .iter()
        .all(|p| attached(p))
    {
        let unix = if attached("sys_exit_connect") {
            "; unix sockets bound at protected paths: SIGKILL at connect's exit, before anything is written (unconnected datagrams NOT covered)"
        } else {
            "; unix sockets bound at protected paths NOT covered (connect tracepoints not attached)"
        };
        format!(
            "kill ({act} configured; an open that succeeded cannot be denied): SIGKILL at the open syscall's exit, before the process can read (no BPF LSM on this kernel; io_uring opens, hard links and renames are NOT covered on this tier){unix}"
        )
    } else {
        format!("alert only ({act} configured): neither BPF LSM file_open nor the open syscall tracepoints could be attached")
    }
}

/// How each rule is enforced here, in words, for start-up and `status`.
pub fn describe(
    policy: &CompiledPolicy,
    guard: &Guard,
    calibrated: bool,
    record_only: bool,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let attached = |name: &str| guard.program(name).is_some_and(|p| p.attached);
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
                "egress" if attached("socket_connect") && attached("socket_sendmsg") && attached("socket_create") => {
                    format!("{act}: EPERM at BPF LSM socket_connect and socket_sendmsg (UDP, TCP Fast Open, ICMP sends; the address read by the socket's own family, others refused); raw and packet sockets refused to the tree at socket_create; binding the DNS port refused to the tree")
                }
                "egress" if ["cgroup_connect4", "cgroup_connect6", "cgroup_sendmsg4", "cgroup_sendmsg6", "cgroup_sock_create"].iter().all(|p| attached(p)) => {
                    let how = if act == Action::Kill { "block (kill configured: cgroup programs cannot send signals)".to_string() } else { act.to_string() };
                    let packet = if attached("sys_enter_socket") {
                        "packet sockets: the caller killed at the socket syscall"
                    } else {
                        "packet sockets NOT refused (sys_enter_socket did not attach)"
                    };
                    format!("{how}: EPERM at cgroup connect4/6 and sendmsg4/6 (TCP incl. Fast Open, UDP); raw and ICMP sockets refused to the tree at creation; {packet}; binding the DNS port refused to the tree (no BPF LSM on this kernel)")
                }
                "egress" => format!("alert only ({act} configured): neither BPF LSM socket hooks nor cgroup socket programs could be attached"),
                "exec" if attached("bprm_check_security") => format!(
                    "{act}: listed executables refused with EPERM at BPF LSM bprm_check_security; shells and argument rules from userspace after exec (argv is only readable then): SIGKILL to the process and its group"
                ),
                "exec" => format!(
                    "{act}: from userspace after exec (no BPF LSM: listed executables are not refused before they run): SIGKILL to the process and its group"
                ),
                "env" if act == Action::Block => {
                    let peek = if attached("ptrace_access_check") {
                        "its tree may not read their environment or memory (/proc/PID/environ and mem, ptrace, process_vm_readv, pidfd_getfd: EPERM at BPF LSM ptrace_access_check) nor signal a held process"
                    } else {
                        "/proc/PID/environ and mem opens of them killed at the open's exit (no BPF LSM: ptrace, process_vm_readv and pidfd_getfd of them NOT refused; a held process can be sent SIGCONT early)"
                    };
                    format!(
                        "block: each process the gateway or its spawn broker starts is stopped at its first exec (SIGSTOP, sched_process_exec) and its secret values blanked through /proc/PID/mem before it runs; the gateway, broker and helpers keep theirs; {peek}; needs the daemon running (killed at exec while it is dead, not held after it stopped cleanly)"
                    )
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::policy::{default_policy, CompileContext};

    /// The default policy's egress entries in the kernel plan: `loopback` allowed by
    /// `egress` and `loopback:22` denied by `delegation-loopback` share a prefix without
    /// a complaint (the deny entry with its ports is exactly both); providers go by
    /// name, address literals and resolvers by prefix.
    #[test]
    fn default_egress_plan() {
        let ctx = CompileContext {
            providers: vec!["api.anthropic.com".into(), "127.0.0.1".into()],
            resolvers: vec!["10.0.0.2".parse::<IpAddr>().expect("ip")],
            ..CompileContext::default()
        };
        let p = CompiledPolicy::new(&default_policy(), None, &ctx);
        let plan = KernelPlan::build(&p, &[], &[]);
        assert!(
            plan.problems.iter().all(|p| !p.contains("already decided")),
            "{:?}",
            plan.problems
        );
        let lo = plan.egress_v4[&(8, [127, 0, 0, 0])];
        assert_eq!(
            lo.flags,
            egress_flags::REST_ALLOW | (8 << egress_flags::PREFIX_SHIFT),
            "loopback: the delegation ports denied, the rest allowed"
        );
        assert_eq!(lo.nports, 2, "ports 22 and 2375-2376");
        let any = plan.egress_v4[&(0, [0, 0, 0, 0])];
        assert_eq!((any.flags, any.nports), (0, 0));
        // The resolver's other ports go on to `any`.
        let resolver = plan.egress_v4[&(32, [10, 0, 0, 2])];
        assert_eq!(
            (resolver.flags, resolver.nports),
            (egress_flags::ALLOW | (32 << egress_flags::PREFIX_SHIFT), 1)
        );
        assert_eq!(resolver.ports[0], (53 << 16) | 53);
        let name = openclaw_guard_common::dns::name_hash("api.anthropic.com");
        assert_eq!(plan.egress_names[&name].flags, egress_flags::ALLOW);
        assert_eq!(plan.egress_names.len(), 1, "the literal is not a name");
    }

    #[test]
    fn slots_merge_and_refuse_mixes() {
        let names = |r: u32| format!("r{r}");
        let mut slot = fresh_slot(1, Action::Block, List::Allow, 8);
        merge_slot(&mut slot, 1, Action::Block, List::Allow, None, &names).expect("first");
        // Another rule's deny with ports takes the slot; the rest stays allowed.
        let r = crate::policy::PortRange { lo: 22, hi: 22 };
        merge_slot(&mut slot, 2, Action::Block, List::Deny, Some(r), &names).expect("deny");
        assert_eq!(
            (slot.rule, slot.flags, slot.nports),
            (
                2,
                egress_flags::REST_ALLOW | (8 << egress_flags::PREFIX_SHIFT),
                1
            )
        );
        // A third rule denying every port there is a mix the slot cannot hold.
        let err = merge_slot(&mut slot, 3, Action::Block, List::Deny, None, &names);
        assert!(err.is_err_and(|e| e.contains("r2")));
        // Allow entries of two rules merge their ports.
        let mut a = fresh_slot(4, Action::Block, List::Allow, 32);
        let p = |n: u16| Some(crate::policy::PortRange { lo: n, hi: n });
        merge_slot(&mut a, 4, Action::Block, List::Allow, p(53), &names).expect("first");
        merge_slot(&mut a, 5, Action::Block, List::Allow, p(443), &names).expect("merge");
        assert_eq!(a.nports, 2);
    }
}
