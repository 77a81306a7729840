//! Running external commands: echo what runs, fail with the command line in the error.

use std::{
    ffi::OsStr,
    process::{Command, Output},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

/// `VAR=value program args` for messages; only the environment this process set.
pub(crate) fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| {
            let v = v?;
            // Only the entry xtask prepended; the rest is the caller's PATH.
            if k == "PATH" {
                let first = std::env::split_paths(v).next().unwrap_or_default();
                return Some(format!("PATH={}:$PATH", first.display()));
            }
            Some(format!("{}={}", k.to_string_lossy(), quote(v)))
        })
        .collect();
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''")).replace('\x1f', r"\x1f")
    }
}

/// Runs with inherited stdio (so long steps show their own progress) and fails on a
/// non-zero exit.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    println!("xtask: $ {line}");
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    println!("xtask:   done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs quietly and returns stdout; fails with stderr on a non-zero exit.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let line = display(cmd);
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!(
            "`{line}` failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    String::from_utf8(stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

/// Whether the current user is root (apt and the root tests need it).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program` itself as root, or prefixed with sudo otherwise.
pub(crate) fn as_root(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.arg("--preserve-env").arg(program);
        cmd
    }
}

/// A finished command whose output was shown live and kept.
pub(crate) struct Streamed {
    pub(crate) status: std::process::ExitStatus,
    /// stdout lines, then stderr lines (each stream in order).
    pub(crate) lines: Vec<String>,
}

/// Runs with stdout and stderr shown live, each line prefixed with `[prefix]`, and
/// captured for parsing.
pub(crate) fn stream(cmd: &mut Command, prefix: &str) -> Result<Streamed> {
    use std::{
        io::{BufRead as _, BufReader},
        process::Stdio,
    };

    fn pump(reader: impl std::io::Read, prefix: &str) -> Vec<String> {
        let mut reader = BufReader::new(reader);
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        // Byte lines: a serial console is not guaranteed to be UTF-8.
        while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = printable(String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']));
            println!("[{prefix}] {line}");
            lines.push(line);
            buf.clear();
        }
        lines
    }

    let line = display(cmd);
    println!("xtask: $ {line}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let stderr = child.stderr.take().context("child has no stderr pipe")?;
    let err_prefix = prefix.to_owned();
    let err_thread = std::thread::spawn(move || pump(stderr, &err_prefix));
    let stdout = child.stdout.take().context("child has no stdout pipe")?;
    let mut lines = pump(stdout, prefix);
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{line}`"))?;
    lines.extend(err_thread.join().unwrap_or_default());
    Ok(Streamed { status, lines })
}

/// Drops terminal escape sequences (`SeaBIOS` clears the screen) and control characters,
/// so console lines print cleanly and parse.
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ parameters final-byte; otherwise ESC plus one character.
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}
