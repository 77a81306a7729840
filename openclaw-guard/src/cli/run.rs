//! `openclaw-guard run`: the daemon's command line. What it runs is [`crate::daemon`].

use std::path::PathBuf;

use crate::{daemon::RunOptions, outputs::OutputFormat, sink::SinkOptions};

/// Command-line arguments of `openclaw-guard run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Track this process (a gateway) and all its descendants. Repeatable.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Track the processes of this cgroup (v2 path) as gateways. Repeatable.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,
    /// Do not look for gateways by command line and systemd unit; only --pid/--cgroup.
    #[arg(long)]
    pub no_discover: bool,
    /// Deny reads of this file to the tracked processes' descendants. Repeatable.
    #[arg(long = "protect", value_name = "PATH")]
    pub protect: Vec<PathBuf>,
    /// Policy file (TOML); without it the embedded OpenClaw default applies.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Also keep the tree from changing this file or directory, like the guard's own
    /// (what starts the guard: a unit file, its drop-ins; its configuration).
    /// Repeatable. Under systemd the daemon's own unit file, drop-in directories and
    /// enablement links are added by themselves.
    #[arg(long = "guard-path", value_name = "PATH")]
    pub guard_paths: Vec<PathBuf>,
    /// Override every rule's mode: `monitor` turns blocks and kills into alerts.
    #[arg(long, value_name = "monitor|enforce", value_parser = crate::daemon::parse_mode)]
    pub mode: Option<crate::policy::Mode>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// bpffs directory where programs and maps are pinned, so enforcement continues if
    /// the daemon dies; a restarted daemon adopts what it finds there.
    #[arg(long, value_name = "DIR", default_value = crate::kernel::pins::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Kills per kill rule per second; past it the rule denies without killing (still
    /// refused, reported with `degraded_from: kill`), so a flood can neither turn the
    /// guard into a process-killing storm nor switch enforcement off. 0: no limit.
    /// Applies where the kernel can refuse (BPF LSM); elsewhere kills are not limited.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub kill_limit: u32,
    /// A thread's identical ordinary events (the same file opened the same way, the
    /// same destination) within this many ms of the first are sent once and then as a
    /// count (`repeat` events), not one by one: a loop over one file costs the agent
    /// and the guard almost nothing. Repeated refusals fold too (each still refused);
    /// kills and execs never do. 0: off.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub fold_ms: u32,
    /// Pin nothing: programs detach when the daemon exits (development, tests).
    #[arg(long)]
    pub no_pin: bool,
    /// The daemon's nice value (-20..19), set at start-up: ahead of the agent's tree
    /// (nice 0), so a tree that keeps every CPU busy cannot starve the guard and delay
    /// its alerts (the tree may not change the guard's scheduling). Needs CAP_SYS_NICE
    /// (root has it); without, the daemon says so and runs as it is.
    #[arg(long, value_name = "N", default_value_t = -10, allow_hyphen_values = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub nice: i32,
    /// Where the daemon keeps its status for `openclaw-guard status`.
    #[arg(long, value_name = "FILE", default_value = crate::daemon::DEFAULT_STATUS_FILE)]
    pub status_file: PathBuf,
    /// Seconds between counter records in the JSON stream.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub stats_interval: u64,
    /// Unix socket the guard's OpenClaw plugin reports tool calls to (events are then
    /// stamped with their session, run and tool call); `none`: no attribution.
    #[arg(long, value_name = "PATH|none", default_value = crate::attribution::DEFAULT_SOCKET,
          value_parser = crate::attribution::socket_arg)]
    pub attribution_socket: crate::attribution::SocketArg,
}

/// Output, record and enforcement options of `openclaw-guard run`.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Where events and alerts go; repeatable. `stdout`, `file:PATH` (or a bare PATH):
    /// JSON lines of every event; `otlp:URL`: every event as OpenTelemetry logs
    /// (OTLP/HTTP, e.g. http://127.0.0.1:4318); `syslog[:SOCKET]`, `journald`,
    /// `webhook:URL` (Falcosidekick): alerts; `metrics:ADDR` or `metrics:off`: the
    /// Prometheus endpoint (default 127.0.0.1:9469); `none`: no JSON lines.
    /// Default: JSON lines on stdout.
    #[arg(long = "output", value_name = "SPEC")]
    pub output: Vec<String>,
    /// What JSON lines, the webhook and OTLP carry: the guard's own JSON (`native`)
    /// or OCSF 1.8.0 events (`ocsf`).
    #[arg(long, value_name = "FORMAT", default_value = "native")]
    pub output_format: OutputFormat,
    /// State directory; the forensic record is kept in its `record/` subdirectory.
    #[arg(long, value_name = "DIR", default_value = crate::recorder::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Record and report only: nothing is blocked or killed, in the kernel or here.
    #[arg(long, conflicts_with = "no_record")]
    pub record_only: bool,
    /// Do not keep a forensic record (tests, ephemeral runs).
    #[arg(long)]
    pub no_record: bool,
    /// Record the gateway's own ordinary file activity (module loads, sqlite, logs)
    /// event by event instead of as `summary` records (see docs/recorder.md).
    #[arg(long)]
    pub no_summary: bool,
}

impl RunArgs {
    /// The options the daemon runs with.
    pub fn options(&self) -> RunOptions {
        let o = &self.output;
        RunOptions {
            pids: self.pids.clone(),
            cgroups: self.cgroups.clone(),
            no_discover: self.no_discover,
            protect: self.protect.clone(),
            policy: self.policy.clone(),
            guard_paths: self.guard_paths.clone(),
            mode: self.mode,
            sink: SinkOptions {
                output: o.output.clone(),
                output_format: o.output_format,
                state_dir: o.state_dir.clone(),
                record_only: o.record_only,
                no_record: o.no_record,
                no_summary: o.no_summary,
            },
            pin_dir: self.pin_dir.clone(),
            kill_limit: self.kill_limit,
            fold_ms: self.fold_ms,
            no_pin: self.no_pin,
            nice: self.nice,
            status_file: self.status_file.clone(),
            stats_interval: self.stats_interval,
            attribution_socket: self.attribution_socket.clone(),
        }
    }
}

pub fn run(args: &RunArgs) -> anyhow::Result<i32> {
    crate::daemon::run(&args.options())
}
