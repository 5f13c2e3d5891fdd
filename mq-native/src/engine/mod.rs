//! The engine: one commit log shared by every topic, per-partition indexes,
//! group cursors, the delay store and the dedup index, with a flusher
//! thread (group commit) and a housekeeping thread (delays, checkpoints,
//! retention).

mod admin;
mod append;
pub mod checkpoint;
mod consume;
mod flusher;
mod housekeeper;
pub(crate) mod open;
mod read;
mod retention;
mod topic_admin;
pub mod topic_table;
pub mod topics;
pub mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mq_core::driver::local_group::Member;
use parking_lot::{Condvar, Mutex, RwLock};

pub use append::{Appended, Item};

use crate::dedup::DedupIndex;
use crate::delay::DelayStore;
use crate::fs::{Fs, LockGuard};
use crate::half::store::HalfStore;
use crate::log::segment::SegmentSet;
use crate::options::Options;
use topic_table::{TableWrites, TopicTable};
use topics::Topics;
use writer::WriterState;

/// `now + wait`, or a century from now where that would overflow (as
/// `Duration::MAX` does): a wait from user input or options never panics.
pub(crate) fn saturating_after(now: Instant, wait: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(wait).unwrap_or_else(|| now + CENTURY)
}

/// An open data directory.
pub struct Engine {
    /// Settings.
    pub options: Options,
    /// The data directory.
    pub dir: PathBuf,
    /// The file system it is on.
    pub(crate) fs: Fs,
    lock: Mutex<Option<LockGuard>>,
    /// The commit log.
    pub log: SegmentSet,
    /// Appends waiting for the flusher, and the log's ends.
    pub writer: Mutex<WriterState>,
    /// Wakes the flusher.
    pub work: Condvar,
    /// Signalled when the flusher advanced `written`.
    pub progress: Condvar,
    /// Every topic.
    pub topics: RwLock<Topics>,
    /// The durable topic table. Held while a topic change is made durable
    /// (one at a time), and taken before `topics`, never while holding it,
    /// so readers of `topics` never wait for an fsync.
    table: Mutex<TopicTable>,
    /// Idempotency keys.
    pub dedup: Mutex<DedupIndex>,
    /// Delayed messages.
    pub delay: Mutex<DelayStore>,
    /// Unresolved prepared (half) messages.
    pub half: Mutex<HalfStore>,
    house: Mutex<bool>,
    house_cv: Condvar,
    checkpointing: Mutex<()>,
    /// Held while `offsets.json` is written: checkpoints and group resets
    /// both write it, through one temp file.
    saving_offsets: Mutex<()>,
    /// Held while retention runs: expiring a topic reads batches a
    /// concurrent segment deletion could remove.
    retaining: Mutex<()>,
    /// Position of the last checkpoint.
    pub checkpoint_position: AtomicU64,
    /// Set when a cursor changed since offsets were saved.
    pub offsets_dirty: AtomicBool,
    next_member: AtomicU64,
    /// Varies which assigned partition a fetch starts with, so none starves.
    rotation: AtomicU64,
    closed: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("dir", &self.dir).finish()
    }
}

impl Engine {
    /// Whether the engine was shut down.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A new member for a subscription, owning nothing yet.
    pub fn new_member(&self) -> Arc<Member> {
        Member::new(self.next_member.fetch_add(1, Ordering::Relaxed))
    }

    /// A different number each call, to rotate fetch order.
    pub fn next_rotation(&self) -> u64 {
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }

    /// What keeping the topic table durable has written since opening.
    pub fn table_writes(&self) -> TableWrites {
        self.table.lock().writes()
    }

    /// Wakes the housekeeping thread (a delay was scheduled, or shutdown).
    pub fn wake_housekeeper(&self) {
        *self.house.lock() = true;
        self.house_cv.notify_one();
    }

    /// Drains pending appends, writes a final checkpoint, stops the threads
    /// and releases the directory lock. Idempotent.
    pub fn shutdown(self: &Arc<Self>) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let mut w = self.writer.lock();
            w.shutdown = true;
        }
        self.work.notify_all();
        self.wake_housekeeper();
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            let _ = t.join();
        }
        if let Err(e) = self.checkpoint() {
            tracing::warn!(error = %e, "native engine: final checkpoint failed; the next open rescans the log");
        }
        for t in self.topics.read().all() {
            t.changed.notify_waiters();
        }
        // Check streams end instead of waiting for their next check.
        self.half.lock().notify.notify_waiters();
        self.lock.lock().take();
    }
}
