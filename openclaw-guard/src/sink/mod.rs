//! The end of the pipeline: after enrichment, each event gets the policy's userspace
//! verdicts merged with the kernel's decision ([`merge`]), userspace kills are carried
//! out ([`kill`]), and the event goes to the forensic recorder ([`record`], its own
//! thread) and to the alert outputs (`crate::outputs`), with an alert when a rule
//! matched.
//!
//! Order of guarantees: enforcement first (the kernel already decided; a userspace
//! kill is sent in [`Sink::event`]), then the outputs (queued, never waited on: an
//! alert does not wait for a disk), then the record (a batch holding a decision is
//! fsynced before [`Sink::flush`] returns, ahead of ordinary batches queued before it).

pub mod kill;
pub mod merge;
mod record;

#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;

pub use self::{
    merge::{alert, merge, By, Finding, Judged, KillDecision, Subject},
    record::RecorderStats,
};
use crate::{
    events::{Event, OwnRecord, Taken},
    outputs::{
        Alert, Metrics, Outgoing, OutputError, OutputFormat, OutputStats, Outputs, OutputsConfig,
        Priority,
    },
    policy::{CompiledPolicy, EvalEnv},
    recorder::{Options, DEFAULT_STATE_DIR},
};

/// Events held between flushes at most; past this `event` flushes by itself.
const MAX_PENDING: usize = 4096;
/// How long shutdown lets the outputs deliver what they hold.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Output, record and enforcement options of `openclaw-guard run` (documented by
/// its `--help`).
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// `--output` specs, as given.
    pub output: Vec<String>,
    pub output_format: OutputFormat,
    /// The forensic record is kept in its `record/` subdirectory.
    pub state_dir: PathBuf,
    /// Nothing blocked or killed, in the kernel or here.
    pub record_only: bool,
    pub no_record: bool,
    /// The gateway's own ordinary file activity event by event, not summarised.
    pub no_summary: bool,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            output: Vec::new(),
            output_format: OutputFormat::Native,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            record_only: false,
            no_record: false,
            no_summary: false,
        }
    }
}

impl SinkOptions {
    /// The outputs configuration the `--output` flags describe.
    pub fn outputs_config(&self) -> Result<OutputsConfig, OutputError> {
        let mut c = OutputsConfig::default();
        for flag in &self.output {
            c.apply_flag(&output_flag(flag))?;
        }
        c.set_format(self.output_format);
        Ok(c)
    }

    /// Whether the metrics endpoint was asked for explicitly.
    fn metrics_explicit(&self) -> bool {
        self.output.iter().any(|f| f.starts_with("metrics:"))
    }
}

/// `--output` words and `name:ARG` forms go to `apply_flag` as they are; anything
/// else is a file path for JSON lines (`--output /var/log/x.jsonl`).
fn output_flag(flag: &str) -> String {
    const WORDS: &[&str] = &["stdout", "none", "syslog", "journald"];
    const PREFIXES: &[&str] = &["file:", "syslog:", "webhook:", "otlp:", "metrics:"];
    if WORDS.contains(&flag) || PREFIXES.iter().any(|p| flag.starts_with(p)) {
        flag.to_owned()
    } else {
        format!("file:{flag}")
    }
}

/// Kill attempts made in userspace.
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct KillStats {
    pub killed: u64,
    pub gone: u64,
    pub changed: u64,
    pub failed: u64,
}

/// What the pipeline's end counted (in `stats` records and `status`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct SinkStats {
    pub events: u64,
    pub record_only: bool,
    pub outputs: OutputStats,
    pub recorder: Option<RecorderStats>,
    /// Findings by rule and action (`alert`, `deny`, `kill`).
    pub findings: BTreeMap<String, BTreeMap<&'static str, u64>>,
    pub kills: KillStats,
    /// Events of the gateway's own ordinary activity counted in `summary` records.
    pub summarised: Option<u64>,
}

/// The pipeline's end. See the module docs.
pub struct Sink {
    policy: Arc<CompiledPolicy>,
    enforce: bool,
    outputs: Outputs,
    recorder: Option<record::RecordHandle>,
    /// Events waiting for the batch's record commit before they go to the outputs.
    pending: Vec<Outgoing>,
    entries: Vec<record::Entry>,
    /// Findings by rule and action (`alert`, `deny`, `kill`).
    counts: BTreeMap<String, BTreeMap<&'static str, u64>>,
    kills: KillStats,
    events: u64,
    /// The gateway's own ordinary activity, counted instead of held (None: off).
    pub summaries: Option<crate::summary::Summaries>,
}

impl Sink {
    /// Starts the outputs and opens the record (unless `--no-record`).
    pub fn start(args: &SinkOptions, policy: Arc<CompiledPolicy>) -> anyhow::Result<Self> {
        let mut config = args
            .outputs_config()
            .context("invalid --output (see `openclaw-guard run --help`)")?;
        let metrics = Arc::new(Metrics::new());
        let outputs = match Outputs::start(&config, Arc::clone(&metrics)) {
            // The default endpoint is a convenience: a second guard (or a test run)
            // on the same host goes on without it; an explicit address is required.
            Err(e @ OutputError::MetricsBind { .. }) if !args.metrics_explicit() => {
                log::warn!("{e}; continuing without metrics");
                config.metrics.enabled = false;
                Outputs::start(&config, metrics)
            }
            r => r,
        }
        .context("failed to start the alert outputs")?;
        let recorder = if args.no_record {
            None
        } else {
            let (h, report) = record::RecordHandle::open(&args.state_dir, Options::default())
                .with_context(|| {
                    format!(
                        "failed to open the forensic record in {} (choose another place with --state-dir, or run with --no-record)",
                        args.state_dir.display()
                    )
                })?;
            if report.is_clean() {
                log::info!("{report}");
            } else {
                log::warn!("{report}");
            }
            Some(h)
        };
        Ok(Self {
            policy,
            enforce: !args.record_only,
            outputs,
            recorder,
            pending: Vec::new(),
            entries: Vec::new(),
            counts: BTreeMap::new(),
            kills: KillStats::default(),
            events: 0,
            summaries: (!args.no_summary).then(crate::summary::Summaries::default),
        })
    }

    /// One decoded, enriched kernel event: policy, userspace kill, then held for the
    /// record and the outputs until [`Sink::flush`], encoded once.
    pub fn kernel_event(&mut self, ev: &Event) -> anyhow::Result<()> {
        let verdicts = self.policy.evaluate_event(ev, &EvalEnv::default());
        if verdicts.is_empty() && ev.decision.is_none() {
            // Counted in its `summary` record, not as an event of the stream.
            if let Some(s) = &mut self.summaries {
                if s.absorb(ev) {
                    return Ok(());
                }
            }
            self.events += 1;
            // Sized for a typical event: growing from empty copied it several times.
            let mut json = Vec::with_capacity(512);
            serde_json::to_writer(&mut json, ev).context("failed to encode an event")?;
            self.hold(ev.kind, json, None, false);
            return Ok(());
        }
        self.events += 1;
        let findings = merge(&self.policy, ev, verdicts, self.enforce);
        let kill = self.kill(ev, &findings);
        self.count(&findings);
        let alert = alert(&self.policy, &findings, &Subject::of(ev));
        let kernel = ev.decision.is_some();
        let judged = Judged {
            event: ev,
            decision: kill.as_ref().filter(|_| !kernel),
            userspace_decision: kill.as_ref().filter(|_| kernel),
            findings: &findings,
        };
        let json = serde_json::to_vec(&judged).context("failed to encode an event")?;
        self.hold(ev.kind, json, alert, kernel || kill.is_some());
        Ok(())
    }

    /// A record of the daemon's own (`stats`, `policy`, `health`, `tool_call`, ...),
    /// encoded once; a health record is the guard's own finding and alerts.
    pub fn record(&mut self, rec: &impl OwnRecord) -> anyhow::Result<()> {
        self.events += 1;
        let Some((d, what)) = rec.finding() else {
            let json = serde_json::to_vec(rec).context("failed to encode a record")?;
            self.hold(rec.kind(), json, None, false);
            return Ok(());
        };
        let findings = [Finding {
            rule: d.rule.to_owned(),
            action: d.action,
            wanted: None,
            priority: d.priority.parse().unwrap_or(Priority::Critical),
            by: By::Daemon,
            output: what,
            exception: None,
        }];
        self.count(&findings);
        let alert = alert(&self.policy, &findings, &Subject::default());
        let json = serde_json::to_vec(&Judged {
            event: rec,
            decision: None,
            userspace_decision: None,
            findings: &findings,
        })
        .context("failed to encode a record")?;
        self.hold(rec.kind(), json, alert, true);
        Ok(())
    }

    /// Kills the event's process when a finding says to (in userspace, enforcing).
    fn kill(&mut self, ev: &Event, findings: &[Finding]) -> Option<KillDecision> {
        let f = findings
            .iter()
            .find(|f| f.by == By::Userspace && f.action == Taken::Kill)?;
        // A shell's pipeline and background jobs share its process group.
        let group = self
            .policy
            .policy
            .rule(&f.rule)
            .is_some_and(|r| r.kind.name() == "exec");
        let report = kill::kill_event_process(ev, group);
        match report.result.as_str() {
            "killed" => self.kills.killed += 1,
            "gone" => self.kills.gone += 1,
            "changed" => self.kills.changed += 1,
            _ => self.kills.failed += 1,
        }
        Some(KillDecision::new(&f.rule, report))
    }

    /// Counts findings by rule and action.
    fn count(&mut self, findings: &[Finding]) {
        for f in findings {
            *self
                .counts
                .entry(f.rule.clone())
                .or_default()
                .entry(f.action.as_str())
                .or_default() += 1;
        }
    }

    /// Holds one encoded event for the next flush (which comes early past
    /// [`MAX_PENDING`]).
    fn hold(&mut self, kind: &'static str, json: Vec<u8>, alert: Option<Alert>, decision: bool) {
        let json = Bytes::from(json);
        if self.recorder.is_some() {
            self.entries.push(record::Entry {
                payload: json.clone(),
                decision,
            });
        }
        self.pending.push(Outgoing { kind, json, alert });
        if self.pending.len() >= MAX_PENDING {
            self.flush();
        }
    }

    /// Ends a batch: the outputs get it (queued, never waited on), then the record
    /// (waiting only if it holds a decision). Alerts first: a critical alert does not
    /// wait for a disk's fsync, and the daemon still reads nothing more before the
    /// decision is durable.
    pub fn flush(&mut self) {
        self.outputs.emit_batch(self.pending.drain(..));
        if let Some(r) = &mut self.recorder {
            r.submit(std::mem::take(&mut self.entries));
        }
    }

    /// The `summary` records counted since the last call, into the stream.
    pub fn flush_summaries(&mut self) -> anyhow::Result<()> {
        let recs = self.summaries.as_mut().map(crate::summary::Summaries::take);
        for rec in recs.into_iter().flatten() {
            self.record(&rec)?;
        }
        Ok(())
    }

    /// A new policy after a reload; the next event is judged by it.
    pub fn set_policy(&mut self, policy: Arc<CompiledPolicy>) {
        self.policy = policy;
    }

    /// Whether userspace kills are carried out (not `--record-only`).
    pub fn enforcing(&self) -> bool {
        self.enforce
    }

    /// Output counters, recorder head and gaps, findings by rule and action.
    pub fn stats(&self) -> SinkStats {
        SinkStats {
            events: self.events,
            record_only: !self.enforce,
            outputs: self.outputs.stats(),
            recorder: self.recorder.as_ref().map(record::RecordHandle::stats),
            findings: self.counts.clone(),
            kills: self.kills.clone(),
            summarised: self.summaries.as_ref().map(|s| s.total),
        }
    }

    /// The recorder's counters, `None` with `--no-record`.
    pub fn recorder_stats(&self) -> Option<RecorderStats> {
        self.recorder.as_ref().map(record::RecordHandle::stats)
    }

    /// The outputs' metrics (Prometheus), e.g. for the kernel counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.outputs.metrics()
    }

    /// Flushes, closes the record (fsynced), and gives the outputs a short grace.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.flush();
        if let Some(r) = self.recorder.take() {
            let s = r.shutdown();
            if s.gap_events > 0 || s.held_decisions > 0 {
                log::warn!(
                    "{} event(s) did not reach the record ({} held decision(s) unwritten); last error: {}",
                    s.gap_events,
                    s.held_decisions,
                    s.last_error.as_deref().unwrap_or("-")
                );
            }
        }
        let Self { outputs, .. } = self;
        outputs.shutdown(OUTPUT_GRACE);
        Ok(())
    }
}
