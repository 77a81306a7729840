//! Embeds the kernel programs' object, built by `cargo xtask build` (the eBPF crate
//! needs Debian's rustc and bpf-linker, which a plain `cargo build` does not drive).

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=OPENCLAW_GUARD_EBPF_OBJ");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("openclaw-guard.bpf.o");
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let default = manifest.join("../target/ebpf/bpfel-unknown-none/release/openclaw-guard");
    let src = env::var_os("OPENCLAW_GUARD_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or(default);
    println!("cargo:rerun-if-changed={}", src.display());
    if src.is_file() {
        fs::copy(&src, &out)
            .unwrap_or_else(|e| panic!("copying eBPF object {}: {e}", src.display()));
    } else {
        // Unit tests and clippy of the userspace crate do not need the programs; the
        // daemon refuses to start without them and says how to build them.
        println!(
            "cargo:warning=eBPF object not found at {}: the daemon will refuse to run; build with `cargo xtask build`",
            src.display()
        );
        fs::write(&out, b"").expect("writing empty eBPF placeholder");
    }
}
