//! The checkpoint: `checkpoint.json`, replaced atomically.
//!
//! It names a log position `P` such that everything before `P` is fsynced
//! and reflected in the index files (whose durable entry counts it lists),
//! the delay done set and the dedup journal. Recovery trusts exactly that
//! and rescans the log from `P`, so a crash costs a rescan of at most one
//! checkpoint interval of appends.

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mq_core::Result;
use serde::{Deserialize, Serialize};

use super::Engine;
use crate::error::{corrupt, io_error};
use crate::group::offsets::{OffsetsFile, SavedCursor};
use crate::log::index::run_flush_job;

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
}

impl Checkpoint {
    /// Reads `checkpoint.json` in `dir`; default (empty) when absent.
    pub fn load(dir: &std::path::Path) -> Result<Self> {
        let path = dir.join("checkpoint.json");
        match crate::fsutil::read_optional(&path)
            .map_err(|e| io_error(format!("reading {}", path.display()), e))?
        {
            None => Ok(Checkpoint::default()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| corrupt(&path, 0, format!("not a checkpoint: {e}"))),
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
        let (position, parts, delay_cut, dedup_bytes) = {
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
            (w.position, parts, delay_cut, dedup_bytes)
        };
        // Nothing appended since the last checkpoint: it still holds
        // (delay and dedup state only change with appends).
        if position == self.checkpoint_position.load(Ordering::Acquire)
            && self.dir.join("checkpoint.json").exists()
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
        };
        let bytes = serde_json::to_vec(&checkpoint)
            .map_err(|e| crate::error::backend(format!("encoding the checkpoint: {e}")))?;
        let path = self.dir.join("checkpoint.json");
        crate::fsutil::write_atomic(&path, &bytes)
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
        if let Err(e) = crate::fsutil::write_atomic(&path, &bytes) {
            self.offsets_dirty.store(true, Ordering::Release);
            return Err(io_error(format!("writing {}", path.display()), e));
        }
        Ok(())
    }
}
