//! The process tree sensor (openclaw-guard-ebpf/src/tree.rs, tests/src/sensors/tree.rs):
//! forks and exits of the gateway's descendants, which keep the kernel's tree.

use openclaw_guard_common::lifecycle::{ExitEvent, ForkEvent};

use crate::events::{Decision, DecodeError, Exit, Fork, Payload};

/// Its tracepoints (program, `tp_btf` tracepoint): the tree's forks and exits.
pub const FORK_TRACEPOINT: (&str, &str) = ("sched_process_fork", "sched_process_fork");
pub const EXIT_TRACEPOINT: (&str, &str) = ("sched_process_exit", "sched_process_exit");

/// A `fork` record.
pub(super) fn decode_fork(bytes: &[u8]) -> Result<(Payload, Option<Decision>), DecodeError> {
    let ev: ForkEvent = super::record(bytes)?;
    Ok((
        Payload::Fork(Fork {
            child_tgid: ev.child_tgid,
            child_depth: ev.child_depth,
        }),
        None,
    ))
}

/// An `exit` record.
pub(super) fn decode_exit(bytes: &[u8]) -> Result<(Payload, Option<Decision>), DecodeError> {
    let ev: ExitEvent = super::record(bytes)?;
    // wait(2) encoding: low 7 bits the signal, next 8 the exit status.
    let status = ev.exit_code as i32;
    let sig = status & 0x7f;
    let exit = if sig == 0 {
        Exit {
            exit_code: Some((status >> 8) & 0xff),
            signal: None,
        }
    } else {
        Exit {
            exit_code: None,
            signal: Some(sig),
        }
    };
    Ok((Payload::Exit(exit), None))
}
