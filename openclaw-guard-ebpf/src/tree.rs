//! The gateway's process tree, followed in the kernel: a child of a tracked process is
//! tracked from its fork on, whatever it later execs or whoever later adopts it.
//! Fork and exit of tracked processes are events too (lineage, exit codes), on the
//! process ring with the execs (`PROCS`).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use openclaw_guard_common::{
    counter, kind,
    lifecycle::{ExitEvent, ForkEvent},
    TrackedProc,
};

use crate::{
    kernel::{read_at, task_tgid},
    maps::{count, header, offsets, tracked, PROCS, TRACKED},
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
    if TRACKED.insert(child_tgid, entry, 0).is_err() {
        count(counter::TRACK_FULL);
    }
    crate::env::on_fork(parent_tgid, &parent, child_tgid);
    match PROCS.reserve::<ForkEvent>(0) {
        Some(mut e) => {
            let ev = e.as_mut_ptr();
            // SAFETY: reserved ring-buffer memory of the right size.
            unsafe {
                (*ev).header = header(kind::FORK, &parent);
                (*ev).child_tgid = child_tgid;
                (*ev).child_depth = entry.depth;
            }
            e.submit(0);
            count(counter::EMITTED);
        }
        None => count(counter::LOST),
    }
    0
}

/// `sched_process_exit(struct task_struct *p)`, run by the exiting thread.
#[btf_tracepoint(function = "sched_process_exit")]
pub(crate) fn sched_process_exit(ctx: BtfTracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    // What this thread folded is owed before its exit.
    crate::fold::flush(pid);
    let Some(proc_) = tracked(tgid) else {
        return 0;
    };
    let task: *const u8 = ctx.arg(0);
    // The process is gone when its last thread exits, not when its leader does: the
    // leader can exit alone (pthread_exit) or be replaced by a thread that execs, and
    // the process carries on. do_exit counts the thread out of `signal->live` before
    // this tracepoint, so 0 means the group is dead. Unreadable: the leader's exit
    // decides, as before.
    // SAFETY: task and signal pointers read through probe_read.
    let live = unsafe {
        read_at::<*const u8>(task, offsets().task_signal)
            .and_then(|signal| read_at::<u32>(signal, offsets().signal_live))
    };
    match live {
        Ok(0) => {}
        Ok(_) => return 0,
        Err(_) if pid != tgid => return 0,
        Err(_) => {}
    }
    let _ = TRACKED.remove(tgid);
    crate::env::on_exit(tgid);
    match PROCS.reserve::<ExitEvent>(0) {
        Some(mut e) => {
            let ev = e.as_mut_ptr();
            // SAFETY: reserved ring-buffer memory; task read through probe_read.
            unsafe {
                (*ev).header = header(kind::EXIT, &proc_);
                (*ev).exit_code = read_at::<u32>(task, offsets().task_exit_code).unwrap_or(0);
                (*ev)._pad = 0;
            }
            e.submit(0);
            count(counter::EMITTED);
        }
        None => count(counter::LOST),
    }
    0
}
