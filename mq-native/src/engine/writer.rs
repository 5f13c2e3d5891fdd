//! The writer state shared by appenders and the flusher thread.
//!
//! Appenders encode batches into `pending` under the writer lock, which
//! also assigns offsets, so log order is offset order. The flusher swaps
//! `pending` out, writes it with one `pwrite` per segment, fsyncs it once
//! (group commit: one fsync serves every append waiting in the chunk) and
//! only then makes the records visible and acknowledges the appenders.

use std::sync::Arc;

use mq_core::Result;
use tokio::sync::oneshot;

use super::topics::Topic;

/// Something to do once a chunk is durable.
pub enum Effect {
    /// Records of a partition up to `end` are readable.
    Visible {
        /// The topic.
        topic: Arc<Topic>,
        /// The partition.
        partition: u32,
        /// Its new visible end.
        end: u64,
    },
    /// A delayed message is stored: schedule it.
    Delay {
        /// Its sequence number.
        seq: u64,
        /// When it is due.
        due_us: u64,
    },
    /// A prepared (half) message is stored: offer it for checks.
    Half {
        /// Its sequence number.
        seq: u64,
    },
}

/// Appends not yet handed to the flusher.
pub struct Pending {
    /// Log position of `bytes[0]`.
    pub start: u64,
    /// Encoded batches.
    pub bytes: Vec<u8>,
    /// Positions where a new segment starts.
    pub rolls: Vec<u64>,
    /// Appenders to acknowledge.
    pub waiters: Vec<oneshot::Sender<Result<()>>>,
    /// What becomes true when the chunk is durable.
    pub effects: Vec<Effect>,
}

impl Pending {
    /// Empty, starting at `start`.
    pub fn new(start: u64) -> Self {
        Pending {
            start,
            bytes: Vec::new(),
            rolls: Vec::new(),
            waiters: Vec::new(),
            effects: Vec::new(),
        }
    }

    /// Whether the flusher has anything to do.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.waiters.is_empty()
    }
}

/// Writer state behind the writer lock.
pub struct WriterState {
    /// Appends waiting for the flusher.
    pub pending: Pending,
    /// End of everything encoded.
    pub position: u64,
    /// Base of the segment new batches go to.
    pub segment_base: u64,
    /// End of what the flusher wrote (and synced, under `always`).
    pub written: u64,
    /// End of what is known fsynced.
    pub synced: u64,
    /// Set when durability can no longer be promised (an fsync failed after
    /// acks were given); appends are refused until reopen.
    pub failed: Option<String>,
    /// Set by shutdown: the flusher drains and exits.
    pub shutdown: bool,
    /// Set by the flusher as it exits.
    pub shutdown_done: bool,
    /// A written chunk's buffer, kept to take the next appends without
    /// growing a new one from scratch.
    pub spare: Vec<u8>,
}

impl WriterState {
    /// Swaps the pending appends out for the flusher.
    pub fn take_pending(&mut self) -> Pending {
        let mut next = Pending::new(self.position);
        next.bytes = std::mem::take(&mut self.spare);
        std::mem::replace(&mut self.pending, next)
    }
}
