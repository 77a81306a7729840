//! Self-protection: the gateway's tree may not signal or ptrace the guard, nor use
//! `bpf()` at all (BPF LSM `task_kill`, `ptrace_access_check`, `bpf`). Only with BPF
//! LSM: without it the daemon says self-protection is not enforced.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use openclaw_guard_common::{
    action, counter, kind,
    tamper::{op, TamperEvent},
    TrackedProc,
};

use crate::{
    kernel::task_tgid,
    maps::{apply, count, effective, header, tracked, EVENTS, SETTINGS},
};

/// `int task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig, const struct cred *cred)`.
#[lsm(hook = "task_kill")]
pub(crate) fn task_kill(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    let sig: i32 = ctx.arg(2);
    // Signal 0 only probes for existence.
    if sig == 0 || !targets_guard(ctx.arg(0)) {
        return 0;
    }
    deny(&proc_, op::SIGNAL, guard_tgid(), sig as u32)
}

/// `int ptrace_access_check(struct task_struct *child, unsigned int mode)`.
#[lsm(hook = "ptrace_access_check")]
pub(crate) fn ptrace_access_check(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    if !targets_guard(ctx.arg(0)) {
        return 0;
    }
    let mode: u32 = ctx.arg(1);
    deny(&proc_, op::PTRACE, guard_tgid(), mode)
}

/// `int bpf(int cmd, union bpf_attr *attr, unsigned int size)`: the agent's tree has no
/// business loading programs or touching the guard's maps.
#[lsm(hook = "bpf")]
pub(crate) fn bpf(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some(proc_) = current_tracked() else {
        return 0;
    };
    let cmd: i32 = ctx.arg(0);
    deny(&proc_, op::BPF, cmd as u32, 0)
}

#[inline(always)]
fn current_tracked() -> Option<TrackedProc> {
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    tracked(tgid)
}

#[inline(always)]
fn guard_tgid() -> u32 {
    SETTINGS.get(0).map_or(0, |s| s.guard_tgid)
}

#[inline(always)]
fn targets_guard(task: *const u8) -> bool {
    let guard = guard_tgid();
    // SAFETY: the hook's task pointer, read through probe_read.
    guard != 0 && unsafe { task_tgid(task) }.is_ok_and(|t| t == guard)
}

#[inline(always)]
fn deny(proc_: &TrackedProc, operation: u32, target: u32, arg: u32) -> i32 {
    // Refused, not killed: the rule protects the guard; monitor mode only reports.
    let act = effective(action::DENY);
    let ret = apply(act);
    match EVENTS.reserve::<TamperEvent>(0) {
        Some(mut e) => {
            let ev = e.as_mut_ptr();
            // SAFETY: reserved ring-buffer memory of the right size.
            unsafe {
                (*ev).header = header(kind::TAMPER, proc_);
                (*ev).op = operation;
                (*ev).target = target;
                (*ev).arg = arg;
                (*ev).action = act;
                (*ev).ret = ret;
                (*ev)._pad = 0;
            }
            e.submit(0);
            count(counter::EMITTED);
        }
        None => count(counter::LOST),
    }
    ret
}
