//! The secret-environment rule (`env` kind), userspace side: which variables are
//! secret, and the blanking of a held image's environment. The kernel side (holding,
//! the carriers, the refusals) is `openclaw-guard-ebpf/src/env.rs`.
//!
//! The gateway loads its `.env` into its own environment and hands it to every child:
//! a tool call's `env` would print the keys the file rules keep unreadable. Each
//! process the gateway or its spawn broker starts is stopped at its first exec; here
//! the values of the secret variables are overwritten with NULs in the new image's
//! environment block (`/proc/PID/mem`, as root), then it is resumed. `env` then shows
//! `NAME=`, and `/proc/self/environ` the NULs: the bytes are gone, not hidden.

use std::{
    collections::BTreeSet,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use anyhow::Context;
use openclaw_guard_common::carrier;

use crate::machinery::Role;

/// Values shorter than this are not looked for under other names (a `1` or `true`
/// would blank half the environment).
const VALUE_MIN: usize = 8;

/// Environment blocks larger than this are refused (the kernel's own limit on
/// arguments plus environment is a quarter of the stack limit; 8 MiB covers any).
const ENV_MAX: u64 = 8 << 20;

/// What is secret: variable names, and the values the secrets files hold (found under
/// any name: a value copied into another variable is blanked too).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Secrets {
    pub names: BTreeSet<String>,
    pub values: BTreeSet<Vec<u8>>,
}

impl Secrets {
    /// The `env` rules that block, with the names and values of the gateway users'
    /// secrets files (for rules with `from_files`).
    pub fn from_policy(policy: &crate::policy::CompiledPolicy, state_dirs: &[PathBuf]) -> Self {
        let mut out = Self::default();
        for rule in policy
            .secret_env
            .iter()
            .filter(|r| r.action == crate::policy::Action::Block)
        {
            out.names.extend(rule.names.iter().cloned());
            if rule.from_files {
                for dir in state_dirs {
                    for (name, value) in secret_file_vars(dir) {
                        out.names.insert(name);
                        if value.len() >= VALUE_MIN {
                            out.values.insert(value.into_bytes());
                        }
                    }
                }
            }
        }
        out
    }

    fn secret(&self, name: &[u8], value: &[u8]) -> bool {
        std::str::from_utf8(name).is_ok_and(|n| self.names.contains(n))
            || self.values.iter().any(|v| contains(value, v))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The variables OpenClaw's secrets files define: `KEY=VALUE` lines of `.env` and
/// `gateway.env` in `state_dir` (`export `, quotes and comments as dotenv has them),
/// and the `env` block of `openclaw.json` (`env.vars.KEY` and string `env.KEY`), which
/// the gateway puts into its own environment and so into every child's.
pub fn secret_file_vars(state_dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in [".env", "gateway.env"] {
        let Ok(text) = std::fs::read_to_string(state_dir.join(file)) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
            if line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                    .unwrap_or(v);
                out.push((k.trim().to_owned(), v.to_owned()));
            }
        }
    }
    let config = std::fs::read_to_string(state_dir.join(crate::openclaw::CONFIG_FILE_NAME))
        .ok()
        .and_then(|t| json5::from_str::<serde_json::Value>(&t).ok());
    if let Some(env) = config
        .as_ref()
        .and_then(|c| c.get("env"))
        .and_then(serde_json::Value::as_object)
    {
        for (k, v) in env {
            match (k.as_str(), v) {
                ("vars", serde_json::Value::Object(vars)) => {
                    for (k, v) in vars {
                        out.push((k.clone(), v.as_str().unwrap_or_default().to_owned()));
                    }
                }
                (_, serde_json::Value::String(s)) => out.push((k.clone(), s.clone())),
                _ => {}
            }
        }
    }
    out.retain(|(n, _)| crate::policy::valid_env_name(n));
    out
}

/// What a process of this role is for the rule: `carrier` bits for the gateway's own
/// machinery, which keeps its environment (the gateway, its spawn broker: their
/// children are held in turn; its helpers), or `None` for the agent's side, whose
/// environment is blanked.
pub fn carrier_bits(role: Option<&str>) -> Option<u32> {
    match role {
        Some(r) if r == Role::Gateway.as_str() || r == Role::Broker.as_str() => {
            Some(carrier::SPAWNS | carrier::SECRET)
        }
        Some(r) if r == Role::Helper.as_str() => Some(carrier::SECRET),
        _ => None,
    }
}

/// Overwrites with NULs the values of the secret variables in `pid`'s environment
/// block; returns their names.
pub fn blank(pid: u32, secrets: &Secrets) -> anyhow::Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after `(comm)` start at field 3; env_start and env_end are 50 and 51.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("/proc/{pid}/stat has no field {n}"))
    };
    let (start, end) = (field(50)?, field(51)?);
    anyhow::ensure!(
        start != 0 && end > start && end - start <= ENV_MAX,
        "environment block {start:#x}..{end:#x} out of bounds"
    );
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .with_context(|| format!("opening /proc/{pid}/mem"))?;
    let mut buf = vec![0u8; (end - start) as usize];
    mem.read_exact_at(&mut buf, start)
        .context("reading the environment")?;
    let mut blanked = Vec::new();
    let mut at = 0usize;
    for var in buf.split(|&b| b == 0) {
        if let Some(eq) = var.iter().position(|&b| b == b'=') {
            let (name, value) = (&var[..eq], &var[eq + 1..]);
            if !value.is_empty() && secrets.secret(name, value) {
                let zeros = vec![0u8; value.len()];
                mem.write_all_at(&zeros, start + (at + eq + 1) as u64)
                    .context("writing the environment")?;
                blanked.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        at += var.len() + 1;
    }
    Ok(blanked)
}

/// Lets a held process run.
pub fn resume(pid: u32) {
    // SAFETY: kill(2) with a pid and a signal number.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
}

/// Ends a held process that could not be blanked: it carries the secrets.
pub fn kill(pid: u32) {
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// `CLOCK_BOOTTIME` in ns (the kernel's `bpf_ktime_get_boot_ns`).
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_read_like_dotenv() {
        let dir = std::env::temp_dir().join(format!("ocg-secret-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(".env"),
            "# c\nANTHROPIC_API_KEY=sk-ant-1234567890\nexport QUOTED=\"a b c d e f g h\"\n bad name=x\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("openclaw.json"),
            "{ env: { vars: { GH_TOKEN: 'ghp_abcdefgh' }, PLAIN: 'p', nested: { x: 1 } } }",
        )
        .unwrap();
        let vars = secret_file_vars(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            vars,
            [
                ("ANTHROPIC_API_KEY".into(), "sk-ant-1234567890".into()),
                ("QUOTED".into(), "a b c d e f g h".into()),
                ("PLAIN".into(), "p".into()),
                ("GH_TOKEN".into(), "ghp_abcdefgh".into()),
            ]
        );
    }

    #[test]
    fn secret_by_name_or_by_value() {
        let s = Secrets {
            names: ["KEY".to_string()].into(),
            values: [b"sk-ant-1234567890".to_vec()].into(),
        };
        assert!(s.secret(b"KEY", b"anything"));
        assert!(s.secret(b"COPY", b"Bearer sk-ant-1234567890"));
        assert!(!s.secret(b"PATH", b"/usr/bin"));
        assert_eq!(carrier_bits(Some("tool")), None);
        assert_eq!(carrier_bits(Some("exec-tool")), None);
        assert_eq!(carrier_bits(Some("helper")), Some(carrier::SECRET));
        assert_eq!(
            carrier_bits(Some("broker")),
            Some(carrier::SPAWNS | carrier::SECRET)
        );
    }

    /// Blanks a real child's environment: the child is stopped before it reads it.
    #[test]
    fn blanks_a_stopped_process() {
        use std::io::Read;
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "kill -STOP $$; printf '%s|' \"$KEY\" \"$OTHER\" \"$KEEP\"",
            ])
            .env("KEY", "value-of-key")
            .env("OTHER", "x sk-ant-1234567890 y")
            .env("KEEP", "kept")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Wait for the stop.
        for _ in 0..200 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            if stat
                .rsplit_once(')')
                .unwrap()
                .1
                .trim_start()
                .starts_with('T')
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let s = Secrets {
            names: ["KEY".to_string()].into(),
            values: [b"sk-ant-1234567890".to_vec()].into(),
        };
        // The shell copied its environment at start-up: what it prints is its copy.
        // The block itself is what /proc/PID/environ and a later exec'd child see.
        let mut names = blank(pid, &s).unwrap();
        names.sort();
        assert_eq!(names, ["KEY", "OTHER"]);
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(!contains(&environ, b"value-of-key"));
        assert!(!contains(&environ, b"sk-ant"));
        assert!(contains(&environ, b"KEEP=kept"));
        resume(pid);
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child.wait().unwrap();
    }
}
