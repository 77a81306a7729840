//! `openclaw-guard events [verify]`.

use std::{
    io::{BufWriter, Write as _},
    path::PathBuf,
};

use anyhow::Context as _;
use jiff::Timestamp;

use crate::recorder::{
    query::{json_line, json_value, parse_time_arg, timeline_line, CallGroups, Filter, Reader},
    verify, DEFAULT_STATE_DIR, RECORD_DIR,
};

/// Command-line arguments of `openclaw-guard events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    #[command(subcommand)]
    pub command: Option<EventsCommand>,
    /// State directory of the guard; the record is in its `record/` subdirectory.
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    #[command(flatten)]
    pub query: QueryArgs,
}

/// Subcommands of `openclaw-guard events`.
#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// Check every checksum and the hash chain; exit 1 naming the first break.
    Verify,
}

/// Filters and output of an `events` query. Filters combine with AND.
#[derive(Debug, Default, clap::Args)]
pub struct QueryArgs {
    /// Only events at or after this: RFC 3339 time, or a duration back from now (1h, 30m, 2d).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only events at or before this: RFC 3339 time, or a duration back from now.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Only events of this process (pid or tgid); repeatable.
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u64>,
    /// Only events of this process and everything it started (by lineage).
    #[arg(long, value_name = "PID")]
    pub tree: Option<u64>,
    /// Only events of this kind (exec, file_open, connect, fork, exit, bind, decision, ...); repeatable.
    #[arg(long, value_name = "KIND")]
    pub kind: Vec<String>,
    /// Only decisions made by this rule id.
    #[arg(long, value_name = "RULE")]
    pub rule: Option<String>,
    /// Only decisions with this action.
    #[arg(long, value_name = "ACTION", value_parser = ["alert", "deny", "kill"])]
    pub decision: Option<String>,
    /// Only events of this agent session (its key, e.g. `agent:main:main`, or id).
    #[arg(long, value_name = "KEY")]
    pub session: Option<String>,
    /// Only events of this agent run.
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
    /// Only events of this tool call (OpenClaw's tool call id).
    #[arg(long, value_name = "ID")]
    pub tool_call: Option<String>,
    /// Timeline grouped under each tool call (its tool and command text first), in
    /// the order the calls started; implied by --session, --run and --tool-call.
    #[arg(long)]
    pub by_call: bool,
    /// JSON lines (the event plus record_seq and record_hash) instead of a timeline;
    /// the same as `--format jsonl`.
    #[arg(long)]
    pub json: bool,
    /// `timeline` (the default), `jsonl` (as --json) or `ocsf`: one OCSF 1.8.0 event
    /// per line, for a SIEM (docs/outputs.md).
    #[arg(long, value_name = "FORMAT", value_parser = ["timeline", "jsonl", "ocsf"])]
    pub format: Option<String>,
}

impl QueryArgs {
    /// True if any filter or output flag was given.
    pub fn is_set(&self) -> bool {
        self.since.is_some()
            || self.until.is_some()
            || !self.pid.is_empty()
            || self.tree.is_some()
            || !self.kind.is_empty()
            || self.rule.is_some()
            || self.decision.is_some()
            || self.session.is_some()
            || self.run.is_some()
            || self.tool_call.is_some()
            || self.by_call
            || self.json
            || self.format.is_some()
    }

    /// `jsonl` or `ocsf` when the output is one object per line, not a timeline.
    fn lines_format(&self) -> Option<&str> {
        match self.format.as_deref() {
            Some("timeline") => None,
            Some(f) => Some(f),
            None => self.json.then_some("jsonl"),
        }
    }

    /// Whether the timeline groups events under their tool calls.
    pub fn grouped(&self) -> bool {
        self.lines_format().is_none()
            && (self.by_call
                || self.session.is_some()
                || self.run.is_some()
                || self.tool_call.is_some())
    }

    /// Builds the [`Filter`], resolving relative times against `now`.
    pub fn filter(&self, now: Timestamp) -> anyhow::Result<Filter> {
        let time = |s: &Option<String>, flag: &str| {
            s.as_deref()
                .map(|s| parse_time_arg(s, now))
                .transpose()
                .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
        };
        Ok(Filter {
            since: time(&self.since, "--since")?,
            until: time(&self.until, "--until")?,
            pids: self.pid.clone(),
            tree: self.tree,
            kinds: self.kind.clone(),
            rule: self.rule.clone(),
            decision: self.decision.clone(),
            session: self.session.clone(),
            run: self.run.clone(),
            tool_call: self.tool_call.clone(),
        })
    }
}

/// Runs `openclaw-guard events ...` and returns the process exit status: 0, or 1
/// when `verify` finds a break.
pub fn run(args: &EventsArgs) -> anyhow::Result<i32> {
    let record = args.state_dir.join(RECORD_DIR);
    if !record.is_dir() {
        anyhow::bail!(
            "no record at {}: pass the --state-dir the guard runs with",
            record.display()
        );
    }
    match args.command {
        Some(EventsCommand::Verify) => {
            // clap cannot make the query flags conflict with `verify` while
            // `--state-dir` is global, so say it here rather than ignore them.
            if args.query.is_set() {
                anyhow::bail!("query flags (--since, --pid, ...) do not apply to `events verify`");
            }
            let report = verify(&args.state_dir)
                .with_context(|| format!("failed to verify the record in {}", record.display()))?;
            println!("{report}");
            Ok(if report.is_ok() { 0 } else { 1 })
        }
        None => query(args),
    }
}

fn query(args: &EventsArgs) -> anyhow::Result<i32> {
    let filter = args.query.filter(Timestamp::now())?;
    let reader = Reader::open(&args.state_dir)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut write_err = None;
    let mut grouped = args.query.grouped().then(CallGroups::default);
    let format = args.query.lines_format();
    let host = crate::outputs::hostname();
    reader.events(
        filter.since,
        |rec| {
            if write_err.is_some() || !filter.matches(&rec.event) {
                return;
            }
            if let Some(g) = &mut grouped {
                g.add(rec);
                return;
            }
            let line = match format {
                Some("ocsf") => crate::outputs::ocsf::render(&json_value(&rec), &host).to_string(),
                Some(_) => json_line(&rec),
                None => timeline_line(&rec),
            };
            if let Err(e) = writeln!(out, "{line}") {
                write_err = Some(e);
            }
        },
        |p| p.warn(),
    )?;
    if let Some(g) = grouped {
        for line in g.lines() {
            if let Err(e) = writeln!(out, "{line}") {
                write_err = Some(e);
                break;
            }
        }
    }
    match write_err.map_or_else(|| out.flush(), Err) {
        // `events | head` closing the pipe is a normal way to stop reading.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e).context("failed to write events to stdout"),
        Ok(()) => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn cli_arguments_parse() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            events: super::EventsArgs,
        }
        let c = Cli::try_parse_from(["x", "verify", "--state-dir", "/tmp/s"]).expect("parse");
        assert!(matches!(
            c.events.command,
            Some(super::EventsCommand::Verify)
        ));
        assert_eq!(c.events.state_dir, Path::new("/tmp/s"));
        let c = Cli::try_parse_from(["x", "--state-dir", "/tmp/s", "verify"]).expect("parse");
        assert!(c.events.command.is_some());
        let c = Cli::try_parse_from([
            "x",
            "--since",
            "1h",
            "--pid",
            "4",
            "--pid",
            "5",
            "--tree",
            "9",
            "--kind",
            "exec",
            "--rule",
            "r",
            "--decision",
            "kill",
            "--json",
        ])
        .expect("parse");
        assert!(c.events.command.is_none());
        assert_eq!(c.events.query.pid, [4, 5]);
        assert_eq!(c.events.state_dir, Path::new(super::DEFAULT_STATE_DIR));
        assert!(Cli::try_parse_from(["x", "--decision", "maybe"]).is_err());
    }
}
