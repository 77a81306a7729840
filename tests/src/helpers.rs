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
        "opath-reopen" => opath_reopen(arg(1)),
        "open-loop" => open_loop(arg(1).parse().unwrap_or(0), arg(2)),
        "connect" => TcpStream::connect((arg(1), arg(2).parse().unwrap_or(0))).map(drop),
        "noop" => Ok(()),
        "bind" => std::net::TcpListener::bind((arg(1), arg(2).parse().unwrap_or(0))).map(drop),
        "udp-sendto" => udp_sendto(arg(1), arg(2).parse().unwrap_or(0)),
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

fn udp_sendto(addr: &str, port: u16) -> std::io::Result<()> {
    let bind = if addr.contains(':') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let s = UdpSocket::bind(bind)?;
    s.send_to(b"ping", (addr, port)).map(drop)
}
