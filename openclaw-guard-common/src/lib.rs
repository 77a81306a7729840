//! The one event schema and map layout shared by the kernel programs and the daemon.
//!
//! Every wire struct is `#[repr(C)]`, has no `bool` and no implicit padding (explicit
//! `_pad` fields instead), and has a const size assertion, so that both sides agree
//! byte for byte. One module per sensor.
#![no_std]

/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;
/// Bytes kept of a path or file name; longer ones are cut and flagged.
pub const PATH_LEN: usize = 256;

/// Names of the maps and globals, used by both sides.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const TRACKED: &str = "TRACKED";
    pub const PROTECTED_INODES: &str = "PROTECTED_INODES";
    pub const OFFSETS: &str = "OFFSETS";
    pub const GUARD_TGID: &str = "GUARD_TGID";
}

/// Event kinds (the `kind` field of [`EventHeader`]).
pub mod kind {
    pub const EXEC: u32 = 1;
    pub const FILE_OPEN: u32 = 2;
    pub const FORK: u32 = 3;
    pub const EXIT: u32 = 4;
}

/// Indexes into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Events written into the ring buffer.
    pub const EMITTED: u32 = 0;
    /// Events that found the ring buffer full and were dropped (counted, never hidden).
    pub const LOST: u32 = 1;
    /// Forks from the tracked tree that found `TRACKED` full.
    pub const TRACK_FULL: u32 = 2;
    pub const COUNT: u32 = 4;
}

/// Flag bits carried in event `flags` fields.
pub mod flags {
    /// A variable-length field was longer than its buffer and was cut.
    pub const TRUNCATED: u32 = 1;
}

/// Decision actions, in the `action` field of decision-carrying events.
pub mod action {
    pub const NONE: u32 = 0;
    pub const ALERT: u32 = 1;
    pub const DENY: u32 = 2;
    pub const KILL: u32 = 3;
}

/// Byte offsets of the kernel struct members the programs read. aya-ebpf has no CO-RE
/// relocations and these move between kernels (6.1 -> 6.12), so the daemon reads them
/// from the running kernel's BTF and writes them into the `OFFSETS` global at load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `file.f_inode`
    pub file_f_inode: u32,
    /// `inode.i_ino`
    pub inode_i_ino: u32,
    /// `inode.i_sb`
    pub inode_i_sb: u32,
    /// `super_block.s_dev`
    pub sb_s_dev: u32,
    /// `linux_binprm.file`
    pub bprm_file: u32,
    /// `linux_binprm.filename`
    pub bprm_filename: u32,
    /// `file.f_flags`
    pub file_f_flags: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 40);

/// A file's identity as the kernel sees it. `dev` is the kernel's `s_dev` encoding
/// (`major << 20 | minor`), not `stat`'s `st_dev`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<InodeKey>() == 16);

impl InodeKey {
    pub const fn new(dev: u32, ino: u64) -> Self {
        Self { ino, dev, _pad: 0 }
    }
}

/// Converts the kernel's `s_dev` encoding to the major/minor pair.
pub const fn kernel_dev_major_minor(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & 0xf_ffff)
}

/// Converts a major/minor pair to the kernel's `s_dev` encoding.
pub const fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xf_ffff)
}

/// A process the kernel follows as part of an OpenClaw gateway's tree.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackedProc {
    /// tgid of the gateway this process descends from.
    pub root: u32,
    /// 0 for the gateway itself, 1 for its children, ...
    pub depth: u32,
}
const _: () = assert!(core::mem::size_of::<TrackedProc>() == 8);

/// Leads every event in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    /// `bpf_ktime_get_boot_ns` at the hook.
    pub ktime_ns: u64,
    pub kind: u32,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    /// Gateway tgid this process descends from; 0 if untracked.
    pub root: u32,
    pub depth: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 40);

/// The exec sensor (`sched_process_exec`).
pub mod exec {
    use super::{EventHeader, COMM_LEN, PATH_LEN};

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct ExecEvent {
        pub header: EventHeader,
        pub ppid: u32,
        pub uid: u32,
        pub gid: u32,
        /// [`super::flags`] bits.
        pub flags: u32,
        /// Identity of the executable the kernel loaded (kernel `s_dev` encoding).
        pub exe_dev: u32,
        pub filename_len: u32,
        pub exe_ino: u64,
        pub comm: [u8; COMM_LEN],
        pub filename: [u8; PATH_LEN],
    }
    const _: () = assert!(core::mem::size_of::<ExecEvent>() == 40 + 32 + 16 + PATH_LEN);
}

/// The file-open sensor (`file_open` LSM hook).
pub mod file_open {
    use super::EventHeader;

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct FileOpenEvent {
        pub header: EventHeader,
        pub ino: u64,
        pub dev: u32,
        /// `file->f_flags`
        pub flags: u32,
        /// [`super::action`] taken.
        pub action: u32,
        /// Negative errno returned to the caller, or 0.
        pub ret: i32,
    }
    const _: () = assert!(core::mem::size_of::<FileOpenEvent>() == 40 + 24);
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are repr(C), made only of integers, with no padding.
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::TrackedProc {}
}
