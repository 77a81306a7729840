//! `openclaw-guard run`: load, calibrate, seed the tree, then stream events.
//!
//! kernel -> ring buffer -> decode -> outputs, in that one direction.

use std::{io::Write as _, os::unix::fs::MetadataExt as _, path::PathBuf};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use openclaw_guard_common::{kernel_dev, InodeKey, TrackedProc};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    bpf::Guard,
    btf,
    calibrate::{calibrate, Calibration},
    events::{decode, Clock},
    tree,
};

/// Command-line arguments of `openclaw-guard run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Track this process (a gateway) and all its descendants. Repeatable.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Deny reads of this file to the tracked processes' descendants. Repeatable.
    #[arg(long = "protect", value_name = "PATH")]
    pub protect: Vec<PathBuf>,
    /// Write JSON lines here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Rule id reported for protected-file denials.
pub const RULE_PROTECTED_FILE: u32 = 1;

pub fn run(args: &RunArgs) -> anyhow::Result<i32> {
    let kbtf = btf::Btf::from_sys_fs().context("reading kernel BTF")?;
    let offsets = btf::kernel_offsets(&kbtf).context("finding kernel struct offsets in BTF")?;
    let mut guard = Guard::load(offsets)?;
    let clock = Clock::now();
    let mut ring = guard.take_events()?;
    let calibration = calibrate(&mut guard, &mut ring, &clock);

    crate::events::set_rule_names(vec![String::new(), String::from("protected-file")]);
    let enforcing = calibration.ok && guard.lsm_file_open();
    let mut protected = Vec::new();
    for path in &args.protect {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("protected file {}", path.display()))?;
        let key = InodeKey::new(
            kernel_dev(libc::major(meta.dev()), libc::minor(meta.dev())),
            meta.ino(),
        );
        if enforcing {
            guard.protect(key, RULE_PROTECTED_FILE)?;
        }
        protected.push(path.clone());
    }

    let parents = tree::proc_parents();
    for &root in &args.pids {
        guard.track(root, TrackedProc { root, depth: 0 })?;
        for (pid, entry) in tree::descendants(root, &parents) {
            guard.track(pid, entry)?;
        }
    }
    // Children forked while the first scan ran were not yet inside a tracked parent.
    let parents = tree::proc_parents();
    for &root in &args.pids {
        for (pid, entry) in tree::descendants(root, &parents) {
            guard.track(pid, entry)?;
        }
    }

    report_startup(&guard, &calibration, &protected, enforcing);

    let out: Box<dyn std::io::Write + Send> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening output {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(stream(ring, out, clock))?;
    let c = guard.counters()?;
    eprintln!(
        "openclaw-guard: stopped; kernel emitted {} events, lost {}, untracked for a full map {}",
        c.emitted, c.lost, c.track_full
    );
    Ok(0)
}

fn report_startup(
    guard: &Guard,
    calibration: &Calibration,
    protected: &[PathBuf],
    enforcing: bool,
) {
    for p in &guard.programs {
        match &p.error {
            None => eprintln!("openclaw-guard: program {} ({}): attached", p.name, p.hook),
            Some(e) => eprintln!(
                "openclaw-guard: program {} ({}): NOT attached: {e}",
                p.name, p.hook
            ),
        }
    }
    if calibration.ok {
        eprintln!("openclaw-guard: calibration: ok: {}", calibration.detail);
    } else {
        eprintln!(
            "openclaw-guard: calibration: FAILED: {}; no enforcement is claimed",
            calibration.detail
        );
    }
    if !protected.is_empty() {
        let how = if enforcing {
            "deny (BPF LSM file_open)".to_string()
        } else if !calibration.ok {
            "NOT ENFORCED: calibration failed".to_string()
        } else {
            "NOT ENFORCED: BPF LSM file_open is not available on this kernel".to_string()
        };
        for p in protected {
            eprintln!("openclaw-guard: rule protected-file {}: {how}", p.display());
        }
    }
    eprintln!("openclaw-guard: ready");
}

async fn stream(
    ring: RingBuf<MapData>,
    mut out: Box<dyn std::io::Write + Send>,
    clock: Clock,
) -> anyhow::Result<()> {
    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd holds it.
    let mut fd = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("registering the ring buffer with tokio: {e}"))?;
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut bad = 0u64;
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &mut out, &clock, &mut bad)?;
                guard.clear_ready();
                out.flush()?;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // What the kernel wrote before the signal is still owed to the outputs.
    drain(fd.get_mut(), &mut out, &clock, &mut bad)?;
    out.flush()?;
    if bad > 0 {
        eprintln!("openclaw-guard: {bad} ring-buffer records could not be decoded");
    }
    Ok(())
}

fn drain(
    ring: &mut RingBuf<MapData>,
    out: &mut dyn std::io::Write,
    clock: &Clock,
    bad: &mut u64,
) -> anyhow::Result<()> {
    while let Some(item) = ring.next() {
        match decode(&item, clock) {
            Ok(ev) => {
                serde_json::to_writer(&mut *out, &ev)?;
                out.write_all(b"\n")?;
            }
            Err(e) => {
                *bad += 1;
                eprintln!("openclaw-guard: undecodable event: {e}");
            }
        }
    }
    Ok(())
}
