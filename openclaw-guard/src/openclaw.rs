//! Facts about OpenClaw, defined once: ports, state paths, secret files, config keys
//! and how to recognise the gateway process. The sensors, the policy and the posture
//! audit all take these from here; nothing else hard-codes them.
//!
//! Sources: `/work/shared/OPENCLAW.md` and OpenClaw's environment documentation
//! (`OPENCLAW_HOME` replaces the home directory, `OPENCLAW_STATE_DIR` names the state
//! directory, `OPENCLAW_PROFILE=<name>` moves it to `~/.openclaw-<name>`,
//! `OPENCLAW_CONFIG_PATH` names the config file).

use std::{
    fmt,
    ops::RangeInclusive,
    path::{Component, Path, PathBuf},
};

// ---------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------

/// The gateway's default port (WebSocket + HTTP, Control UI, canvas).
pub const DEFAULT_GATEWAY_PORT: u16 = 18789;

/// How many ports above the gateway port belong to it: P+1 old bridge, P+2 browser
/// control, P+3 Chrome DevTools relay, P+4 canvas host (older releases).
pub const GATEWAY_AUX_PORT_COUNT: u16 = 4;

/// Ports of the managed Chrome instances. OpenClaw hands them out from 18800 upward,
/// one per browser profile, with no documented end; we take 100 ports as the bound
/// (far more profiles than any real host runs) so the list stays finite and small.
pub const BROWSER_PORT_RANGE: RangeInclusive<u16> = 18800..=18899;

/// Environment variable that overrides the gateway port.
pub const GATEWAY_PORT_ENV: &str = "OPENCLAW_GATEWAY_PORT";

/// The single list of ports that belong to one gateway: P, P+1..=P+4 and the
/// managed-browser range. None of them should be reachable from outside the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GatewayPorts {
    gateway: u16,
}

impl Default for GatewayPorts {
    fn default() -> Self {
        Self::new(DEFAULT_GATEWAY_PORT)
    }
}

impl GatewayPorts {
    /// The port list for a gateway listening on `gateway`.
    pub const fn new(gateway: u16) -> Self {
        Self { gateway }
    }

    /// The gateway's own port P.
    pub const fn gateway(&self) -> u16 {
        self.gateway
    }

    /// The port ranges, inclusive: `P..=P+4` (clamped at 65535) and the browser range.
    pub fn ranges(&self) -> [RangeInclusive<u16>; 2] {
        [
            self.gateway..=self.gateway.saturating_add(GATEWAY_AUX_PORT_COUNT),
            BROWSER_PORT_RANGE,
        ]
    }

    /// Whether `port` belongs to this gateway.
    pub fn contains(&self, port: u16) -> bool {
        self.ranges().iter().any(|r| r.contains(&port))
    }

    /// Every port, ascending, without duplicates.
    pub fn ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.ranges().into_iter().flatten().collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

impl fmt::Display for GatewayPorts {
    /// `18789-18793,18800-18899`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b] = self.ranges();
        write!(f, "{}-{},{}-{}", a.start(), a.end(), b.start(), b.end())
    }
}

// ---------------------------------------------------------------------------------
// State directory
// ---------------------------------------------------------------------------------

/// The state directory's name in the home directory.
pub const STATE_DIR_NAME: &str = ".openclaw";
/// State directories left by OpenClaw's earlier names; they hold the same secrets.
pub const LEGACY_STATE_DIR_NAMES: &[&str] = &[".clawdbot", ".moltbot"];
/// The config file's name in the state directory.
pub const CONFIG_FILE_NAME: &str = "openclaw.json";
/// Config files of the earlier names, found in the legacy state directories.
pub const LEGACY_CONFIG_FILE_NAMES: &[&str] = &["clawdbot.json", "moltbot.json"];

/// Environment variables that move OpenClaw's files, in resolution order.
pub const ENV_HOME: &str = "OPENCLAW_HOME";
/// See [`ENV_HOME`].
pub const ENV_STATE_DIR: &str = "OPENCLAW_STATE_DIR";
/// See [`ENV_HOME`].
pub const ENV_PROFILE: &str = "OPENCLAW_PROFILE";
/// See [`ENV_HOME`].
pub const ENV_CONFIG_PATH: &str = "OPENCLAW_CONFIG_PATH";

/// Where one OpenClaw installation keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLocation {
    /// The home directory OpenClaw resolves against (`OPENCLAW_HOME` or the OS home).
    pub home: PathBuf,
    /// The state directory (`~/.openclaw`, `~/.openclaw-<profile>` or
    /// `OPENCLAW_STATE_DIR`).
    pub state_dir: PathBuf,
    /// The config file (`<state_dir>/openclaw.json` or `OPENCLAW_CONFIG_PATH`).
    pub config_path: PathBuf,
    /// Legacy state directories (`~/.clawdbot`, `~/.moltbot`), whether or not they exist.
    pub legacy_dirs: Vec<PathBuf>,
}

impl StateLocation {
    /// Applies `f` to every path (used to re-root paths read from another system).
    #[must_use]
    pub fn map_paths(self, f: impl Fn(&Path) -> PathBuf) -> Self {
        Self {
            home: f(&self.home),
            state_dir: f(&self.state_dir),
            config_path: f(&self.config_path),
            legacy_dirs: self.legacy_dirs.iter().map(|p| f(p)).collect(),
        }
    }

    /// The state directory followed by the legacy ones.
    pub fn all_state_dirs(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.state_dir.as_path())
            .chain(self.legacy_dirs.iter().map(PathBuf::as_path))
    }
}

/// A variable counts as unset when missing, blank, `undefined` or `null` (as OpenClaw
/// treats it).
fn env_value(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    let v = env(name)?;
    let t = v.trim();
    if t.is_empty() || t == "undefined" || t == "null" {
        None
    } else {
        Some(t.to_owned())
    }
}

fn expand_tilde(value: &str, home: &Path) -> PathBuf {
    if value == "~" {
        home.to_path_buf()
    } else if let Some(rest) = value.strip_prefix("~/") {
        home.join(rest)
    } else {
        PathBuf::from(value)
    }
}

/// Resolves where OpenClaw keeps its files, given the OS home directory and a view of
/// the environment (the gateway's, or this process's). `~` in the variables expands to
/// the effective home. An explicit `OPENCLAW_STATE_DIR` wins over the profile; a
/// profile named `default` (any case) means the base directory.
pub fn resolve_state_location(
    os_home: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> StateLocation {
    let home = match env_value(env, ENV_HOME) {
        Some(h) => expand_tilde(&h, os_home),
        None => os_home.to_path_buf(),
    };
    let state_dir = if let Some(dir) = env_value(env, ENV_STATE_DIR) {
        expand_tilde(&dir, &home)
    } else {
        match env_value(env, ENV_PROFILE) {
            Some(p) if !p.eq_ignore_ascii_case("default") => {
                home.join(format!("{STATE_DIR_NAME}-{p}"))
            }
            _ => home.join(STATE_DIR_NAME),
        }
    };
    let config_path = match env_value(env, ENV_CONFIG_PATH) {
        Some(c) => expand_tilde(&c, &home),
        None => state_dir.join(CONFIG_FILE_NAME),
    };
    let legacy_dirs = LEGACY_STATE_DIR_NAMES
        .iter()
        .map(|n| home.join(n))
        .collect();
    StateLocation {
        home,
        state_dir,
        config_path,
        legacy_dirs,
    }
}

// ---------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------

/// Secret files directly in a state directory. The legacy config names are included
/// because the legacy directories hold the same content under those names.
pub const SECRET_FILES: &[&str] = &[
    ".env",
    CONFIG_FILE_NAME,
    "gateway.env",
    "clawdbot.json",
    "moltbot.json",
];
/// Secret directories in a state directory: everything below them is secret.
pub const SECRET_DIRS: &[&str] = &["credentials"];
/// Per-agent model credentials: `agents/<id>/agent/auth-profiles.json`.
pub const AUTH_PROFILES_FILE: &str = "auth-profiles.json";

/// Whether `rel`, a path relative to a state directory, names a secret (a secret file,
/// a secret directory or anything below one, or an agent's `auth-profiles.json`).
/// `..` components never match.
pub fn is_secret_relative(rel: &Path) -> bool {
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => match s.to_str() {
                Some(s) => parts.push(s),
                None => return false,
            },
            Component::CurDir => {}
            _ => return false,
        }
    }
    match parts.as_slice() {
        [f] if SECRET_FILES.contains(f) => true,
        [d, ..] if SECRET_DIRS.contains(d) => true,
        ["agents", _, "agent", f] => *f == AUTH_PROFILES_FILE,
        _ => false,
    }
}

/// Whether `path` is a secret of the state directory `state_dir` (lexically; callers
/// that care about links resolve them first).
pub fn is_secret_path(state_dir: &Path, path: &Path) -> bool {
    path.strip_prefix(state_dir)
        .is_ok_and(|rel| !rel.as_os_str().is_empty() && is_secret_relative(rel))
}

/// The secret files and directories that exist in `state_dir` (not descending into
/// the secret directories).
pub fn existing_secret_paths(state_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = SECRET_FILES
        .iter()
        .chain(SECRET_DIRS)
        .map(|n| state_dir.join(n))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    if let Ok(agents) = std::fs::read_dir(state_dir.join("agents")) {
        let mut found: Vec<PathBuf> = agents
            .flatten()
            .map(|e| e.path().join("agent").join(AUTH_PROFILES_FILE))
            .filter(|p| p.symlink_metadata().is_ok())
            .collect();
        found.sort();
        out.extend(found);
    }
    out
}

// ---------------------------------------------------------------------------------
// Config (openclaw.json)
// ---------------------------------------------------------------------------------

/// `openclaw.json` could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Parses `openclaw.json`. The file is JSON5 (comments, trailing commas, unquoted
/// keys, single quotes); plain JSON is a subset.
pub fn parse_config(text: &str) -> Result<serde_json::Value, ConfigError> {
    // The parser's message spans several lines (a caret diagram): keep it on one.
    json5::from_str::<serde_json::Value>(text).map_err(|e| {
        ConfigError(
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        )
    })
}

/// The value at a dotted key path (`["gateway", "bind"]`), if present.
pub fn config_get<'a>(
    config: &'a serde_json::Value,
    path: &[&str],
) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(config, |v, k| v.get(k))
}

/// A string at a key path, if present and a string.
pub fn config_str<'a>(config: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    config_get(config, path).and_then(serde_json::Value::as_str)
}

/// `gateway.port` from a parsed config (a number, or a numeric string).
pub fn config_gateway_port(config: &serde_json::Value) -> Option<u16> {
    match config_get(config, &["gateway", "port"])? {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|p| *p != 0)
}

/// Values of `gateway.bind` that keep the gateway on loopback.
pub const LOOPBACK_BIND_VALUES: &[&str] = &["loopback", "localhost", "127.0.0.1", "::1"];

/// Whether a `gateway.bind` (or `--bind`) value keeps the gateway on loopback.
pub fn bind_is_loopback(bind: &str) -> bool {
    let b = bind.trim();
    LOOPBACK_BIND_VALUES
        .iter()
        .any(|v| v.eq_ignore_ascii_case(b))
        || b.starts_with("127.")
}

// ---------------------------------------------------------------------------------
// The gateway process
// ---------------------------------------------------------------------------------

/// Process titles the gateway sets (`process.title`), which replace its command line.
pub const GATEWAY_PROCESS_TITLES: &[&str] = &["openclaw", "openclaw-gateway"];

/// `openclaw gateway <sub>` subcommands that are short-lived clients, not the daemon.
const GATEWAY_CLIENT_SUBCOMMANDS: &[&str] = &[
    "status",
    "stop",
    "restart",
    "install",
    "uninstall",
    "call",
    "health",
    "probe",
    "discover",
];

fn basename(arg: &str) -> &str {
    arg.rsplit('/').next().unwrap_or(arg)
}

/// Whether a command line (`/proc/PID/cmdline` split at NULs) looks like the gateway:
/// the process title alone (`openclaw`, `openclaw-gateway`), `openclaw gateway [...]`,
/// `node .../openclaw/... gateway [...]` or Docker's `node dist/index.js gateway`.
/// Client subcommands (`openclaw gateway status`, ...) do not count. This is a
/// discovery heuristic: confirm identity by executable, cgroup or explicit pid.
pub fn is_gateway_cmdline(argv: &[String]) -> bool {
    let args: Vec<&str> = argv
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .collect();
    let Some(first) = args.first() else {
        return false;
    };
    if args.len() == 1 {
        // A rewritten process title may be padded and may hold spaces.
        let title = first.split_whitespace().next().unwrap_or(first);
        if GATEWAY_PROCESS_TITLES.contains(&basename(title)) {
            return true;
        }
    }
    if basename(first) == "openclaw-gateway" {
        return true;
    }
    let Some(gw) = args.iter().position(|a| *a == "gateway") else {
        return false;
    };
    let launcher = args[..gw].iter().any(|a| {
        let b = basename(a);
        b == "openclaw" || b == "openclaw.mjs" || a.contains("/openclaw/") || *a == "dist/index.js"
    });
    launcher
        && !args[gw + 1..]
            .iter()
            .any(|a| GATEWAY_CLIENT_SUBCOMMANDS.contains(a))
}

fn flag_value<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    let eq = format!("{flag}=");
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        if a == flag {
            return it.next().map(String::as_str);
        }
        if let Some(v) = a.strip_prefix(&eq) {
            return Some(v);
        }
    }
    None
}

/// `--port N` / `--port=N` from a gateway command line.
pub fn cmdline_gateway_port(argv: &[String]) -> Option<u16> {
    flag_value(argv, "--port")
        .and_then(|v| v.trim().parse().ok())
        .filter(|p| *p != 0)
}

/// `--bind MODE` / `--bind=MODE` from a gateway command line.
pub fn cmdline_gateway_bind(argv: &[String]) -> Option<&str> {
    flag_value(argv, "--bind")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn port_list() {
        let p = GatewayPorts::default();
        assert_eq!(p.to_string(), "18789-18793,18800-18899");
        assert!(p.contains(18789) && p.contains(18793) && p.contains(18800) && p.contains(18899));
        assert!(!p.contains(18794) && !p.contains(18788) && !p.contains(18900));
        assert_eq!(p.ports().len(), 105);
        assert_eq!(GatewayPorts::new(65534).ranges()[0], 65534..=65535);
    }

    #[test]
    fn state_dir_resolution() {
        let home = Path::new("/home/u");
        let none = |_: &str| None;
        let loc = resolve_state_location(home, &none);
        assert_eq!(loc.state_dir, Path::new("/home/u/.openclaw"));
        assert_eq!(
            loc.config_path,
            Path::new("/home/u/.openclaw/openclaw.json")
        );
        assert_eq!(
            loc.legacy_dirs,
            vec![
                PathBuf::from("/home/u/.clawdbot"),
                PathBuf::from("/home/u/.moltbot")
            ]
        );

        let env = |k: &str| (k == ENV_PROFILE).then(|| "rescue".to_owned());
        assert_eq!(
            resolve_state_location(home, &env).state_dir,
            Path::new("/home/u/.openclaw-rescue")
        );
        let env = |k: &str| (k == ENV_PROFILE).then(|| "Default".to_owned());
        assert_eq!(
            resolve_state_location(home, &env).state_dir,
            Path::new("/home/u/.openclaw")
        );
        let env = |k: &str| match k {
            ENV_HOME => Some("/srv/oc".to_owned()),
            ENV_PROFILE => Some("x".to_owned()),
            _ => None,
        };
        let loc = resolve_state_location(home, &env);
        assert_eq!(loc.state_dir, Path::new("/srv/oc/.openclaw-x"));
        assert_eq!(loc.legacy_dirs[0], Path::new("/srv/oc/.clawdbot"));
        let env = |k: &str| match k {
            ENV_STATE_DIR => Some("~/state".to_owned()),
            ENV_PROFILE => Some("x".to_owned()),
            ENV_CONFIG_PATH => Some("/etc/oc.json".to_owned()),
            _ => None,
        };
        let loc = resolve_state_location(home, &env);
        assert_eq!(loc.state_dir, Path::new("/home/u/state"));
        assert_eq!(loc.config_path, Path::new("/etc/oc.json"));
        let env = |k: &str| (k == ENV_STATE_DIR).then(|| " undefined ".to_owned());
        assert_eq!(
            resolve_state_location(home, &env).state_dir,
            Path::new("/home/u/.openclaw")
        );
    }

    #[test]
    fn secrets() {
        for s in [
            ".env",
            "openclaw.json",
            "gateway.env",
            "credentials",
            "credentials/whatsapp/creds.json",
            "agents/main/agent/auth-profiles.json",
            "./.env",
        ] {
            assert!(is_secret_relative(Path::new(s)), "{s}");
        }
        for s in [
            "workspace/AGENTS.md",
            "agents/main/sessions/a.jsonl",
            "agents/main/agent/other.json",
            "../.env",
            "x/.env",
        ] {
            assert!(!is_secret_relative(Path::new(s)), "{s}");
        }
        assert!(is_secret_path(
            Path::new("/h/.openclaw"),
            Path::new("/h/.openclaw/.env")
        ));
        assert!(!is_secret_path(
            Path::new("/h/.openclaw"),
            Path::new("/h/.openclaw")
        ));
    }

    #[test]
    fn existing_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = dir.path();
        for d in [
            "credentials",
            "agents/main/agent",
            "agents/ops/agent",
            "workspace",
        ] {
            std::fs::create_dir_all(s.join(d)).expect("mkdir");
        }
        for f in [
            ".env",
            "openclaw.json",
            "agents/ops/agent/auth-profiles.json",
            "workspace/AGENTS.md",
        ] {
            std::fs::write(s.join(f), "x").expect("write");
        }
        let got: Vec<PathBuf> = existing_secret_paths(s)
            .into_iter()
            .map(|p| p.strip_prefix(s).expect("inside").to_path_buf())
            .collect();
        let want: Vec<PathBuf> = [
            ".env",
            "openclaw.json",
            "credentials",
            "agents/ops/agent/auth-profiles.json",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn config_json5() {
        let c = parse_config(
            "// comment\n{ gateway: { port: 19001, bind: 'lan', }, /* x */ \"a\": [1,2,], }",
        )
        .expect("json5 parses");
        assert_eq!(config_gateway_port(&c), Some(19001));
        assert_eq!(config_str(&c, &["gateway", "bind"]), Some("lan"));
        let c = parse_config(r#"{"gateway":{"port":"18000"}}"#).expect("json parses");
        assert_eq!(config_gateway_port(&c), Some(18000));
        let err = parse_config("{ gateway: ").expect_err("truncated");
        assert!(!err.0.contains('\n'), "{err}");
        assert!(bind_is_loopback("loopback") && bind_is_loopback("127.0.0.1"));
        assert!(!bind_is_loopback("lan") && !bind_is_loopback("0.0.0.0"));
    }

    #[test]
    fn gateway_cmdline() {
        for s in [
            "openclaw gateway --port 18789",
            "/usr/bin/node /usr/lib/node_modules/openclaw/openclaw.mjs gateway",
            "node dist/index.js gateway --bind lan",
            "openclaw",
            "openclaw-gateway",
            "openclaw gateway run",
        ] {
            assert!(is_gateway_cmdline(&argv(s)), "{s}");
        }
        for s in [
            "openclaw gateway status",
            "openclaw-guard audit",
            "node server.js gateway",
            "vim openclaw.json",
            "",
        ] {
            assert!(!is_gateway_cmdline(&argv(s)), "{s}");
        }
        assert_eq!(
            cmdline_gateway_port(&argv("openclaw gateway --port 19000")),
            Some(19000)
        );
        assert_eq!(
            cmdline_gateway_port(&argv("openclaw gateway --port=19001")),
            Some(19001)
        );
        assert_eq!(
            cmdline_gateway_bind(&argv("openclaw gateway --bind lan")),
            Some("lan")
        );
    }
}
