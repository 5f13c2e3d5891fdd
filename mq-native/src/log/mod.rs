//! The commit log: segment files of CRC-checked record batches, the
//! per-partition indexes over it, and recovery.

pub mod batch;
#[cfg(test)]
mod fuzz;
pub mod index;
pub mod keys;
pub mod recovery;
pub mod segment;

use std::sync::Arc;

use bytes::Bytes;

use crate::error::{corrupt, io_error};
use mq_core::Result;
use segment::{Segment, SegmentSet};

/// The most a read fetches at once.
const READ_AHEAD: usize = 256 * 1024;
/// The least a read fetches, so runs of tiny batches cost one syscall.
const MIN_READ: usize = 4096;

/// Bytes of checked batches a reader keeps, so a consumer reading several
/// partitions of one shared batch reads and checks it once.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Reads batches by position, keeping the last chunk read and a small cache
/// of checked batches.
#[derive(Default)]
pub struct LogReader {
    start: u64,
    chunk: Bytes,
    cache: std::collections::HashMap<u64, Bytes>,
    order: std::collections::VecDeque<u64>,
    cached_bytes: usize,
    /// Keys of the messages this reader decodes.
    pub keys: keys::Keys,
    /// Length of the last batch read: reads fetch about twice that, so a
    /// partition whose batches are interleaved with other partitions' in
    /// the shared log does not drag in (and copy) far more than it uses.
    last_len: usize,
    /// The log generation the cache and chunk were read in.
    generation: u64,
}

impl LogReader {
    /// The checked batch at `position` as a shared buffer (the payloads of
    /// messages decoded from it point into it). Only positions of batches
    /// fully written may be asked for.
    pub fn batch_at(&mut self, log: &SegmentSet, position: u64) -> Result<Bytes> {
        let generation = log.generation();
        if generation != self.generation {
            // A failed write was rolled back: bytes read ahead may be gone.
            self.cache.clear();
            self.order.clear();
            self.cached_bytes = 0;
            self.chunk = Bytes::new();
            self.generation = generation;
        }
        if let Some(batch) = self.cache.get(&position) {
            return Ok(batch.clone());
        }
        let batch = self.read_batch(log, position)?;
        self.cached_bytes += batch.len();
        self.cache.insert(position, batch.clone());
        self.order.push_back(position);
        while self.cached_bytes > CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(b) = self.cache.remove(&old) {
                self.cached_bytes -= b.len();
            }
        }
        Ok(batch)
    }

    fn read_batch(&mut self, log: &SegmentSet, position: u64) -> Result<Bytes> {
        // The cached chunk may end inside a batch that was being written
        // when it was read: anything but a good batch there means read again.
        if let Some(batch) = self.cached(position) {
            return Ok(batch);
        }
        let segment = log.find(position).ok_or_else(|| {
            corrupt(
                &log.dir,
                position,
                "no segment holds this position (deleted by retention?)",
            )
        })?;
        let guess = self.last_len.saturating_mul(2).clamp(MIN_READ, READ_AHEAD);
        self.fill(&segment, position, guess)?;
        let need = match batch::peek_len(&self.chunk) {
            Ok(need) => need,
            Err(e) => return Err(corrupt(&segment.path, position - segment.base, e)),
        };
        if need > self.chunk.len() {
            self.fill(&segment, position, need)?;
        }
        match batch::decode(&self.chunk) {
            Ok((_, len)) => {
                self.last_len = len;
                Ok(self.chunk.slice(..len))
            }
            Err(batch::DecodeError::Incomplete { .. }) => Err(corrupt(
                &segment.path,
                position - segment.base,
                "batch extends past the end of the segment",
            )),
            Err(e) => Err(corrupt(&segment.path, position - segment.base, e)),
        }
    }

    fn fill(&mut self, segment: &Arc<Segment>, position: u64, len: usize) -> Result<()> {
        let buf = segment
            .read_vec(position, len)
            .map_err(|e| io_error(format!("reading {}", segment.path.display()), e))?;
        self.start = position;
        self.chunk = Bytes::from(buf);
        Ok(())
    }

    fn cached(&mut self, position: u64) -> Option<Bytes> {
        if position < self.start || position >= self.start + self.chunk.len() as u64 {
            return None;
        }
        let at = (position - self.start) as usize;
        let (_, len) = batch::decode(&self.chunk[at..]).ok()?;
        self.last_len = len;
        Some(self.chunk.slice(at..at + len))
    }
}

#[cfg(test)]
mod tests {
    use super::batch::BatchWriter;
    use super::*;

    fn empty_batch(timestamp_us: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        let writer = BatchWriter::begin(&mut buf, timestamp_us);
        writer.finish(&mut buf);
        buf
    }

    #[test]
    fn a_rollback_invalidates_what_readers_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = SegmentSet::open(&crate::fs::real(), dir.path()).expect("open");
        let segment = log.create(0).expect("segment");
        let first = empty_batch(1);
        segment.write_at(0, &first).expect("write");
        let mut reader = LogReader::default();
        assert_eq!(&reader.batch_at(&log, 0).expect("read")[..], &first[..]);

        // The write is taken back and other bytes land at the same position.
        segment.truncate(0).expect("truncate");
        let second = empty_batch(2);
        segment.write_at(0, &second).expect("write");
        log.invalidate();
        assert_eq!(&reader.batch_at(&log, 0).expect("read")[..], &second[..]);
    }
}
