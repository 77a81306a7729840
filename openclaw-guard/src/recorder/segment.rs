//! On-disk format of the record: segment headers, record frames, the anchor file,
//! and the hash chain that links them. Everything here is pure encoding and decoding
//! over byte slices; file handling lives in `store`, `verify` and `query`.
//!
//! All integers are little-endian. See docs/recorder.md for the same layout in prose.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A SHA-256 digest: one link of the hash chain.
pub type Hash = [u8; 32];

/// The hash that precedes the very first record (seq 1).
pub const GENESIS_HASH: Hash = [0; 32];

/// First record of a fresh record: seq 0 is never used so that "no record" needs no
/// `Option` in the formats.
pub const FIRST_SEQ: u64 = 1;

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"OCGRSEG1";
pub(crate) const SEGMENT_VERSION: u16 = 1;
/// magic 8 | version 2 | reserved 2 | crc32 4 | first_seq 8 | created_unix_ns 8 | prev_hash 32
pub const SEGMENT_HEADER_LEN: usize = 64;

pub(crate) const FRAME_MAGIC: [u8; 4] = *b"OCGR";
/// magic 4 | payload len 4 | crc32 4 | seq 8 | hash 32, then the payload.
pub const FRAME_HEADER_LEN: usize = 52;
/// Bigger payloads are refused on append and treated as corruption on read: a flipped
/// bit in a length field must not make a reader allocate or skip gigabytes.
pub const MAX_PAYLOAD_LEN: u32 = 4 << 20;

pub(crate) const ANCHOR_MAGIC: [u8; 8] = *b"OCGRANC1";
/// magic 8 | first_seq 8 | prev_hash 32 | written_unix_ns 8 | crc32 4
pub(crate) const ANCHOR_LEN: usize = 60;

pub(crate) const SEGMENT_PREFIX: &str = "seg-";
pub(crate) const SEGMENT_SUFFIX: &str = ".ocgr";
pub(crate) const ANCHOR_FILE: &str = "anchor";
pub(crate) const LOCK_FILE: &str = "lock";
/// Subdirectory of the state directory that holds the record.
pub const RECORD_DIR: &str = "record";

/// One link of the chain: `SHA-256(prev_hash || seq as u64 LE || payload)`.
///
/// The seq is hashed so that a record cannot be moved to another position with its
/// payload intact; the previous hash makes every record depend on all before it.
pub fn chain_hash(prev: &Hash, seq: u64, payload: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_le_bytes());
    h.update(payload);
    h.finalize().into()
}

/// Lower-case hex of a hash, as printed by `events verify` and the JSON export.
pub fn hex(hash: &Hash) -> String {
    use std::fmt::Write as _;
    hash.iter().fold(String::with_capacity(64), |mut s, b| {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Seq of the first record in this segment (also in the file name).
    pub first_seq: u64,
    /// Wall-clock creation time, for age-based rotation and for skipping segments in
    /// time-range queries.
    pub created_unix_ns: u64,
    /// Hash of the last record of the previous segment ([`GENESIS_HASH`] for seq 1):
    /// this is how the chain crosses segment boundaries.
    pub prev_hash: Hash,
}

/// Why a header or frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the header or frame needs: normal at the end of a file being
    /// written, a torn write after a crash, or a truncation.
    Truncated {
        have: usize,
        need: usize,
    },
    BadMagic,
    BadVersion(u16),
    BadLength(u32),
    BadChecksum,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated { have, need } => {
                write!(f, "truncated: {have} bytes left, {need} needed")
            }
            Self::BadMagic => f.write_str("bad magic (not the start of a record)"),
            Self::BadVersion(v) => write!(f, "unsupported format version {v}"),
            Self::BadLength(n) => write!(f, "implausible payload length {n}"),
            Self::BadChecksum => f.write_str("checksum mismatch"),
        }
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn hash_at(b: &[u8], at: usize) -> Hash {
    let mut h = [0; 32];
    h.copy_from_slice(&b[at..at + 32]);
    h
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.created_unix_ns.to_le_bytes());
        b[32..64].copy_from_slice(&self.prev_hash);
        let crc = crc32fast::hash(&b);
        b[12..16].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(DecodeError::Truncated {
                have: b.len(),
                need: SEGMENT_HEADER_LEN,
            });
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        // The checksum is computed with its own field zeroed.
        let mut copy = [0u8; SEGMENT_HEADER_LEN];
        copy.copy_from_slice(&b[..SEGMENT_HEADER_LEN]);
        copy[12..16].fill(0);
        if crc32fast::hash(&copy) != u32_at(b, 12) {
            return Err(DecodeError::BadChecksum);
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != SEGMENT_VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        Ok(Self {
            first_seq: u64_at(b, 16),
            created_unix_ns: u64_at(b, 24),
            prev_hash: hash_at(b, 32),
        })
    }
}

/// One decoded record frame, borrowing its payload from the segment buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub seq: u64,
    /// The chain hash stored in the frame (see [`chain_hash`]).
    pub hash: Hash,
    /// The event, as compact JSON.
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Bytes this frame takes on disk.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload.len()
    }
}

fn frame_crc(frame: &[u8]) -> u32 {
    // Everything but the magic and the checksum field itself.
    let mut h = crc32fast::Hasher::new();
    h.update(&frame[4..8]);
    h.update(&frame[12..]);
    h.finalize()
}

/// Appends one encoded frame to `out`. The caller checked the payload length.
pub(crate) fn encode_frame(out: &mut Vec<u8>, seq: u64, hash: &Hash, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&FRAME_MAGIC);
    // Lossless: payloads are capped at MAX_PAYLOAD_LEN by the writer.
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(hash);
    out.extend_from_slice(payload);
    let crc = frame_crc(&out[start..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the frame at the start of `b`; checks magic, length bound and checksum,
/// not the seq or the chain (that needs context the caller has).
pub(crate) fn decode_frame(b: &[u8]) -> Result<Frame<'_>, DecodeError> {
    if b.len() < FRAME_HEADER_LEN {
        // A prefix of the magic is still reported as a truncated frame rather than
        // garbage so that a torn tail of a few bytes is recognised as such.
        let n = b.len().min(4);
        if b[..n] != FRAME_MAGIC[..n] {
            return Err(DecodeError::BadMagic);
        }
        return Err(DecodeError::Truncated {
            have: b.len(),
            need: FRAME_HEADER_LEN,
        });
    }
    if b[0..4] != FRAME_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let len = u32_at(b, 4);
    if len > MAX_PAYLOAD_LEN {
        return Err(DecodeError::BadLength(len));
    }
    let total = FRAME_HEADER_LEN + len as usize;
    if b.len() < total {
        return Err(DecodeError::Truncated {
            have: b.len(),
            need: total,
        });
    }
    if frame_crc(&b[..total]) != u32_at(b, 8) {
        return Err(DecodeError::BadChecksum);
    }
    Ok(Frame {
        seq: u64_at(b, 12),
        hash: hash_at(b, 20),
        payload: &b[FRAME_HEADER_LEN..total],
    })
}

/// Finds the first offset at or after `from` where a whole, checksum-valid frame
/// starts. Used to tell a torn tail (nothing valid follows) from damage in the middle
/// of a segment (valid records follow the bad bytes).
pub(crate) fn resync(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + FRAME_HEADER_LEN <= buf.len() {
        let rel = buf[at..].windows(4).position(|w| w == FRAME_MAGIC)?;
        at += rel;
        if decode_frame(&buf[at..]).is_ok() {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// The retention anchor: written before the oldest segment is deleted, it names the
/// first seq that is still kept and the hash of the record just before it, so that
/// `verify` can tell retention from a segment that went missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub first_seq: u64,
    pub prev_hash: Hash,
    pub written_unix_ns: u64,
}

impl Anchor {
    pub(crate) fn encode(&self) -> [u8; ANCHOR_LEN] {
        let mut b = [0u8; ANCHOR_LEN];
        b[0..8].copy_from_slice(&ANCHOR_MAGIC);
        b[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        b[16..48].copy_from_slice(&self.prev_hash);
        b[48..56].copy_from_slice(&self.written_unix_ns.to_le_bytes());
        let crc = crc32fast::hash(&b[..56]);
        b[56..60].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() != ANCHOR_LEN {
            return Err(DecodeError::Truncated {
                have: b.len(),
                need: ANCHOR_LEN,
            });
        }
        if b[0..8] != ANCHOR_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if crc32fast::hash(&b[..56]) != u32_at(b, 56) {
            return Err(DecodeError::BadChecksum);
        }
        Ok(Self {
            first_seq: u64_at(b, 8),
            prev_hash: hash_at(b, 16),
            written_unix_ns: u64_at(b, 48),
        })
    }
}

/// File name of the segment whose first record is `first_seq`. Zero-padded so that
/// a plain `ls` lists segments in record order.
pub fn segment_file_name(first_seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{first_seq:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A segment file found in the record directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// First seq, from the file name (the header must agree).
    pub first_seq: u64,
    pub path: PathBuf,
}

/// Lists the segment files of a record directory in seq order. Other files (the
/// anchor, the lock, temporary files of an interrupted rotation) are skipped.
pub(crate) fn list_segments(dir: &Path) -> std::io::Result<Vec<SegmentFile>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(first_seq) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        out.push(SegmentFile {
            first_seq,
            path: entry.path(),
        });
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// Nanoseconds since the Unix epoch, now; 0 if the clock is before 1970.
pub(crate) fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
