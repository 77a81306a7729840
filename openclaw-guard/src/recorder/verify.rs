//! `events verify`: every checksum, every seq, and the hash chain from the genesis
//! (or the retention anchor) to the last record.

use std::{
    fs::File,
    os::unix::io::AsRawFd as _,
    path::{Path, PathBuf},
};

use super::{
    segment::{
        chain_hash, decode_frame, hex, list_segments, DecodeError, Hash, SegmentHeader, FIRST_SEQ,
        GENESIS_HASH, LOCK_FILE, RECORD_DIR, SEGMENT_HEADER_LEN,
    },
    store::read_anchor,
    RecorderError,
};

/// The first place where the record is not what the writer wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// Segment file holding the bad bytes.
    pub segment: PathBuf,
    /// Byte offset in that file of the bad header or frame.
    pub offset: u64,
    /// Seq the record at that place should have had.
    pub expected_seq: u64,
    pub reason: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} byte offset {}, record seq {}: {}",
            self.segment.display(),
            self.offset,
            self.expected_seq,
            self.reason
        )
    }
}

/// Outcome of [`verify`].
#[derive(Debug, Clone)]
#[must_use]
pub struct VerifyReport {
    pub segments: usize,
    /// Records checked before the first break (all of them if there is none).
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Chain hash of the last good record: write it down somewhere else, and a later
    /// verify that prints a different hash for the same seq proves a rewrite.
    pub head_hash: Hash,
    /// Records before this seq were deleted by retention (an anchor vouches for it).
    pub anchored_from: Option<u64>,
    /// An incomplete frame at the end of the last segment while a writer holds the
    /// lock: an append in flight, not damage.
    pub live_tail: bool,
    pub first_break: Option<Break>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.first_break.is_none()
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(b) = &self.first_break {
            write!(
                f,
                "verify FAILED at {b}\n{} record(s) in {} segment(s) checked before the break",
                self.records, self.segments
            )?;
            return Ok(());
        }
        let range = match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => format!("seq {a}..={b}"),
            _ => "empty".to_owned(),
        };
        write!(
            f,
            "verify ok: {} segment(s), {} record(s) ({range}), head hash {}",
            self.segments,
            self.records,
            hex(&self.head_hash)
        )?;
        if let Some(a) = self.anchored_from {
            write!(
                f,
                "\nrecords before seq {a} were removed by retention (anchored)"
            )?;
        }
        if self.live_tail {
            write!(
                f,
                "\na writer is appending; its last frame was still incomplete"
            )?;
        }
        Ok(())
    }
}

/// True if another process holds the writer lock of `dir`.
fn writer_is_live(dir: &Path) -> bool {
    let Ok(f) = File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; a shared try-lock fails only while the
    // writer holds its exclusive lock, and closing `f` drops ours.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    rc != 0
}

/// Checks the record under `<state_dir>/record`. Returns `Err` only when the record
/// cannot be read at all; breaks in the data are reported in the [`VerifyReport`].
pub fn verify(state_dir: &Path) -> Result<VerifyReport, RecorderError> {
    let dir = state_dir.join(RECORD_DIR);
    let files = list_segments(&dir).map_err(|source| RecorderError::Io {
        what: format!("failed to list the record in {}", dir.display()),
        source,
    })?;
    let anchor = read_anchor(&dir)?;
    let mut report = VerifyReport {
        segments: files.len(),
        records: 0,
        first_seq: None,
        last_seq: None,
        head_hash: GENESIS_HASH,
        anchored_from: None,
        live_tail: false,
        first_break: None,
    };
    let fail = |report: &mut VerifyReport, path: &Path, offset: usize, seq: u64, reason: String| {
        report.first_break = Some(Break {
            segment: path.to_owned(),
            offset: offset as u64,
            expected_seq: seq,
            reason,
        });
    };

    let mut expected_seq = None::<u64>;
    let mut running = GENESIS_HASH;
    for (i, seg) in files.iter().enumerate() {
        let is_last = i + 1 == files.len();
        let buf = std::fs::read(&seg.path).map_err(|source| RecorderError::Io {
            what: format!("failed to read {}", seg.path.display()),
            source,
        })?;
        let header = match SegmentHeader::decode(&buf) {
            Ok(h) => h,
            Err(e) => {
                let seq = expected_seq.unwrap_or(seg.first_seq);
                fail(
                    &mut report,
                    &seg.path,
                    0,
                    seq,
                    format!("segment header: {e}"),
                );
                return Ok(report);
            }
        };
        if header.first_seq != seg.first_seq {
            let reason = format!(
                "segment header says first seq {}, file name says {}",
                header.first_seq, seg.first_seq
            );
            fail(&mut report, &seg.path, 0, seg.first_seq, reason);
            return Ok(report);
        }
        match expected_seq {
            None => {
                // The oldest segment: its predecessor is the genesis, or the anchor
                // left by retention.
                if let Err(reason) = check_start(&header, anchor.as_ref(), &files) {
                    fail(&mut report, &seg.path, 0, header.first_seq, reason);
                    return Ok(report);
                }
                if header.first_seq != FIRST_SEQ {
                    report.anchored_from = anchor.map(|a| a.first_seq);
                }
            }
            Some(exp) => {
                if header.first_seq != exp {
                    let reason = if header.first_seq > exp {
                        format!(
                            "segment starts at seq {}: records {exp}..{} are missing",
                            header.first_seq, header.first_seq
                        )
                    } else {
                        format!(
                            "segment starts at seq {}, overlapping earlier records",
                            header.first_seq
                        )
                    };
                    fail(&mut report, &seg.path, 0, exp, reason);
                    return Ok(report);
                }
                if header.prev_hash != running {
                    let reason = "segment header's previous hash does not match the last record of the previous segment".to_owned();
                    fail(&mut report, &seg.path, 0, exp, reason);
                    return Ok(report);
                }
            }
        }
        if let Some(a) = anchor.filter(|a| a.first_seq == header.first_seq) {
            if a.prev_hash != header.prev_hash {
                let reason =
                    "retention anchor's hash does not match this segment's header".to_owned();
                fail(&mut report, &seg.path, 0, header.first_seq, reason);
                return Ok(report);
            }
        }
        running = header.prev_hash;
        let mut seq = header.first_seq;
        let mut at = SEGMENT_HEADER_LEN;
        while at < buf.len() {
            let frame = match decode_frame(&buf[at..]) {
                Ok(f) => f,
                Err(DecodeError::Truncated { .. }) if is_last && writer_is_live(&dir) => {
                    report.live_tail = true;
                    break;
                }
                Err(e) => {
                    let hint = match e {
                        DecodeError::Truncated { .. } if is_last => {
                            "; a torn tail from a crash: starting the daemon cuts it"
                        }
                        DecodeError::BadMagic => "; bytes changed, or a record removed or inserted",
                        _ => "",
                    };
                    fail(&mut report, &seg.path, at, seq, format!("{e}{hint}"));
                    return Ok(report);
                }
            };
            if frame.seq != seq {
                let reason = if frame.seq > seq {
                    format!("found seq {}: records missing or out of order", frame.seq)
                } else {
                    format!(
                        "found seq {}: records out of order or duplicated",
                        frame.seq
                    )
                };
                fail(&mut report, &seg.path, at, seq, reason);
                return Ok(report);
            }
            let computed = chain_hash(&running, seq, frame.payload);
            if computed != frame.hash {
                let reason = "hash chain broken: this record was altered, or one before it was removed or altered".to_owned();
                fail(&mut report, &seg.path, at, seq, reason);
                return Ok(report);
            }
            running = computed;
            report.records += 1;
            report.first_seq.get_or_insert(seq);
            report.last_seq = Some(seq);
            report.head_hash = running;
            seq += 1;
            at += frame.encoded_len();
        }
        expected_seq = Some(seq);
    }
    if files.is_empty() && anchor.is_some() {
        report.first_break = Some(Break {
            segment: dir,
            offset: 0,
            expected_seq: anchor.map_or(FIRST_SEQ, |a| a.first_seq),
            reason: "a retention anchor exists but every segment is gone".to_owned(),
        });
    }
    Ok(report)
}

/// Checks where the oldest segment's chain starts.
fn check_start(
    header: &SegmentHeader,
    anchor: Option<&super::segment::Anchor>,
    files: &[super::segment::SegmentFile],
) -> Result<(), String> {
    if header.first_seq == FIRST_SEQ {
        return if header.prev_hash == GENESIS_HASH {
            Ok(())
        } else {
            Err("first segment's previous hash is not the genesis hash".to_owned())
        };
    }
    let Some(a) = anchor else {
        return Err(format!(
            "records {FIRST_SEQ}..{} are missing and no retention anchor accounts for them",
            header.first_seq
        ));
    };
    // A crash between writing the anchor and deleting the segment leaves the anchor
    // pointing at a later segment; the chain is then checked up to that segment.
    if a.first_seq < header.first_seq || !files.iter().any(|f| f.first_seq == a.first_seq) {
        return Err(format!(
            "the retention anchor names seq {}, but the oldest segment starts at {}: segments were removed beyond retention",
            a.first_seq, header.first_seq
        ));
    }
    Ok(())
}
