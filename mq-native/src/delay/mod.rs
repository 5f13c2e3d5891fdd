//! The durable delay store.
//!
//! A delayed message is appended to the commit log as a *delayed record*
//! (kind 1) carrying its destination and due time, and gets a sequence
//! number `n`; entry `n` of the delay index (`delay.idx`, same 16-byte
//! format as partition indexes: due time, log position) points at it. When
//! it is about to fall due (100 ms ahead), the message is appended to its
//! topic **in the same batch** as a *delay-done* record for `n`, so after
//! any crash it was promoted once or not at all, and the done set
//! (checkpointed, plus done records replayed from the log) says which. The
//! promoted record carries the due time as its visibility time: consumers
//! skip it (without counting a delivery) and wake for it at that time, so
//! it is never early, and the append and its fsync are done by then instead
//! of adding to its lateness. Recovery reloads pending delays from the
//! index into the timing wheel.

pub mod wheel;

use std::collections::VecDeque;

use mq_core::driver::offsets::DoneSet;

use crate::log::index::{Entry, IndexFile};
use wheel::Wheel;

/// Delay state, behind one lock.
#[derive(Debug)]
pub struct DelayStore {
    /// Entry `n` = delayed message `n`: due time and log position.
    pub index: IndexFile,
    /// Delivered sequence numbers.
    pub done: DoneSet,
    /// Delays due soon.
    pub wheel: Wheel,
    /// Done marks not yet written, with their log positions, to undo if
    /// the write fails.
    pub unwritten_done: VecDeque<(u64, u64)>,
}

impl DelayStore {
    /// Assigns the next sequence number to a delay appended at `position`.
    pub fn add(&mut self, due_us: u64, position: u64) -> u64 {
        let seq = self.index.len();
        self.index.push(Entry {
            key: due_us,
            position,
        });
        seq
    }

    /// Marks `seq` delivered by the batch at `position`.
    pub fn mark_done(&mut self, seq: u64, position: u64) {
        self.done.insert(seq);
        self.unwritten_done.push_back((position, seq));
    }

    /// Forgets done marks written before `written`.
    pub fn written_to(&mut self, written: u64) {
        while self
            .unwritten_done
            .front()
            .is_some_and(|(p, _)| *p < written)
        {
            self.unwritten_done.pop_front();
        }
    }

    /// Undoes everything appended at or after `position` (a failed write).
    pub fn rollback(&mut self, position: u64) {
        self.index.truncate_at_position(position);
        while let Some((p, seq)) = self.unwritten_done.back().copied() {
            if p < position {
                break;
            }
            self.unwritten_done.pop_back();
            self.done.remove(seq);
        }
    }

    /// Pending delays (not yet delivered).
    pub fn pending(&self) -> u64 {
        let committed = self.done.committed();
        (committed..self.index.len())
            .filter(|s| !self.done.contains(*s))
            .count() as u64
    }

    /// Loads pending delays due up to the wheel's horizon into the wheel
    /// (all pending ones at open; at a refill only the new window).
    pub fn load_wheel(&mut self, window: Option<(u64, u64)>) -> std::io::Result<()> {
        let mut at = self.done.committed();
        let end = self.index.len();
        while at < end {
            let entries = self.index.range(at, 4096)?;
            for (i, e) in entries.iter().enumerate() {
                let seq = at + i as u64;
                if self.done.contains(seq) {
                    continue;
                }
                match window {
                    None => self.wheel.insert(e.key, seq),
                    Some(w) => self.wheel.refill(e.key, seq, w),
                }
            }
            at += entries.len().max(1) as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::index::run_flush_job;
    use wheel::{SLOTS, TICK_US};

    fn store(dir: &std::path::Path, now: u64) -> DelayStore {
        DelayStore {
            index: IndexFile::open(&crate::fs::RealFs, &dir.join("delay.idx"), 0).unwrap(),
            done: DoneSet::default(),
            wheel: Wheel::new(now),
            unwritten_done: VecDeque::new(),
        }
    }

    #[test]
    fn a_million_far_delays_stay_on_disk_until_near() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_000 * TICK_US;
        let mut s = store(dir.path(), now);
        let far = now + 2 * SLOTS * TICK_US;
        for i in 0..1_000_000u64 {
            let seq = s.add(far + i % 1000, i * 100);
            s.wheel.insert(far + i % 1000, seq);
        }
        let near = s.add(now + 10 * TICK_US, 1);
        s.wheel.insert(now + 10 * TICK_US, near);
        // Written at a checkpoint: the index keeps only a small tail in memory.
        let job = s.index.flush_job(s.index.len()).unwrap();
        run_flush_job(&job).unwrap();
        let len = s.index.len();
        s.index.flushed_to(len);
        assert_eq!(s.wheel.len(), 1, "only the near delay is held in memory");
        assert_eq!(s.pending(), 1_000_001);
        // The near one fires; the far ones are loaded as their time nears.
        assert_eq!(s.wheel.advance(now + 10 * TICK_US), vec![near]);
        s.done.insert(near);
        let mut t = now + 10 * TICK_US;
        let mut fired = 0u64;
        while fired < 1_000_000 {
            t += SLOTS / 4 * TICK_US;
            if s.wheel.needs_refill() {
                let window = s.wheel.begin_refill();
                s.load_wheel(Some(window)).unwrap();
            }
            for seq in s.wheel.advance(t) {
                let due = s.index.get(seq).unwrap().unwrap().key;
                assert!(due <= t, "delay {seq} fired early");
                assert!(!s.done.contains(seq), "delay {seq} fired twice");
                s.done.insert(seq);
                fired += 1;
            }
            assert!(t < far + 4 * SLOTS * TICK_US, "far delays never fired");
        }
        assert_eq!(s.pending(), 0);
        assert_eq!(s.done.committed(), 1_000_001);
    }
}
