//! Reads of kernel structs at offsets taken from the running kernel's BTF.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use openclaw_guard_common::{InodeKey, NameKey, NAME_LEN};

use crate::maps::offsets;

/// Reads a `T` at `base + off` from kernel memory.
#[inline(always)]
pub(crate) unsafe fn read_at<T: Copy>(base: *const u8, off: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel faults safely on a bad address.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize).cast::<T>()) }
}

/// tgid of a task's real parent.
#[inline(always)]
pub(crate) unsafe fn parent_tgid(task: *const u8) -> Result<u32, i32> {
    let o = offsets();
    // SAFETY: see read_at.
    unsafe {
        let parent: *const u8 = read_at(task, o.task_real_parent)?;
        read_at(parent, o.task_tgid)
    }
}

/// tgid of a task.
#[inline(always)]
pub(crate) unsafe fn task_tgid(task: *const u8) -> Result<u32, i32> {
    // SAFETY: see read_at.
    unsafe { read_at(task, offsets().task_tgid) }
}

/// (dev, inode) of an open `struct file`.
#[inline(always)]
pub(crate) unsafe fn file_inode_key(file: *const u8) -> Result<InodeKey, i32> {
    let o = offsets();
    // SAFETY: see read_at.
    unsafe {
        let inode: *const u8 = read_at(file, o.file_f_inode)?;
        let ino: u64 = read_at(inode, o.inode_i_ino)?;
        let sb: *const u8 = read_at(inode, o.inode_i_sb)?;
        let dev: u32 = read_at(sb, o.sb_s_dev)?;
        Ok(InodeKey::new(dev, ino))
    }
}

/// What tells this inode from a later one that reuses its number (ext4 hands a freed
/// number to the next file created nearby at once): the generation the filesystem
/// gave it, above the address of the kernel's inode object. 0 when unreadable.
#[inline(always)]
pub(crate) unsafe fn file_inode_instance(file: *const u8) -> [u64; 2] {
    let o = offsets();
    // SAFETY: see read_at.
    unsafe {
        let inode: *const u8 = read_at(file, o.file_f_inode).unwrap_or(core::ptr::null());
        let gen: u32 = read_at(inode, o.inode_i_generation).unwrap_or(0);
        [u64::from(gen), inode as u64]
    }
}

/// The dentry of an open file.
#[inline(always)]
pub(crate) unsafe fn file_dentry(file: *const u8) -> Result<*const u8, i32> {
    let o = offsets();
    // SAFETY: see read_at.
    unsafe { read_at(file, o.file_f_path + o.path_dentry) }
}

/// (dev, inode) of a dentry's inode.
#[inline(always)]
pub(crate) unsafe fn dentry_inode_key(dentry: *const u8) -> Result<InodeKey, i32> {
    let o = offsets();
    // SAFETY: see read_at.
    unsafe {
        let inode: *const u8 = read_at(dentry, o.dentry_d_inode)?;
        let ino: u64 = read_at(inode, o.inode_i_ino)?;
        let sb: *const u8 = read_at(inode, o.inode_i_sb)?;
        let dev: u32 = read_at(sb, o.sb_s_dev)?;
        Ok(InodeKey::new(dev, ino))
    }
}

/// A dentry's parent.
#[inline(always)]
pub(crate) unsafe fn dentry_parent(dentry: *const u8) -> Result<*const u8, i32> {
    // SAFETY: see read_at.
    unsafe { read_at(dentry, offsets().dentry_d_parent) }
}

/// The key of a dentry's name inside its parent directory.
#[inline(always)]
pub(crate) unsafe fn dentry_name_key(dentry: *const u8, dir: InodeKey) -> Result<NameKey, i32> {
    let mut key = NameKey {
        dir,
        name: [0; NAME_LEN],
    };
    // SAFETY: see read_at.
    unsafe {
        let name: *const u8 = read_at(dentry, offsets().dentry_d_name_name)?;
        aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(name, &mut key.name)?;
    }
    Ok(key)
}
