//! The secret-environment rule (`env` kind), kernel side. The gateway loads its `.env`
//! into its own environment and hands it to every child. A process a carrier (the
//! gateway, its spawn broker) forks is held at its first exec: SIGSTOP is queued
//! before the new image runs its first instruction, the exec event says so, and the
//! daemon blanks the protected values through /proc/PID/mem and resumes it. The
//! kernel cannot do the blanking itself everywhere: `bpf_probe_write_user` is refused
//! under lockdown and not offered to BTF tracepoints.
//!
//! While a process is held, and after, the tree may not read a carrier's environment
//! or memory (`ptrace_access_check` with BPF LSM; on the tracepoint tier a
//! `/proc/PID/environ` or `mem` open of a carrier is killed at the open's exit) nor
//! signal a held process (a SIGCONT would let it run before the blanking).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_send_signal},
    macros::map,
    maps::{Array, HashMap, LruHashMap},
};
use openclaw_guard_common::{carrier, counter, TrackedProc, OFFSET_ABSENT};

use crate::{
    kernel::{read_at, task_tgid},
    maps::{count, offsets, tracked, SETTINGS},
};

/// Carriers by tgid, with `carrier` bits (set by the daemon from roles; the gateways
/// themselves, depth 0, are carriers without an entry).
#[map]
pub(crate) static CARRIERS: HashMap<u32, u32> = HashMap::pinned(4096, 0);

/// Processes forked by a carrier that have not exec'd yet: they run the carrier's code
/// and hold its environment; their first exec is held. LRU: a fork that never execs
/// and never exits cleanly cannot fill it.
#[map]
pub(crate) static ENV_HOLD: LruHashMap<u32, u32> = LruHashMap::pinned(16384, 0);

/// Processes stopped at exec, waiting for the daemon (value: when, boot ns). A
/// restarted daemon resumes what a dead one left.
#[map]
pub(crate) static ENV_PENDING: HashMap<u32, u64> = HashMap::pinned(4096, 0);

/// Until when (boot ns) the daemon is known to be alive to resume held processes;
/// it pushes this forward every second. Past it (the daemon died), a carrier's child
/// is killed at exec instead of held: it carries the secrets and nothing would resume
/// it. A daemon that stops cleanly turns holding off instead (`Settings.env_hold`).
#[map]
pub(crate) static ENV_ALIVE: Array<u64> = Array::pinned(1, 0);

const SIGKILL: u32 = 9;
const SIGSTOP: u32 = 19;
const PROC_SUPER_MAGIC: u64 = 0x9fa0;

#[inline(always)]
fn holding() -> bool {
    SETTINGS.get(0).is_some_and(|s| s.env_hold != 0)
}

#[inline(always)]
fn carrier_bits(tgid: u32, proc_: Option<&TrackedProc>) -> u32 {
    if proc_.is_some_and(|p| p.depth == 0) {
        return carrier::SPAWNS | carrier::SECRET;
    }
    // SAFETY: value copied out at once.
    unsafe { CARRIERS.get(tgid) }.copied().unwrap_or(0)
}

/// Still running a carrier's code with its environment (forked, not yet exec'd).
#[inline(always)]
fn pre_exec(tgid: u32) -> bool {
    // SAFETY: as above.
    unsafe { ENV_HOLD.get(tgid) }.is_some()
}

/// `sched_process_fork` of a tracked parent: a carrier's child is held at its exec.
#[inline(always)]
pub(crate) fn on_fork(parent_tgid: u32, parent: &TrackedProc, child_tgid: u32) {
    if !holding() {
        return;
    }
    if carrier_bits(parent_tgid, Some(parent)) & carrier::SPAWNS != 0 || pre_exec(parent_tgid) {
        let _ = ENV_HOLD.insert(child_tgid, 1, 0);
    }
}

/// At exec: whether this image is to be held (the entry is taken: later execs of the
/// same process are not, its environment is already blanked).
#[inline(always)]
pub(crate) fn take_hold(tgid: u32) -> bool {
    if !pre_exec(tgid) {
        return false;
    }
    let _ = ENV_HOLD.remove(tgid);
    holding()
}

/// Stops the new image before its first instruction (queued now, acted on at the return
/// to user space). Called before the exec event is submitted, so the daemon's SIGCONT
/// can only come after. False when the signal could not be queued.
#[inline(always)]
pub(crate) fn hold(tgid: u32) -> bool {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if ENV_ALIVE.get(0).is_none_or(|until| now > *until) {
        hold_failed();
        return false;
    }
    let _ = ENV_PENDING.insert(tgid, now, 0);
    // SAFETY: signals the current task's group; allowed in tracing programs.
    if unsafe { bpf_send_signal(SIGSTOP) } == 0 {
        count(counter::ENV_HELD);
        return true;
    }
    let _ = ENV_PENDING.remove(tgid);
    hold_failed();
    false
}

/// A hold that cannot be reported (ring full) or queued: the image carries the
/// secrets and nothing would resume it, so it dies before it runs.
#[inline(always)]
pub(crate) fn hold_failed() {
    count(counter::ENV_HOLD_FAILED);
    // SAFETY: as above.
    unsafe { bpf_send_signal(SIGKILL) };
}

/// The whole group is gone.
#[inline(always)]
pub(crate) fn on_exit(tgid: u32) {
    let _ = ENV_HOLD.remove(tgid);
    let _ = ENV_PENDING.remove(tgid);
    let _ = CARRIERS.remove(tgid);
}

/// Whether the current process (tracked as `proc_`) is the agent's side of the tree:
/// not a carrier, not a carrier's fork before its exec. Only these are kept away from
/// the secrets.
#[inline(always)]
fn agent_side(proc_: &TrackedProc) -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    holding() && carrier_bits(tgid, Some(proc_)) == 0 && !pre_exec(tgid)
}

/// Whether `tgid` holds the secret environment: a carrier, a held process, a carrier's
/// fork before its exec.
#[inline(always)]
fn secret_bearing(tgid: u32) -> bool {
    let t = tracked(tgid);
    t.is_some()
        && (carrier_bits(tgid, t.as_ref()) & carrier::SECRET != 0
            || pre_exec(tgid)
            // SAFETY: value copied out at once.
            || unsafe { ENV_PENDING.get(tgid) }.is_some())
}

/// `ptrace_access_check` (BPF LSM): ptrace, `/proc/PID/environ` and `mem`,
/// process_vm_readv and pidfd_getfd of `task` by the current process. The tgid of
/// the target to report when refused.
#[inline(always)]
pub(crate) fn peek_refused(proc_: &TrackedProc, task: *const u8) -> Option<u32> {
    if !agent_side(proc_) {
        return None;
    }
    // SAFETY: the hook's task pointer, read through probe_read.
    let target = unsafe { task_tgid(task) }.ok()?;
    secret_bearing(target).then_some(target)
}

/// `task_kill` (BPF LSM): a signal from the agent's side to a held process.
#[inline(always)]
pub(crate) fn signal_refused(proc_: &TrackedProc, task: *const u8) -> Option<u32> {
    if !agent_side(proc_) {
        return None;
    }
    // SAFETY: as above.
    let target = unsafe { task_tgid(task) }.ok()?;
    // SAFETY: value copied out at once.
    unsafe { ENV_PENDING.get(target) }.map(|_| target)
}

/// Tracepoint tier, at an open's exit: the tgid whose environment or memory the
/// current process opened (`/proc/PID/environ` or `mem`, any spelling: the file's own
/// `mm` tells whose it is), when it is secret-bearing.
#[inline(always)]
pub(crate) fn peeked_file(proc_: &TrackedProc, file: *const u8, dentry: *const u8) -> Option<u32> {
    if dentry.is_null() || !agent_side(proc_) {
        return None;
    }
    let o = offsets();
    if o.mm_owner == OFFSET_ABSENT {
        return None;
    }
    // SAFETY: kernel pointers read through probe_read.
    unsafe {
        let name: *const u8 = read_at(dentry, o.dentry_d_name_name).ok()?;
        let head: [u8; 8] = aya_ebpf::helpers::bpf_probe_read_kernel(name.cast()).ok()?;
        let environ = head == *b"environ\0";
        let mem = head[..4] == *b"mem\0";
        if !environ && !mem {
            return None;
        }
        let inode: *const u8 = read_at(file, o.file_f_inode).ok()?;
        let sb: *const u8 = read_at(inode, o.inode_i_sb).ok()?;
        let magic: u64 = read_at(sb, o.sb_s_magic).ok()?;
        if magic != PROC_SUPER_MAGIC {
            return None;
        }
        let mm: *const u8 = read_at(file, o.file_private_data).ok()?;
        if mm.is_null() {
            return None;
        }
        let owner: *const u8 = read_at(mm, o.mm_owner).ok()?;
        let target = task_tgid(owner).ok()?;
        secret_bearing(target).then_some(target)
    }
}
