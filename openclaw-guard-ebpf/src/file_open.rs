//! The file-open sensor and the protected-file rule: BPF LSM `file_open`.

use aya_ebpf::helpers::generated::bpf_d_path;
use aya_ebpf::{macros::lsm, programs::LsmContext};
use openclaw_guard_common::{action, counter, file_open::FileOpenEvent, kind, PATH_LEN};

use crate::{
    kernel::{file_inode_key, read_at},
    maps::{count, header, offsets, tracked, EVENTS, PROTECTED_INODES},
};

const EPERM: i32 = 1;

/// `int file_open(struct file *file)`; the last argument is the previous LSM's verdict.
#[lsm(hook = "file_open")]
pub(crate) fn file_open(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    try_file_open(&ctx).unwrap_or(0)
}

fn try_file_open(ctx: &LsmContext) -> Result<i32, i32> {
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(proc_) = tracked(tgid) else {
        return Ok(0);
    };
    let file: *const u8 = ctx.arg(0);
    // SAFETY: `file` is the kernel's file pointer for this hook.
    let key = unsafe { file_inode_key(file) }?;
    // The gateway itself (depth 0) keeps access to its own secrets.
    // SAFETY: the value is copied out at once.
    let rule = if proc_.depth > 0 {
        unsafe { PROTECTED_INODES.get(&key) }.copied()
    } else {
        None
    };
    let (act, ret, rule_id) = match rule {
        Some(r) => (action::DENY, -EPERM, r),
        None => (action::NONE, 0, 0),
    };
    match EVENTS.reserve::<FileOpenEvent>(0) {
        Some(mut entry) => {
            let ev = entry.as_mut_ptr();
            // SAFETY: reserved ring-buffer memory of the right size.
            unsafe {
                (*ev).header = header(kind::FILE_OPEN, &proc_);
                (*ev).ino = key.ino;
                (*ev).dev = key.dev;
                (*ev).flags = read_at::<u32>(file, offsets().file_f_flags).unwrap_or(0);
                (*ev).action = act;
                (*ev).ret = ret;
                (*ev).rule = rule_id;
                // The path the kernel resolved, whatever name (symlink, `..`,
                // /proc/self/root, fd) the caller used.
                let path = file.wrapping_add(offsets().file_f_path as usize);
                let n = bpf_d_path(
                    path as *mut _,
                    (*ev).path.as_mut_ptr().cast(),
                    PATH_LEN as u32,
                );
                (*ev).path_len = if n > 0 { n as u32 } else { 0 };
            }
            entry.submit(0);
            count(counter::EMITTED);
        }
        None => count(counter::LOST),
    }
    Ok(ret)
}
