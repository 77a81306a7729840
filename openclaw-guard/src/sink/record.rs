//! The recorder's own thread: the pipeline hands it batches and waits only for
//! batches that carry a decision (group commit: one fsync covers the batch).
//!
//! A slow disk never holds up the pipeline for ordinary events: their batches are
//! offered with `try_send` and, when the queue is full, counted as a gap. When the
//! store refuses writes (ENOSPC, EIO), ordinary events are counted as a gap and
//! decisions are held in memory (bounded) and written first when writes succeed
//! again; a `recorder_gap` record then says how many events are missing and why.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::Serialize;

use crate::recorder::{segment::hex, Options, Recorder, RecorderError, RecoveryReport};

/// Batches the queue holds before ordinary batches are dropped (and counted).
const QUEUE_BATCHES: usize = 256;
/// Bytes of ordinary events the queue holds at most: the daemon's memory stays bounded
/// when the disk falls behind a storm (decisions are not held to it).
const QUEUE_BYTES: usize = 32 << 20;
/// Decisions kept in memory while the store refuses writes.
const MAX_HELD_DECISIONS: usize = 65_536;
/// How often the thread wakes to fsync on interval and to retry a failing store.
const TICK: Duration = Duration::from_millis(250);

/// One serialised event.
pub(crate) struct Entry {
    /// Shared with the outputs' copy of the event.
    pub(crate) payload: bytes::Bytes,
    /// A decision: fsynced before the batch is acknowledged, never dropped here.
    pub(crate) decision: bool,
}

impl AsRef<[u8]> for Entry {
    fn as_ref(&self) -> &[u8] {
        &self.payload
    }
}

enum Msg {
    Batch {
        entries: Vec<Entry>,
        /// Events dropped before this batch because the queue was full.
        dropped_before: u64,
        ack: Option<SyncSender<()>>,
    },
}

impl Msg {
    /// A batch the daemon waits for (it holds a decision).
    fn durable(&self) -> bool {
        let Msg::Batch { ack, .. } = self;
        ack.is_some()
    }
}

/// Recorder counters and head, for `status`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RecorderStats {
    /// The record directory.
    pub dir: PathBuf,
    /// What opening the record found (torn tail cut, damage, ...).
    pub opened: String,
    pub head_seq: Option<u64>,
    pub head_hash: Option<String>,
    /// Events appended by this daemon.
    pub recorded: u64,
    /// Events not recorded: queue full (disk slower than events) or store refusing.
    pub gap_events: u64,
    /// Separate stretches of missing events (each closed by a `recorder_gap` record).
    pub gaps: u64,
    /// The store is refusing writes now.
    pub failing: bool,
    /// Decisions waiting in memory for the store to accept writes again.
    pub held_decisions: u64,
    /// Decisions lost because more than the held limit piled up.
    pub lost_decisions: u64,
    pub fsync_failures: u64,
    pub last_error: Option<String>,
}

/// The pipeline's handle on the recorder thread.
pub(crate) struct RecordHandle {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Mutex<RecorderStats>>,
    dropped_pending: u64,
    /// Payload bytes in the queue, released by the writer.
    queued_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

impl RecordHandle {
    /// Opens the record under `state_dir` (recovering a torn tail) and starts the thread.
    pub(crate) fn open(
        state_dir: &Path,
        opts: Options,
    ) -> Result<(Self, RecoveryReport), RecorderError> {
        let (rec, report) = Recorder::open(state_dir, opts)?;
        let (head_seq, head_hash) = rec.head();
        let stats = Arc::new(Mutex::new(RecorderStats {
            dir: rec.dir().to_owned(),
            opened: report.to_string(),
            head_seq,
            head_hash: head_seq.map(|_| hex(&head_hash)),
            ..RecorderStats::default()
        }));
        let (tx, rx) = mpsc::sync_channel(QUEUE_BATCHES);
        let queued_bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut writer = Writer {
            rec,
            held: VecDeque::new(),
            gap: None,
            stats: Arc::clone(&stats),
            queued_bytes: Arc::clone(&queued_bytes),
        };
        let thread = std::thread::Builder::new()
            .name("recorder".to_owned())
            .spawn(move || writer.run(&rx))
            .map_err(|source| RecorderError::Io {
                what: "failed to start the recorder thread".to_owned(),
                source,
            })?;
        Ok((
            Self {
                tx: Some(tx),
                thread: Some(thread),
                stats,
                dropped_pending: 0,
                queued_bytes,
            },
            report,
        ))
    }

    /// Hands a batch over. A batch with a decision waits until it is written and
    /// fsynced (or held, if the store refuses writes); others never wait.
    pub(crate) fn submit(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let Some(tx) = &self.tx else { return };
        let durable = entries.iter().any(|e| e.decision);
        let n = entries.len() as u64;
        let bytes: usize = entries.iter().map(|e| e.payload.len()).sum();
        let queued = self
            .queued_bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        if !durable && queued + bytes > QUEUE_BYTES {
            self.queued_bytes
                .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
            self.dropped_pending += n;
            return;
        }
        if durable {
            let (ack_tx, ack_rx) = mpsc::sync_channel(1);
            let msg = Msg::Batch {
                entries,
                dropped_before: std::mem::take(&mut self.dropped_pending),
                ack: Some(ack_tx),
            };
            // Blocking: a decision is never dropped in userspace.
            if tx.send(msg).is_err() || ack_rx.recv().is_err() {
                self.thread_gone(n);
            }
            return;
        }
        let msg = Msg::Batch {
            entries,
            dropped_before: self.dropped_pending,
            ack: None,
        };
        match tx.try_send(msg) {
            Ok(()) => self.dropped_pending = 0,
            Err(e) => {
                self.queued_bytes
                    .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
                match e {
                    TrySendError::Full(_) => self.dropped_pending += n,
                    TrySendError::Disconnected(_) => self.thread_gone(n),
                }
            }
        }
    }

    fn thread_gone(&self, n: u64) {
        let mut s = lock(&self.stats);
        s.gap_events += n;
        s.failing = true;
        s.last_error = Some("the recorder thread stopped".to_owned());
    }

    pub(crate) fn stats(&self) -> RecorderStats {
        let mut s = lock(&self.stats).clone();
        s.gap_events += self.dropped_pending;
        s
    }

    /// Writes what is queued, fsyncs, and closes the record.
    pub(crate) fn shutdown(mut self) -> RecorderStats {
        self.close();
        self.stats()
    }

    fn close(&mut self) {
        if self.dropped_pending > 0 {
            if let Some(tx) = &self.tx {
                // Only to carry the count of dropped events into a gap record.
                let _ = tx.send(Msg::Batch {
                    entries: Vec::new(),
                    dropped_before: std::mem::take(&mut self.dropped_pending),
                    ack: None,
                });
            }
        }
        self.tx = None;
        if let Some(t) = self.thread.take() {
            // A panicked writer has nothing left to flush.
            let _ = t.join();
        }
    }
}

impl Drop for RecordHandle {
    fn drop(&mut self) {
        self.close();
    }
}

fn lock(m: &Mutex<RecorderStats>) -> std::sync::MutexGuard<'_, RecorderStats> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A stretch of events that did not reach the record.
struct Gap {
    lost: u64,
    since: jiff::Timestamp,
    reason: String,
}

struct Writer {
    rec: Recorder,
    /// Decisions the store refused, oldest first.
    held: VecDeque<bytes::Bytes>,
    gap: Option<Gap>,
    stats: Arc<Mutex<RecorderStats>>,
    queued_bytes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Writer {
    /// Batches with a decision go first: the daemon waits for their fsync, and under
    /// a flood up to [`QUEUE_BYTES`] of ordinary batches may be queued ahead of them.
    /// The record then holds them in the order written (each event keeps its kernel
    /// time); between two ordinary batches the queue is looked at again.
    fn run(&mut self, rx: &Receiver<Msg>) {
        let mut queue: VecDeque<Msg> = VecDeque::new();
        let mut open = true;
        while open || !queue.is_empty() {
            if queue.is_empty() {
                match rx.recv_timeout(TICK) {
                    Ok(m) => queue.push_back(m),
                    Err(RecvTimeoutError::Timeout) => {
                        self.tick();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(m) => queue.push_back(m),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let next = queue
                .iter()
                .position(Msg::durable)
                .and_then(|i| queue.remove(i))
                .or_else(|| queue.pop_front());
            if let Some(m) = next {
                self.take(m);
            }
        }
        self.resume();
        if let Err(e) = self.rec.sync() {
            self.error(&e, true);
        }
        self.publish();
    }

    fn take(&mut self, msg: Msg) {
        let Msg::Batch {
            entries,
            dropped_before,
            ack,
        } = msg;
        if dropped_before > 0 {
            self.lose(
                dropped_before,
                "recorder queue full: the disk is slower than the events",
            );
        }
        let bytes: usize = entries.iter().map(|e| e.payload.len()).sum();
        self.batch(entries);
        self.queued_bytes
            .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
        if let Some(a) = ack {
            let _ = a.send(());
        }
    }

    fn tick(&mut self) {
        self.resume();
        if let Err(e) = self.rec.sync_if_due() {
            self.error(&e, true);
        }
        self.publish();
    }

    fn batch(&mut self, entries: Vec<Entry>) {
        // Keep the record in order: nothing new is written before what is held.
        let mut written = 0;
        if self.resume() {
            let (n, result) = self.rec.append_encoded(&entries);
            written = n;
            if let Err(err) = result {
                self.error(&err, false);
            }
        }
        let durable = entries[..written].iter().any(|e| e.decision);
        for e in entries.into_iter().skip(written) {
            if e.decision {
                self.hold(e.payload);
            } else {
                self.lose(1, "");
            }
        }
        if let Err(e) = self.rec.commit(durable) {
            self.error(&e, true);
        }
        lock(&self.stats).recorded += written as u64;
        self.publish();
    }

    /// Writes the held decisions and the gap record; true once nothing is pending.
    fn resume(&mut self) -> bool {
        while let Some(p) = self.held.front() {
            match self.rec.append_json(p, true) {
                Ok(_) => {
                    self.held.pop_front();
                    lock(&self.stats).recorded += 1;
                }
                Err(e) => {
                    self.error(&e, false);
                    return false;
                }
            }
        }
        if let Some(g) = &self.gap {
            let rec = serde_json::to_vec(&crate::events::DaemonRecord::RecorderGap {
                time: jiff::Timestamp::now().to_string(),
                lost_events: g.lost,
                since: g.since.to_string(),
                reason: g.reason.to_string(),
            })
            .unwrap_or_default();
            match self.rec.append_json(&rec, true) {
                Ok(_) => {
                    self.gap = None;
                    let mut s = lock(&self.stats);
                    s.recorded += 1;
                    s.failing = false;
                }
                Err(e) => {
                    self.error(&e, false);
                    return false;
                }
            }
        }
        lock(&self.stats).failing = false;
        true
    }

    fn hold(&mut self, payload: bytes::Bytes) {
        if self.held.len() >= MAX_HELD_DECISIONS {
            lock(&self.stats).lost_decisions += 1;
            self.lose(1, "");
            return;
        }
        self.held.push_back(payload);
    }

    /// Counts `n` events that will not be recorded; `reason` names a new cause.
    fn lose(&mut self, n: u64, reason: &str) {
        let mut s = lock(&self.stats);
        s.gap_events += n;
        match &mut self.gap {
            Some(g) => g.lost += n,
            None => {
                s.gaps += 1;
                let last = s.last_error.clone().unwrap_or_default();
                self.gap = Some(Gap {
                    lost: n,
                    since: jiff::Timestamp::now(),
                    reason: if reason.is_empty() {
                        last
                    } else {
                        reason.to_owned()
                    },
                });
            }
        }
    }

    fn error(&mut self, e: &RecorderError, fsync: bool) {
        let text = match e {
            RecorderError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                format!("{e} (no space left for the record; events are still enforced and output, and recording resumes when space is freed)")
            }
            _ => e.to_string(),
        };
        let mut s = lock(&self.stats);
        if fsync {
            s.fsync_failures += 1;
        } else {
            s.failing = true;
        }
        s.last_error = Some(text);
    }

    fn publish(&self) {
        let (seq, hash) = self.rec.head();
        let mut s = lock(&self.stats);
        s.head_seq = seq;
        s.head_hash = seq.map(|_| hex(&hash));
        s.held_decisions = self.held.len() as u64;
    }
}
