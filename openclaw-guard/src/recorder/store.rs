//! The writer: [`Recorder`] appends events to the active segment, rotates, applies
//! retention, and repairs a torn tail on open.

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::io::AsRawFd as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{
    segment::{
        chain_hash, decode_frame, list_segments, now_unix_ns, resync, segment_file_name, Anchor,
        DecodeError, Hash, SegmentHeader, ANCHOR_FILE, FIRST_SEQ, FRAME_HEADER_LEN, GENESIS_HASH,
        LOCK_FILE, MAX_PAYLOAD_LEN, RECORD_DIR, SEGMENT_HEADER_LEN,
    },
    RecorderError,
};

/// Tuning of the writer. `Default` suits a daemon: 64 MiB / 1 h segments, 1 GiB of
/// history, fsync every second, and every decision event fsynced before `append`
/// returns.
#[derive(Debug, Clone)]
pub struct Options {
    /// Start a new segment when the active one would grow past this.
    pub segment_max_bytes: u64,
    /// Start a new segment when the active one is older than this (checked on append).
    pub segment_max_age: Duration,
    /// Delete the oldest segments while the closed segments plus a full active one
    /// would be bigger than this (the active segment is never deleted).
    pub retention_max_bytes: Option<u64>,
    /// Delete the oldest segments while there are more than this many.
    pub retention_max_segments: Option<usize>,
    /// fsync the active segment when this long has passed since the last fsync
    /// (checked on append and by [`Recorder::sync_if_due`]). `None`: only decision
    /// events, rotation and [`Recorder::sync`] fsync; other records still reach the
    /// kernel on every append and survive a crash of the process, not of the host.
    pub fsync_interval: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            segment_max_bytes: 64 << 20,
            segment_max_age: Duration::from_secs(3600),
            retention_max_bytes: Some(1 << 30),
            retention_max_segments: None,
            fsync_interval: Some(Duration::from_secs(1)),
        }
    }
}

/// What [`Recorder::open`] found and repaired. The daemon logs it (its `Display` is
/// one line per finding); [`RecoveryReport::is_clean`] says whether there is anything
/// to log at warning level.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct RecoveryReport {
    /// Segments present after recovery.
    pub segments: usize,
    /// Seq the next append will get.
    pub next_seq: u64,
    /// An incomplete or corrupt tail of the last segment that was cut off.
    pub torn_tail: Option<TornTail>,
    /// The last segment has bad bytes followed by valid records: not a crash
    /// artefact. Nothing was cut; the segment is left as evidence, writing continues
    /// in a new segment, and `events verify` will keep failing there.
    pub damaged: Option<Damaged>,
    /// A segment file holding only a partial header (crash while rotating) that was
    /// removed.
    pub removed_empty_segment: Option<PathBuf>,
}

/// A cut tail: the segment was truncated to `offset`.
#[derive(Debug, Clone)]
pub struct TornTail {
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes_cut: u64,
    /// Last record kept (`None` if the segment is now empty).
    pub last_good_seq: Option<u64>,
    pub reason: String,
}

/// Damage found in the middle of the last segment.
#[derive(Debug, Clone)]
pub struct Damaged {
    pub segment: PathBuf,
    pub offset: u64,
    pub reason: String,
}

impl RecoveryReport {
    /// True when nothing had to be cut, skipped or removed.
    pub fn is_clean(&self) -> bool {
        self.torn_tail.is_none() && self.damaged.is_none() && self.removed_empty_segment.is_none()
    }
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record opened: {} segment(s), next seq {}",
            self.segments, self.next_seq
        )?;
        if let Some(t) = &self.torn_tail {
            write!(
                f,
                "; torn tail cut in {} at byte {} ({} bytes dropped, last good seq {}): {}",
                t.segment.display(),
                t.offset,
                t.bytes_cut,
                t.last_good_seq
                    .map_or_else(|| "none".to_owned(), |s| s.to_string()),
                t.reason
            )?;
        }
        if let Some(d) = &self.damaged {
            write!(
                f,
                "; DAMAGE in {} at byte {} ({}), left in place, continuing in a new segment",
                d.segment.display(),
                d.offset,
                d.reason
            )?;
        }
        if let Some(p) = &self.removed_empty_segment {
            write!(f, "; removed half-created segment {}", p.display())?;
        }
        Ok(())
    }
}

/// Append-only, hash-chained event store. One writer per state directory, enforced by
/// an exclusive `flock` on `<state>/record/lock` held for the recorder's lifetime.
///
/// Blocking I/O: call it from a dedicated thread or `spawn_blocking`, not directly on
/// an async executor thread.
#[derive(Debug)]
pub struct Recorder {
    dir: PathBuf,
    opts: Options,
    /// Held for the `flock`; closing it releases the lock.
    _lock: File,
    file: File,
    seg_path: PathBuf,
    seg_created_unix_ns: u64,
    /// Bytes of the active segment, including its header.
    seg_len: u64,
    /// `(first_seq, bytes)` of every segment, oldest first; the last is active.
    segments: VecDeque<(u64, u64)>,
    next_seq: u64,
    last_hash: Hash,
    last_sync: Instant,
    unsynced: bool,
    /// Reused buffers: the payload and the frame, so append does not allocate.
    payload: Vec<u8>,
    frame: Vec<u8>,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RecorderError {
    let what = what.into();
    move |source| RecorderError::Io { what, source }
}

fn fsync_dir(dir: &Path) -> Result<(), RecorderError> {
    // A new or removed directory entry is only durable once the directory itself is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!(
            "failed to fsync directory {}",
            dir.display()
        )))
}

fn lock_exclusive(path: &Path) -> Result<File, RecorderError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(format!(
            "failed to open lock file {}",
            path.display()
        )))?;
    // SAFETY: flock on a file descriptor we own and keep open; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(RecorderError::Locked(path.to_owned()));
        }
        return Err(io_err(format!("failed to lock {}", path.display()))(err));
    }
    Ok(file)
}

/// Writes `bytes` to `dir/name` atomically: temp file, fsync, rename, fsync dir.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), RecorderError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let mut f =
        File::create(&tmp).map_err(io_err(format!("failed to create {}", tmp.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err(format!("failed to write {}", tmp.display())))?;
    std::fs::rename(&tmp, &dst).map_err(io_err(format!(
        "failed to rename {} to {}",
        tmp.display(),
        dst.display()
    )))?;
    fsync_dir(dir)
}

/// Reads the retention anchor, if there is one.
pub(crate) fn read_anchor(dir: &Path) -> Result<Option<Anchor>, RecorderError> {
    let path = dir.join(ANCHOR_FILE);
    match std::fs::read(&path) {
        Ok(b) => Anchor::decode(&b)
            .map(Some)
            .map_err(|e| RecorderError::Corrupt {
                path,
                offset: 0,
                reason: format!("anchor: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(format!("failed to read {}", path.display()))(e)),
    }
}

/// Result of scanning the last segment on open.
struct TailScan {
    header: SegmentHeader,
    /// End of the last good record (where appends continue).
    good_len: u64,
    file_len: u64,
    next_seq: u64,
    last_hash: Hash,
    /// Where and why the scan stopped before the end of the file.
    stop: Option<(u64, String)>,
    /// Valid records exist after the stop: damage, not a torn tail.
    valid_after_stop: bool,
}

fn scan_tail(path: &Path) -> Result<Result<TailScan, DecodeError>, RecorderError> {
    let buf = std::fs::read(path).map_err(io_err(format!("failed to read {}", path.display())))?;
    let header = match SegmentHeader::decode(&buf) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let mut at = SEGMENT_HEADER_LEN;
    let mut next_seq = header.first_seq;
    let mut last_hash = header.prev_hash;
    let mut stop = None;
    while at < buf.len() {
        match decode_frame(&buf[at..]) {
            // A valid frame with the wrong seq is not something a crash produces; it
            // is handled like other damage below (the resync finds it valid).
            Ok(f) if f.seq != next_seq => {
                stop = Some((at, format!("expected seq {next_seq}, found {}", f.seq)));
                break;
            }
            Ok(f) => {
                next_seq += 1;
                last_hash = f.hash;
                at += f.encoded_len();
            }
            Err(e) => {
                stop = Some((at, e.to_string()));
                break;
            }
        }
    }
    let mut valid_after_stop = false;
    if let Some((off, _)) = &stop {
        // The frame at `off` itself may be valid (seq mismatch), so search from it.
        if let Some(first_valid) = resync(&buf, *off) {
            valid_after_stop = true;
            // Never reuse the damaged segment's name for the segment that follows.
            next_seq = next_seq.max(header.first_seq + 1);
            // Continue the chain after the last valid frame in the file so that new
            // records do not reuse seqs that are already on disk.
            let mut at = first_valid;
            while let Some(pos) = resync(&buf, at) {
                if let Ok(f) = decode_frame(&buf[pos..]) {
                    next_seq = next_seq.max(f.seq.saturating_add(1));
                    last_hash = f.hash;
                    at = pos + f.encoded_len();
                } else {
                    at = pos + 1;
                }
            }
        }
    }
    Ok(Ok(TailScan {
        header,
        good_len: stop.as_ref().map_or(buf.len(), |(o, _)| *o) as u64,
        file_len: buf.len() as u64,
        next_seq,
        last_hash,
        stop: stop.map(|(o, r)| (o as u64, r)),
        valid_after_stop,
    }))
}

fn file_len(path: &Path) -> Result<u64, RecorderError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(io_err(format!("failed to stat {}", path.display())))
}

impl Recorder {
    /// Opens (creating if needed) the record under `<state_dir>/record`, takes the
    /// writer lock, and recovers from a crash: the last segment is scanned, an
    /// incomplete or corrupt tail is cut at the last good record, and everything
    /// done is described in the returned [`RecoveryReport`].
    pub fn open(state_dir: &Path, opts: Options) -> Result<(Self, RecoveryReport), RecorderError> {
        let dir = state_dir.join(RECORD_DIR);
        std::fs::create_dir_all(&dir)
            .map_err(io_err(format!("failed to create {}", dir.display())))?;
        let lock = lock_exclusive(&dir.join(LOCK_FILE))?;
        let mut report = RecoveryReport::default();
        let mut files =
            list_segments(&dir).map_err(io_err(format!("failed to list {}", dir.display())))?;

        // Scan the last segment; a header-only stub from an interrupted rotation is
        // removed and the one before it becomes the last.
        let mut scan = None;
        while let Some(last) = files.last() {
            match scan_tail(&last.path)? {
                Ok(s) => {
                    if s.header.first_seq != last.first_seq {
                        return Err(RecorderError::Corrupt {
                            path: last.path.clone(),
                            offset: 0,
                            reason: format!(
                                "header says first seq {}, file name says {}",
                                s.header.first_seq, last.first_seq
                            ),
                        });
                    }
                    scan = Some(s);
                    break;
                }
                Err(DecodeError::Truncated { .. })
                    if file_len(&last.path)? < SEGMENT_HEADER_LEN as u64 =>
                {
                    std::fs::remove_file(&last.path)
                        .map_err(io_err(format!("failed to remove {}", last.path.display())))?;
                    report.removed_empty_segment = Some(last.path.clone());
                    files.pop();
                }
                Err(e) => {
                    return Err(RecorderError::Corrupt {
                        path: last.path.clone(),
                        offset: 0,
                        reason: format!(
                            "segment header: {e}; move the file aside to start a new segment"
                        ),
                    })
                }
            }
        }

        let mut segments = VecDeque::new();
        for f in &files {
            segments.push_back((f.first_seq, file_len(&f.path)?));
        }

        let mut rec = match (scan, files.last()) {
            (Some(s), Some(last)) => {
                let mut force_rotate = false;
                if let Some((offset, reason)) = s.stop.clone() {
                    if s.valid_after_stop {
                        report.damaged = Some(Damaged {
                            segment: last.path.clone(),
                            offset,
                            reason,
                        });
                        force_rotate = true;
                    } else {
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&last.path)
                            .map_err(io_err(format!("failed to open {}", last.path.display())))?;
                        f.set_len(s.good_len)
                            .and_then(|()| f.sync_all())
                            .map_err(io_err(format!(
                                "failed to truncate torn tail of {}",
                                last.path.display()
                            )))?;
                        report.torn_tail = Some(TornTail {
                            segment: last.path.clone(),
                            offset,
                            bytes_cut: s.file_len - s.good_len,
                            last_good_seq: (s.next_seq > s.header.first_seq)
                                .then(|| s.next_seq - 1),
                            reason,
                        });
                        if let Some(back) = segments.back_mut() {
                            back.1 = s.good_len;
                        }
                    }
                }
                let file = OpenOptions::new()
                    .append(true)
                    .open(&last.path)
                    .map_err(io_err(format!("failed to open {}", last.path.display())))?;
                let mut rec = Self {
                    dir: dir.clone(),
                    opts,
                    _lock: lock,
                    file,
                    seg_path: last.path.clone(),
                    seg_created_unix_ns: s.header.created_unix_ns,
                    seg_len: if force_rotate { s.file_len } else { s.good_len },
                    segments,
                    next_seq: s.next_seq,
                    last_hash: s.last_hash,
                    last_sync: Instant::now(),
                    unsynced: false,
                    payload: Vec::new(),
                    frame: Vec::new(),
                };
                if force_rotate {
                    rec.rotate()?;
                }
                rec
            }
            _ => {
                // No segment: a fresh record, or (odd) one whose segments were all
                // removed after an anchor was written: continue from the anchor.
                let (first, prev) = match read_anchor(&dir)? {
                    Some(a) => (a.first_seq, a.prev_hash),
                    None => (FIRST_SEQ, GENESIS_HASH),
                };
                let (file, path, created) = create_segment(&dir, first, prev)?;
                segments.push_back((first, SEGMENT_HEADER_LEN as u64));
                Self {
                    dir: dir.clone(),
                    opts,
                    _lock: lock,
                    file,
                    seg_path: path,
                    seg_created_unix_ns: created,
                    seg_len: SEGMENT_HEADER_LEN as u64,
                    segments,
                    next_seq: first,
                    last_hash: prev,
                    last_sync: Instant::now(),
                    unsynced: false,
                    payload: Vec::new(),
                    frame: Vec::new(),
                }
            }
        };
        rec.apply_retention()?;
        report.segments = rec.segments.len();
        report.next_seq = rec.next_seq;
        Ok((rec, report))
    }

    /// Appends one event and returns its seq.
    ///
    /// The frame goes to the kernel in one `write` before this returns, so it
    /// survives the process being killed. An event with a `decision` object is also
    /// fsynced before this returns (it survives power loss); others are fsynced by
    /// the interval policy of [`Options::fsync_interval`].
    pub fn append(&mut self, event: &Value) -> Result<u64, RecorderError> {
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        let result = serde_json::to_writer(&mut payload, event)
            .map_err(|e| RecorderError::Encode(e.to_string()))
            .and_then(|()| self.append_payload(&payload, is_decision(event)));
        self.payload = payload;
        result
    }

    /// Appends events in order and returns their seqs; if any is a decision, one
    /// fsync covers the whole batch before this returns. This is group commit: a
    /// daemon that drains its ring buffer in batches pays one fsync per batch
    /// instead of one per decision (an fsync costs milliseconds on most disks).
    /// On error, the events before the failing one are recorded.
    pub fn append_batch(&mut self, events: &[Value]) -> Result<Vec<u64>, RecorderError> {
        let payloads = events
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RecorderError::Encode(e.to_string()))?;
        let first = self.next_seq;
        let (n, result) = self.append_encoded(&payloads);
        // Decisions already written must be durable even if a later event failed.
        self.commit(events[..n].iter().any(is_decision))?;
        result.map(|()| (first..first + n as u64).collect())
    }

    /// Appends an already-serialised JSON event. `durable` forces an fsync before
    /// returning (what [`Recorder::append`] does for decision events).
    pub fn append_json(&mut self, payload: &[u8], durable: bool) -> Result<u64, RecorderError> {
        self.append_payload(payload, durable)
    }

    fn append_payload(&mut self, payload: &[u8], durable: bool) -> Result<u64, RecorderError> {
        self.append_encoded(&[payload]).1?;
        self.commit(durable)?;
        Ok(self.next_seq - 1)
    }

    /// After appending: fsyncs now if what was written holds a decision (`durable`),
    /// else when the fsync interval says so.
    pub fn commit(&mut self, durable: bool) -> Result<(), RecorderError> {
        if durable {
            self.sync()
        } else {
            self.sync_if_due().map(drop)
        }
    }

    /// Appends already-serialised JSON events in order with one `write` per segment
    /// they go to (mostly one per batch: a `write` per event was most of the
    /// recorder's cost), and says how many were appended: on an error, the frames of
    /// the failed `write` are cut off again, so exactly the first `n` are in the
    /// record. Neither fsyncs nor checks the fsync interval; the caller does.
    pub fn append_encoded(
        &mut self,
        payloads: &[impl AsRef<[u8]>],
    ) -> (usize, Result<(), RecorderError>) {
        let now = now_unix_ns();
        let max_age = u64::try_from(self.opts.segment_max_age.as_nanos()).unwrap_or(u64::MAX);
        let mut done = 0;
        while done < payloads.len() {
            let (seq0, hash0, len0) = (self.next_seq, self.last_hash, self.seg_len);
            let mut len = len0;
            self.frame.clear();
            for p in &payloads[done..] {
                let p = p.as_ref();
                if p.len() > MAX_PAYLOAD_LEN as usize {
                    break;
                }
                let frame_len = (FRAME_HEADER_LEN + p.len()) as u64;
                let has_records = len > SEGMENT_HEADER_LEN as u64;
                let too_big = len + frame_len > self.opts.segment_max_bytes;
                let too_old = now.saturating_sub(self.seg_created_unix_ns) >= max_age;
                if has_records && (too_big || too_old) {
                    break;
                }
                let hash = chain_hash(&self.last_hash, self.next_seq, p);
                super::segment::encode_frame(&mut self.frame, self.next_seq, &hash, p);
                self.next_seq += 1;
                self.last_hash = hash;
                len += frame_len;
            }
            if len == len0 {
                // Nothing fitted: the next payload is too large, or the segment is full.
                let p = payloads[done].as_ref();
                if p.len() > MAX_PAYLOAD_LEN as usize {
                    return (done, Err(RecorderError::TooLarge(p.len())));
                }
                if let Err(e) = self.rotate() {
                    return (done, Err(e));
                }
                continue;
            }
            if let Err(e) = self.file.write_all(&self.frame) {
                // Undo a partial write so the segment stays well-formed; if even that
                // fails, open() will cut it as a torn tail next time.
                let _ = self.file.set_len(len0);
                self.next_seq = seq0;
                self.last_hash = hash0;
                let what = format!("failed to append to {}", self.seg_path.display());
                return (done, Err(io_err(what)(e)));
            }
            done += usize::try_from(self.next_seq - seq0).unwrap_or(0);
            self.seg_len = len;
            if let Some(back) = self.segments.back_mut() {
                back.1 = len;
            }
            self.unsynced = true;
        }
        (done, Ok(()))
    }

    /// fsyncs the active segment now if anything was written since the last fsync.
    pub fn sync(&mut self) -> Result<(), RecorderError> {
        if self.unsynced {
            self.file.sync_data().map_err(io_err(format!(
                "failed to fsync {}",
                self.seg_path.display()
            )))?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// fsyncs if the interval of [`Options::fsync_interval`] has passed; returns
    /// whether it did. The daemon calls this from a timer so that the last records
    /// before a quiet spell are not left unsynced.
    pub fn sync_if_due(&mut self) -> Result<bool, RecorderError> {
        match self.opts.fsync_interval {
            Some(every) if self.unsynced && self.last_sync.elapsed() >= every => {
                self.sync()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Seq of the last record and its chain hash (`None` when nothing was written).
    pub fn head(&self) -> (Option<u64>, Hash) {
        let last = (self.next_seq > FIRST_SEQ).then(|| self.next_seq - 1);
        (last, self.last_hash)
    }

    /// The record directory (`<state_dir>/record`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Closes the active segment (fsynced) and starts a new one whose header carries
    /// the chain head.
    fn rotate(&mut self) -> Result<(), RecorderError> {
        self.unsynced = true;
        self.sync()?;
        let (file, path, created) = create_segment(&self.dir, self.next_seq, self.last_hash)?;
        self.file = file;
        self.seg_path = path;
        self.seg_created_unix_ns = created;
        self.seg_len = SEGMENT_HEADER_LEN as u64;
        self.segments
            .push_back((self.next_seq, SEGMENT_HEADER_LEN as u64));
        self.apply_retention()
    }

    /// Deletes the oldest segments beyond the retention limits. The active segment is
    /// never deleted. Before each deletion the anchor is rewritten to name the
    /// segment that becomes the oldest, so a crash in between leaves a record that
    /// still verifies.
    fn apply_retention(&mut self) -> Result<(), RecorderError> {
        loop {
            // The active segment counts at its full size: it grows until the next
            // rotation, and the limit should hold in between too.
            let active = self.opts.segment_max_bytes;
            let closed: u64 = self.segments.iter().rev().skip(1).map(|s| s.1).sum();
            let total = closed + active;
            let over_bytes = self.opts.retention_max_bytes.is_some_and(|m| total > m);
            let over_count = self
                .opts
                .retention_max_segments
                .is_some_and(|m| self.segments.len() > m.max(1));
            if !(over_bytes || over_count) || self.segments.len() < 2 {
                return Ok(());
            }
            let (oldest, _) = self.segments[0];
            let (next_first, _) = self.segments[1];
            let next_path = self.dir.join(segment_file_name(next_first));
            let mut head = [0u8; SEGMENT_HEADER_LEN];
            File::open(&next_path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
                .map_err(io_err(format!("failed to read {}", next_path.display())))?;
            let header = SegmentHeader::decode(&head).map_err(|e| RecorderError::Corrupt {
                path: next_path.clone(),
                offset: 0,
                reason: format!("segment header: {e}"),
            })?;
            let anchor = Anchor {
                first_seq: header.first_seq,
                prev_hash: header.prev_hash,
                written_unix_ns: now_unix_ns(),
            };
            write_atomic(&self.dir, ANCHOR_FILE, &anchor.encode())?;
            let old_path = self.dir.join(segment_file_name(oldest));
            std::fs::remove_file(&old_path)
                .map_err(io_err(format!("failed to remove {}", old_path.display())))?;
            self.segments.pop_front();
            fsync_dir(&self.dir)?;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Best effort: a clean shutdown leaves nothing unsynced.
        let _ = self.sync();
    }
}

/// Creates a segment whose header is written completely or not at all (temp file +
/// rename), so a crash during rotation cannot leave a half header behind.
fn create_segment(
    dir: &Path,
    first_seq: u64,
    prev_hash: Hash,
) -> Result<(File, PathBuf, u64), RecorderError> {
    let created = now_unix_ns();
    let header = SegmentHeader {
        first_seq,
        created_unix_ns: created,
        prev_hash,
    };
    let name = segment_file_name(first_seq);
    write_atomic(dir, &name, &header.encode())?;
    let path = dir.join(name);
    let file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(io_err(format!("failed to open {}", path.display())))?;
    Ok((file, path, created))
}

/// An event carrying a `decision` object: what the guard did. Fsynced on append.
pub(crate) fn is_decision(event: &Value) -> bool {
    event.get("decision").is_some_and(Value::is_object)
}
