//! The suite: every configuration x workload x {untracked, tracked}, alternated within each round, then the pipeline phase.

use super::*;

pub(super) struct SuiteOpts {
    pub(super) out: PathBuf,
    pub(super) rounds: usize,
    pub(super) scale: f64,
    pub(super) configs: Vec<Config>,
    pub(super) command: String,
    pub(super) env_name: String,
    pub(super) storm_secs: f64,
    pub(super) probes: usize,
}

pub(super) fn parse_suite_opts(args: &[String]) -> Result<SuiteOpts> {
    let mut o = SuiteOpts {
        out: PathBuf::from("bench-results.json"),
        rounds: 5,
        scale: 1.0,
        configs: Config::ALL.to_vec(),
        command: String::new(),
        env_name: "host".into(),
        storm_secs: 2.0,
        probes: 300,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--out" => o.out = PathBuf::from(val()?),
            "--rounds" => o.rounds = val()?.parse()?,
            "--scale" => o.scale = val()?.parse()?,
            "--command" => o.command = val()?,
            "--env" => o.env_name = val()?,
            "--storm-secs" => o.storm_secs = val()?.parse()?,
            "--probes" => o.probes = val()?.parse()?,
            "--configs" => {
                o.configs = val()?
                    .split(',')
                    .map(|s| {
                        Config::from_name(s).with_context(|| format!("unknown configuration {s}"))
                    })
                    .collect::<Result<_>>()?;
                if !o.configs.contains(&Config::Baseline) {
                    o.configs.insert(0, Config::Baseline);
                }
            }
            other => bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

pub(super) fn machine() -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .map_or_else(|| "?".to_owned(), |m| m.trim().to_owned());
    let mem_kib: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let read =
        |p: &str| fs::read_to_string(p).map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned());
    json!({
        "cpu": model,
        "cpus": cpus,
        "mem_mib": mem_kib / 1024,
        "kernel": read("/proc/sys/kernel/osrelease"),
        "kernel_version": read("/proc/version"),
        "lsm": fs::read_to_string("/sys/kernel/security/lsm").map_or_else(
            |_| "? (securityfs not mounted)".to_owned(),
            |s| s.trim().to_owned(),
        ),
        "cmdline": read("/proc/cmdline"),
        "loadavg_at_start": read("/proc/loadavg"),
    })
}

pub(super) fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        f64::midpoint(s[n / 2 - 1], s[n / 2])
    })
}

pub(super) fn log(msg: &str) {
    eprintln!("bench: {msg}");
}

#[expect(clippy::too_many_lines, reason = "the suite's phases in order")]
pub(super) fn suite(args: &[String]) -> Result<()> {
    let o = parse_suite_opts(args)?;
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("ocg-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("open-target"), b"openclaw-guard bench\n")?;
    let guard_bin = std::env::var_os("OPENCLAW_GUARD_BIN").map_or_else(
        || self_exe().with_file_name("openclaw-guard"),
        PathBuf::from,
    );
    let help = Command::new(&guard_bin)
        .args(["run", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let env = Env {
        guard_bin: guard_bin.clone(),
        dir: dir.clone(),
        guard_has_state_dir: help.contains("--state-dir"),
        guard_has_no_pin: help.contains("--no-pin"),
        startup_timeout: Duration::from_secs(300),
    };
    let mut errors: Vec<String> = Vec::new();

    // Audit: neutral before any baseline.
    let has_auditctl = have("auditctl");
    let audit = if has_auditctl {
        let before_status = audit_status();
        let before_rules = auditctl(&["-l"]).unwrap_or_default();
        audit_neutral().context("setting a neutral audit state (auditctl -D; -a never,task)")?;
        json!({
            "auditctl": true,
            "before": {"status": before_status, "rules": before_rules.trim()},
            "during_baselines": "auditctl -D; auditctl -a never,task: no syscall rules, and new processes get no audit context (fast syscall path) even if audit was enabled earlier since boot",
        })
    } else {
        let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let boot_audit = cmdline
            .split_whitespace()
            .find(|w| w.starts_with("audit="))
            .map(str::to_owned);
        json!({
            "auditctl": false,
            "during_baselines": format!(
                "no audit userspace here (auditctl absent), so nothing enabled kernel audit since boot; kernel command line audit= {}",
                boot_audit.unwrap_or_else(|| "not set (audit off)".into())
            ),
        })
    };

    // BPF links attached by anyone else would tax every configuration, baseline included.
    let foreign_links = Command::new("bpftool")
        .args(["link", "list"])
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| {
                    l.split(':')
                        .next()
                        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                })
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
        });

    let mut gw = Gateway::start()?;
    // The gateway sets its login uid before reading its first command.
    std::thread::sleep(Duration::from_millis(100));
    let gw_pid = gw.pid();

    // Which configurations load here.
    let mut available: Vec<(Config, Option<String>)> = Vec::new();
    let mut guard_startup: Vec<String> = Vec::new();
    for &cfg in &o.configs {
        let missing = match cfg {
            Config::Auditd if !(has_auditctl && have("auditd")) => {
                Some("auditd/auditctl not installed here (the guest image carries only the project's binaries, bash and busybox)".to_owned())
            }
            Config::BpftraceEmpty | Config::BpftracePrint if !have("bpftrace") => {
                Some("bpftrace not installed here (the guest image carries only the project's binaries, bash and busybox)".to_owned())
            }
            _ => None,
        };
        if let Some(why) = missing {
            available.push((cfg, Some(why)));
            continue;
        }
        log(&format!("checking that {} loads", cfg.name()));
        let why = match start_tool(&env, cfg, gw_pid, "check") {
            Ok(tool) => {
                if let Tool::Guard(g) = &tool {
                    if guard_startup.is_empty() {
                        guard_startup.clone_from(&g.startup);
                    }
                }
                tool.stop().err().map(|e| format!("{e:#}"))
            }
            Err(e) => Some(format!("{e:#}")),
        };
        if let Some(w) = &why {
            log(&format!("{} does not load: {w}", cfg.name()));
            if cfg == Config::Auditd && has_auditctl {
                let _ = audit_neutral();
            }
        }
        available.push((cfg, why));
    }
    let run_cfgs: Vec<Config> = available
        .iter()
        .filter(|(_, w)| w.is_none())
        .map(|(c, _)| *c)
        .collect();

    let counts: BTreeMap<&str, u64> = Workload::ALL
        .iter()
        .map(|w| {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "scaled counts"
            )]
            let n = ((w.base_count() as f64 * o.scale).round() as u64).max(5);
            (w.name(), n)
        })
        .collect();

    // samples[cfg][workload][mode] = ns per op, one per round (None: failed).
    let mut samples: Samples = BTreeMap::new();
    let mut tool_stats: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for round in 0..o.rounds {
        for &cfg in &run_cfgs {
            log(&format!("round {}/{}: {}", round + 1, o.rounds, cfg.name()));
            let tool = match start_tool(&env, cfg, gw_pid, cfg.name()) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!(
                        "round {}: {} did not start: {e:#}",
                        round + 1,
                        cfg.name()
                    ));
                    if cfg == Config::Auditd {
                        let _ = audit_neutral();
                    }
                    for w in Workload::ALL {
                        for mode in ["untracked", "tracked"] {
                            samples
                                .entry(cfg.name())
                                .or_default()
                                .entry(w.name())
                                .or_default()
                                .entry(mode)
                                .or_default()
                                .push(None);
                        }
                    }
                    continue;
                }
            };
            let cpu0 = tool.cpu();
            let t0 = Instant::now();
            for w in Workload::ALL {
                for (mode, tracked) in [("untracked", false), ("tracked", true)] {
                    let n = counts[w.name()];
                    let args = vec![
                        "work".to_owned(),
                        w.name().to_owned(),
                        n.to_string(),
                        dir.display().to_string(),
                    ];
                    tool.quiesce();
                    let r = invoke(&mut gw, tracked, &args).and_then(|line| {
                        let mut f = line.split_whitespace();
                        if f.next() != Some("OK") {
                            bail!("unexpected workload output {line:?}");
                        }
                        let ns: f64 = f.next().context("ns")?.parse()?;
                        let ops: f64 = f.next().context("ops")?.parse()?;
                        Ok(ns / ops)
                    });
                    let v = match r {
                        Ok(v) => Some(v),
                        Err(e) => {
                            errors.push(format!(
                                "round {}: {} {} {mode}: {e:#}",
                                round + 1,
                                cfg.name(),
                                w.name()
                            ));
                            None
                        }
                    };
                    samples
                        .entry(cfg.name())
                        .or_default()
                        .entry(w.name())
                        .or_default()
                        .entry(mode)
                        .or_default()
                        .push(v);
                }
            }
            let wall = t0.elapsed().as_secs_f64();
            let cpu = tool.cpu() - cpu0;
            let info = tool.stop().unwrap_or_else(|e| {
                errors.push(format!(
                    "round {}: stopping {}: {e:#}",
                    round + 1,
                    cfg.name()
                ));
                StopInfo::default()
            });
            tool_stats.entry(cfg.name()).or_default().push(json!({
                "round": round + 1,
                "workload_wall_s": (wall * 100.0).round() / 100.0,
                "tool_cpu_s": (cpu * 100.0).round() / 100.0,
                "peak_rss_kib": info.peak_rss_kib,
                "kernel_submitted": info.submitted,
                "kernel_lost": info.lost,
            }));
        }
    }

    // Pipeline throughput, latency, CPU and memory (guard, default policy).
    let mut pipeline = Value::Null;
    if run_cfgs.contains(&Config::Enforce) {
        log("pipeline: latency and throughput (guard, default policy)");
        match pipeline_phase(&env, &mut gw, &o) {
            Ok(v) => pipeline = v,
            Err(e) => errors.push(format!("pipeline phase: {e:#}")),
        }
    }
    // Alert latency while the tree floods the guard (issue 18).
    let mut flood = Value::Null;
    if run_cfgs.contains(&Config::Enforce) {
        log("flood: critical alert latency under denied reads and opens");
        match flood::phase(&env, &mut gw, 100) {
            Ok(v) => flood = v,
            Err(e) => errors.push(format!("flood phase: {e:#}")),
        }
    }

    drop(gw);
    let audit_after = if has_auditctl {
        let ok = audit_neutral().is_ok();
        json!({"restored_neutral": ok, "status": audit_status(), "rules": auditctl(&["-l"]).unwrap_or_default().trim()})
    } else {
        Value::Null
    };
    let _ = fs::remove_dir_all(&dir);

    let samples_json: Value = serde_json::to_value(&samples)?;
    let doc = json!({
        "schema": 1,
        "env": o.env_name,
        "command": o.command,
        "machine": machine(),
        "finished": timestamp(),
        "elapsed_s": started.elapsed().as_secs(),
        "rounds": o.rounds,
        "scale": o.scale,
        "audit": audit,
        "audit_after": audit_after,
        "bpf_links_before": foreign_links,
        "guard": {"binary": guard_bin.display().to_string(), "startup": guard_startup},
        "configs": available.iter().map(|(c, why)| json!({
            "name": c.name(), "describe": c.describe(), "loaded": why.is_none(), "reason": why,
        })).collect::<Vec<_>>(),
        "workloads": Workload::ALL.iter().map(|w| json!({
            "name": w.name(), "label": w.label(), "per_run": counts[w.name()],
        })).collect::<Vec<_>>(),
        "samples_ns_per_op": samples_json,
        "tool": tool_stats,
        "pipeline": pipeline,
        "flood": flood,
        "errors": errors,
    });
    let text = serde_json::to_string(&doc)?;
    fs::write(&o.out, format!("{text}\n"))
        .with_context(|| format!("writing {}", o.out.display()))?;
    println!("OCG-BENCH-JSON {text}");
    log(&format!(
        "done in {} s; {} error(s)",
        started.elapsed().as_secs(),
        errors.len()
    ));
    Ok(())
}

/// configuration -> workload -> "untracked"/"tracked" -> ns per op, one per round
/// (None: that run failed).
type Samples =
    BTreeMap<&'static str, BTreeMap<&'static str, BTreeMap<&'static str, Vec<Option<f64>>>>>;

pub(super) fn timestamp() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

#[expect(clippy::too_many_lines, reason = "one phase, step by step")]
pub(super) fn pipeline_phase(env: &Env, gw: &mut Gateway, o: &SuiteOpts) -> Result<Value> {
    // A file the guard protects (`--protect`): opening it is a decision, whose alert
    // latency is measured apart from that of ordinary events.
    let secret = env.dir.join("probe-secret");
    fs::write(&secret, b"secret\n")?;
    let guard = GuardProc::start_with(
        env,
        gw.pid(),
        false,
        "pipeline",
        // Not folded: the storm and the probes measure the pipeline per event.
        &[
            "--protect".into(),
            secret.display().to_string(),
            "--fold-ms".into(),
            "0".into(),
        ],
    )?;
    let pid = guard.child.id();
    let dir = env.dir.display().to_string();
    let base = guard
        .settled(Duration::from_secs(30))
        .context("no counters in the status file")?;

    // Which tracked operation yields one event each: open if this tier sees opens.
    let mut kind = "fork";
    let probe_n = 400u64;
    invoke(
        gw,
        true,
        &[
            "storm".into(),
            "open".into(),
            "2000".into(),
            "0.2".into(),
            dir.clone(),
        ],
    )?;
    let after = guard.settled(Duration::from_secs(30)).context("counters")?;
    if after.0 + after.1 - base.0 - base.1 >= probe_n / 2 {
        kind = "open";
    }
    log(&format!("pipeline: storm kind {kind}"));

    // Latency first, on a quiet pipeline.
    let lat_line = invoke(
        gw,
        true,
        &[
            "probe".into(),
            kind.into(),
            o.probes.to_string(),
            guard.output.display().to_string(),
            dir.clone(),
        ],
    )?;
    let latency: Value = serde_json::from_str(&lat_line).context("probe output")?;
    let deny_line = invoke(
        gw,
        true,
        &[
            "probe".into(),
            "deny".into(),
            o.probes.to_string(),
            guard.output.display().to_string(),
            dir.clone(),
        ],
    )?;
    let decision_latency: Value = serde_json::from_str(&deny_line).context("probe output")?;

    // Storm of increasing rate: ops/s targets (0 = unpaced).
    let rates: [u64; 9] = [
        2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 400_000, 0,
    ];
    let mut steps = Vec::new();
    let mut prev = guard.settled(Duration::from_secs(30)).context("counters")?;
    let mut reached_max = false;
    let mut profile = Value::Null;
    for rate in rates {
        if reached_max && rate != 0 {
            continue;
        }
        let perf = (rate == 0 && have("perf"))
            .then(|| {
                Command::new("perf")
                    .args(["record", "-F", "997", "-g", "-o"])
                    .arg(env.dir.join("perf.data"))
                    .args([
                        "-p",
                        &pid.to_string(),
                        "--",
                        "sleep",
                        &o.storm_secs.to_string(),
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()
            })
            .flatten();
        let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
        let t0 = Instant::now();
        let line = invoke(
            gw,
            true,
            &[
                "storm".into(),
                kind.into(),
                rate.to_string(),
                o.storm_secs.to_string(),
                dir.clone(),
            ],
        )?;
        let storm_s = t0.elapsed().as_secs_f64();
        if let Some(mut p) = perf {
            let _ = wait_timeout(&mut p, Duration::from_secs(30));
            profile = perf_report(&env.dir.join("perf.data"));
        }
        let v: Value = serde_json::from_str(&line)?;
        let drain_t = Instant::now();
        let now = guard
            .settled(Duration::from_secs(120))
            .context("counters")?;
        let drain_s = drain_t.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
        let ops = v["ops"].as_f64().unwrap_or(0.0);
        let secs = v["secs"].as_f64().unwrap_or(1.0);
        let submitted = now.0 - prev.0;
        let lost = now.1 - prev.1;
        prev = now;
        #[expect(clippy::cast_precision_loss, reason = "rates")]
        let (sub_f, lost_f) = (submitted as f64, lost as f64);
        let achieved = ops / secs;
        #[expect(clippy::cast_precision_loss, reason = "rates")]
        let target = rate as f64;
        if rate > 0 && achieved < 0.85 * target {
            reached_max = true;
        }
        log(&format!(
            "pipeline: rate {rate}: {achieved:.0} ops/s, events {} offered, {lost} lost",
            submitted + lost
        ));
        steps.push(json!({
            "target_ops_per_s": rate,
            "achieved_ops_per_s": achieved.round(),
            "events_offered_per_s": ((sub_f + lost_f) / secs).round(),
            "events_delivered_per_s": (sub_f / secs).round(),
            "events_lost": lost,
            "loss_pct": if sub_f + lost_f > 0.0 { (lost_f / (sub_f + lost_f) * 1000.0).round() / 10.0 } else { 0.0 },
            "daemon_cpu_pct": (cpu / (storm_s + drain_s) * 1000.0).round() / 10.0,
            "daemon_cpu_us_per_event": if sub_f > 0.0 { (cpu / sub_f * 1e7).round() / 10.0 } else { 0.0 },
        }));
    }
    let info = guard.stop()?;
    let sustained = steps
        .iter()
        .filter(|s| s["events_lost"] == 0)
        .filter_map(|s| s["events_delivered_per_s"].as_f64())
        .fold(0.0, f64::max);
    let loss_starts = steps
        .iter()
        .find(|s| s["events_lost"].as_u64().unwrap_or(0) > 0)
        .map(|s| s["events_offered_per_s"].clone());
    Ok(json!({
        "event_kind": if kind == "open" { "file_open" } else { "fork (+exit)" },
        "latency": latency,
        "decision_latency": decision_latency,
        "storm_secs": o.storm_secs,
        "steps": steps,
        "sustained_events_per_s_zero_loss": sustained,
        "loss_starts_at_events_per_s": loss_starts,
        "peak_rss_kib": info.peak_rss_kib,
        "daemon_profile": profile,
        "total_submitted": info.submitted,
        "total_lost": info.lost,
    }))
}
