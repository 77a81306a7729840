//! The exec sensor (openclaw-guard-ebpf/src/exec.rs, tests/src/sensors/exec.rs):
//! `sched_process_exec` reports every image the tree starts; `bprm_check_security`
//! refuses listed executables on the BPF LSM tier.

use openclaw_guard_common::{exec::ExecEvent, flags};

use crate::events::{c_string, dev_string, Decision, DecodeError, Exec, Payload};

/// Its BPF LSM program (program, hook): listed executables refused.
pub const LSM_PROGRAMS: &[(&str, &str)] = &[("bprm_check_security", "bprm_check_security")];

/// Its tracepoint (program, `tp_btf` tracepoint): every exec of the tree.
pub const TRACEPOINT: (&str, &str) = ("sched_process_exec", "sched_process_exec");

/// An `exec` record.
pub(super) fn decode(bytes: &[u8]) -> Result<(Payload, Option<Decision>), DecodeError> {
    let ev: ExecEvent = super::record(bytes)?;
    let len = (ev.filename_len as usize).min(ev.filename.len());
    Ok((
        Payload::Exec(Exec {
            ppid: ev.ppid,
            uid: ev.uid,
            gid: ev.gid,
            comm: c_string(&ev.comm),
            filename: String::from_utf8_lossy(&ev.filename[..len]).into_owned(),
            filename_truncated: ev.flags & flags::TRUNCATED != 0,
            argv: split_args(&ev.args[..(ev.args_len as usize).min(ev.args.len())]),
            argv_truncated: ev.flags & flags::ARGS_TRUNCATED != 0,
            exe: String::new(),
            stdio: Vec::new(),
            stdio_socket: false,
            fileless: false,
            shell: None,
            after_denial: false,
            env_held: ev.flags & flags::ENV_HELD != 0,
            env_blanked: Vec::new(),
            env_error: None,
            stdio_families: ev.stdio_families,
            exe_dev: dev_string(ev.exe_dev),
            exe_ino: ev.exe_ino,
        }),
        None,
    ))
}

pub(super) fn split_args(block: &[u8]) -> Vec<String> {
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    if block.is_empty() {
        return Vec::new();
    }
    block
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// What a decision on this event was about, as an alert line says it.
pub(super) fn target(x: &Exec) -> String {
    format!("exec of `{}`", x.filename)
}

/// How this sensor's rules are enforced on this kernel, in words (start-up, `status`).
pub fn enforcement(attached: &dyn Fn(&str) -> bool, act: crate::policy::Action) -> String {
    if attached("bprm_check_security") {
        format!(
                    "{act}: listed executables refused with EPERM at BPF LSM bprm_check_security; shells and argument rules from userspace after exec (argv is only readable then): SIGKILL to the process and its group"
                )
    } else {
        format!(
                    "{act}: from userspace after exec (no BPF LSM: listed executables are not refused before they run): SIGKILL to the process and its group"
                )
    }
}
