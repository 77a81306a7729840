//! JSON lines: every event, one object per line, the alert merged in under `"alert"`.
//! To stdout, or appended to a file that is rotated by size (`PATH` -> `PATH.1` ->
//! ... -> `PATH.keep`, the oldest removed).

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use super::{
    hostname, merged, ocsf, Deadline, Destination, JsonlConfig, OutputError, OutputFormat, Record,
    SinkCounters, SinkError,
};

/// More rotated files than this is a typo, not a retention policy.
const MAX_KEEP: usize = 1000;

pub(crate) struct JsonlSink {
    target: Target,
    line: Vec<u8>,
    /// `Some(host name)` when writing OCSF.
    ocsf: Option<String>,
}

enum Target {
    Stdout(BufWriter<io::Stdout>),
    File(RotatingFile),
}

impl JsonlSink {
    /// Opens the file now, so a bad path is an error at start-up, not a silent loss.
    pub(crate) fn open(cfg: &JsonlConfig) -> Result<Self, OutputError> {
        let target = match &cfg.path {
            None => Target::Stdout(BufWriter::new(io::stdout())),
            Some(p) => Target::File(RotatingFile::open(p, cfg.max_bytes, cfg.keep)?),
        };
        Ok(Self {
            target,
            line: Vec::with_capacity(1024),
            ocsf: (cfg.format == OutputFormat::Ocsf).then(hostname),
        })
    }
}

impl Destination for JsonlSink {
    fn deliver(
        &mut self,
        rec: &Record,
        _counters: &SinkCounters,
        _deadline: &Deadline,
    ) -> Result<(), SinkError> {
        self.line.clear();
        let encode = |e: serde_json::Error| SinkError::Other(format!("cannot encode event: {e}"));
        match &rec.json {
            _ if self.ocsf.is_some() => {
                let host = self.ocsf.as_deref().unwrap_or_default();
                serde_json::to_writer(&mut self.line, &ocsf::render(&merged(rec), host))
                    .map_err(encode)?;
            }
            // The caller's encoding of the object, with the alert spliced in last.
            Some(j) if j.starts_with(b"{") && j.ends_with(b"}") => {
                self.line.extend_from_slice(j);
                if let Some(a) = &rec.alert {
                    super::splice_field(&mut self.line, "alert", a).map_err(encode)?;
                }
            }
            _ => serde_json::to_writer(&mut self.line, &merged(rec)).map_err(encode)?,
        }
        self.line.push(b'\n');
        match &mut self.target {
            Target::Stdout(w) => w.write_all(&self.line)?,
            Target::File(f) => f.write_line(&self.line)?,
        }
        Ok(())
    }

    fn flush(&mut self, _counters: &SinkCounters, _deadline: &Deadline) -> Result<(), SinkError> {
        match &mut self.target {
            Target::Stdout(w) => w.flush()?,
            Target::File(f) => f.flush()?,
        }
        Ok(())
    }
}

/// An append-only file rotated before a line would take it past `max_bytes`.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    /// None after a failed rotation or write: reopened on the next line.
    file: Option<BufWriter<File>>,
    size: u64,
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<Self, OutputError> {
        if keep > MAX_KEEP {
            return Err(OutputError::JsonlKeep {
                max: MAX_KEEP,
                got: keep,
            });
        }
        let mut f = Self {
            path: path.to_owned(),
            max_bytes: max_bytes.max(1),
            keep,
            file: None,
            size: 0,
        };
        f.reopen().map_err(|source| OutputError::JsonlOpen {
            path: path.to_owned(),
            source,
        })?;
        Ok(f)
    }

    fn reopen(&mut self) -> io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            // Events name the files agents touch; not for every local user to read.
            .mode(0o600)
            .open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(BufWriter::new(file));
        Ok(())
    }

    /// Appends one line (rotating first when it would not fit).
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        if self.file.is_none() {
            self.reopen()?;
        }
        let Some(w) = self.file.as_mut() else {
            return Err(io::Error::other("file not open"));
        };
        if let Err(e) = w.write_all(line) {
            self.file = None;
            return Err(e);
        }
        self.size += len;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(mut w) = self.file.take() {
            w.flush()?;
        }
        if self.keep == 0 {
            // Nothing kept: start the live file again.
            std::fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            std::fs::remove_file(self.rotated(self.keep)).or_else(ignore_missing)?;
            for n in (1..self.keep).rev() {
                std::fs::rename(self.rotated(n), self.rotated(n + 1)).or_else(ignore_missing)?;
            }
            std::fs::rename(&self.path, self.rotated(1)).or_else(ignore_missing)?;
        }
        self.reopen()
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}
