//! Maps and globals shared by every sensor, and the event-emission helpers.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::map,
    maps::{ring_buf::RingBufEntry, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use openclaw_guard_common::{
    action, counter, dns::DnsAddr, EgressRule, EventHeader, InodeKey, KernelOffsets, KillWindow,
    NameKey, RuleAction, Settings, TrackedProc,
};

// Every map is pinned by name (the daemon chooses the directory): if the daemon dies,
// the pinned links keep these programs running against these maps, and a restarted
// daemon adopts them.

/// Events to userspace. 8 MiB: a few seconds of a busy tree at ~300 B/event.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::pinned(8 << 20, 0);

/// Decision events (a rule matched) only: a flood of ordinary events fills `EVENTS`,
/// never this, so every block, kill and alert reaches userspace. 1 MiB: thousands of
/// decisions between two reads.
#[map]
pub(crate) static DECISIONS: RingBuf = RingBuf::pinned(1 << 20, 0);

/// The tree's process lifecycle: fork, exec and exit events. New programs (a shell by
/// any name, a reverse shell) are what alerts are made of, and a flood of ordinary
/// events in `EVENTS` must neither drop nor delay them; their forks travel with them
/// so an exec never overtakes the fork that introduces its process (its lineage is
/// known when it is judged). 2 MiB: thousands of processes between two reads.
#[map]
pub(crate) static PROCS: RingBuf = RingBuf::pinned(2 << 20, 0);

/// Reserves room for an event in its ring: `DECISIONS` for a decision, else
/// `EVENTS`; a full ring is counted (`LOST_DECISIONS` or `LOST`).
#[inline(always)]
pub(crate) fn reserve<T: 'static>(decision: bool) -> Option<RingBufEntry<T>> {
    let entry = if decision {
        DECISIONS.reserve::<T>(0)
    } else {
        EVENTS.reserve::<T>(0)
    };
    if entry.is_none() {
        count(if decision {
            counter::LOST_DECISIONS
        } else {
            counter::LOST
        });
    }
    entry
}

/// Submit flags for an event: a decision (or an exec, which userspace rules judge)
/// wakes the daemon at once; other events do not, until a batch has piled up: a wakeup
/// per event would cost the traced process more than the event itself. The daemon
/// also drains on a short timer, which bounds their delay.
#[inline(always)]
pub(crate) fn wakeup(urgent: bool) -> u64 {
    const BPF_RB_AVAIL_DATA: u64 = 0;
    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    const BATCH_BYTES: u64 = 256 << 10;
    if urgent {
        0
    } else if EVENTS.query(BPF_RB_AVAIL_DATA) >= BATCH_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Per-CPU counters, indexed by `openclaw_guard_common::counter`.
#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(counter::COUNT, 0);

/// Tracepoint tier: the user's path pointer and the open flags of a tracked thread's
/// open in flight, from the syscall's entry to its exit (keyed by pid_tgid). LRU: an
/// entry whose exit never came (the thread died in the syscall) ages out.
#[map]
pub(crate) static OPEN_PATHS: LruHashMap<u64, [u64; 2]> = LruHashMap::pinned(8192, 0);

/// Processes of the OpenClaw gateways' trees, keyed by tgid.
#[map]
pub(crate) static TRACKED: HashMap<u32, TrackedProc> = HashMap::pinned(65536, 0);

/// Protected files and directories by identity (a directory protects what is inside
/// it, a few levels down).
#[map]
pub(crate) static PROTECTED_INODES: HashMap<InodeKey, RuleAction> =
    HashMap::pinned(openclaw_guard_common::PROTECTED_MAX, 0);

/// Protected names in directories: whatever inode appears under that name (an editor's
/// or `openclaw`'s write-temp-then-rename replacement) is protected from its first open.
#[map]
pub(crate) static PROTECTED_NAMES: HashMap<NameKey, RuleAction> =
    HashMap::pinned(openclaw_guard_common::PROTECTED_MAX, 0);

/// The guard's own files (binary, policy, state, pins) by identity, with
/// `tamper::guarded` flags: the tree may not change them.
#[map]
pub(crate) static GUARD_FILES: HashMap<InodeKey, u32> = HashMap::pinned(64, 0);

/// Executables the tree may not run, by identity.
#[map]
pub(crate) static EXEC_DENY: HashMap<InodeKey, RuleAction> = HashMap::pinned(1024, 0);

/// Egress rules by destination prefix.
#[map]
pub(crate) static EGRESS_V4: LpmTrie<[u8; 4], EgressRule> = LpmTrie::pinned(16384, 0);
#[map]
pub(crate) static EGRESS_V6: LpmTrie<[u8; 16], EgressRule> = LpmTrie::pinned(16384, 0);

/// Egress rules by destination name ([`openclaw_guard_common::dns::name_hash`]):
/// an address learned under a name here is judged by this entry.
#[map]
pub(crate) static EGRESS_NAMES: HashMap<u64, EgressRule> = HashMap::pinned(4096, 0);

/// What the trusted resolvers' answers taught: address (IPv4 mapped) to name, until
/// the answer's TTL runs out. LRU: a flood of answers evicts the oldest, which then
/// count as unnamed (refused where only a name allowed them), never wrongly allowed.
#[map]
pub(crate) static DNS_ADDRS: LruHashMap<[u8; 16], DnsAddr> = LruHashMap::pinned(16384, 0);

/// The DNS sensor's event under construction (too large for the stack).
#[map]
pub(crate) static DNS_SCRATCH: PerCpuArray<openclaw_guard_common::dns::DnsEvent> =
    PerCpuArray::with_max_entries(1, 0);

/// The resolvers the gateways use (IPv4 mapped): only their answers are learned.
#[map]
pub(crate) static RESOLVERS: HashMap<[u8; 16], u32> = HashMap::pinned(64, 0);

/// Kill rules' current one-second windows, by rule id (`Settings.kill_limit`).
#[map]
pub(crate) static KILL_RATE: HashMap<u32, KillWindow> = HashMap::pinned(1024, 0);

/// Global switches (index 0).
#[map]
pub(crate) static SETTINGS: Array<Settings> = Array::pinned(1, 0);

/// Executable names (`comm` after exec, NUL-padded) whose execs are reported even from
/// untracked processes, so that userspace can recognise new gateways (node, openclaw).
#[map]
pub(crate) static CANDIDATE_COMMS: HashMap<[u8; 16], u8> = HashMap::pinned(64, 0);

/// cgroup ids of gateway units (`openclaw-gateway*.service`, `--cgroup`): a process
/// exec'ing inside one becomes a tracked root at once.
#[map]
pub(crate) static GATEWAY_CGROUPS: HashMap<u64, u8> = HashMap::pinned(256, 0);

/// Struct member offsets of the running kernel, written by the daemon from BTF at load.
#[unsafe(no_mangle)]
// SAFETY: all-zero is a valid KernelOffsets (plain integers); the loader replaces it.
static OFFSETS: KernelOffsets = unsafe { core::mem::zeroed() };

#[inline(always)]
pub(crate) fn offsets() -> KernelOffsets {
    // SAFETY: a plain read of a global; volatile so the compiler does not fold the
    // zero initialiser the loader replaces.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

#[inline(always)]
pub(crate) fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}

/// The tracked entry of a tgid, if the process belongs to a gateway's tree.
#[inline(always)]
pub(crate) fn tracked(tgid: u32) -> Option<TrackedProc> {
    // SAFETY: the value is copied out at once.
    unsafe { TRACKED.get(tgid) }.copied()
}

/// The current process, if it is in a tracked tree.
#[inline(always)]
pub(crate) fn current_tracked() -> Option<TrackedProc> {
    tracked((bpf_get_current_pid_tgid() >> 32) as u32)
}

/// Header for an event about the current task.
#[inline(always)]
pub(crate) fn header(kind: u32, proc_: &TrackedProc) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    EventHeader {
        // SAFETY: helper without preconditions.
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
        kind,
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        root: proc_.root,
        depth: proc_.depth,
        _pad: 0,
        // SAFETY: helper without preconditions.
        cgroup_id: unsafe { aya_ebpf::helpers::bpf_get_current_cgroup_id() },
    }
}

/// What a matched rule does here: `--mode monitor` and a not-yet-enforcing daemon turn
/// blocks and kills into alerts (the decision is still reported).
#[inline(always)]
pub(crate) fn effective(act: u32) -> u32 {
    let s = SETTINGS.get(0).copied().unwrap_or_default();
    if (act == action::DENY || act == action::KILL) && (s.monitor != 0 || s.enforce == 0) {
        action::ALERT
    } else {
        act
    }
}

/// A matched rule where the hook can refuse (LSM): the action after the mode, and after
/// the kill rate (`Settings.kill_limit`), with its errno. A kill rule firing faster than
/// the limit denies instead of killing, reported as `KILL_LIMITED`.
#[inline(always)]
pub(crate) fn decide(rule: RuleAction) -> (u32, i32) {
    let act = effective(rule.action);
    if act == action::KILL && over_kill_limit(rule.rule) {
        return (action::KILL_LIMITED, apply(action::DENY));
    }
    (act, apply(act))
}

/// Counts a kill of `rule` in its one-second window; true past the limit.
#[inline(always)]
fn over_kill_limit(rule: u32) -> bool {
    let limit = SETTINGS.get(0).map_or(0, |s| s.kill_limit);
    if limit == 0 {
        return false;
    }
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    match KILL_RATE.get_ptr_mut(rule) {
        // Racy across CPUs by a few kills at most: a rate, not an exact count.
        // SAFETY: a map value of this type, updated in place.
        Some(w) => unsafe {
            if now.wrapping_sub((*w).start_ns) >= 1_000_000_000 {
                (*w).start_ns = now;
                (*w).kills = 1;
                false
            } else {
                (*w).kills += 1;
                (*w).kills > u64::from(limit)
            }
        },
        None => {
            let w = KillWindow {
                start_ns: now,
                kills: 1,
            };
            let _ = KILL_RATE.insert(rule, w, 0);
            false
        }
    }
}

/// An LSM program's return value, provably in [-4095, 0] for the verifier. LLVM may
/// compute a 0-or-errno result as a negation, which the verifier does not bound
/// ("R0 has unknown scalar value" at exit, seen on 6.12); the volatile read keeps
/// LLVM from folding the range checks that give it the bounds.
#[inline(always)]
pub(crate) fn lsm_ret(ret: i32) -> i32 {
    // SAFETY: reads a local.
    let v = unsafe { core::ptr::read_volatile(&ret) };
    if (-4095..0).contains(&v) {
        v
    } else {
        0
    }
}

/// Applies a decision to the current task: the errno to return (0 to allow), after
/// sending SIGKILL for a kill.
#[inline(always)]
pub(crate) fn apply(act: u32) -> i32 {
    const EPERM: i32 = 1;
    const SIGKILL: u32 = 9;
    match act {
        action::DENY => -EPERM,
        action::KILL => {
            // SAFETY: signals the current task; allowed in LSM and tracing programs.
            unsafe { aya_ebpf::helpers::bpf_send_signal(SIGKILL) };
            -EPERM
        }
        _ => 0,
    }
}
