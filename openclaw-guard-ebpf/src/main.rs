//! openclaw-guard kernel programs. One module per sensor; this file holds the maps and
//! the helpers they share.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod dns;
#[cfg(target_arch = "bpf")]
mod env;
#[cfg(target_arch = "bpf")]
mod exec;
#[cfg(target_arch = "bpf")]
mod file_open;
#[cfg(target_arch = "bpf")]
mod fold;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod net;
#[cfg(target_arch = "bpf")]
mod tamper;
#[cfg(target_arch = "bpf")]
mod tree;
#[cfg(target_arch = "bpf")]
mod unix;

// The crate is a workspace member so that `cargo clippy --workspace` sees it; on the
// host it is an empty program.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program in which a panic is reachable.
    unsafe { core::hint::unreachable_unchecked() }
}

/// GPL: bpf_probe_read_kernel, bpf_send_signal and LSM programs require it.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
