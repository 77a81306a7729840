//! The policy in force and what it put into the kernel: applying a policy (new
//! entries first, then stale ones out), re-plans and reloads, the guard's own files.

use super::*;

/// The policy in force and what it put into the kernel, for reloads.
pub(super) struct PolicyState {
    pub(super) path: Option<PathBuf>,
    pub(super) mtime: Option<std::time::SystemTime>,
    pub(super) mode: Option<crate::policy::Mode>,
    pub(super) extra: Vec<PathBuf>,
    pub(super) record_only: bool,
    pub(super) calibrated: bool,
    pub(super) plan: crate::enforce::KernelPlan,
    pub(super) policy: std::sync::Arc<crate::policy::CompiledPolicy>,
    /// The guard's own files and their `tamper::guarded` flags (self-protection).
    pub(super) guarded: Vec<(PathBuf, u32)>,
    pub(super) kill_limit: u32,
    pub(super) fold_ms: u32,
    /// `Settings.policy_gen` of the policy applied last.
    pub(super) policy_gen: u32,
    /// The switches and the guard's files as last written, to tell a re-plan that
    /// changes nothing (most) from one that does.
    pub(super) applied: Option<(openclaw_guard_common::Settings, HashMap<InodeKey, u32>)>,
    /// An `O_PATH` handle on every protected inode: while held, the inode is not freed
    /// (its number cannot go to another file), and a re-plan can tell that a protected
    /// file whose path no longer resolves (a directory above it was moved) still exists.
    pub(super) anchors: HashMap<InodeKey, std::fs::File>,
    /// The gateway users' homes and state directories the last plan resolved.
    pub(super) users: Vec<crate::enforce::UserDirs>,
    /// What the `env` rules blank (names and values, from the policy and the users'
    /// secrets files as the last plan read them).
    pub(super) secrets: crate::secret_env::Secrets,
    /// The rule ids and guarded files the decoders name (from what was applied).
    pub(super) names: crate::sensors::Names,
}

/// What a policy names on this host now: the gateway users' directories, the secrets
/// their files hold, the kernel plan. Built off the event loop on a re-plan: with
/// thousands of protected files it walks the file system for a second or more, and
/// held processes and decisions must not wait for that.
pub(super) struct Resolved {
    /// The policy resolved for (a reload may overtake it).
    pub(super) policy: std::sync::Arc<crate::policy::CompiledPolicy>,
    /// The same compiled with what the host says now (`crate::host`): the policy in
    /// force once committed.
    pub(super) compiled: std::sync::Arc<crate::policy::CompiledPolicy>,
    pub(super) users: Vec<crate::enforce::UserDirs>,
    pub(super) secrets: crate::secret_env::Secrets,
    pub(super) plan: crate::enforce::KernelPlan,
}

impl Resolved {
    pub(super) fn new(
        policy: std::sync::Arc<crate::policy::CompiledPolicy>,
        roots: &[u32],
        extra: &[PathBuf],
    ) -> Self {
        let users = crate::enforce::user_dirs(roots);
        let ctx = crate::host::context(roots, &users);
        let compiled = if ctx == policy.context {
            policy.clone()
        } else {
            std::sync::Arc::new(crate::policy::CompiledPolicy::new(
                &policy.policy,
                Some(policy.mode),
                &ctx,
            ))
        };
        let state_dirs: Vec<PathBuf> = users.iter().map(|u| u.state_dir.clone()).collect();
        let secrets = crate::secret_env::Secrets::from_policy(&compiled, &state_dirs);
        let plan = crate::enforce::KernelPlan::build(&compiled, &users, extra);
        Self {
            policy,
            compiled,
            users,
            secrets,
            plan,
        }
    }
}

/// What the tree may not change: this binary, the policy file, the state directory and
/// the pins (with their bpffs, which may not be unmounted).
pub(super) fn guarded_paths(args: &RunOptions) -> Vec<(PathBuf, u32)> {
    use openclaw_guard_common::tamper::guarded;
    let mut paths = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        paths.push((exe, guarded::FILE));
    }
    if let Some(p) = &args.policy {
        paths.push((p.clone(), guarded::FILE));
    }
    if !args.sink.no_record {
        paths.push((args.sink.state_dir.clone(), guarded::DIR));
    }
    if !args.no_pin {
        paths.push((args.pin_dir.clone(), guarded::DIR | guarded::FS));
    }
    paths.push((
        crate::kernel::canary::path_for(&args.status_file),
        guarded::FILE,
    ));
    let unit = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| own_unit(&c));
    let extra = args
        .guard_paths
        .iter()
        .cloned()
        .chain(unit.iter().flat_map(|u| unit_paths(Path::new("/"), u)));
    for p in extra {
        let flag = if p.is_dir() {
            guarded::DIR
        } else {
            guarded::FILE
        };
        paths.push((p, flag));
    }
    paths
}

/// The systemd unit the daemon runs in (`openclaw-guard.service`), from the last
/// component of its cgroup v2 path.
pub(super) fn own_unit(proc_cgroup: &str) -> Option<String> {
    let path = proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim();
    let last = path.rsplit('/').next()?;
    last.ends_with(".service").then(|| last.to_owned())
}

/// What starts `unit` at boot and what changes it, under `root`: its unit file and
/// drop-in directory in each directory systemd reads, its enablement links, and the
/// arguments and configuration the package gives it (`/etc/default/openclaw-guard`,
/// the unit's EnvironmentFile; `/etc/openclaw-guard`): an agent that rewrote those
/// would start the next guard in monitor mode or without its outputs.
/// Those that exist now; a drop-in directory made later is not covered (it takes
/// effect at a reload, through the service manager's socket the `delegation` rule
/// closes, or at the next boot).
pub(super) fn unit_paths(root: &Path, unit: &str) -> Vec<PathBuf> {
    const DIRS: &[&str] = &[
        "etc/systemd/system",
        "run/systemd/system",
        "usr/local/lib/systemd/system",
        "usr/lib/systemd/system",
        "lib/systemd/system",
    ];
    let mut out = Vec::new();
    for dir in DIRS.iter().map(|d| root.join(d)) {
        for p in [dir.join(unit), dir.join(format!("{unit}.d"))] {
            if p.symlink_metadata().is_ok() {
                out.push(p);
            }
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".wants") || name.ends_with(".requires") {
                let link = e.path().join(unit);
                if link.symlink_metadata().is_ok() {
                    out.push(link);
                }
            }
        }
    }
    let stem = unit.trim_end_matches(".service");
    for p in [
        root.join("etc/default").join(stem),
        root.join("etc").join(stem),
    ] {
        if p.symlink_metadata().is_ok() {
            out.push(p);
        }
    }
    out
}

pub(super) fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Loads and compiles the policy file, or the embedded default.
pub(super) fn load_policy(
    path: Option<&Path>,
    mode: Option<crate::policy::Mode>,
) -> anyhow::Result<crate::policy::CompiledPolicy> {
    let file = match path {
        Some(p) => crate::policy::load_file(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => crate::policy::default_policy(),
    };
    Ok(crate::policy::CompiledPolicy::new(
        &file,
        mode,
        &crate::policy::CompileContext::default(),
    ))
}

impl PolicyState {
    /// Protection follows the files, not the paths they had: an inode this policy
    /// protected whose path no longer resolves (the state directory, or one below it,
    /// was renamed) stays in the plan while it still has a link. Then the handles are
    /// renewed for what the plan protects. A new policy starts from its own paths.
    pub(super) fn follow_moved_files(
        &mut self,
        plan: &mut crate::enforce::KernelPlan,
        new_policy: bool,
    ) {
        use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
        let mut anchors = HashMap::new();
        if !new_policy {
            for (key, ra) in &self.plan.inodes {
                if plan.inodes.contains_key(key) {
                    continue;
                }
                let Some(handle) = self.anchors.remove(key) else {
                    continue;
                };
                let room = plan.inodes.len() < openclaw_guard_common::PROTECTED_MAX as usize;
                if room && handle.metadata().is_ok_and(|m| m.nlink() > 0) {
                    log::info!(
                        "protected inode {}:{} moved away from its path; still protected",
                        key.dev,
                        key.ino
                    );
                    plan.inodes.insert(*key, *ra);
                    anchors.insert(*key, handle);
                }
            }
        }
        let budget = anchor_budget();
        let mut unanchored = 0usize;
        for (key, path) in &plan.found_at {
            if anchors.len() >= budget {
                unanchored += 1;
                continue;
            }
            let handle = self.anchors.remove(key).or_else(|| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH)
                    .open(path)
                    .ok()
            });
            if let Some(h) = handle {
                anchors.insert(*key, h);
            }
        }
        if unanchored > 0 {
            // Still protected by inode; only a move of a directory above them followed
            // by a re-plan would lose them, and the fd limit is what says so.
            plan.problems.push(format!(
                "{unanchored} protected files are not followed across a move of their directory: the daemon's fd limit leaves room for {budget} handles"
            ));
        }
        self.anchors = anchors;
    }

    /// The switches for the policy in force (`policy_gen` left 0).
    pub(super) fn settings(&self) -> openclaw_guard_common::Settings {
        let policy = &*self.policy;
        // Raw and ICMP sockets are refused for a rule that blocks beyond loopback (they
        // reach the network without a connect); a loopback-only deny list does not
        // need that.
        let beyond_loopback = |rule: u32| {
            policy.egress.iter().any(|e| {
                e.rule == rule
                    && e.list == crate::policy::List::Deny
                    && !crate::policy::loopback_nets()
                        .iter()
                        .any(|l| l.contains(e.net.addr()) && e.net.prefix() >= l.prefix())
            }) || policy.egress_hosts.iter().any(|h| h.rule == rule)
        };
        let blocking_egress = policy
            .rules
            .iter()
            .find(|r| {
                r.kind == "egress"
                    && crate::enforce::blocks_in_kernel(policy, r)
                    && beyond_loopback(r.index)
            })
            .map(|r| r.index);
        let enforce = self.calibrated && !self.record_only;
        let env_rule = policy
            .secret_env
            .iter()
            .find(|r| r.action == crate::policy::Action::Block);
        openclaw_guard_common::Settings {
            monitor: u32::from(policy.mode == crate::policy::Mode::Monitor),
            enforce: u32::from(enforce),
            env_hold: u32::from(enforce && env_rule.is_some()),
            env_rule: env_rule.map_or(0, |r| r.rule),
            egress_blocks: u32::from(blocking_egress.is_some()),
            egress_rule: blocking_egress.unwrap_or(0),
            guard_tgid: std::process::id(),
            kill_limit: self.kill_limit,
            fold_ms: self.fold_ms,
            policy_gen: 0,
        }
    }

    /// Writes the switches last: with a new `policy_gen` when anything the kernel
    /// checks changed (`changed`), which ends every fold window, since a reopen inside
    /// one skips the checks. The maps hold the new state by then.
    pub(super) fn write_settings(
        &mut self,
        guard: &mut Guard,
        settings: openclaw_guard_common::Settings,
        files: HashMap<InodeKey, u32>,
        changed: bool,
    ) -> anyhow::Result<()> {
        let same = !changed
            && self
                .applied
                .as_ref()
                .is_some_and(|(s, f)| *s == settings && *f == files);
        if !same {
            self.policy_gen = self.policy_gen.wrapping_add(1);
        }
        guard.set_settings(openclaw_guard_common::Settings {
            policy_gen: self.policy_gen,
            ..settings
        })?;
        self.applied = Some((settings, files));
        Ok(())
    }

    /// Puts the guard's own files into `GUARD_FILES`, as they are now (an edited
    /// policy is a new inode; the state directory may appear after start-up).
    pub(super) fn guard_files(
        &mut self,
        guard: &mut Guard,
    ) -> anyhow::Result<HashMap<InodeKey, u32>> {
        let (files, names) = crate::enforce::guard_files(&self.guarded);
        guard.set_guard_files(&files)?;
        self.names.guard_paths = names;
        Ok(files)
    }

    /// [`PolicyState::guard_files`] on its own (the record directory appeared).
    pub(super) fn refresh_guard_files(&mut self, guard: &mut Guard) -> anyhow::Result<()> {
        let files = self.guard_files(guard)?;
        self.write_settings(guard, self.settings(), files, false)
    }

    /// Puts `self.policy` into the kernel: new entries first, then the stale ones out,
    /// so what both policies protect stays protected throughout; then the switches.
    /// `new_policy` (start-up, reload) always ends the fold windows; a re-plan only
    /// when what it resolved differs. Returns how each rule is enforced here.
    pub(super) fn apply(
        &mut self,
        guard: &mut Guard,
        roots: &[u32],
        new_policy: bool,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let policy = self.policy.clone();
        let mut names: std::collections::HashMap<u32, String> = policy
            .rules
            .iter()
            .map(|r| (r.index, r.id.clone()))
            .collect();
        names.insert(
            crate::enforce::CLI_PROTECT_RULE,
            crate::enforce::CLI_PROTECT_NAME.into(),
        );
        names.insert(
            openclaw_guard_common::tamper::RULE,
            crate::enforce::SELF_PROTECTION_NAME.into(),
        );
        self.names.rules = names;
        let resolved = Resolved::new(policy, roots, &self.extra);
        self.commit(guard, resolved, new_policy)
    }

    /// Puts what [`Resolved::new`] found into the kernel (see [`PolicyState::apply`]).
    /// For the policy in force only: the re-plan drops a resolution a reload overtook.
    pub(super) fn commit(
        &mut self,
        guard: &mut Guard,
        resolved: Resolved,
        new_policy: bool,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let Resolved {
            compiled,
            users,
            secrets,
            mut plan,
            ..
        } = resolved;
        let resolvers: Vec<[u8; 16]> = compiled
            .context
            .resolvers
            .iter()
            .map(|a| crate::host::mapped(*a))
            .collect();
        guard.set_resolvers(&resolvers)?;
        self.policy = compiled;
        self.users = users;
        self.secrets = secrets;
        self.follow_moved_files(&mut plan, new_policy);
        guard.sync_plan(&self.plan, &mut plan)?;
        for p in plan
            .problems
            .iter()
            .filter(|p| !self.plan.problems.contains(p))
        {
            log::warn!("policy: {p}");
        }
        let changed = new_policy || !plan.same_kernel_entries(&self.plan);
        self.plan = plan;
        let files = self.guard_files(guard)?;
        self.write_settings(guard, self.settings(), files, changed)?;
        let policy = &self.policy;
        let mut enforcement =
            crate::enforce::describe(policy, guard, self.calibrated, self.record_only);
        for (rule, n) in &self.plan.unprotected {
            if let Some(how) = enforcement.get_mut(rule) {
                how.push_str(&format!(
                    "; {n} files NOT protected (the kernel's map of protected files is full)"
                ));
            }
        }
        enforcement.insert(
            crate::enforce::SELF_PROTECTION_NAME.to_string(),
            crate::enforce::describe_self_protection(guard, self.record_only),
        );
        if !self.extra.is_empty() {
            let how = crate::enforce::describe_files(
                guard,
                self.calibrated,
                self.record_only,
                crate::policy::Action::Block,
            );
            enforcement.insert(crate::enforce::CLI_PROTECT_NAME.to_string(), how);
        }
        Ok(enforcement)
    }
}

#[cfg(test)]
mod unit_tests {
    use std::path::Path;

    #[test]
    pub(super) fn own_unit_from_cgroup() {
        assert_eq!(
            super::own_unit("0::/system.slice/openclaw-guard.service\n").as_deref(),
            Some("openclaw-guard.service")
        );
        assert_eq!(
            super::own_unit("0::/user.slice/user-0.slice/session-3.scope\n"),
            None
        );
        assert_eq!(super::own_unit("12:pids:/\n"), None);
    }

    #[test]
    pub(super) fn unit_files_drop_ins_and_links_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let etc = root.join("etc/systemd/system");
        std::fs::create_dir_all(etc.join("multi-user.target.wants")).expect("mkdir");
        std::fs::create_dir_all(etc.join("openclaw-guard.service.d")).expect("mkdir");
        std::fs::create_dir_all(root.join("lib/systemd/system")).expect("mkdir");
        std::fs::write(root.join("lib/systemd/system/openclaw-guard.service"), "").expect("unit");
        std::os::unix::fs::symlink(
            "/lib/systemd/system/openclaw-guard.service",
            etc.join("multi-user.target.wants/openclaw-guard.service"),
        )
        .expect("link");
        std::fs::write(etc.join("other.service"), "").expect("other");
        std::fs::create_dir_all(root.join("etc/default")).expect("mkdir");
        std::fs::write(root.join("etc/default/openclaw-guard"), "").expect("default");
        std::fs::write(root.join("etc/default/other"), "").expect("other default");
        std::fs::create_dir_all(root.join("etc/openclaw-guard")).expect("config dir");
        let mut found = super::unit_paths(root, "openclaw-guard.service");
        found.sort();
        let rel: Vec<_> = found
            .iter()
            .map(|p| p.strip_prefix(root).expect("under root").to_path_buf())
            .collect();
        assert_eq!(
            rel,
            [
                Path::new("etc/default/openclaw-guard"),
                Path::new("etc/openclaw-guard"),
                Path::new("etc/systemd/system/multi-user.target.wants/openclaw-guard.service"),
                Path::new("etc/systemd/system/openclaw-guard.service.d"),
                Path::new("lib/systemd/system/openclaw-guard.service"),
            ]
        );
    }
}
