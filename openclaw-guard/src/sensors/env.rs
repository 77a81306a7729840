//! The secret-environment sensor (openclaw-guard-ebpf/src/env.rs,
//! tests/src/enforce/env.rs): processes the gateway or its broker start are held at
//! their first exec while userspace blanks the secret values in their environment.

/// How `env` rules that block are enforced on this kernel, in words.
pub fn enforcement(attached: &dyn Fn(&str) -> bool) -> String {
    let peek = if attached("ptrace_access_check") {
        "its tree may not read their environment or memory (/proc/PID/environ and mem, ptrace, process_vm_readv, pidfd_getfd: EPERM at BPF LSM ptrace_access_check) nor signal a held process"
    } else {
        "/proc/PID/environ and mem opens of them killed at the open's exit (no BPF LSM: ptrace, process_vm_readv and pidfd_getfd of them NOT refused; a held process can be sent SIGCONT early)"
    };
    format!(
                        "block: each process the gateway or its spawn broker starts is stopped at its first exec (SIGSTOP, sched_process_exec) and its secret values blanked through /proc/PID/mem before it runs; the gateway, broker and helpers keep theirs; {peek}; needs the daemon running (killed at exec while it is dead, not held after it stopped cleanly)"
                    )
}
