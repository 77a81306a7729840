//! Folding of identical events: a thread that opens the same file, or sends to the
//! same destination, over and over within `Settings.fold_ms` is reported once in full,
//! then by a count (`kind::REPEAT`) when it does something else, when the window ends,
//! at exec and at exit. Refusals fold too (a loop of denied reads would otherwise fill
//! the decisions ring and delay the alerts that matter): the first is sent at once,
//! the repeats, each still checked and refused, are counted and their count travels
//! on the decisions ring. Kills and execs are never folded. Keyed by thread, so each
//! entry has one writer at a time (no lost counts across CPUs).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::map,
    maps::HashMap,
};
use openclaw_guard_common::{
    action, counter, kind,
    repeat::{FoldState, RepeatEvent},
    TrackedProc,
};

use crate::maps::{count, header, reserve, wakeup, SETTINGS};

/// The current window of each thread of the tracked trees. A full map only means no
/// folding for new threads: their events are sent one by one.
#[map]
pub(crate) static FOLD: HashMap<u32, FoldState> = HashMap::pinned(32768, 0);

/// The fold window (ns) and policy generation now; `None` when folding is off.
#[inline(always)]
fn settings() -> Option<(u64, u32)> {
    let s = SETTINGS.get(0)?;
    let window = u64::from(s.fold_ms) * 1_000_000;
    (window != 0).then_some((window, s.policy_gen))
}

/// The decision each event of a window got: action, rule, errno.
#[derive(Clone, Copy)]
pub(crate) struct Decided {
    pub action: u32,
    pub rule: u32,
    pub ret: i32,
}

impl Decided {
    /// No decision: an ordinary event.
    pub(crate) const NONE: Decided = Decided {
        action: action::NONE,
        rule: 0,
        ret: 0,
    };

    /// Whether events with this decision may fold: a kill is rare and ends its
    /// process; each is reported.
    #[inline(always)]
    pub(crate) fn folds(&self) -> bool {
        self.action != action::KILL
    }
}

/// Counts the event into the thread's window if it is one more like the window's first
/// (same kind, operation, signature, decision and policy, inside the window).
///
/// # Safety
/// `st` is the current thread's own `FOLD` entry.
#[inline(always)]
unsafe fn count_in(
    st: *mut FoldState,
    key: (u32, u32, [u64; 4]),
    d: Decided,
    gen: u32,
    window: u64,
) -> bool {
    let (kind, op, sig) = key;
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: the caller's entry, updated in place (one writer: its thread).
    unsafe {
        if (*st).kind == kind
            && (*st).op == op
            && (*st).sig == sig
            && (*st).policy_gen == gen
            && (*st).action == d.action
            && (*st).rule == d.rule
            && (*st).ret == d.ret
            && now.wrapping_sub((*st).start_ns) < window
        {
            (*st).count += 1;
            (*st).last_ns = now;
            return true;
        }
    }
    false
}

/// True when this event repeats the thread's open window of allowed events (same kind,
/// operation and signature, under the same policy): it was counted, and the caller can
/// stop here, before its checks. This is the same thread reopening the same inode the
/// same way within the window, which grants nothing keeping the first fd open would not
/// have. A window of refusals never matches here (its `action` is not `NONE`): refused
/// repeats are checked and refused one by one. False: check, then [`fold`].
#[inline(always)]
pub(crate) fn repeat(kind: u32, op: u32, sig: [u64; 4]) -> bool {
    let Some((window, gen)) = settings() else {
        return false;
    };
    let pid = bpf_get_current_pid_tgid() as u32;
    match FOLD.get_ptr_mut(pid) {
        // SAFETY: this thread's own entry.
        Some(st) => unsafe { count_in(st, (kind, op, sig), Decided::NONE, gen, window) },
        None => false,
    }
}

/// True when this event (decided `d`, after its checks) is one more like the thread's
/// last one, counted instead of sent; false when it is to be sent (it then starts a
/// new window). The caller applies the decision either way.
#[inline(always)]
pub(crate) fn fold(proc_: &TrackedProc, kind: u32, op: u32, sig: [u64; 4], d: Decided) -> bool {
    if !d.folds() {
        return false;
    }
    let Some((window, gen)) = settings() else {
        return false;
    };
    let pid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let fresh = FoldState {
        sig,
        kind,
        op,
        count: 0,
        root: proc_.root,
        depth: proc_.depth,
        policy_gen: gen,
        start_ns: now,
        last_ns: now,
        action: d.action,
        rule: d.rule,
        ret: d.ret,
        _pad: 0,
    };
    match FOLD.get_ptr_mut(pid) {
        // SAFETY: this thread's own entry, updated in place.
        Some(st) => unsafe {
            if count_in(st, (kind, op, sig), d, gen, window) {
                return true;
            }
            if (*st).count > 0 {
                send(&*st);
            }
            *st = fresh;
            false
        },
        None => {
            let _ = FOLD.insert(pid, fresh, 0);
            false
        }
    }
}

/// Sends what a thread has folded and forgets its window (exec, exit).
#[inline(always)]
pub(crate) fn flush(pid: u32) {
    // SAFETY: the value is copied out at once.
    let Some(st) = (unsafe { FOLD.get(pid) }).copied() else {
        return;
    };
    if st.count > 0 {
        send(&st);
    }
    let _ = FOLD.remove(pid);
}

#[inline(always)]
fn send(st: &FoldState) {
    let proc_ = TrackedProc {
        root: st.root,
        depth: st.depth,
    };
    // Counted refusals are decisions: they travel, and are recorded, as such.
    let decision = st.action != action::NONE;
    if let Some(mut e) = reserve::<RepeatEvent>(decision) {
        let ev = e.as_mut_ptr();
        // SAFETY: reserved ring-buffer memory of the right size.
        unsafe {
            (*ev).header = header(kind::REPEAT, &proc_);
            (*ev).state = *st;
        }
        e.submit(wakeup(decision));
        count(counter::EMITTED);
    }
}
