//! The gateway's process tree, followed in the kernel: a child of a tracked process is
//! tracked from its fork on, whatever it later execs or whoever later adopts it.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use openclaw_guard_common::{counter, TrackedProc};

use crate::{
    kernel::task_tgid,
    maps::{count, tracked, TRACKED},
};

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`, run by the parent.
#[btf_tracepoint(function = "sched_process_fork")]
pub(crate) fn sched_process_fork(ctx: BtfTracePointContext) -> u32 {
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // Untracked processes pay this one lookup and nothing else.
    let Some(parent) = tracked(parent_tgid) else {
        return 0;
    };
    let child: *const u8 = ctx.arg(1);
    // SAFETY: child is the kernel's task pointer for this tracepoint.
    let Ok(child_tgid) = (unsafe { task_tgid(child) }) else {
        return 0;
    };
    // A new thread joins its process's entry; only new processes need one.
    if child_tgid == parent_tgid {
        return 0;
    }
    let entry = TrackedProc {
        root: parent.root,
        depth: parent.depth.saturating_add(1),
    };
    if TRACKED.insert(&child_tgid, &entry, 0).is_err() {
        count(counter::TRACK_FULL);
    }
    0
}

/// `sched_process_exit(struct task_struct *p)`, run by the exiting thread.
#[btf_tracepoint(function = "sched_process_exit")]
pub(crate) fn sched_process_exit(_ctx: BtfTracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    // The group leader's exit ends the process's entry.
    if pid == tgid && tracked(tgid).is_some() {
        let _ = TRACKED.remove(&tgid);
    }
    0
}
