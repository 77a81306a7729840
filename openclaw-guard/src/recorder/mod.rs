//! The forensic recorder: durable, hash-chained, queryable.
//!
//! # Layout
//!
//! The record lives in `<state_dir>/record/` (default state dir
//! `/var/lib/openclaw-guard`):
//!
//! - `seg-<first seq, 20 digits>.ocgr`: append-only segment files. Each starts with
//!   a 64-byte header (magic `OCGRSEG1`, version, CRC-32, first seq, creation time,
//!   and the chain hash of the last record of the previous segment), followed by
//!   record frames: magic `OCGR`, payload length, CRC-32, seq, chain hash, payload
//!   (the event as compact JSON).
//! - `anchor`: written by retention before it deletes the oldest segment; names the
//!   first seq kept and the hash preceding it.
//! - `lock`: `flock`ed by the one writer.
//!
//! # The chain
//!
//! `hash(n) = SHA-256(hash(n-1) || seq(n) as u64 LE || payload(n))`, with 32 zero
//! bytes before seq 1. Each frame stores its *own* hash, so an edit that fixes up
//! the CRC is named at the edited record itself; the seq inside the hash pins every
//! record to its place. A segment header carries `hash(first_seq - 1)`, which
//! continues the chain across files. When retention deletes the oldest segment it
//! first writes the anchor `(first kept seq, hash before it)`; verify accepts a
//! record that starts after seq 1 only if the anchor matches the oldest segment.
//! The chain proves order and integrity against anyone who cannot rewrite every
//! later record; against root on the host, ship the JSON lines (which carry
//! `record_hash`) or the head hash printed by `events verify` elsewhere.
//!
//! # Durability and recovery
//!
//! Every append reaches the kernel in one `write` before it returns (survives
//! `kill -9`); events with a `decision` object are also fsynced before it returns
//! (survive power loss); the rest are fsynced every [`Options::fsync_interval`]. On
//! [`Recorder::open`] the last segment is scanned: an incomplete or corrupt tail
//! with no valid record after it is cut at the last good record and reported in
//! the [`RecoveryReport`]; bad bytes followed by valid records are damage, not a
//! crash, and are left in place (writing continues in a new segment).
//!
//! docs/recorder.md has the same in prose, with the JSON export schema.

pub mod query;
pub mod segment;
mod store;
pub mod verify;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

/// Where the daemon keeps its state (the record is in its `record/` subdirectory).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/openclaw-guard";
pub use query::{Filter, Reader, RecordedEvent};
pub use segment::Hash;
pub use segment::RECORD_DIR;
pub use store::{Damaged, Options, Recorder, RecoveryReport, TornTail};
pub use verify::{verify, Break, VerifyReport};

/// Errors of the recorder library. The CLI wraps them in `anyhow` with context.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another process is writing the record (lock {} is held); \
         is the guard already running with this --state-dir?",
        .0.display()
    )]
    Locked(PathBuf),
    #[error("record file {} is corrupt at byte {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("event of {0} bytes is larger than the record's per-event limit")]
    TooLarge(usize),
    #[error("failed to encode event as JSON: {0}")]
    Encode(String),
}
