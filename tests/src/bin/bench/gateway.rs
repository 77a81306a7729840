//! The stand-in gateway: the process the guard tracks; workloads run as its children.

use super::*;

pub(super) fn self_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/bin/openclaw-guard-bench"))
}

pub(super) fn gateway() -> Result<()> {
    // Best effort: without CONFIG_AUDIT the auditd configuration does not run anyway.
    let _ = fs::write("/proc/self/loginuid", BENCH_AUID.to_string());
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line?;
        let args: Vec<&str> = line.split('\t').collect();
        let reply = match Command::new(self_exe())
            .args(&args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
        {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("ERR no output")
                .to_owned(),
            Ok(o) => format!("ERR {}", o.status),
            Err(e) => format!("ERR {e}"),
        };
        writeln!(stdout, "{reply}")?;
        stdout.flush()?;
    }
    Ok(())
}

pub(super) struct Gateway {
    pub(super) child: Child,
    pub(super) stdin: ChildStdin,
    pub(super) stdout: BufReader<ChildStdout>,
}

impl Gateway {
    pub(super) fn start() -> Result<Self> {
        let mut child = Command::new(self_exe())
            // Not titled like a real gateway: tests running concurrently discover
            // gateways by command line. The guard gets this one by --pid.
            .arg("gateway")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the stand-in gateway")?;
        let stdin = child.stdin.take().context("gateway stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("gateway stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `openclaw-guard-bench ARGS` as the gateway's child; its first stdout line.
    pub(super) fn run(&mut self, args: &[String]) -> Result<String> {
        writeln!(self.stdin, "{}", args.join("\t"))?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let line = line.trim().to_owned();
        if line.is_empty() || line.starts_with("ERR") {
            bail!("tracked `{}` failed: {line}", args.join(" "));
        }
        Ok(line)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `openclaw-guard-bench ARGS` untracked (our own child) or tracked (the
/// gateway's child); returns its first stdout line.
pub(super) fn invoke(gw: &mut Gateway, tracked: bool, args: &[String]) -> Result<String> {
    if tracked {
        return gw.run(args);
    }
    let o = Command::new(self_exe())
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !o.status.success() {
        bail!("untracked `{}` failed: {}", args.join(" "), o.status);
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned())
}
