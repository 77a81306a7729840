//! What /proc says about a process at its exec, read once per exec (never per open):
//! where stdin, stdout and stderr go, and which file really runs (a renamed copy of a
//! shell, a fileless image, a program run through the dynamic loader).

use std::{
    collections::HashMap,
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use sha2::{Digest as _, Sha256};

use crate::machinery::Stdio;

/// Where one standard fd goes: `file`, `pipe`, `tty`, `null`, `unix`, `inet`,
/// `inet6`, `netlink`, `socket` (another family), `anon`, `closed`.
pub fn fd_kinds(pid: u32) -> Option<Vec<&'static str>> {
    if !Path::new(&format!("/proc/{pid}/fd")).exists() {
        return None;
    }
    let kinds: Vec<&'static str> = (0..3).map(|fd| fd_kind(pid, fd)).collect();
    // A zombie still has /proc/PID/fd, empty: as good as gone.
    (!kinds.iter().all(|k| *k == "closed")).then_some(kinds)
}

fn fd_kind(pid: u32, fd: i32) -> &'static str {
    let Ok(link) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) else {
        return "closed";
    };
    let s = link.to_string_lossy();
    if let Some(ino) = s.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
        return match socket_family(pid, fd) {
            "socket" => socket_family_from_net(pid, ino),
            known => known,
        };
    }
    if s.starts_with("pipe:[") {
        return "pipe";
    }
    if s.starts_with("anon_inode:") {
        return "anon";
    }
    if s == "/dev/null" {
        return "null";
    }
    if s.starts_with("/dev/pts/") || s.starts_with("/dev/tty") || s == "/dev/console" {
        return "tty";
    }
    "file"
}

/// The socket's family, from a duplicate of the fd (`pidfd_getfd`, Linux 5.6): the
/// socket inode alone does not say whether it is a unix or a TCP socket.
fn socket_family(pid: u32, fd: i32) -> &'static str {
    // SAFETY: plain syscalls; the fds they return are owned and closed below.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
        if pidfd < 0 {
            return "socket";
        }
        let dup = libc::syscall(libc::SYS_pidfd_getfd, pidfd as i32, fd, 0);
        libc::close(pidfd as i32);
        if dup < 0 {
            return "socket";
        }
        let mut domain: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let rc = libc::getsockopt(
            dup as i32,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&raw mut domain).cast(),
            &mut len,
        );
        libc::close(dup as i32);
        if rc != 0 {
            return "socket";
        }
        match domain {
            libc::AF_UNIX => "unix",
            libc::AF_INET => "inet",
            libc::AF_INET6 => "inet6",
            libc::AF_NETLINK => "netlink",
            _ => "socket",
        }
    }
}

/// The family of socket inode `ino` from the tables in /proc/PID/net, where
/// `pidfd_getfd` is refused (Yama's ptrace_scope 3) or came too late.
fn socket_family_from_net(pid: u32, ino: &str) -> &'static str {
    for (table, family, at) in [
        ("unix", "unix", 6),
        ("tcp", "inet", 9),
        ("udp", "inet", 9),
        ("tcp6", "inet6", 9),
        ("udp6", "inet6", 9),
    ] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            return "socket";
        };
        if text
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(at) == Some(ino))
        {
            return family;
        }
    }
    "socket"
}

/// The roles' summary of [`fd_kinds`].
///
/// By stdin: the shim redirects its own stdout for a moment (`echo 1000 >
/// /proc/self/oom_score_adj`), which /proc may catch. A network socket anywhere is
/// never the broker's or a terminal.
pub fn stdio_class(kinds: Option<&[&str]>) -> Stdio {
    match kinds {
        None => Stdio::Unknown,
        Some(k) if stdio_network(k) => Stdio::Other,
        // A socket of unknown family: the process left before it could be told.
        Some(k) if k.contains(&"socket") => Stdio::Unknown,
        Some(k) if k.first() == Some(&"unix") => Stdio::UnixSockets,
        Some(k) if k.first() == Some(&"tty") => Stdio::Terminal,
        Some(_) => Stdio::Other,
    }
}

/// The kernel's reading of fds 0-2 at exec (`ExecEvent::stdio_families`) over what
/// /proc showed later: a socket's family is known even when the process was gone (or
/// had changed its fds) by the time /proc was read. Other kinds come from /proc
/// (`unknown` when it could not be read).
pub fn with_kernel_stdio(
    kinds: Option<Vec<&'static str>>,
    families: u32,
) -> Option<Vec<&'static str>> {
    if families & openclaw_guard_common::exec::STDIO_KNOWN == 0 {
        return kinds;
    }
    let fams: Vec<u8> = (0..3).map(|i| (families >> (i * 8)) as u8).collect();
    if kinds.is_none() && fams.iter().all(|f| *f == 0) {
        return None;
    }
    let mut out = kinds.unwrap_or_else(|| vec!["unknown"; 3]);
    for (slot, fam) in out.iter_mut().zip(fams) {
        *slot = match fam {
            0 => *slot,
            1 => "unix",
            2 => "inet",
            10 => "inet6",
            16 => "netlink",
            40 => "vsock",
            _ => "socket-other",
        };
    }
    Some(out)
}

/// A network socket on stdin, stdout or stderr: a reverse shell's mark.
pub fn stdio_network(kinds: &[&str]) -> bool {
    kinds.iter().any(|k| matches!(*k, "inet" | "inet6"))
}

/// The executable behind one exec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExeFacts {
    /// `/proc/PID/exe` as the kernel names it (`/memfd:x (deleted)` for a memfd).
    pub exe: String,
    /// Runs from memory or a deleted file: nothing on disk to inspect.
    pub fileless: bool,
    /// The shell this image is (by inode or content) when the name it was run by
    /// does not say so: a renamed copy, a memfd, `ld.so /bin/bash`.
    pub shell: Option<String>,
}

const SHELL_PATHS: &[&str] = &[
    "/bin/sh",
    "/bin/bash",
    "/bin/rbash",
    "/bin/dash",
    "/bin/zsh",
    "/bin/ksh",
    "/bin/mksh",
    "/bin/fish",
    "/bin/csh",
    "/bin/tcsh",
    "/bin/ash",
    "/bin/busybox",
    "/usr/bin/bash",
    "/usr/bin/dash",
    "/usr/bin/zsh",
    "/usr/bin/ksh",
    "/usr/bin/mksh",
    "/usr/bin/fish",
    "/usr/bin/csh",
    "/usr/bin/tcsh",
    "/usr/bin/busybox",
];

/// The host's shells by inode and by content, learnt at start-up; executables judged
/// once per inode.
pub struct Shells {
    /// ("major:minor", inode) as the exec event names the executable.
    by_inode: HashMap<(String, u64), String>,
    by_size: HashMap<u64, Vec<([u8; 32], String)>>,
    seen: HashMap<(String, u64), Option<String>>,
}

/// Executables whose verdict is remembered (memfds are new inodes each time).
const SEEN_MAX: usize = 4096;

impl Shells {
    pub fn from_host() -> Self {
        let mut s = Self {
            by_inode: HashMap::new(),
            by_size: HashMap::new(),
            seen: HashMap::new(),
        };
        for p in SHELL_PATHS {
            let Ok(real) = std::fs::canonicalize(p) else {
                continue;
            };
            let Ok(md) = std::fs::metadata(&real) else {
                continue;
            };
            let name = real
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if s.by_inode.insert(dev_ino(&md), name.clone()).is_some() {
                continue;
            }
            if let Some(h) = std::fs::File::open(&real).ok().and_then(hash) {
                s.by_size.entry(md.len()).or_default().push((h, name));
            }
        }
        s
    }

    /// Facts about the image `pid` just exec'd (`filename` as given to exec, `cwd` its
    /// working directory where known). A process may be gone before this runs: the
    /// file it named then stands in for /proc/PID/exe, if it is still that file.
    pub fn exe_facts(
        &mut self,
        pid: u32,
        dev: &str,
        ino: u64,
        filename: &str,
        argv: &[String],
        cwd: Option<&Path>,
    ) -> ExeFacts {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        // An exec through an fd (fexecve, execveat AT_EMPTY_PATH: the kernel names it
        // /dev/fd/N) runs whatever that fd holds, typically a memfd.
        let by_fd = filename.starts_with("/dev/fd/")
            || (filename.starts_with("/proc/") && filename.contains("/fd/"));
        let fileless = by_fd || exe.starts_with("/memfd:") || exe.ends_with(" (deleted)");
        let given = base(filename);
        let on_disk = if filename.starts_with('/') || by_fd {
            PathBuf::from(filename)
        } else {
            cwd.map(|d| d.join(filename)).unwrap_or_default()
        };
        let mut shell = self.identify(pid, dev, ino, &on_disk);
        if shell.is_none() && (given.starts_with("ld-linux") || given.starts_with("ld.so")) {
            // `ld.so PROGRAM ...`: the program is the first argument not an option.
            shell = argv
                .iter()
                .skip(1)
                .find(|a| !a.starts_with('-'))
                .and_then(|p| std::fs::metadata(p).ok())
                .and_then(|md| self.by_inode.get(&dev_ino(&md)).cloned());
        }
        // Only worth saying when the name does not: `/bin/sh` is dash, and says so.
        let shell = shell.filter(|_| fileless || !crate::machinery::is_shell_name(given));
        ExeFacts {
            exe,
            fileless,
            shell,
        }
    }

    fn identify(&mut self, pid: u32, dev: &str, ino: u64, on_disk: &Path) -> Option<String> {
        let key = (dev.to_owned(), ino);
        // The kernel named the file: a shell's own inode (any hard link or name) needs
        // no /proc, which a short-lived process may already have left.
        if let Some(v) = self.by_inode.get(&key) {
            return Some(v.clone());
        }
        if let Some(v) = self.seen.get(&key) {
            return v.clone();
        }
        let proc_exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let (path, md) = match std::fs::metadata(&proc_exe) {
            Ok(md) => (proc_exe, md),
            // Gone: the file it ran, if that is still the same file.
            Err(_) => {
                let md = std::fs::metadata(on_disk).ok()?;
                if dev_ino(&md) != key {
                    return None;
                }
                (on_disk.to_path_buf(), md)
            }
        };
        let v = self.by_inode.get(&dev_ino(&md)).cloned().or_else(|| {
            let cands = self.by_size.get(&md.len())?;
            let h = std::fs::File::open(&path).ok().and_then(hash)?;
            cands.iter().find(|(c, _)| *c == h).map(|(_, n)| n.clone())
        });
        if self.seen.len() >= SEEN_MAX {
            self.seen.clear();
        }
        self.seen.insert(key, v.clone());
        v
    }
}

/// A file's identity as the exec events spell it.
pub(crate) fn dev_ino(md: &std::fs::Metadata) -> (String, u64) {
    let dev = md.dev();
    (
        format!("{}:{}", libc::major(dev), libc::minor(dev)),
        md.ino(),
    )
}

/// Whether the executable `dev`/`ino` is one of the host's shells (by inode).
impl Shells {
    pub fn is_shell_inode(&self, dev: &str, ino: u64) -> bool {
        self.by_inode.contains_key(&(dev.to_owned(), ino))
    }
}

fn base(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn hash(mut f: std::fs::File) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return None,
        }
    }
    Some(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_stdio_families_win() {
        let known = openclaw_guard_common::exec::STDIO_KNOWN;
        // Gone before /proc was read: the sockets are still known.
        assert_eq!(
            with_kernel_stdio(None, known | 2 | 2 << 8 | 2 << 16),
            Some(vec!["inet", "inet", "inet"])
        );
        assert_eq!(with_kernel_stdio(None, known), None);
        assert_eq!(
            with_kernel_stdio(Some(vec!["tty", "pipe", "socket"]), known | 10 << 16),
            Some(vec!["tty", "pipe", "inet6"])
        );
        // An older object without the field: /proc alone.
        assert_eq!(
            with_kernel_stdio(Some(vec!["unix", "unix", "unix"]), 0),
            Some(vec!["unix", "unix", "unix"])
        );
    }

    #[test]
    fn stdio_classes() {
        let c = |k: &[&str]| stdio_class(Some(k));
        assert_eq!(c(&["unix", "unix", "unix"]), Stdio::UnixSockets);
        // The shim's stdout caught while redirected to oom_score_adj.
        assert_eq!(c(&["unix", "file", "unix"]), Stdio::UnixSockets);
        assert_eq!(c(&["tty", "tty", "tty"]), Stdio::Terminal);
        assert_eq!(c(&["unix", "inet", "unix"]), Stdio::Other);
        assert_eq!(c(&["tty", "inet6", "tty"]), Stdio::Other);
        assert_eq!(c(&["pipe", "pipe", "pipe"]), Stdio::Other);
        // Family unknown (the process left): the shape decides.
        assert_eq!(c(&["socket", "socket", "socket"]), Stdio::Unknown);
        assert_eq!(stdio_class(None), Stdio::Unknown);
    }

    #[test]
    fn socket_families_of_a_live_process() {
        use std::os::{fd::AsRawFd as _, unix::net::UnixStream};
        let (a, _b) = UnixStream::pair().unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let me = std::process::id();
        let link = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let ino = |fd: i32| {
            let l = link(fd).to_string_lossy().into_owned();
            l.trim_start_matches("socket:[")
                .trim_end_matches(']')
                .to_owned()
        };
        assert_eq!(socket_family_from_net(me, &ino(a.as_raw_fd())), "unix");
        assert_eq!(socket_family_from_net(me, &ino(tcp.as_raw_fd())), "inet");
    }
}
