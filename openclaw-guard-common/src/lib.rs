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
/// Bytes kept of a process's argument block (NUL-separated).
pub const ARGS_LEN: usize = 512;
/// Bytes kept of a socket address (`struct sockaddr_storage` is 128).
pub const SOCKADDR_LEN: usize = 112;

/// Names of the maps and globals, used by both sides.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const DECISIONS: &str = "DECISIONS";
    pub const PROCS: &str = "PROCS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const TRACKED: &str = "TRACKED";
    pub const PROTECTED_INODES: &str = "PROTECTED_INODES";
    pub const OFFSETS: &str = "OFFSETS";
    pub const GUARD_TGID: &str = "GUARD_TGID";
    pub const CANDIDATE_COMMS: &str = "CANDIDATE_COMMS";
    pub const GATEWAY_CGROUPS: &str = "GATEWAY_CGROUPS";
    pub const PROTECTED_NAMES: &str = "PROTECTED_NAMES";
    pub const EGRESS_V4: &str = "EGRESS_V4";
    pub const EGRESS_V6: &str = "EGRESS_V6";
    pub const SETTINGS: &str = "SETTINGS";
    pub const EXEC_DENY: &str = "EXEC_DENY";
    pub const GUARD_FILES: &str = "GUARD_FILES";
    pub const FOLD: &str = "FOLD";
    pub const CARRIERS: &str = "CARRIERS";
    pub const ENV_HOLD: &str = "ENV_HOLD";
    pub const ENV_PENDING: &str = "ENV_PENDING";
    pub const ENV_ALIVE: &str = "ENV_ALIVE";
    pub const DNS_ADDRS: &str = "DNS_ADDRS";
    pub const EGRESS_NAMES: &str = "EGRESS_NAMES";
    pub const RESOLVERS: &str = "RESOLVERS";
}

/// A rule's kernel-side verdict: which rule, and what to do ([`action`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleAction {
    pub rule: u32,
    pub action: u32,
}
const _: () = assert!(core::mem::size_of::<RuleAction>() == 8);

/// Entries of each protected-file map (`PROTECTED_INODES`, `PROTECTED_NAMES`): the
/// daemon keeps a plan within it (the policy's first paths first) and reports the rest.
pub const PROTECTED_MAX: u32 = 4096;

/// Bytes of a file name kept in [`NameKey`]; longer protected names are refused by the
/// daemon (and reported), never silently cut.
pub const NAME_LEN: usize = 32;

/// A name inside a directory: protects whatever inode is (or later appears) there.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NameKey {
    pub dir: InodeKey,
    pub name: [u8; NAME_LEN],
}
const _: () = assert!(core::mem::size_of::<NameKey>() == 48);

/// The egress LPM tries are keyed by prefix length + address bytes in network order
/// (aya's `lpm_trie::Key<[u8; 4]>` / `Key<[u8; 16]>`); IPv4-mapped IPv6 destinations
/// are looked up in the IPv4 trie.
/// Port ranges an egress entry holds at most (a prefix has one LPM slot).
pub const EGRESS_PORT_RANGES: usize = 4;

/// Value of an egress LPM entry (one prefix) or `EGRESS_NAMES` entry (one name): the
/// listed ports get the entry's verdict; the others are allowed
/// ([`egress_flags::REST_ALLOW`]) or judged by the next less specific prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressRule {
    pub rule: u32,
    /// [`action`] for a deny entry; ignored for allow entries.
    pub action: u32,
    /// [`egress_flags`], and the entry's prefix length (for the next lookup).
    pub flags: u32,
    /// Ranges in use; 0 means every port.
    pub nports: u32,
    /// `lo << 16 | hi`, inclusive.
    pub ports: [u32; EGRESS_PORT_RANGES],
}
const _: () = assert!(core::mem::size_of::<EgressRule>() == 32);

/// [`EgressRule::flags`].
pub mod egress_flags {
    /// An allow entry (else deny) for its listed ports.
    pub const ALLOW: u32 = 1;
    /// Ports the entry does not list are allowed (another rule allows the whole
    /// prefix); else the next less specific prefix judges them.
    pub const REST_ALLOW: u32 = 2;
    /// The prefix length sits in bits 8..16.
    pub const PREFIX_SHIFT: u32 = 8;

    /// The prefix length an entry was written for.
    #[inline(always)]
    pub fn prefix(flags: u32) -> u32 {
        (flags >> PREFIX_SHIFT) & 0xff
    }
}

/// Global switches the daemon sets (one-entry array `SETTINGS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// 1: decide and report, never block or kill (`--mode monitor`).
    pub monitor: u32,
    /// 1: the pinned programs enforce (0 while the daemon has not finished loading
    /// the policy, or in `--record-only`).
    pub enforce: u32,
    /// 1: some egress rule blocks or kills; on the cgroup tier raw and ICMP sockets are
    /// then refused to the tree (their sends are invisible to sendmsg4/6).
    pub egress_blocks: u32,
    /// The blocking egress rule reported when a raw socket is refused.
    pub egress_rule: u32,
    /// The daemon's tgid: the tree may not signal, ptrace it (self-protection).
    pub guard_tgid: u32,
    /// Kills per rule per second; past it, the rule denies without killing (never
    /// less: a flood must not switch enforcement off). 0: no limit.
    pub kill_limit: u32,
    /// A thread's identical ordinary events (same open, same destination) within this
    /// many ms of the first are counted, not sent one by one (`repeat`). 0: off.
    pub fold_ms: u32,
    /// Changes with every policy the daemon applies: a fold window opened under
    /// another policy lets nothing skip the checks.
    pub policy_gen: u32,
    /// 1: the `env` rule blocks: children of carriers are held at exec for the
    /// daemon to blank their secret variables, and the tree may not read carriers'
    /// memory. Cleared by a daemon that stops (nothing would resume the held).
    pub env_hold: u32,
    /// The `env` rule's id, for its decisions.
    pub env_rule: u32,
}

/// Event kinds (the `kind` field of [`EventHeader`]).
pub mod kind {
    pub const EXEC: u32 = 1;
    pub const FILE_OPEN: u32 = 2;
    pub const FORK: u32 = 3;
    pub const EXIT: u32 = 4;
    /// Network operations: see `net::op` for which.
    pub const NET: u32 = 5;
    /// An attempt by the tree on the guard itself: see `tamper::op`.
    pub const TAMPER: u32 = 6;
    /// Identical ordinary events folded into a count: see `repeat`.
    pub const REPEAT: u32 = 7;
    /// A DNS answer from a trusted resolver: see `dns`.
    pub const DNS: u32 = 8;
}

/// Indexes into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Events written into the ring buffer.
    pub const EMITTED: u32 = 0;
    /// Events that found the ring buffer full and were dropped (counted, never hidden).
    pub const LOST: u32 = 1;
    /// Forks from the tracked tree that found `TRACKED` full.
    pub const TRACK_FULL: u32 = 2;
    /// Decisions that found their own ring buffer full (`DECISIONS`).
    pub const LOST_DECISIONS: u32 = 3;
    /// Execs held for the `env` rule (SIGSTOP at exec; the daemon blanks and resumes).
    pub const ENV_HELD: u32 = 4;
    /// Execs that had to be held but could not be (event ring full, daemon not
    /// alive): killed instead (nothing would resume them, and they carry the secrets).
    pub const ENV_HOLD_FAILED: u32 = 5;
    pub const COUNT: u32 = 6;
}

/// Flag bits carried in event `flags` fields.
pub mod flags {
    /// A variable-length field was longer than its buffer and was cut.
    pub const TRUNCATED: u32 = 1;
    /// The argument block was longer than its buffer and was cut.
    pub const ARGS_TRUNCATED: u32 = 2;
    /// Exec events: the new image was stopped before its first instruction (SIGSTOP)
    /// for the `env` rule; the daemon blanks its secret variables and resumes it.
    pub const ENV_HELD: u32 = 4;
}

/// `CARRIERS` values: what a process of the tree that keeps the gateway's secret
/// environment is (set by the daemon from its role).
pub mod carrier {
    /// Its children are held at their first exec (the gateway, its spawn broker).
    pub const SPAWNS: u32 = 1;
    /// The tree may not read its environment or memory (every carrier).
    pub const SECRET: u32 = 2;
}

/// Decision actions, in the `action` field of decision-carrying events.
pub mod action {
    pub const NONE: u32 = 0;
    pub const ALERT: u32 = 1;
    pub const DENY: u32 = 2;
    pub const KILL: u32 = 3;
    /// A kill rule over its kill rate: denied, not killed.
    pub const KILL_LIMITED: u32 = 4;
}

/// Identical events of one thread, folded (`kind::REPEAT`).
pub mod repeat {
    use super::EventHeader;

    /// What identifies "the same event": the kind and operation, `sig` (file opens:
    /// inode, dev, open flags; net: the sockaddr's first 32 bytes), and the decision
    /// (`action` `NONE` for an ordinary event). A window of refusals is never taken for
    /// one of allowed events: only the latter lets a repeat skip the checks.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct FoldState {
        pub sig: [u64; 4],
        pub kind: u32,
        pub op: u32,
        /// Events folded since the last one sent.
        pub count: u32,
        pub root: u32,
        pub depth: u32,
        /// `Settings.policy_gen` when the window opened.
        pub policy_gen: u32,
        /// The window's first event (sent in full).
        pub start_ns: u64,
        pub last_ns: u64,
        /// The decision every event of the window got (`action::NONE`: none).
        pub action: u32,
        pub rule: u32,
        pub ret: i32,
        pub _pad: u32,
    }
    const _: () = assert!(core::mem::size_of::<FoldState>() == 88);

    /// `count` events like the one sent at `start_ns` happened up to `last_ns` and were
    /// not sent one by one. Sent when the thread does something else, when the window
    /// ends, at exec and at exit.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct RepeatEvent {
        pub header: EventHeader,
        pub state: FoldState,
    }
    const _: () = assert!(core::mem::size_of::<RepeatEvent>() == 40 + 88);
}

/// A kill rule's current one-second window (`KILL_RATE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KillWindow {
    pub start_ns: u64,
    pub kills: u64,
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
    /// `file.f_path`
    pub file_f_path: u32,
    /// `task_struct.exit_code`
    pub task_exit_code: u32,
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `mm_struct.arg_start` (inside an anonymous struct on some kernels)
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end`
    pub mm_arg_end: u32,
    /// `socket.type`
    pub socket_type: u32,
    /// `socket.sk`
    pub socket_sk: u32,
    /// `sock.sk_protocol`
    pub sock_sk_protocol: u32,
    /// `msghdr.msg_name`
    pub msghdr_msg_name: u32,
    /// `msghdr.msg_namelen`
    pub msghdr_msg_namelen: u32,
    /// `path.dentry`
    pub path_dentry: u32,
    /// `dentry.d_parent`
    pub dentry_d_parent: u32,
    /// `dentry.d_inode`
    pub dentry_d_inode: u32,
    /// `dentry.d_name.name` (the pointer inside the `qstr`)
    pub dentry_d_name_name: u32,
    /// `task_struct.files`
    pub task_files: u32,
    /// `files_struct.fdt`
    pub files_fdt: u32,
    /// `fdtable.fd`
    pub fdtable_fd: u32,
    /// `vfsmount.mnt_sb`
    pub vfsmount_mnt_sb: u32,
    /// `inode.i_generation`
    pub inode_i_generation: u32,
    /// `task_struct.signal`
    pub task_signal: u32,
    /// `signal_struct.live` (an `atomic_t`: live threads of the group)
    pub signal_live: u32,
    /// `super_block.s_magic` (procfs is told by its magic, whatever its mount)
    pub sb_s_magic: u32,
    /// `file.private_data` (the `mm_struct` of a `/proc/PID/environ` or `mem` file)
    pub file_private_data: u32,
    /// `mm_struct.owner` ([`OFFSET_ABSENT`] on a kernel without it: no memcg)
    pub mm_owner: u32,
    /// `unix_sock.path` (the bound socket file), `.peer`, `.addr`
    pub unix_sock_path: u32,
    pub unix_sock_peer: u32,
    pub unix_sock_addr: u32,
    /// `unix_address.name` (a `sockaddr_un`)
    pub unix_address_name: u32,
    /// `sock.__sk_common.skc_family`
    pub sock_family: u32,
    /// `inode.i_mode`
    pub inode_i_mode: u32,
    /// `sock.sk_peer_pid` (a listening unix socket's: who called listen)
    pub sock_sk_peer_pid: u32,
    /// `pid.numbers` (`numbers[0].nr`: the pid in the initial namespace)
    pub pid_numbers: u32,
    /// `task_struct.cred`, `cred.user_ns`, `user_namespace.level` (0: the initial user
    /// namespace, where a mount or a control acts on the whole host)
    pub task_cred: u32,
    pub cred_user_ns: u32,
    pub user_ns_level: u32,
}
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 176);

/// A [`KernelOffsets`] member the running kernel does not have.
pub const OFFSET_ABSENT: u32 = u32::MAX;

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
    use super::{EventHeader, ARGS_LEN, COMM_LEN, PATH_LEN};

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
        /// Bytes of `args` in use.
        pub args_len: u32,
        /// The socket family of fds 0, 1, 2 as the new image starts (byte `i`: fd `i`,
        /// 0 when not a socket), with [`STDIO_KNOWN`] set when the kernel read them.
        pub stdio_families: u32,
        /// argv as the new image sees it: NUL-separated, cut at [`ARGS_LEN`] (flagged
        /// with [`super::flags::ARGS_TRUNCATED`]).
        pub args: [u8; ARGS_LEN],
    }
    const _: () =
        assert!(core::mem::size_of::<ExecEvent>() == 40 + 32 + 16 + PATH_LEN + 8 + ARGS_LEN);

    /// [`ExecEvent::stdio_families`]: the families were read.
    pub const STDIO_KNOWN: u32 = 1 << 24;
}

/// The file-open sensor (`file_open` LSM hook).
pub mod file_open {
    use super::{EventHeader, PATH_LEN};

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
        /// Rule that decided, when `action` is not NONE.
        pub rule: u32,
        /// Bytes of `path` in use (0: the kernel could not resolve it).
        pub path_len: u32,
        /// [`op`]: open, hard link, rename.
        pub op: u32,
        pub _pad: u32,
        /// The path as the kernel resolved it (`bpf_d_path`), whatever name was opened.
        pub path: [u8; PATH_LEN],
    }
    const _: () = assert!(core::mem::size_of::<FileOpenEvent>() == 40 + 40 + PATH_LEN);

    /// What was done to the file.
    pub mod op {
        pub const OPEN: u32 = 0;
        /// A hard link made to it (`inode_link`).
        pub const LINK: u32 = 1;
        /// Renamed, or another file renamed over its name (`inode_rename`).
        pub const RENAME: u32 = 2;
        /// Opened for exec and refused by an exec rule (`bprm_check_security`).
        pub const EXEC: u32 = 3;
        /// A connect or send to the unix socket bound at the file (`unix_stream_connect`,
        /// `unix_may_send`; tracepoint tier: `connect`'s exit).
        pub const CONNECT: u32 = 4;
    }
}

/// Process lifecycle (`sched_process_fork`, `sched_process_exit`), for lineage.
pub mod lifecycle {
    use super::EventHeader;

    /// A tracked process forked a new process. The header is the parent's.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct ForkEvent {
        pub header: EventHeader,
        pub child_tgid: u32,
        pub child_depth: u32,
    }
    const _: () = assert!(core::mem::size_of::<ForkEvent>() == 48);

    /// A tracked process ended (its group leader exited).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct ExitEvent {
        pub header: EventHeader,
        /// `task->exit_code`: wait(2) status encoding.
        pub exit_code: u32,
        pub _pad: u32,
    }
    const _: () = assert!(core::mem::size_of::<ExitEvent>() == 48);
}

/// The network sensor: connect, send with a destination, bind.
pub mod net {
    use super::{EventHeader, SOCKADDR_LEN};

    /// Operations (`op` field).
    pub mod op {
        pub const CONNECT: u32 = 1;
        /// sendmsg/sendto with an explicit destination (UDP without connect, TCP Fast Open).
        pub const SENDMSG: u32 = 2;
        pub const BIND: u32 = 3;
        /// A socket refused at creation (raw/ICMP on the cgroup tier); no address.
        pub const SOCKET: u32 = 4;
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct NetEvent {
        pub header: EventHeader,
        pub op: u32,
        /// `socket->type` (SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, ...).
        pub sock_type: u32,
        /// `sk->sk_protocol` (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, ...).
        pub protocol: u32,
        /// Bytes of `sockaddr` copied.
        pub addr_len: u32,
        pub action: u32,
        pub ret: i32,
        pub rule: u32,
        /// The socket's own address family (`sk->sk_family`): the sockaddr's family
        /// field is the caller's word, and an IPv4 socket takes `AF_UNSPEC` for
        /// `AF_INET` on a send.
        pub sock_family: u32,
        /// [`crate::dns::name_hash`] of the name the destination address was learned
        /// under from a DNS answer, 0 if none.
        pub name: u64,
        /// The raw `struct sockaddr` the caller passed (family first), decoded in userspace.
        pub sockaddr: [u8; SOCKADDR_LEN],
    }
    const _: () = assert!(core::mem::size_of::<NetEvent>() == 40 + 40 + SOCKADDR_LEN);
}

/// Self-protection: the tree's attempts on the guard (BPF LSM `task_kill`,
/// `ptrace_access_check`, `bpf`).
pub mod tamper {
    use super::EventHeader;

    pub mod op {
        pub const SIGNAL: u32 = 1;
        pub const PTRACE: u32 = 2;
        pub const BPF: u32 = 3;
        /// Open for writing or truncating.
        pub const WRITE: u32 = 4;
        /// unlink or rmdir.
        pub const UNLINK: u32 = 5;
        pub const RENAME: u32 = 6;
        pub const LINK: u32 = 7;
        /// A new file or directory inside a guarded directory.
        pub const CREATE: u32 = 8;
        /// truncate(2) by path.
        pub const TRUNCATE: u32 = 9;
        /// Unmounting a guarded filesystem (bpffs holding the pins).
        pub const UMOUNT: u32 = 10;
        /// Reading a carrier's environment or memory (`/proc/PID/environ`, `mem`,
        /// ptrace, process_vm_readv, pidfd_getfd): the `env` rule.
        pub const PEEK_SECRETS: u32 = 11;
        /// A signal to a process held for the `env` rule (SIGCONT would let it run
        /// before its secrets are blanked).
        pub const SIGNAL_HELD: u32 = 12;
        /// A write to a kernel control that switches the guard's programs off or runs
        /// commands outside the tree (`ftrace_enabled`, `core_pattern`, tracefs, ...).
        pub const KNOB: u32 = 13;
        /// Loading kernel code or data: a module, a kexec image, a policy
        /// (`kernel_read_file`, `kernel_load_data`; `arg` is the kernel's id).
        pub const KERNEL_LOAD: u32 = 14;
        /// Scheduling class, nice value or I/O priority of the guard changed
        /// (`task_setscheduler`, `task_setnice`, `task_setioprio`): starving it.
        pub const SCHED: u32 = 15;
        /// A mount or a mount move in the initial user namespace (`sb_mount`,
        /// `move_mount`): a mount over the guard's policy, state or binary.
        pub const MOUNT: u32 = 16;
        /// A resource limit of the guard changed (`task_setrlimit`, from `prlimit`):
        /// no fds, or a CPU limit that kills it. `arg` is the resource.
        pub const RLIMIT: u32 = 17;
    }

    /// What a `GUARD_FILES` entry guards (bit flags).
    pub mod guarded {
        /// The file itself: no write, truncate, unlink, rename or link.
        pub const FILE: u32 = 1;
        /// A directory: the same for everything up to four levels inside it, and no
        /// new entries in it.
        pub const DIR: u32 = 2;
        /// A filesystem (key `ino` 0, `dev` its `s_dev`): no unmount.
        pub const FS: u32 = 4;
    }

    /// Rule id of the built-in self-protection rule.
    pub const RULE: u32 = 2;

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct TamperEvent {
        pub header: EventHeader,
        pub op: u32,
        /// Target tgid (signal, ptrace) or `bpf()` command.
        pub target: u32,
        /// Signal number (signal), ptrace mode, or 0.
        pub arg: u32,
        pub action: u32,
        pub ret: i32,
        /// File operations: the guarded file, directory or filesystem that matched.
        pub dev: u32,
        pub ino: u64,
        /// File operations: the name of the entry operated on (NUL-padded).
        pub name: [u8; super::NAME_LEN],
        /// The rule: [`RULE`], or the `env` rule for its operations.
        pub rule: u32,
        pub _pad: u32,
    }
    const _: () = assert!(core::mem::size_of::<TamperEvent>() == 40 + 32 + super::NAME_LEN + 8);
}

/// The DNS sensor: answers from the resolvers the gateways use, read as they reach a
/// socket (cgroup skb ingress), teach the kernel which addresses a name stands for, so
/// that egress rules can name hosts and follow their addresses as they change.
pub mod dns {
    use super::EventHeader;

    /// Wire-format bytes kept of the question name (labels with their length bytes).
    pub const QNAME_LEN: usize = 128;
    /// Addresses of one answer sent to userspace (all of them are learned).
    pub const EVENT_ADDRS: usize = 4;
    /// Answer records read per response.
    pub const MAX_ANSWERS: u32 = 8;
    /// A learned address is trusted for its TTL, but not less than this: a TTL of 0
    /// would otherwise expire before the caller's connect.
    pub const MIN_TTL_S: u32 = 5;
    /// Nor longer than this (a forged day-long TTL would pin an address).
    pub const MAX_TTL_S: u32 = 3600;

    /// `DNS_ADDRS` value: the name an address was learned under, until when.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct DnsAddr {
        pub name: u64,
        /// `bpf_ktime_get_boot_ns` after which the address no longer stands for it.
        pub expires_ns: u64,
    }
    const _: () = assert!(core::mem::size_of::<DnsAddr>() == 16);

    /// One answer learned (userspace keeps the name's text for the events).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct DnsEvent {
        pub header: EventHeader,
        pub name: u64,
        pub ttl: u32,
        /// Addresses learned (only the first [`EVENT_ADDRS`] are in `addrs`).
        pub naddrs: u32,
        /// The resolver that answered (IPv4 as `::ffff:a.b.c.d`).
        pub resolver: [u8; 16],
        /// IPv4 as `::ffff:a.b.c.d`.
        pub addrs: [[u8; 16]; EVENT_ADDRS],
        /// The question name in wire format (length-prefixed labels).
        pub qname: [u8; QNAME_LEN],
    }
    const _: () =
        assert!(core::mem::size_of::<DnsEvent>() == 40 + 16 + 16 + 16 * EVENT_ADDRS + QNAME_LEN);

    /// FNV-1a, 64-bit: names are compared by this hash in the kernel.
    pub const HASH_INIT: u64 = 0xcbf2_9ce4_8422_2325;

    /// One byte of a name in wire form (length bytes and labels), ASCII case folded
    /// (length bytes are below 64: folding leaves them alone).
    #[inline(always)]
    pub fn hash_step(h: u64, b: u8) -> u64 {
        (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3)
    }

    /// The hash of a dotted name (`api.example.com`; a trailing dot is ignored) as the
    /// kernel computes it from the question: over its wire form up to, not including,
    /// the root byte (`\x03api\x07example\x03com`).
    pub fn name_hash(name: &str) -> u64 {
        let name = name.trim_end_matches('.');
        if name.is_empty() {
            return HASH_INIT;
        }
        name.split('.').fold(HASH_INIT, |h, label| {
            let h = hash_step(h, label.len().min(255) as u8);
            label.bytes().fold(h, hash_step)
        })
    }

    /// `::ffff:a.b.c.d`: IPv4 addresses are kept in the IPv6 form.
    #[inline(always)]
    pub fn mapped(a: [u8; 4]) -> [u8; 16] {
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
        ]
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are repr(C), made only of integers, with no padding.
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::TrackedProc {}
    unsafe impl aya::Pod for super::RuleAction {}
    unsafe impl aya::Pod for super::NameKey {}
    unsafe impl aya::Pod for super::EgressRule {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::dns::DnsAddr {}
}
