//! `sshd_config` with its `Include`d drop-ins, as sshd reads it: the first value of a
//! keyword wins; `Include` is expanded in place (relative paths against /etc/ssh,
//! globs sorted); settings inside a `Match` block other than `Match all` are
//! conditional and ignored here.

use std::{collections::BTreeMap, fs, path::Path};

use super::host::Options;

const MAX_DEPTH: usize = 16;

/// Effective global settings: lowercased keyword -> (value, where it was set).
#[derive(Debug, Default)]
pub(super) struct SshdConfig {
    pub(super) settings: BTreeMap<String, (String, String)>,
    pub(super) files: Vec<String>,
}

impl SshdConfig {
    pub(super) fn get(&self, key: &str) -> Option<&(String, String)> {
        self.settings.get(&key.to_ascii_lowercase())
    }
}

/// Matches a shell glob with `*` and `?` against a file name.
fn glob_match(pat: &[u8], name: &[u8]) -> bool {
    match (pat.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pat[1..], name) || (!name.is_empty() && glob_match(pat, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pat[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pat[1..], &name[1..]),
        _ => false,
    }
}

/// Expands an Include argument (absolute, system view) to existing files, sorted.
/// Globs are supported in the last path component.
fn expand(opts: &Options, arg: &str) -> Vec<String> {
    let abs = if arg.starts_with('/') {
        arg.to_owned()
    } else {
        format!("/etc/ssh/{arg}")
    };
    let p = Path::new(&abs);
    let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    if !name.contains(['*', '?']) {
        return vec![abs];
    }
    let Ok(rd) = fs::read_dir(opts.path(dir)) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| glob_match(name.as_bytes(), n.as_bytes()))
        .map(|n| dir.join(n).display().to_string())
        .collect();
    v.sort();
    v
}

fn read_into(opts: &Options, file: &str, cfg: &mut SshdConfig, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let Some(text) = opts.read(file) else {
        return;
    };
    cfg.files.push(file.to_owned());
    let mut in_match = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.find(|c: char| c.is_whitespace() || c == '=') {
            Some(i) => (
                &line[..i],
                line[i..]
                    .trim_start_matches(|c: char| c.is_whitespace() || c == '=')
                    .trim(),
            ),
            None => (line, ""),
        };
        let key = key.to_ascii_lowercase();
        if key == "match" {
            in_match = !value.eq_ignore_ascii_case("all");
            continue;
        }
        if in_match {
            continue;
        }
        if key == "include" {
            for arg in value.split_whitespace() {
                for f in expand(opts, arg) {
                    read_into(opts, &f, cfg, depth + 1);
                }
            }
            continue;
        }
        let value = value.trim_matches('"').to_owned();
        cfg.settings
            .entry(key)
            .or_insert_with(|| (value, format!("{file}:{}", n + 1)));
    }
}

/// Reads `ROOT/etc/ssh/sshd_config`; `None` when it does not exist.
pub(super) fn load(opts: &Options) -> Option<SshdConfig> {
    const MAIN: &str = "/etc/ssh/sshd_config";
    opts.path(MAIN).is_file().then(|| {
        let mut cfg = SshdConfig::default();
        read_into(opts, MAIN, &mut cfg, 0);
        cfg
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match(b"*.conf", b"50-cloud-init.conf"));
        assert!(!glob_match(b"*.conf", b"x.conf.bak"));
        assert!(glob_match(b"a?c", b"abc"));
    }

    #[test]
    fn include_first_wins_and_match() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ssh = dir.path().join("etc/ssh/sshd_config.d");
        fs::create_dir_all(&ssh).expect("mkdir");
        fs::write(
            dir.path().join("etc/ssh/sshd_config"),
            "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin no\nPasswordAuthentication no\nMatch User bob\n  PasswordAuthentication yes\n",
        )
        .expect("write");
        fs::write(ssh.join("50-cloud.conf"), "PasswordAuthentication=yes\n").expect("write");
        fs::write(ssh.join("10-early.conf"), "# nothing\n").expect("write");
        fs::write(ssh.join("ignored.txt"), "PermitRootLogin yes\n").expect("write");
        let opts = Options {
            root: dir.path().to_path_buf(),
            live: false,
            home: None,
        };
        let cfg = load(&opts).expect("config");
        let (v, at) = cfg.get("PasswordAuthentication").expect("set");
        assert_eq!(v, "yes");
        assert!(at.ends_with("50-cloud.conf:1"), "{at}");
        assert_eq!(cfg.get("permitrootlogin").map(|s| s.0.as_str()), Some("no"));
        assert_eq!(cfg.files.len(), 3);
    }
}
