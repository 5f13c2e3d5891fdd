//! The checkpoint: `checkpoint.json`, replaced atomically.
//!
//! It names a log position `P` such that everything before `P` is fsynced
//! and reflected in the index files (whose durable entry counts it lists),
//! the delay done set and the dedup journal. Recovery trusts exactly that
//! and rescans the log from `P`, so a crash costs a rescan of at most one
//! checkpoint interval of appends.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use mq_core::Result;
use serde::{Deserialize, Serialize};

use super::Engine;
use crate::error::{corrupt, io_error};
use crate::group::offsets::{OffsetsFile, SavedCursor};
use crate::half::store::HalfCheckpoint;
use crate::log::index::run_flush_job;
use crate::log::segment::MAX_POSITION;

/// One partition's durable index state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    /// Topic id.
    pub topic: u32,
    /// Partition.
    pub partition: u32,
    /// Durable index entries.
    pub entries: u64,
    /// Next offset as of the checkpoint.
    pub end: u64,
}

/// The delay store's durable state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DelayCheckpoint {
    /// Durable delay index entries.
    pub entries: u64,
    /// Done set: every seq below is done.
    pub done_base: u64,
    /// Done set: bitmap above `done_base`.
    pub done_words: Vec<u64>,
}

/// The whole checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version.
    pub version: u32,
    /// Log position covered.
    pub position: u64,
    /// Partition indexes.
    pub partitions: Vec<PartitionCheckpoint>,
    /// Delay store.
    pub delay: DelayCheckpoint,
    /// Dedup journal generation.
    pub dedup_generation: u64,
    /// Dedup journal durable length.
    pub dedup_len: u64,
    /// Unresolved half messages (absent in checkpoints from before them).
    #[serde(default)]
    pub half: HalfCheckpoint,
}

impl Checkpoint {
    /// Reads `checkpoint.json` in `dir`; default (empty) when absent.
    pub fn load(fs: &dyn crate::fs::FileSystem, dir: &std::path::Path) -> Result<Self> {
        let path = dir.join("checkpoint.json");
        match crate::fs::read_optional(fs, &path)
            .map_err(|e| io_error(format!("reading {}", path.display()), e))?
        {
            None => Ok(Checkpoint::default()),
            Some(bytes) => {
                let checkpoint: Checkpoint = serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(&path, 0, format!("not a checkpoint: {e}")))?;
                checkpoint.check().map_err(|why| corrupt(&path, 0, why))?;
                Ok(checkpoint)
            }
        }
    }

    /// Checks the counts against the log position: every offset, delay and
    /// half message has a record of its own, at least a byte, before the
    /// position, so no count can exceed it. A count past it is damage, and
    /// counting on from there overflowed.
    fn check(&self) -> std::result::Result<(), String> {
        let position = self.position;
        if position > MAX_POSITION {
            return Err(format!("log position {position} is past the largest one"));
        }
        for p in &self.partitions {
            if p.end > position {
                return Err(format!(
                    "the end of topic {} partition {} is {}, past log position {position}",
                    p.topic, p.partition, p.end
                ));
            }
        }
        let counts = [
            ("the delay count", self.delay.entries),
            ("the delays done", self.delay.done_base),
            ("the next half message", self.half.next_seq),
        ];
        if let Some((what, n)) = counts.iter().find(|(_, n)| *n > position) {
            return Err(format!("{what} is {n}, past log position {position}"));
        }
        // Restoring one at or past the next number moves the next number
        // there, and the following checkpoint would be refused.
        match self
            .half
            .unresolved
            .iter()
            .find(|h| h.seq >= self.half.next_seq)
        {
            Some(h) => Err(format!(
                "half message {} is not below the next one, {}",
                h.seq, self.half.next_seq
            )),
            None => Ok(()),
        }
    }
}

impl Engine {
    /// Writes a checkpoint covering everything appended so far.
    pub fn checkpoint(self: &Arc<Self>) -> Result<()> {
        let _one_at_a_time = self.checkpointing.lock();
        // 1. A consistent cut, taken under the writer lock. The topics
        // too: one created just before the cut may have records in it,
        // and a partition the checkpoint does not list is rebuilt from
        // the cut's position on, past them.
        let (position, parts, delay_cut, dedup_bytes, half) = {
            let w = self.writer.lock();
            let topics = self.topics.read().all();
            let mut parts = Vec::new();
            for t in &topics {
                for (p, part) in t.partitions.iter().enumerate() {
                    let entries = part.index.lock().len();
                    parts.push((t.clone(), p, entries, part.next.load(Ordering::Acquire)));
                }
            }
            let delay = self.delay.lock();
            let (done_base, done_words) = delay.done.to_words();
            let delay_cut = (delay.index.len(), done_base, done_words);
            drop(delay);
            let dedup_bytes = self.dedup.lock().journal_job(w.position);
            let half = self.half.lock().checkpoint();
            (w.position, parts, delay_cut, dedup_bytes, half)
        };
        // Nothing appended since the last checkpoint: it still holds
        // (delay, dedup and half state only change with appends).
        if position == self.checkpoint_position.load(Ordering::Acquire)
            && self.fs.exists(&self.dir.join("checkpoint.json"))
        {
            return self.save_offsets();
        }
        // 2. The log up to the cut is written and fsynced.
        {
            let mut w = self.writer.lock();
            // A failed write rolls `position` back below the cut: then this
            // cut is void; the next checkpoint takes a new one.
            while w.written < position
                && w.position >= position
                && w.failed.is_none()
                && !w.shutdown_done
            {
                self.progress
                    .wait_for(&mut w, std::time::Duration::from_millis(100));
            }
            if let Some(f) = &w.failed {
                return Err(crate::error::backend(f.clone()));
            }
            if w.written < position {
                return Ok(());
            }
        }
        if position > 0 {
            if let Some(seg) = self.log.find(position - 1) {
                seg.sync()
                    .map_err(|e| io_error(format!("syncing {}", seg.path.display()), e))?;
            }
        }
        {
            let mut w = self.writer.lock();
            w.synced = w.synced.max(position);
        }
        // 3. Indexes up to the cut.
        let mut saved = Vec::with_capacity(parts.len());
        for (t, p, entries, end) in parts {
            if t.deleted.load(Ordering::Acquire) {
                continue;
            }
            if p == 0 && t.unsynced_names.load(Ordering::Acquire) {
                // The checkpoint is about to vouch for entries in index
                // files a power loss could still take back with their
                // names: then recovery would trust entries that are gone
                // and never rescan the records they point at.
                let root = super::topics::index_root(&self.dir);
                self.fs
                    .sync_dir(&t.dir)
                    .and_then(|()| self.fs.sync_dir(&root))
                    .map_err(|e| io_error(format!("syncing {}", t.dir.display()), e))?;
                t.unsynced_names.store(false, Ordering::Release);
            }
            let job = t.partitions[p].index.lock().flush_job(entries);
            if let Some(job) = job {
                run_flush_job(&job).map_err(|e| {
                    io_error(format!("writing index of {} partition {p}", t.name), e)
                })?;
                t.partitions[p].index.lock().flushed_to(entries);
            }
            saved.push(PartitionCheckpoint {
                topic: t.id,
                partition: p as u32,
                entries,
                end,
            });
        }
        let job = self.delay.lock().index.flush_job(delay_cut.0);
        if let Some(job) = job {
            run_flush_job(&job).map_err(|e| io_error("writing the delay index", e))?;
            self.delay.lock().index.flushed_to(delay_cut.0);
        }
        // 4. The dedup journal.
        // Written and fsynced without the dedup lock: sends with
        // idempotency keys take it under the writer lock.
        let end = self.dedup.lock().journal_end();
        if let Some((file, at)) = end.filter(|_| !dedup_bytes.is_empty()) {
            file.write_all_at(&dedup_bytes, at)
                .and_then(|()| file.sync_data())
                .map_err(|e| io_error("writing the dedup journal", e))?;
            self.dedup.lock().journaled(dedup_bytes.len() as u64);
        }
        let (dedup_generation, dedup_len, compacted) = {
            let mut dedup = self.dedup.lock();
            let compacted = dedup
                .maybe_compact(position)
                .map_err(|e| io_error("compacting the dedup journal", e))?;
            (dedup.generation, dedup.journal_len, compacted)
        };
        // 5. The checkpoint itself.
        let checkpoint = Checkpoint {
            version: 1,
            position,
            partitions: saved,
            delay: DelayCheckpoint {
                entries: delay_cut.0,
                done_base: delay_cut.1,
                done_words: delay_cut.2,
            },
            dedup_generation,
            dedup_len,
            half,
        };
        let bytes = serde_json::to_vec(&checkpoint)
            .map_err(|e| crate::error::backend(format!("encoding the checkpoint: {e}")))?;
        let path = self.dir.join("checkpoint.json");
        crate::fs::write_atomic(&*self.fs, &path, &bytes)
            .map_err(|e| io_error(format!("writing {}", path.display()), e))?;
        self.checkpoint_position.store(position, Ordering::Release);
        if compacted {
            self.dedup.lock().remove_old_journals();
        }
        // 6. Group offsets, when they changed.
        self.save_offsets()?;
        Ok(())
    }

    /// Writes `offsets.json` if any cursor changed since the last save.
    /// Once it returns `Ok`, every cursor change made before the call is
    /// durable: a save racing it either covers the change (it cleared the
    /// dirty flag after the change set it) and finished under the lock
    /// first, or failed and set the flag again for this one.
    pub fn save_offsets(&self) -> Result<()> {
        let _one_at_a_time = self.saving_offsets.lock();
        if !self.offsets_dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let mut file = OffsetsFile::default();
        for t in self.topics.read().all() {
            for (p, part) in t.partitions.iter().enumerate() {
                for (group, c) in part.cursors.lock().iter() {
                    file.cursors.push(SavedCursor {
                        group: group.to_string(),
                        topic: t.id,
                        partition: p as u32,
                        committed: c.committed(),
                        delivered: c.delivered(),
                        acked: c.acked_above(),
                    });
                }
            }
        }
        let bytes = serde_json::to_vec(&file)
            .map_err(|e| crate::error::backend(format!("encoding offsets: {e}")))?;
        let path = self.dir.join("offsets.json");
        if let Err(e) = crate::fs::write_atomic(&*self.fs, &path, &bytes) {
            self.offsets_dirty.store(true, Ordering::Release);
            return Err(io_error(format!("writing {}", path.display()), e));
        }
        Ok(())
    }
}
