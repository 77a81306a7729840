//! The kernel plan as a value: what a compiled policy puts into the kernel's maps
//! (protected inodes and names, the exec deny list, egress prefixes and names), built
//! from the policy and the gateway users' directories, before anything is written.
//! Writing it, and reading back what the maps hold, is [`super::maps`].

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
    openclaw,
    policy::{Action, CompiledPolicy, List},
};

/// Rule id of `run --protect PATH` (outside any policy file).
pub const CLI_PROTECT_RULE: u32 = 1;
pub const CLI_PROTECT_NAME: &str = "cli-protect";

pub fn blocks_in_kernel(policy: &CompiledPolicy, r: &crate::policy::RuleSummary) -> bool {
    r.action != Action::Alert
        && (r.effective_action != Action::Alert || policy.mode == crate::policy::Mode::Monitor)
}

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
    pub(crate) refused: usize,
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
        push(crate::kernel::procfs::gateway_location(pid));
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
