//! The event loop: the rings read in slices, decisions held for their process's
//! events, enrichment, the sink, periodic work (status, re-plans, the canary).

use super::*;

/// The signals the daemon handles, registered before anything else.
pub(super) struct Signals {
    pub(super) term: tokio::signal::unix::Signal,
    pub(super) int: tokio::signal::unix::Signal,
    pub(super) hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            term: tokio::signal::unix::signal(SignalKind::terminate())?,
            int: tokio::signal::unix::signal(SignalKind::interrupt())?,
            hup: tokio::signal::unix::signal(SignalKind::hangup())?,
        })
    }
}

pub(super) struct Pipeline {
    pub(super) guard: Guard,
    pub(super) cache: ProcessCache,
    pub(super) clock: Clock,
    pub(super) sink: crate::sink::Sink,
    pub(super) counters: Counters,
    pub(super) status: Status,
    pub(super) status_file: PathBuf,
    pub(super) started: Instant,
    pub(super) policy: PolicyState,
    /// Decisions of processes enrichment does not know yet: they travel on their own
    /// ring, ahead of the fork that introduces their process on the process ring, so
    /// they wait until that ring is read up to their time (or is empty, or
    /// [`HELD_FOR_NS`] passed) to get their lineage and role (bounded: [`HELD_MAX`]).
    pub(super) held: Vec<Event>,
    /// The names behind the DNS sensor's hashes.
    pub(super) names: crate::host::Names,
    /// The host knowledge last written to the record.
    pub(super) host_recorded: Option<crate::policy::CompileContext>,
    /// Kernel time of the last process event (fork, exec, exit) handled, and whether
    /// that ring was found empty at the last read: what the held decisions wait for.
    pub(super) procs_seen_ns: u64,
    pub(super) procs_idle: bool,
    /// The file the BPF LSM canary opens (`None`: no BPF LSM to check).
    pub(super) canary: Option<PathBuf>,
    /// Since when (and what the canary saw) BPF LSM no longer decides.
    pub(super) lsm_lost: Option<String>,
    /// Tool calls the gateways reported, and which gateways may report.
    pub(super) calls: std::sync::Arc<crate::attribution::Registry>,
}

/// Decisions held back at most; beyond, they go out with what is known.
pub(super) const HELD_MAX: usize = 1024;
/// How long a decision waits at most for the process events before it (a flood of
/// processes may put its fork behind): then it goes out with what is known.
pub(super) const HELD_FOR_NS: u64 = 20_000_000;

/// How long the kernel trusts the daemon to resume a held exec after its last
/// heartbeat (sent every second): past it, such an exec is killed instead.
pub(super) const ENV_ALIVE_FOR: Duration = Duration::from_secs(3);

impl Pipeline {
    pub(super) async fn stream(
        &mut self,
        ring: RingBuf<MapData>,
        decisions: RingBuf<MapData>,
        execs: RingBuf<MapData>,
        signals: Signals,
        stats_every: Duration,
        attribution: Option<tokio::net::UnixListener>,
    ) -> anyhow::Result<()> {
        let Signals {
            mut term,
            mut int,
            mut hup,
        } = signals;
        // SAFETY: the ring buffer owns its fd for as long as the AsyncFd holds it.
        let mut fd = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow::anyhow!("registering the ring buffer with tokio: {e}"))?;
        // SAFETY: as above.
        let mut dfd = unsafe { AsyncFd::register(decisions) }
            .map_err(|e| anyhow::anyhow!("registering the decisions ring with tokio: {e}"))?;
        // SAFETY: as above.
        let mut xfd = unsafe { AsyncFd::register(execs) }
            .map_err(|e| anyhow::anyhow!("registering the exec ring with tokio: {e}"))?;
        let mut replan_tick = tokio::time::interval(Duration::from_secs(5));
        replan_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut replan: Option<tokio::task::JoinHandle<Resolved>> = None;
        // Ordinary events are submitted without a wakeup until a batch piles up (see
        // `wakeup` in the kernel programs): this bounds their delay.
        let mut drain_tick = tokio::time::interval(DRAIN_EVERY);
        drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status_tick = tokio::time::interval(Duration::from_secs(1));
        let mut stats_tick = tokio::time::interval(stats_every);
        stats_tick.tick().await;
        // Reports come in on tasks of their own; their records join the pipeline here.
        let (records_tx, mut records) = tokio::sync::mpsc::channel(1024);
        let socket = self.status.attribution.socket.clone();
        if let Some(listener) = attribution {
            tokio::spawn(crate::attribution::serve(
                listener,
                self.calls.clone(),
                records_tx,
            ));
        }
        loop {
            // `biased`: decisions first, whatever else is ready.
            tokio::select! {
                biased;
                // Once a second, whatever floods the rings: the heartbeat that keeps
                // held processes alive and the BPF LSM canary must not be starved.
                _ = status_tick.tick() => {
                    let changed = self.policy.path.as_deref().map(mtime);
                    if changed.is_some_and(|m| m != self.policy.mtime) {
                        if let Err(e) = self.reload("policy file changed") {
                            log::warn!("policy reload: {e:#}");
                        }
                    }
                    self.refresh_counters();
                    self.check_lsm()?;
                    write_status(&self.status_file, &self.status);
                    self.env_heartbeat();
                    // Safety net: a held process whose event was lost.
                    self.resume_orphans(Duration::from_secs(2));
                }
                guard = dfd.readable_mut() => {
                    let mut guard = guard?;
                    // A slice of decisions, then one of the process ring (what introduces
                    // their processes, and the execs a flood of decisions must not
                    // starve), and a few ordinary events (not starved either); the ring
                    // stays ready while more decisions wait.
                    if self.drain_some(guard.get_inner_mut(), DECISIONS_SLICE)? < DECISIONS_SLICE {
                        guard.clear_ready();
                    }
                    self.drain_procs(xfd.get_mut())?;
                    self.drain_some(fd.get_mut(), EVENTS_CHUNK)?;
                    self.release_held()?;
                    self.sink.flush();
                }
                guard = xfd.readable_mut() => {
                    let mut guard = guard?;
                    // Processes ahead of the ordinary events: a flood of opens delays
                    // no alert about a new program.
                    if self.drain_procs(guard.get_inner_mut())? < PROCS_SLICE {
                        guard.clear_ready();
                    }
                    // Decisions that waited for their processes.
                    self.release_held()?;
                    self.sink.flush();
                }
                guard = fd.readable_mut() => {
                    let mut guard = guard?;
                    // One slice, then back to the loop, which looks at the others first.
                    if !self.drain_slice(dfd.get_mut(), xfd.get_mut(), guard.get_inner_mut())? {
                        guard.clear_ready();
                    }
                    self.sink.flush();
                }
                _ = drain_tick.tick() => {
                    // Bounded: under a flood the other arms get their turn.
                    for _ in 0..DRAIN_TICK_SLICES {
                        if !self.drain_slice(dfd.get_mut(), xfd.get_mut(), fd.get_mut())? {
                            break;
                        }
                    }
                    self.sink.flush();
                }
                Some(record) = records.recv() => {
                    self.sink.record(&record)?;
                    self.sink.flush();
                }
                _ = hup.recv() => {
                    if let Err(e) = self.reload("SIGHUP") {
                        log::warn!("policy reload: {e:#}");
                    }
                }
                _ = replan_tick.tick(), if replan.is_none() => {
                    // State directories and gateway users appear after start-up.
                    let roots = self.status.roots.clone();
                    let policy = self.policy.policy.clone();
                    let extra = self.policy.extra.clone();
                    replan = Some(tokio::task::spawn_blocking(move || {
                        Resolved::new(policy, &roots, &extra)
                    }));
                }
                resolved = async { replan.as_mut().expect("guarded").await }, if replan.is_some() => {
                    replan = None;
                    // A reload while it ran applied its own resolution: this one is moot.
                    if resolved
                        .as_ref()
                        .is_ok_and(|r| !std::sync::Arc::ptr_eq(&r.policy, &self.policy.policy))
                    {
                        continue;
                    }
                    let applied = resolved
                        .map_err(anyhow::Error::from)
                        .and_then(|r| self.policy.commit(&mut self.guard, r, false));
                    match applied {
                        Ok(enforcement) => {
                            self.status.enforcement = enforcement;
                            self.sink.set_policy(self.policy.policy.clone());
                            self.record_host()?;
                            self.mark_lsm_lost();
                        }
                        Err(e) => log::warn!("re-resolving protected paths: {e:#}"),
                    }
                    self.refresh_state_dirs();
                }
                _ = stats_tick.tick() => {
                    self.refresh_counters();
                    self.emit_stats()?;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        // Nothing will resume a held process once this daemon is gone: holding stops
        // first, then what is held is handled with the rest of the events.
        let settings = self.policy.settings();
        let files = self
            .policy
            .applied
            .as_ref()
            .map(|(_, f)| f.clone())
            .unwrap_or_default();
        if let Err(e) = self.policy.write_settings(
            &mut self.guard,
            openclaw_guard_common::Settings {
                env_hold: 0,
                ..settings
            },
            files,
            false,
        ) {
            log::warn!("env: turning holding off: {e:#}");
        }
        // What the kernel wrote before the signal is still owed to the outputs.
        self.drain(dfd.get_mut())?;
        self.drain(xfd.get_mut())?;
        self.drain(fd.get_mut())?;
        self.release_all_held()?;
        self.resume_orphans(Duration::ZERO);
        while let Ok(record) = records.try_recv() {
            self.sink.record(&record)?;
        }
        self.sink.flush();
        if let Some(path) = &socket {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// Validates and swaps in the policy file; a policy that does not load is rejected
    /// with its errors and the one in force stays, untouched.
    pub(super) fn reload(&mut self, why: &str) -> anyhow::Result<()> {
        self.policy.mtime = self.policy.path.as_deref().and_then(mtime);
        let path = self.policy.path.as_ref().map_or_else(
            || "(embedded default)".to_string(),
            |p| p.display().to_string(),
        );
        let record = match load_policy(self.policy.path.as_deref(), self.policy.mode) {
            Err(e) => {
                log::warn!(
                    "policy reload ({why}) REJECTED, the previous policy stays in force:\n{e:#}"
                );
                reload_record("rejected", &path, Some(format!("{e:#}")), why)
            }
            Ok(policy) => {
                let policy = std::sync::Arc::new(policy);
                let old = std::mem::replace(&mut self.policy.policy, policy.clone());
                let roots = self.status.roots.clone();
                match self.policy.apply(&mut self.guard, &roots, true) {
                    Ok(enforcement) => {
                        self.status.enforcement = enforcement;
                        self.sink.set_policy(self.policy.policy.clone());
                        self.record_host()?;
                        log::info!("policy reloaded ({why}) from {path}");
                        for (rule, how) in &self.status.enforcement {
                            log::info!("rule {rule}: {how}");
                        }
                        reload_record("applied", &path, None, why)
                    }
                    Err(e) => {
                        // The maps hold the new entries as far as they were written:
                        // put the old policy back entirely.
                        self.policy.policy = old;
                        self.status.enforcement =
                            self.policy.apply(&mut self.guard, &roots, true)?;
                        log::error!("policy reload ({why}) failed in the kernel, the previous policy restored: {e:#}");
                        reload_record("failed", &path, Some(format!("{e:#}")), why)
                    }
                }
            }
        };
        self.sink.record(&record)?;
        self.status.last_reload = Some(record);
        write_status(&self.status_file, &self.status);
        self.sink.flush();
        Ok(())
    }

    pub(super) fn drain(&mut self, ring: &mut RingBuf<MapData>) -> anyhow::Result<()> {
        self.drain_some(ring, usize::MAX).map(drop)
    }

    /// A slice of decisions, one of process events, then one of ordinary events: a
    /// decision is never held up behind more than a slice, nor an exec behind more
    /// than a slice of decisions. True when a slice of processes or events was full
    /// (more may wait).
    pub(super) fn drain_slice(
        &mut self,
        decisions: &mut RingBuf<MapData>,
        procs: &mut RingBuf<MapData>,
        events: &mut RingBuf<MapData>,
    ) -> anyhow::Result<bool> {
        self.drain_some(decisions, DECISIONS_SLICE)?;
        let more_procs = self.drain_procs(procs)? == PROCS_SLICE;
        let mut taken = 0;
        while taken < EVENTS_SLICE {
            let n = self.drain_some(events, EVENTS_CHUNK)?;
            taken += n;
            // What came on the urgent rings meanwhile goes out before more bulk.
            let urgent = self.drain_some(decisions, DECISIONS_SLICE)? + self.drain_procs(procs)?;
            if urgent > 0 {
                self.release_held()?;
                self.sink.flush();
            }
            if n < EVENTS_CHUNK {
                break;
            }
        }
        self.release_held()?;
        Ok(taken == EVENTS_SLICE || more_procs)
    }

    /// One slice of the process ring, noting whether it is now empty.
    pub(super) fn drain_procs(&mut self, procs: &mut RingBuf<MapData>) -> anyhow::Result<usize> {
        let n = self.drain_some(procs, PROCS_SLICE)?;
        self.procs_idle = n < PROCS_SLICE;
        Ok(n)
    }

    /// The held events whose wait is over, enriched with what came since; the others
    /// stay (everything goes at shutdown: `release_all_held`).
    pub(super) fn release_held(&mut self) -> anyhow::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let now = crate::secret_env::boot_ns();
        let (seen, idle) = (self.procs_seen_ns, self.procs_idle);
        let (due, wait): (Vec<Event>, Vec<Event>) =
            std::mem::take(&mut self.held).into_iter().partition(|ev| {
                idle || ev.ktime_ns <= seen || now.saturating_sub(ev.ktime_ns) > HELD_FOR_NS
            });
        self.held = wait;
        for mut ev in due {
            self.cache.enrich(&mut ev);
            self.names.name(&mut ev);
            self.secret_env(&mut ev);
            self.sink.kernel_event(&ev)?;
        }
        Ok(())
    }

    /// A `host` record when the host knowledge the policy was compiled with changed.
    pub(super) fn record_host(&mut self) -> anyhow::Result<()> {
        let ctx = &self.policy.policy.context;
        if self.host_recorded.as_ref() == Some(ctx) {
            return Ok(());
        }
        self.host_recorded = Some(ctx.clone());
        self.sink.record(&crate::host::record(ctx))
    }

    /// Every held event, whatever came (shutdown, start-up backlog).
    pub(super) fn release_all_held(&mut self) -> anyhow::Result<()> {
        self.procs_idle = true;
        self.release_held()
    }

    /// Handles up to `max` events of a ring; returns how many it took.
    pub(super) fn drain_some(
        &mut self,
        ring: &mut RingBuf<MapData>,
        max: usize,
    ) -> anyhow::Result<usize> {
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else {
                break;
            };
            n += 1;
            self.counters.received += 1;
            match decode(&item, &self.clock, &self.policy.names) {
                Ok(ev) => {
                    drop(item);
                    self.handle(ev)?;
                }
                Err(e) => {
                    self.counters.undecodable += 1;
                    log::warn!("undecodable event: {e}");
                }
            }
        }
        Ok(n)
    }

    pub(super) fn handle(&mut self, mut ev: Event) -> anyhow::Result<()> {
        if ev.root == crate::kernel::calibrate::CALIBRATION_ROOT {
            return Ok(());
        }
        // DNS answers travel on the process ring too: a decision naming an address
        // learned a moment ago waits for its name like one of an unknown process.
        if let Payload::Dns(d) = &ev.payload {
            self.procs_seen_ns = self.procs_seen_ns.max(ev.ktime_ns);
            self.names.learn(d);
            self.counters.dns_answers += 1;
            return Ok(());
        }
        // Root 0: an untracked exec of a candidate executable; it is a gateway only if
        // its command line says so, and then it is tracked from here on.
        if ev.root == 0 {
            let Payload::Exec(x) = &ev.payload else {
                return Ok(());
            };
            if !openclaw::is_gateway_cmdline(&x.argv) {
                return Ok(());
            }
            let pid = ev.tgid;
            track_tree(&mut self.guard, &mut self.cache, pid)?;
            self.calls.add_gateway(pid);
            self.status.roots.push(pid);
            log::info!("new gateway pid {pid}: {:?}", x.argv);
            ev.root = pid;
            ev.depth = 0;
        }
        // A decision travels on its own ring, ahead of the fork that made its process:
        // one of a process not known yet waits for the process ring up to its time.
        if matches!(
            ev.payload,
            Payload::Exec(_) | Payload::Fork(_) | Payload::Exit(_)
        ) {
            self.procs_seen_ns = self.procs_seen_ns.max(ev.ktime_ns);
        }
        let unnamed = matches!(&ev.payload, Payload::Net(n) if n.name_hash != 0 && !self.names.knows(n.name_hash));
        let unknown = ev.decision.is_some()
            && !matches!(ev.payload, Payload::Exec(_))
            && (unnamed || !self.cache.knows(ev.tgid));
        if unknown && self.held.len() < HELD_MAX {
            self.held.push(ev);
            return Ok(());
        }
        self.cache.enrich(&mut ev);
        self.names.name(&mut ev);
        if ev.depth == 0 && ev.tool_call.is_none() {
            ev.tool_call = self.calls.in_process(&ev);
        }
        self.secret_env(&mut ev);
        self.sink.kernel_event(&ev)
    }

    /// The `env` rule at an exec (after enrichment gave the role): the gateway's own
    /// machinery is marked a carrier; a held image of the agent's side has its secret
    /// values blanked; then a held image is resumed. One that cannot be blanked is
    /// killed: it carries the secrets.
    pub(super) fn secret_env(&mut self, ev: &mut Event) {
        let Payload::Exec(x) = &mut ev.payload else {
            return;
        };
        let bits = crate::secret_env::carrier_bits(ev.role);
        if let Some(bits) = bits {
            if let Err(e) = self.guard.set_carrier(ev.tgid, bits) {
                log::warn!("env: {e:#}");
            }
        }
        if !x.env_held {
            return;
        }
        if bits.is_none() {
            match crate::secret_env::blank(ev.tgid, &self.policy.secrets) {
                Ok(names) => x.env_blanked = names,
                Err(e) => {
                    crate::secret_env::kill(ev.tgid);
                    x.env_error = Some(format!("{e:#}; killed"));
                }
            }
        }
        crate::secret_env::resume(ev.tgid);
        self.guard.env_resumed(ev.tgid);
    }

    /// Held processes no exec event will resume (held longer than `min_age`): left by
    /// a daemon that died, or whose event was lost. Blanked (unless the gateway's own)
    /// and resumed.
    pub(super) fn resume_orphans(&mut self, min_age: Duration) {
        let now = crate::secret_env::boot_ns();
        for (pid, since) in self.guard.env_pending() {
            if now.saturating_sub(since) < min_age.as_nanos() as u64 {
                continue;
            }
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                self.guard.env_resumed(pid);
                continue;
            }
            if !self.cache.knows(pid) {
                self.cache.seed_from_proc(pid, 1);
            }
            let role = self.cache.role(pid).map(|r| r.as_str());
            if crate::secret_env::carrier_bits(role).is_none() {
                if let Err(e) = crate::secret_env::blank(pid, &self.policy.secrets) {
                    log::warn!("env: pid {pid} held and not blankable ({e:#}): killed");
                    crate::secret_env::kill(pid);
                }
            }
            crate::secret_env::resume(pid);
            self.guard.env_resumed(pid);
        }
    }

    /// The canary (see `canary.rs`): on a change, `status` and one health record
    /// (critical when BPF LSM stopped deciding, informational when it is back).
    pub(super) fn check_lsm(&mut self) -> anyhow::Result<()> {
        let Some(path) = self.canary.clone() else {
            return Ok(());
        };
        let s = self.policy.settings();
        if s.monitor != 0 || s.enforce == 0 {
            return Ok(());
        }
        let now = jiff::Timestamp::now().to_string();
        let (detail, priority) = match (
            crate::kernel::canary::check(&mut self.guard, &path),
            &self.lsm_lost,
        ) {
            (crate::kernel::canary::Verdict::Opened, None) => {
                let detail = format!(
                    "BPF LSM stopped deciding: the canary opened {} for writing at {now} (a kernel knob such as ftrace_enabled, or detached programs); every BPF LSM rule is NOT enforced",
                    path.display()
                );
                self.lsm_lost = Some(detail.clone());
                (detail, "critical")
            }
            (crate::kernel::canary::Verdict::Refused, Some(_)) => {
                self.lsm_lost = None;
                self.status.enforcement = crate::enforce::describe(
                    &self.policy.policy,
                    &self.guard,
                    self.policy.calibrated,
                    self.policy.record_only,
                );
                self.status.enforcement.insert(
                    crate::enforce::SELF_PROTECTION_NAME.to_string(),
                    crate::enforce::describe_self_protection(&self.guard, self.policy.record_only),
                );
                (
                    format!("BPF LSM decides again (canary refused at {now})"),
                    "informational",
                )
            }
            _ => return Ok(()),
        };
        log::warn!("{detail}");
        self.mark_lsm_lost();
        write_status(&self.status_file, &self.status);
        self.sink.record(&crate::events::DaemonRecord::Health {
            time: now,
            check: "bpf-lsm",
            detail,
            decision: crate::events::HealthDecision {
                rule: "guard-health",
                action: crate::events::Taken::Alert,
                priority,
            },
        })?;
        self.sink.flush();
        Ok(())
    }

    /// While BPF LSM does not decide, every rule that relies on it says so.
    pub(super) fn mark_lsm_lost(&mut self) {
        let Some(why) = &self.lsm_lost else {
            return;
        };
        for how in self.status.enforcement.values_mut() {
            if how.contains("LSM") && !how.starts_with("NOT enforced") {
                *how = format!("NOT enforced ({why}); configured: {how}");
            }
        }
        self.status
            .enforcement
            .insert("bpf-lsm".into(), format!("NOT enforced: {why}"));
    }

    /// The daemon is alive to resume held processes for the next few seconds.
    pub(super) fn env_heartbeat(&mut self) {
        let until = crate::secret_env::boot_ns() + ENV_ALIVE_FOR.as_nanos() as u64;
        if let Err(e) = self.guard.env_alive(until) {
            log::warn!("env: {e:#}");
        }
    }

    /// The gateways' state directories (as the last plan resolved them), for what
    /// counts as their ordinary activity.
    pub(super) fn refresh_state_dirs(&mut self) {
        if let Some(s) = &mut self.sink.summaries {
            s.set_state_dirs(
                self.policy
                    .users
                    .iter()
                    .map(|u| u.state_dir.clone())
                    .collect(),
            );
        }
    }

    pub(super) fn refresh_counters(&mut self) -> Counters {
        let k = self.guard.counters().unwrap_or_default();
        self.counters.kernel_submitted = k.emitted;
        self.counters.kernel_lost = k.lost;
        self.counters.kernel_lost_decisions = k.lost_decisions;
        self.counters.kernel_track_full = k.track_full;
        self.counters.cache_overflow = self.cache.overflow;
        self.status.counters = self.counters;
        self.status.uptime_secs = self.started.elapsed().as_secs();
        self.status.tracked_processes = self.guard.tracked_count();
        self.status.sink = Some(self.sink.stats());
        self.status.attribution.counters = self.calls.counters();
        self.counters
    }

    /// A counters record in the JSON stream.
    pub(super) fn stats_record(&self) -> StatsRecord {
        StatsRecord {
            time: jiff::Timestamp::now().to_string(),
            kind: "stats",
            counters: self.counters,
            tracked_processes: self.status.tracked_processes,
            peak_rss_kib: peak_rss_kib(),
            sink: self.sink.stats(),
            attribution: self.status.attribution.counters,
        }
    }

    pub(super) fn emit_stats(&mut self) -> anyhow::Result<()> {
        self.sink.flush_summaries()?;
        let rec = self.stats_record();
        let m = self.sink.metrics();
        m.set_kernel(rec.counters.kernel_submitted, rec.counters.kernel_lost);
        m.set_tracked_processes(rec.tracked_processes as u64);
        self.sink.record(&rec)?;
        self.sink.flush();
        Ok(())
    }
}

/// A `stats` record: the daemon's counters, in the JSON stream every
/// `--stats-interval` and at exit.
#[derive(serde::Serialize)]
pub(super) struct StatsRecord {
    time: String,
    kind: &'static str,
    counters: Counters,
    tracked_processes: usize,
    peak_rss_kib: Option<u64>,
    sink: crate::sink::SinkStats,
    attribution: crate::attribution::Counters,
}

impl crate::events::OwnRecord for StatsRecord {
    fn kind(&self) -> &'static str {
        self.kind
    }
}

/// The record of one policy reload.
fn reload_record(
    result: &'static str,
    path: &str,
    error: Option<String>,
    why: &str,
) -> crate::events::DaemonRecord {
    crate::events::DaemonRecord::Policy {
        time: jiff::Timestamp::now().to_string(),
        result,
        path: path.to_owned(),
        error,
        trigger: why.to_owned(),
    }
}
