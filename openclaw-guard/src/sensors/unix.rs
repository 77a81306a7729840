//! The unix-socket sensor (openclaw-guard-ebpf/src/unix.rs): connects and sends to
//! unix sockets bound at protected paths or the delegation servers' sockets.

/// Its BPF LSM programs (program, hook).
pub const LSM_PROGRAMS: &[(&str, &str)] = &[
    ("unix_stream_connect", "unix_stream_connect"),
    ("unix_may_send", "unix_may_send"),
];

/// Without BPF LSM: the connect syscall's entry (the address) and exit (the check).
pub const FALLBACK_TRACEPOINTS: &[&str] = &["sys_enter_connect", "sys_exit_connect"];
