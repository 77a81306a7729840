//! Syscalls the tests need a tracked process to make and that no shell tool in the
//! guest makes: `openclaw-guard-integration helper <what> ...`, run inside the tree.

use std::{
    ffi::CString,
    io::Read as _,
    net::{TcpStream, UdpSocket},
    os::fd::FromRawFd as _,
};

pub(crate) fn main(args: &[String]) -> i32 {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let result = match arg(0) {
        "openat2" => openat2(arg(1)),
        "attrib-gateway" => attrib_gateway(arg(1), arg(2), &args[3..]),
        "attrib-report" => attrib_report(arg(1), arg(2)).map(|reply| println!("{reply}")),
        "opath-reopen" => opath_reopen(arg(1)),
        "open-loop" => open_loop(arg(1).parse().unwrap_or(0), arg(2)),
        "open-tally" => open_tally(arg(1).parse().unwrap_or(0), arg(2)),
        "connect" => TcpStream::connect((arg(1), arg(2).parse().unwrap_or(0))).map(drop),
        "noop" => Ok(()),
        "ptrace-attach" => ptrace_attach(arg(1).parse().unwrap_or(0)),
        "bpf-map-create" => bpf_map_create(),
        "loopback-roundtrip" => loopback_roundtrip(),
        "uring-open" => uring_open(arg(1)),
        "tfo-sendto" => tfo_sendto(arg(1), arg(2).parse().unwrap_or(0)),
        "raw-icmp" => raw_icmp(arg(1)),
        "packet-socket" => packet_socket(),
        "bind" => std::net::TcpListener::bind((arg(1), arg(2).parse().unwrap_or(0))).map(drop),
        "udp-sendto" => udp_sendto(arg(1), arg(2).parse().unwrap_or(0), 1),
        "udp-sendto-unspec" => udp_sendto_unspec(arg(1), arg(2).parse().unwrap_or(0)),
        "udp-loop" => udp_sendto(
            arg(2),
            arg(3).parse().unwrap_or(0),
            arg(1).parse().unwrap_or(0),
        ),
        "pty-exec" => pty_exec(&args[1..]),
        "leader-exit-read" => leader_exit_read(arg(1)),
        "thread-exec" => thread_exec(&args[1..]),
        "env-get" => {
            // `<unset>`, or the value (empty when blanked).
            println!(
                "{}",
                std::env::var(arg(1)).unwrap_or_else(|_| "<unset>".into())
            );
            Ok(())
        }
        "open-only" => std::fs::File::open(arg(1)).map(drop),
        "vm-readv" => vm_readv(arg(1).parse().unwrap_or(0), arg(2)),
        "unix-connect" => unix_connect(arg(1)),
        "unix-serve" => unix_serve(arg(1), arg(2)),
        "finit-module" => finit_module(arg(1)),
        "renice" => renice(arg(1).parse().unwrap_or(0)),
        "sched-idle" => sched_idle(arg(1).parse().unwrap_or(0)),
        "mount-tmpfs" => mount_tmpfs(arg(1)),
        "prlimit-nofile" => prlimit_nofile(arg(1).parse().unwrap_or(0)),
        other => Err(std::io::Error::other(format!("unknown helper {other:?}"))),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("helper {}: {e}", arg(0));
            // The errno, so scripts can tell EPERM (1) from other failures.
            e.raw_os_error().unwrap_or(100)
        }
    }
}

/// Lowers another process's fd limit to 64 (a guard left without fds is blind).
fn prlimit_nofile(pid: libc::pid_t) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    // SAFETY: prlimit with structs we own.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn cstr(path: &str) -> std::io::Result<CString> {
    CString::new(path).map_err(std::io::Error::other)
}

fn read_fd(fd: libc::c_int) -> std::io::Result<()> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a freshly opened fd we own.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    print!("{s}");
    Ok(())
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn openat2(path: &str) -> std::io::Result<()> {
    let p = cstr(path)?;
    let how = OpenHow {
        flags: libc::O_RDONLY as u64,
        mode: 0,
        resolve: 0,
    };
    // SAFETY: valid path and struct pointers for the syscall.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            p.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    read_fd(fd as libc::c_int)
}

fn opath_reopen(path: &str) -> std::io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: plain syscall with a valid path.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_PATH) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let again = cstr(&format!("/proc/self/fd/{fd}"))?;
    // SAFETY: as above.
    read_fd(unsafe { libc::open(again.as_ptr(), libc::O_RDONLY) })
}

fn open_loop(n: u64, path: &str) -> std::io::Result<()> {
    let p = cstr(path)?;
    for _ in 0..n {
        // SAFETY: plain syscalls with a valid path; the fd is closed at once.
        unsafe {
            let fd = libc::open(p.as_ptr(), libc::O_RDONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
        }
    }
    Ok(())
}

/// `n` opens of one file from one thread, whatever each returns; prints
/// `opened A denied D other O` (EPERM counts as denied).
fn open_tally(n: u64, path: &str) -> std::io::Result<()> {
    let p = cstr(path)?;
    let (mut opened, mut denied, mut other) = (0u64, 0u64, 0u64);
    for _ in 0..n {
        // SAFETY: plain syscalls with a valid path; the fd is closed at once.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY) };
        if fd >= 0 {
            opened += 1;
            // SAFETY: fd from open.
            unsafe { libc::close(fd) };
        } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
            denied += 1;
        } else {
            other += 1;
        }
    }
    println!("opened {opened} denied {denied} other {other}");
    Ok(())
}

/// `n` datagrams from one unconnected socket, each naming its destination.
fn udp_sendto(addr: &str, port: u16, n: u64) -> std::io::Result<()> {
    let bind = if addr.contains(':') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let s = UdpSocket::bind(bind)?;
    for _ in 0..n {
        s.send_to(b"ping", (addr, port))?;
    }
    Ok(())
}

/// A send on an IPv4 UDP socket to a sockaddr_in whose family field says AF_UNSPEC:
/// the kernel reads it as AF_INET and delivers it (family confusion).
fn udp_sendto_unspec(addr: &str, port: u16) -> std::io::Result<()> {
    let (mut ss, len, _) = sockaddr(addr, port)?;
    ss.ss_family = libc::AF_UNSPEC as u16;
    // SAFETY: plain socket calls on a socket this function owns; ss outlives them.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let rc = libc::sendto(
            fd,
            b"ping".as_ptr().cast(),
            4,
            0,
            &ss as *const _ as *const libc::sockaddr,
            len,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err);
        }
    }
    Ok(())
}

fn sockaddr(
    addr: &str,
    port: u16,
) -> std::io::Result<(libc::sockaddr_storage, libc::socklen_t, libc::c_int)> {
    let ip: std::net::IpAddr = addr.parse().map_err(std::io::Error::other)?;
    // SAFETY: zeroed sockaddr_storage is valid; the casts below write within it.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let (len, family) = match ip {
        std::net::IpAddr::V4(a) => {
            let sin = &mut ss as *mut _ as *mut libc::sockaddr_in;
            // SAFETY: sockaddr_storage is larger than sockaddr_in.
            unsafe {
                (*sin).sin_family = libc::AF_INET as u16;
                (*sin).sin_port = port.to_be();
                (*sin).sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            }
            (std::mem::size_of::<libc::sockaddr_in>(), libc::AF_INET)
        }
        std::net::IpAddr::V6(a) => {
            let sin6 = &mut ss as *mut _ as *mut libc::sockaddr_in6;
            // SAFETY: sockaddr_storage is larger than sockaddr_in6.
            unsafe {
                (*sin6).sin6_family = libc::AF_INET6 as u16;
                (*sin6).sin6_port = port.to_be();
                (*sin6).sin6_addr.s6_addr = a.octets();
            }
            (std::mem::size_of::<libc::sockaddr_in6>(), libc::AF_INET6)
        }
    };
    Ok((ss, len as libc::socklen_t, family))
}

/// TCP Fast Open: data and destination in one sendto, no connect() call.
fn tfo_sendto(addr: &str, port: u16) -> std::io::Result<()> {
    let (ss, len, family) = sockaddr(addr, port)?;
    // SAFETY: plain socket syscalls with valid buffers.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let r = libc::sendto(
            fd,
            b"x".as_ptr().cast(),
            1,
            libc::MSG_FASTOPEN,
            &ss as *const _ as *const libc::sockaddr,
            len,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if r < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// An ICMP echo request on a raw socket (root).
/// A packet socket: frames written with any source, past every socket hook.
fn packet_socket() -> std::io::Result<()> {
    // SAFETY: plain socket syscalls.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::close(fd);
    }
    Ok(())
}

fn raw_icmp(addr: &str) -> std::io::Result<()> {
    let (ss, len, family) = sockaddr(addr, 0)?;
    let proto = if family == libc::AF_INET {
        libc::IPPROTO_ICMP
    } else {
        libc::IPPROTO_ICMPV6
    };
    // Echo request, checksum filled for IPv4 (the kernel does ICMPv6's).
    let mut pkt = [
        if family == libc::AF_INET { 8u8 } else { 128u8 },
        0,
        0,
        0,
        0,
        1,
        0,
        1,
    ];
    if family == libc::AF_INET {
        let sum: u32 = pkt
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    // SAFETY: plain socket syscalls with valid buffers.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_RAW, proto);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let r = libc::sendto(
            fd,
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            &ss as *const _ as *const libc::sockaddr,
            len,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if r < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// An open submitted through io_uring (IORING_OP_OPENAT), which no syscall tracepoint
/// for open sees.
/// `leader-exit-read PATH`: the thread-group leader exits alone (the raw `exit`
/// syscall, as pthread_exit does); a second thread then reads PATH and prints it. The
/// process lives on without its leader: the guard must still follow it.
fn leader_exit_read(path: &str) -> std::io::Result<()> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                print!("{text}");
                std::process::exit(0)
            }
            Err(e) => {
                eprintln!("helper leader-exit-read: {e}");
                std::process::exit(e.raw_os_error().unwrap_or(100))
            }
        }
    });
    // SAFETY: ends only this thread; the other one owns everything it uses.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    unreachable!("the exit syscall returned")
}

/// `thread-exec PROGRAM ARGS...`: a thread that is not the leader execs; the kernel
/// ends the other threads, the leader among them, and the process goes on as PROGRAM.
fn thread_exec(argv: &[String]) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let argv = argv.to_vec();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::process::Command::new(&argv[0]).args(&argv[1..]).exec()
    });
    // Only an exec failure comes back.
    match t.join() {
        Ok(e) => Err(e),
        Err(_) => Err(std::io::Error::other("the exec thread panicked")),
    }
}

/// `pty-exec PROGRAM ARGS...`: a new session with a terminal on stdio, then exec in
/// place (same pid), as node-pty starts the exec tool's shell for `pty: true`.
/// A new terminal: (master, slave) fds.
fn openpty() -> std::io::Result<(i32, i32)> {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds; null name, termios and winsize are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((master, slave))
}

fn pty_exec(argv: &[String]) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let (master, slave) = openpty()?;
    // The master stays open in a child that drains it, so the shell never blocks on
    // a full terminal and gets no hangup.
    // SAFETY: fork in a single-threaded helper; the child only reads and exits.
    match unsafe { libc::fork() } {
        0 => {
            let mut buf = [0u8; 4096];
            // SAFETY: reading into a local buffer from our own fd.
            while unsafe { libc::read(master, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
            std::process::exit(0);
        }
        -1 => return Err(std::io::Error::last_os_error()),
        _ => {}
    }
    // SAFETY: plain fd and session syscalls on our own process.
    unsafe {
        libc::close(master);
        libc::setsid();
        libc::ioctl(slave, libc::TIOCSCTTY, 0);
        for fd in 0..3 {
            libc::dup2(slave, fd);
        }
        if slave > 2 {
            libc::close(slave);
        }
    }
    Err(std::process::Command::new(&argv[0]).args(&argv[1..]).exec())
}

fn uring_open(path: &str) -> std::io::Result<()> {
    const IORING_OP_OPENAT: u8 = 18;
    const IORING_OFF_SQ_RING: i64 = 0;
    const IORING_OFF_CQ_RING: i64 = 0x800_0000;
    const IORING_OFF_SQES: i64 = 0x1000_0000;
    #[repr(C)]
    #[derive(Default)]
    struct SqOff {
        head: u32,
        tail: u32,
        ring_mask: u32,
        ring_entries: u32,
        flags: u32,
        dropped: u32,
        array: u32,
        resv1: u32,
        user_addr: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct CqOff {
        head: u32,
        tail: u32,
        ring_mask: u32,
        ring_entries: u32,
        overflow: u32,
        cqes: u32,
        flags: u32,
        resv1: u32,
        user_addr: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Params {
        sq_entries: u32,
        cq_entries: u32,
        flags: u32,
        sq_thread_cpu: u32,
        sq_thread_idle: u32,
        features: u32,
        wq_fd: u32,
        resv: [u32; 3],
        sq_off: SqOff,
        cq_off: CqOff,
    }
    let p = cstr(path)?;
    let mut params = Params::default();
    // SAFETY: raw io_uring syscalls on rings this function maps and owns; offsets come
    // from the kernel's io_uring_params.
    unsafe {
        let ring = libc::syscall(libc::SYS_io_uring_setup, 1u32, &mut params as *mut Params)
            as libc::c_int;
        if ring < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let map = |len: usize, off: i64| {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                ring,
                off,
            )
        };
        let sq_len = params.sq_off.array as usize + params.sq_entries as usize * 4;
        let cq_len = params.cq_off.cqes as usize + params.cq_entries as usize * 16;
        let sq = map(sq_len, IORING_OFF_SQ_RING) as *mut u8;
        let cq = map(cq_len, IORING_OFF_CQ_RING) as *mut u8;
        let sqes = map(64, IORING_OFF_SQES) as *mut u8;
        if sq as isize == -1 || cq as isize == -1 || sqes as isize == -1 {
            return Err(std::io::Error::last_os_error());
        }
        // One SQE: openat(AT_FDCWD, path, O_RDONLY).
        std::ptr::write_bytes(sqes, 0, 64);
        *sqes = IORING_OP_OPENAT;
        *(sqes.add(4) as *mut i32) = libc::AT_FDCWD;
        *(sqes.add(16) as *mut u64) = p.as_ptr() as u64;
        *(sqes.add(28) as *mut u32) = libc::O_RDONLY as u32;
        *(sq.add(params.sq_off.array as usize) as *mut u32) = 0;
        let tail = sq.add(params.sq_off.tail as usize) as *mut u32;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        *tail += 1;
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        const IORING_ENTER_GETEVENTS: u32 = 1;
        let n = libc::syscall(
            libc::SYS_io_uring_enter,
            ring,
            1u32,
            1u32,
            IORING_ENTER_GETEVENTS,
            std::ptr::null::<u8>(),
            0usize,
        );
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let cqe = cq.add(params.cq_off.cqes as usize);
        let res = *(cqe.add(8) as *const i32);
        if res < 0 {
            return Err(std::io::Error::from_raw_os_error(-res));
        }
        read_fd(res)
    }
}

/// A TCP connect to a listener of its own on 127.0.0.1 (an allowed destination in
/// whatever network namespace this runs).
fn loopback_roundtrip() -> std::io::Result<()> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let c = TcpStream::connect(l.local_addr()?)?;
    let _ = l.accept()?;
    drop(c);
    Ok(())
}

/// One report line to the guard's attribution socket; returns its reply line.
fn attrib_report(socket: &str, id: &str) -> std::io::Result<String> {
    use std::io::{BufRead as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    let report = serde_json::json!({"v": 1, "type": "start", "toolCallId": id,
        "runId": "run-matrix", "sessionKey": "agent:main:matrix", "toolName": "exec",
        "params": {"command": format!("call {id}")}});
    writeln!(s, "{report}")?;
    let mut reply = String::new();
    std::io::BufReader::new(s).read_line(&mut reply)?;
    Ok(reply.trim().to_owned())
}

/// A gateway that reports its tool calls, as the guard's OpenClaw plugin does in the
/// real one: once `go` exists, for each command it reports call `tc-N`, then runs the
/// command as node-pty does (`bash --noprofile --norc -c CMD` on a terminal, the tag
/// in its environment) and waits for it.
fn attrib_gateway(socket: &str, go: &str, cmds: &[String]) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt as _;
    while !std::path::Path::new(go).exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for (i, cmd) in cmds.iter().enumerate() {
        let reply = attrib_report(socket, &format!("tc-{}", i + 1))?;
        let tag = serde_json::from_str::<serde_json::Value>(&reply)
            .ok()
            .and_then(|v| v["tag"].as_str().map(str::to_owned))
            .ok_or_else(|| std::io::Error::other(format!("no tag: {reply}")))?;
        let (master, slave) = openpty()?;
        let mut child = std::process::Command::new("bash");
        child
            .args(["--noprofile", "--norc", "-c", cmd])
            .env("OCG_TOOL_CALL", &tag);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            child.pre_exec(move || {
                libc::setsid();
                libc::ioctl(slave, libc::TIOCSCTTY, 0);
                for fd in 0..3 {
                    libc::dup2(slave, fd);
                }
                Ok(())
            });
        }
        let mut child = child.spawn()?;
        // SAFETY: our own fd; the child has its copy.
        unsafe { libc::close(slave) };
        // Drain the terminal so the command never blocks on it.
        let drain = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // SAFETY: reading into a local buffer from our own fd.
            while unsafe { libc::read(master, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
            // SAFETY: our own fd.
            unsafe { libc::close(master) };
        });
        child.wait()?;
        let _ = drain.join();
    }
    Ok(())
}

/// The stand-in gateway's work when started as `node ... gateway`: its script runs as
/// its child, as the exec tool's commands do.
pub(crate) fn standin_gateway(script: &str) -> i32 {
    std::process::Command::new("bash")
        .args(["--noprofile", "--norc", script])
        .status()
        .map_or(127, |s| s.code().unwrap_or(128))
}

/// PTRACE_ATTACH to a process (detaching again if it worked).
fn ptrace_attach(pid: i32) -> std::io::Result<()> {
    // SAFETY: plain ptrace calls on a pid; no memory is passed.
    unsafe {
        if libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
    }
    Ok(())
}

/// bpf(BPF_MAP_CREATE) of a tiny hash map: any bpf() use by the tree.
fn bpf_map_create() -> std::io::Result<()> {
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    let attr = MapCreate {
        map_type: 1,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
    };
    // SAFETY: a valid attribute struct of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0,
            &attr as *const MapCreate,
            std::mem::size_of::<MapCreate>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: closing the fd just created.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// process_vm_readv of `pid`'s environment block (its bounds from /proc/PID/stat,
/// readable without a ptrace check); prints `LEAK` when `needle` is in what was read.
fn vm_readv(pid: i32, needle: &str) -> std::io::Result<()> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, r)| {
            r.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let (start, end) = (
        fields.get(47).copied().unwrap_or(0),
        fields.get(48).copied().unwrap_or(0),
    );
    // Hidden (0) when the caller may not read the process: any range then, the
    // permission is checked before the copy (EPERM, else EFAULT for a bad address).
    let (start, end) = if start == 0 {
        (0x10000, 0x10001)
    } else {
        (start, end)
    };
    let len = end.saturating_sub(start) as usize;
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: start as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: one local iovec over our buffer; the remote one is only read by the kernel.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let leak = buf
        .windows(needle.len().max(1))
        .any(|w| w == needle.as_bytes());
    println!("{}", if leak { "LEAK" } else { "none" });
    Ok(())
}

/// Connects to a unix stream socket and sends one line.
fn unix_connect(path: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.write_all(b"DELEGATE\n")?;
    println!("ok");
    Ok(())
}

/// Serves one connection on a unix stream socket; `ready` is created once listening.
fn unix_serve(path: &str, ready: &str) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::write(ready, "")?;
    let (mut c, _) = l.accept()?;
    let mut buf = [0u8; 64];
    let _ = c.read(&mut buf)?;
    println!("ok");
    Ok(())
}

/// finit_module(2) of any file: the kernel reads it as a module (not one: ENOEXEC
/// when nothing refuses the read first).
fn finit_module(path: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    let params = cstr("")?;
    // SAFETY: an fd we own and a NUL-terminated empty string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            params.as_ptr(),
            0,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `setpriority(PRIO_PROCESS, pid, 19)`: starve a process.
fn renice(pid: u32) -> std::io::Result<()> {
    // SAFETY: plain syscall on integers.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid, 19) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `sched_setscheduler(pid, SCHED_IDLE)`: starve a process harder.
fn sched_idle(pid: i32) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a valid sched_param.
    let r = unsafe { libc::sched_setscheduler(pid, libc::SCHED_IDLE, &raw const param) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts a tmpfs over `path` (on success, unmounts it again at once: a test must not
/// leave the machine changed).
fn mount_tmpfs(path: &str) -> std::io::Result<()> {
    let (src, target, fstype) = (cstr("none")?, cstr(path)?, cstr("tmpfs")?);
    // SAFETY: NUL-terminated strings; no data.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    Ok(())
}
