//! The real gateway's own machinery, recognised by what it is: which process of a tree
//! is the gateway, its spawn broker, the exec tool's shell, a tool call's command, or
//! the gateway's own helpers (shell-snapshot capture, login-shell probe, start-up
//! `git`/`npm`). Measured on openclaw 2026.9.6 (see docs/policy.md, "Roles").
//!
//! A role is decided at exec from the exec itself (executable, argv shape), the
//! parent's role and where stdio goes, never from `comm` (a process sets its own).
//! Every process forked later inherits it: the commands a tool call runs are `tool`
//! whatever they exec, which is what makes nested shells of `npm run` or `make`
//! ordinary work, while a shell anywhere else in the tree stays suspicious.

use serde::Serialize;

/// What a process of a tracked tree is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The gateway itself (depth 0).
    Gateway,
    /// `node .../dist/process/spawn-broker/worker.js`, the gateway's child that forks
    /// the exec tool's shells (pipe mode).
    Broker,
    /// The exec tool's shell: the `oom_score_adj` shim and the `--noprofile --norc -c`
    /// wrapper it execs, forked by the broker (unix-socket stdio) or by the gateway
    /// itself (node-pty: a terminal on stdio).
    ExecTool,
    /// Everything a tool call's shell runs, and their descendants.
    Tool,
    /// The gateway's own shells and commands: the shell-snapshot capture and check, the
    /// login-shell probe, start-up `git` and `npm root -g`, and what they run.
    Helper,
    /// Anything else (unrecognised children of the gateway or the broker, and theirs).
    #[default]
    Other,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Broker => "broker",
            Self::ExecTool => "exec-tool",
            Self::Tool => "tool",
            Self::Helper => "helper",
            Self::Other => "other",
        }
    }

    /// Every role name, for policy validation and docs.
    pub const NAMES: &'static [&'static str] =
        &["gateway", "broker", "exec-tool", "tool", "helper", "other"];

    /// What a forked child is until it execs.
    pub fn of_fork_child(parent: Self) -> Self {
        match parent {
            // The gateway's and the broker's forks are judged at their exec.
            Self::Gateway | Self::Broker | Self::Other => Self::Other,
            Self::ExecTool | Self::Tool => Self::Tool,
            Self::Helper => Self::Helper,
        }
    }
}

/// Where a process's stdin, stdout and stderr go, as far as the roles care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdio {
    /// stdin is a unix socket (the broker's socketpairs), no network socket.
    UnixSockets,
    /// A terminal is on stdin (node-pty), no network socket.
    Terminal,
    /// Anything else (pipes, files, an inet socket...).
    Other,
    /// The process was gone before /proc could be read.
    Unknown,
}

/// The exec tool's shim: it lowers the command's OOM priority, then execs its argv.
const SHIM: &str = "echo 1000 > /proc/self/oom_score_adj 2>/dev/null; exec \"$0\" \"$@\"";
const BROKER_SCRIPT: &str = "/dist/process/spawn-broker/worker.js";
/// The login-shell probe's script (`$SHELL -l -c SCRIPT`): prints the login PATH.
const LOGIN_PROBE: &str = "printf '\\0'; env -0";
const SNAPSHOT_MARK: &str = "'__OPENCLAW_SHELL_SNAPSHOT_CAPTURE__'";

/// What one exec makes of its process.
pub struct ExecShape<'a> {
    /// The process's role before this exec (from its fork or an earlier exec).
    pub current: Role,
    /// The parent's role.
    pub parent: Role,
    /// The executable's base name as given to exec.
    pub base: &'a str,
    pub argv: &'a [String],
    /// The new image is the gateway's own executable (same device and inode).
    pub same_exe_as_gateway: bool,
    pub stdio: Stdio,
}

/// The role after an exec.
pub fn classify(x: &ExecShape<'_>) -> Role {
    match x.current {
        // A tool call's commands and the gateway's helpers keep their role: the shim
        // execs the wrapper (still the exec tool), anything else it execs is the call's
        // command.
        Role::ExecTool if is_wrapper(x) => Role::ExecTool,
        Role::ExecTool | Role::Tool => Role::Tool,
        Role::Helper => Role::Helper,
        Role::Gateway => Role::Gateway,
        Role::Broker => Role::Broker,
        Role::Other => match x.parent {
            Role::Gateway if x.same_exe_as_gateway && is_broker(x.argv) => Role::Broker,
            // The gateway's sqlite and database-verify workers (`dist/**/X.worker.js`).
            Role::Gateway if x.same_exe_as_gateway && is_worker(x.argv) => Role::Helper,
            Role::Gateway | Role::Broker if is_helper(x) => Role::Helper,
            // node-pty forks the shim straight from the gateway, a terminal on stdio.
            Role::Gateway if is_tool_shell(x) && pty_ok(x.stdio) => Role::ExecTool,
            Role::Broker if is_tool_shell(x) && unix_ok(x.stdio) => Role::ExecTool,
            _ => Role::Other,
        },
    }
}

/// A process gone before /proc was read cannot be checked: the shape decides alone
/// (its own stdio never reaches anyone; its children are probed at their own exec).
fn unix_ok(s: Stdio) -> bool {
    matches!(s, Stdio::UnixSockets | Stdio::Unknown)
}

fn pty_ok(s: Stdio) -> bool {
    matches!(s, Stdio::Terminal | Stdio::Unknown)
}

fn is_shell(base: &str) -> bool {
    matches!(
        base,
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "mksh" | "ash" | "fish"
    )
}

/// A name that says "shell" by itself (what the policy's shell kinds match by name).
pub fn is_shell_name(base: &str) -> bool {
    is_shell(base)
        || matches!(
            base,
            "rbash" | "csh" | "tcsh" | "ksh93" | "pdksh" | "busybox"
        )
}

fn is_broker(argv: &[String]) -> bool {
    argv.get(1)
        .is_some_and(|s| s.starts_with('/') && s.ends_with(BROKER_SCRIPT))
}

fn is_worker(argv: &[String]) -> bool {
    argv.get(1).is_some_and(|s| {
        s.starts_with('/') && s.contains("/openclaw/dist/") && s.ends_with(".worker.js")
    })
}

/// The shim (`sh -c SHIM SHELL --noprofile --norc -c WRAPPER`) or, as older releases
/// and the model of the tree describe it, the wrapper straight from the gateway.
fn is_tool_shell(x: &ExecShape<'_>) -> bool {
    if !is_shell(x.base) {
        return false;
    }
    let a = x.argv;
    let shim = a.get(1).is_some_and(|s| s == "-c")
        && a.get(2).is_some_and(|s| s == SHIM)
        && a.get(3).is_some_and(|s| s.starts_with('/'))
        && a.get(4..6).is_some_and(|f| f == ["--noprofile", "--norc"])
        && a.get(6).is_some_and(|s| s == "-c");
    shim || is_wrapper(x)
}

/// `SHELL --noprofile --norc -c CMD`.
fn is_wrapper(x: &ExecShape<'_>) -> bool {
    is_shell(x.base) && x.argv.len() == 5 && x.argv[1..4] == ["--noprofile", "--norc", "-c"]
}

/// The gateway's own shells and commands, measured at its start and first exec.
fn is_helper(x: &ExecShape<'_>) -> bool {
    let a: Vec<&str> = x.argv.iter().map(String::as_str).collect();
    match (x.base, a.get(1..).unwrap_or(&[])) {
        // Login-shell probe: `$SHELL -l -c "printf '\0'; env -0"`.
        (b, ["-l", "-c", s]) if is_shell(b) => *s == LOGIN_PROBE,
        // Shell-snapshot capture: `$SHELL -i -c SCRIPT`, the script printing its
        // markers around aliases, functions and a `node -e` environment dump.
        (b, ["-i", "-c", s]) if is_shell(b) => s.contains(SNAPSHOT_MARK),
        // Snapshot check: `$SHELL --noprofile --norc -c '. SNAPSHOT'`.
        (b, ["--noprofile", "--norc", "-c", s]) if is_shell(b) => {
            s.contains("shell-snapshots") && !s.contains(';')
        }
        // Start-up version, repository and install lookups (through the broker).
        ("git", [..]) => true,
        // `npm root -g`; npm's shebang makes it `env node /usr/bin/npm root -g`.
        ("npm" | "pnpm", [.., "root", "-g"]) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape<'a>(current: Role, parent: Role, argv: &'a [String], stdio: Stdio) -> ExecShape<'a> {
        let base = argv[0].rsplit('/').next().unwrap_or("");
        ExecShape {
            current,
            parent,
            base,
            argv,
            same_exe_as_gateway: false,
            stdio,
        }
    }

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_real_exec_tool_chain() {
        let broker = v(&[
            "/opt/node",
            "/usr/lib/node_modules/openclaw/dist/process/spawn-broker/worker.js",
        ]);
        let mut b = shape(Role::Other, Role::Gateway, &broker, Stdio::Other);
        b.same_exe_as_gateway = true;
        assert_eq!(classify(&b), Role::Broker);
        // The same script run by another node binary is not the broker.
        b.same_exe_as_gateway = false;
        assert_eq!(classify(&b), Role::Other);

        let shim = v(&[
            "/bin/sh",
            "-c",
            SHIM,
            "/bin/bash",
            "--noprofile",
            "--norc",
            "-c",
            "W",
        ]);
        let child = Role::of_fork_child(Role::Broker);
        assert_eq!(
            classify(&shape(child, Role::Broker, &shim, Stdio::UnixSockets)),
            Role::ExecTool
        );
        // Pipes on stdio: not the broker's socketpairs (a plugin's child_process).
        assert_eq!(
            classify(&shape(child, Role::Broker, &shim, Stdio::Other)),
            Role::Other
        );
        // The pty mode: forked by the gateway, a terminal on stdio.
        assert_eq!(
            classify(&shape(Role::Other, Role::Gateway, &shim, Stdio::Terminal)),
            Role::ExecTool
        );
        assert_eq!(
            classify(&shape(Role::Other, Role::Gateway, &shim, Stdio::Other)),
            Role::Other
        );

        let wrapper = v(&["/bin/bash", "--noprofile", "--norc", "-c", "W"]);
        assert_eq!(
            classify(&shape(
                Role::ExecTool,
                Role::Broker,
                &wrapper,
                Stdio::UnixSockets
            )),
            Role::ExecTool
        );
        let cmd = v(&["/bin/sh", "-c", "npm run x"]);
        assert_eq!(
            classify(&shape(
                Role::of_fork_child(Role::ExecTool),
                Role::ExecTool,
                &cmd,
                Stdio::Other
            )),
            Role::Tool
        );
        // The shim exec'ing something that is not the wrapper: that is the command.
        let other = v(&["/usr/bin/python3", "-c", "1"]);
        assert_eq!(
            classify(&shape(
                Role::ExecTool,
                Role::Broker,
                &other,
                Stdio::UnixSockets
            )),
            Role::Tool
        );
    }

    #[test]
    fn shells_elsewhere_are_other() {
        // A shell from a node child of the gateway (a skill's or plugin's process).
        let sh = v(&["/bin/sh", "-c", "id"]);
        assert_eq!(
            classify(&shape(Role::Other, Role::Other, &sh, Stdio::Other)),
            Role::Other
        );
        // Straight from the gateway with pipes: a plugin's child_process, not the tool.
        assert_eq!(
            classify(&shape(Role::Other, Role::Gateway, &sh, Stdio::Other)),
            Role::Other
        );
        // The shim's shape under an unrecognised parent.
        let shim = v(&[
            "/bin/sh",
            "-c",
            SHIM,
            "/bin/bash",
            "--noprofile",
            "--norc",
            "-c",
            "W",
        ]);
        assert_eq!(
            classify(&shape(Role::Other, Role::Other, &shim, Stdio::UnixSockets)),
            Role::Other
        );
        // An interactive shell under the broker that is not the snapshot capture.
        let i = v(&[
            "/bin/bash",
            "-i",
            "-c",
            "bash -i >& /dev/tcp/127.0.0.1/9 0>&1 # __OPENCLAW_SHELL_SNAPSHOT_CAPTURE__",
        ]);
        assert_eq!(
            classify(&shape(Role::Other, Role::Broker, &i, Stdio::UnixSockets)),
            Role::Other
        );
    }

    #[test]
    fn gateway_helpers() {
        let probe = v(&["/bin/bash", "-l", "-c", LOGIN_PROBE]);
        assert_eq!(
            classify(&shape(Role::Other, Role::Gateway, &probe, Stdio::Other)),
            Role::Helper
        );
        let capture = v(&[
            "/bin/bash",
            "-i",
            "-c",
            "{\n:\nprintf '\\n%s\\n' '__OPENCLAW_SHELL_SNAPSHOT_CAPTURE__'\nalias\n}",
        ]);
        assert_eq!(
            classify(&shape(
                Role::Other,
                Role::Broker,
                &capture,
                Stdio::UnixSockets
            )),
            Role::Helper
        );
        let check = v(&[
            "/bin/bash",
            "--noprofile",
            "--norc",
            "-c",
            ". '/s/cache/shell-snapshots/a.tmp' >/dev/null 2>&1",
        ]);
        assert_eq!(
            classify(&shape(Role::Other, Role::Broker, &check, Stdio::Other)),
            Role::Helper
        );
        let worker = v(&[
            "/opt/node",
            "/x/node_modules/openclaw/dist/infra/sqlite-readonly-location.worker.js",
            "sync",
        ]);
        let mut w = shape(Role::Other, Role::Gateway, &worker, Stdio::Other);
        w.same_exe_as_gateway = true;
        assert_eq!(classify(&w), Role::Helper);
        let npm = v(&["/usr/bin/env", "node", "/usr/bin/npm", "root", "-g"]);
        let mut n = shape(Role::Other, Role::Broker, &npm, Stdio::Other);
        n.base = "npm";
        assert_eq!(classify(&n), Role::Helper);
        let git = v(&["git", "rev-parse", "HEAD"]);
        assert_eq!(
            classify(&shape(Role::Other, Role::Gateway, &git, Stdio::Other)),
            Role::Helper
        );
        assert_eq!(
            classify(&shape(Role::Other, Role::Broker, &git, Stdio::Other)),
            Role::Helper
        );
        // Below an unrecognised process, git is just git.
        assert_eq!(
            classify(&shape(Role::Other, Role::Other, &git, Stdio::Other)),
            Role::Other
        );
        // What a helper runs stays a helper.
        let node = v(&["/opt/node", "-e", "x"]);
        assert_eq!(
            classify(&shape(
                Role::of_fork_child(Role::Helper),
                Role::Helper,
                &node,
                Stdio::Other
            )),
            Role::Helper
        );
    }
}
