//! The kernel side, as userspace drives it: what the sensors' programs need from this
//! kernel and how they are put there.
//!
//! - [`loader`]: loads and attaches the programs (BPF LSM, or the tracepoint and
//!   cgroup fallbacks), and owns their maps;
//! - [`plan`]: what the policy puts into the maps, as a value;
//! - [`maps`]: the plan's maps as typed handles, and the one sync that writes a plan;
//! - [`btf`]: struct offsets from the kernel's BTF;
//! - [`calibrate`]: checks the offsets against a live process before trusting them;
//! - [`pins`]: pinning in bpffs, so enforcement outlives the daemon;
//! - [`procfs`]: processes as /proc lists them (parents, command lines, environments,
//!   the tree below a gateway), to seed the kernel's tracked tree;
//! - [`probe`]: what procfs says of a process (its fds, its image, the host's shells);
//! - [`canary`]: whether BPF LSM still decides, checked while running.

pub mod btf;
pub mod calibrate;
pub mod canary;
pub mod loader;
pub mod maps;
pub mod pins;
pub mod plan;
pub mod probe;
pub mod procfs;
