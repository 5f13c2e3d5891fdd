//! The flusher thread: writes pending batches, fsyncs per the durability
//! mode (one fsync per chunk = group commit), then publishes visibility and
//! acknowledges. A failed write or fsync rolls every in-memory effect of the
//! unwritten appends back and fails them, so nothing acknowledged is lost
//! and nothing unacknowledged becomes visible.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mq_core::{Error, Result};

use super::writer::{Effect, Pending};
use super::{saturating_after, Engine};
use crate::error::BACKEND;
use crate::options::Fsync;

impl Engine {
    pub(super) fn run_flusher(self: Arc<Self>) {
        let mut last_sync = Instant::now();
        loop {
            let (chunk, exit) = {
                let mut w = self.writer.lock();
                loop {
                    if !w.pending.is_empty() || w.shutdown {
                        break;
                    }
                    match self.options.fsync {
                        Fsync::Interval(every) if w.synced < w.written => {
                            let due = saturating_after(last_sync, every);
                            if Instant::now() >= due {
                                break;
                            }
                            self.work.wait_until(&mut w, due);
                        }
                        _ => {
                            self.work.wait_for(&mut w, Duration::from_millis(500));
                        }
                    }
                }
                (w.take_pending(), w.shutdown)
            };
            if !chunk.is_empty() {
                self.flush_chunk(chunk);
            }
            if let Fsync::Interval(every) = self.options.fsync {
                if last_sync.elapsed() >= every {
                    self.sync_written();
                    last_sync = Instant::now();
                }
            }
            if exit {
                let mut w = self.writer.lock();
                if w.pending.is_empty() {
                    w.shutdown_done = true;
                    drop(w);
                    self.sync_written();
                    self.progress.notify_all();
                    return;
                }
            }
        }
    }

    /// Fsyncs what was written (interval mode, shutdown).
    fn sync_written(&self) {
        let written = self.writer.lock().written;
        if written == 0 {
            return;
        }
        let Some(segment) = self.log.find(written - 1) else {
            return;
        };
        match segment.sync() {
            Ok(()) => {
                let mut w = self.writer.lock();
                w.synced = w.synced.max(written);
            }
            Err(e) => {
                // Sends were already acknowledged: stop promising durability.
                self.writer.lock().failed = Some(format!(
                    "fsync of {} failed: {e}; reopen the directory",
                    segment.path.display()
                ));
            }
        }
    }

    fn flush_chunk(&self, mut chunk: Pending) {
        let end = chunk.start + chunk.bytes.len() as u64;
        if let Err(e) = self.write_chunk(&chunk) {
            self.rollback(chunk, e);
            return;
        }
        let mut touched: Vec<Arc<super::topics::Topic>> = Vec::new();
        let mut delays = false;
        for effect in &chunk.effects {
            match effect {
                Effect::Visible {
                    topic,
                    partition,
                    end,
                } => {
                    topic.partitions[*partition as usize]
                        .visible
                        .fetch_max(*end, Ordering::AcqRel);
                    if !touched.iter().any(|t| Arc::ptr_eq(t, topic)) {
                        touched.push(topic.clone());
                    }
                }
                Effect::Delay { seq, due_us } => {
                    self.delay.lock().wheel.insert(*due_us, *seq);
                    delays = true;
                }
                Effect::Half { seq } => self.half.lock().schedule(*seq),
            }
        }
        {
            let mut w = self.writer.lock();
            w.written = end;
            if self.options.fsync == Fsync::Always {
                w.synced = end;
            }
            // Reuse the buffer unless a huge append made it huge.
            if w.spare.is_empty() && chunk.bytes.capacity() <= 64 * 1024 * 1024 {
                let mut buf = chunk.bytes;
                buf.clear();
                w.spare = buf;
            }
        }
        self.delay.lock().written_to(end);
        self.half.lock().written_to(end);
        self.progress.notify_all();
        for topic in touched {
            topic.changed.notify_waiters();
        }
        if delays {
            self.wake_housekeeper();
        }
        for waiter in chunk.waiters.drain(..) {
            let _ = waiter.send(Ok(()));
        }
    }

    fn write_chunk(&self, chunk: &Pending) -> std::io::Result<()> {
        let mut segment = self
            .log
            .last()
            .ok_or_else(|| std::io::Error::other("the log has no segment"))?;
        let mut at = 0usize;
        for &roll in &chunk.rolls {
            let cut = (roll - chunk.start) as usize;
            if cut > at {
                segment.write_at(chunk.start + at as u64, &chunk.bytes[at..cut])?;
            }
            at = cut;
            // Seal the full segment durably before starting the next one, so
            // a torn tail can only ever be in the last segment.
            segment.sync()?;
            segment = self.log.create(roll)?;
        }
        if at < chunk.bytes.len() {
            segment.write_at(chunk.start + at as u64, &chunk.bytes[at..])?;
        }
        if self.options.fsync == Fsync::Always && !chunk.bytes.is_empty() {
            segment.sync()?;
        }
        Ok(())
    }

    /// Undoes the appends of a chunk whose write failed, and of everything
    /// encoded after it, and fails their senders.
    fn rollback(&self, chunk: Pending, error: std::io::Error) {
        let message = format!("appending to the log failed: {error}");
        tracing::error!(%message, "native engine");
        let start = chunk.start;
        let mut later = {
            let mut w = self.writer.lock();
            let later = std::mem::replace(&mut w.pending, Pending::new(start));
            for seg in self.log.all() {
                if seg.base > start || (seg.base == start && chunk.rolls.first() == Some(&start)) {
                    let _ = self.log.remove(seg.base);
                }
            }
            if let Some(seg) = self.log.find(start) {
                if let Err(e) = seg.truncate(start) {
                    w.failed = Some(format!("{message}; and cutting the partial write failed: {e}; reopen the directory"));
                }
            }
            w.position = start;
            w.segment_base = self.log.last().map_or(0, |s| s.base);
            for topic in self.topics.read().all() {
                for part in &topic.partitions {
                    part.next
                        .store(part.visible.load(Ordering::Acquire), Ordering::Release);
                    part.index.lock().truncate_at_position(start);
                }
            }
            self.delay.lock().rollback(start);
            self.dedup.lock().rollback(start);
            self.half.lock().rollback(start);
            self.log.invalidate();
            later
        };
        let fail = |waiter: tokio::sync::oneshot::Sender<Result<()>>| {
            let _ = waiter.send(Err(Error::Backend {
                backend: BACKEND,
                message: message.clone(),
                source: None,
            }));
        };
        chunk.waiters.into_iter().for_each(fail);
        later.waiters.drain(..).for_each(fail);
        self.progress.notify_all();
    }
}
