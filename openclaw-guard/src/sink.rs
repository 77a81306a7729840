//! The end of the pipeline: after enrichment, each event goes through the policy's
//! userspace verdicts, to the alert outputs and to the forensic recorder.
//!
//! (Minimal version: JSON lines to stdout or a file. Policy verdicts, outputs and the
//! recorder plug in here.)

use std::{io::Write as _, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use serde_json::Value;

use crate::policy::CompiledPolicy;

/// Sink options of `openclaw-guard run`.
#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// Write JSON lines here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub struct Sink {
    out: Box<dyn std::io::Write + Send>,
    policy: Arc<CompiledPolicy>,
}

impl Sink {
    pub fn start(args: &SinkArgs, policy: Arc<CompiledPolicy>) -> anyhow::Result<Self> {
        let out: Box<dyn std::io::Write + Send> = match &args.output {
            Some(p) => Box::new(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("opening output {}", p.display()))?,
            )),
            None => Box::new(std::io::BufWriter::new(std::io::stdout())),
        };
        Ok(Self { out, policy })
    }

    /// One enriched event (or a `stats` record).
    pub fn event(&mut self, ev: Value) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, &ev)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    /// Called after each batch drained from the ring buffer.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }

    /// A new policy after a reload.
    pub fn set_policy(&mut self, policy: Arc<CompiledPolicy>) {
        self.policy = policy;
    }

    /// For `status`.
    pub fn stats(&self) -> Value {
        Value::Null
    }

    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.flush()
    }
}
