//! Policy: the rule model (what is protected, what is flagged, what is done), its TOML
//! file format with located errors, the embedded OpenClaw default, the compiled form
//! the daemon loads into kernel maps. The `policy` command is `crate::cli::policy`.
//!
//! Daemon use: [`load_file`] or [`default_policy`] -> [`Policy`], then
//! [`CompiledPolicy::new`] with the `--mode` override and the gateways' ports.

mod compile;
mod glob;
mod model;
mod net;
mod parse;

use std::path::{Path, PathBuf};

pub use compile::{
    providers_from_config, BindEntry, CompileContext, CompiledPolicy, EgressEntry, EgressHost,
    EvalEnv, ExecDeny, List, ProtectedPath, RuleSummary, SecretEnv, ShellEntry, Verdict,
};
pub use glob::{glob_match, glob_problem, is_glob};
pub use model::{
    effective_action, rule_index, shell_kind, valid_env_name, Action, BindRule, EgressRule,
    EnvRule, Exception, ExecRule, FilesRule, Mode, PathBase, PathPattern, Policy, Rule, RuleKind,
    Severity, ShellMatcher, Targets, DEFAULT_UNIT_GLOB, ENV_NAME_MAX, SHELL_KINDS,
};
pub use net::{
    any_nets, fold, is_hostname, loopback_nets, parse_dest, parse_net, parse_ports, same_host,
    Dest, DestTarget, IpNet, ParseProblem, PortRange, PortSpec,
};
pub use parse::{line_col, parse_policy, Diagnostic, VERSION};

/// The embedded default policy, as printed by `policy default`.
pub const DEFAULT_POLICY: &str = include_str!("default.toml");

/// A policy file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(.file, .diagnostics))]
    Invalid {
        file: String,
        diagnostics: Vec<Diagnostic>,
    },
}

fn render(file: &str, d: &[Diagnostic]) -> String {
    let mut s: Vec<String> = d.iter().map(|x| x.render(file)).collect();
    s.push(format!(
        "{file}: {} error{}",
        d.len(),
        if d.len() == 1 { "" } else { "s" }
    ));
    s.join("\n")
}

/// Parses and validates policy text; `file` names it in messages.
pub fn load_str(text: &str, file: &str) -> Result<Policy, PolicyError> {
    parse_policy(text).map_err(|diagnostics| PolicyError::Invalid {
        file: file.to_owned(),
        diagnostics,
    })
}

/// Reads, parses and validates a policy file (for `run --policy` and reloads: on error
/// the caller keeps the policy in force).
pub fn load_file(path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })?;
    load_str(&text, &path.display().to_string())
}

/// The embedded default policy, parsed.
pub fn default_policy() -> Policy {
    // The default is tested to parse (tests below and tests/policy_check.rs); a failure
    // here is a build defect, not an input error.
    #[expect(
        clippy::expect_used,
        reason = "the embedded default is validated by tests"
    )]
    load_str(DEFAULT_POLICY, "<default>").expect("the embedded default policy is valid")
}

/// One line: `ok: version 1, mode enforce, 6 rules (files 1, egress 2, exec 1, bind 1,
/// env 1)`.
pub fn summary(p: &Policy) -> String {
    let count = |k: &str| p.rules.iter().filter(|r| r.kind.name() == k).count();
    format!(
        "ok: version {}, mode {}, {} rules (files {}, egress {}, exec {}, bind {}, env {})",
        p.version,
        p.mode,
        p.rules.len(),
        count("files"),
        count("egress"),
        count("exec"),
        count("bind"),
        count("env")
    )
}
