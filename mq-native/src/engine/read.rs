//! Reading a partition: binary search of its index for the batch holding
//! the first wanted offset, then batches in index order.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mq_core::{Message, Result};

use super::topics::Topic;
use super::Engine;
use crate::error::{corrupt, io_error};
use crate::log::batch::{self, MessageRecord};
use crate::log::index::{find_shared, range_shared};
use crate::log::keys::Keys;
use crate::log::LogReader;

/// A record read from a partition, not yet decoded: a reader that skips it
/// (a promoted delay not yet visible) pays nothing for its message.
pub struct Found<'a> {
    /// Its offset.
    pub offset: u64,
    /// A promoted delay: not to be delivered before this time (µs since the epoch).
    pub visible_at_us: Option<u64>,
    record: MessageRecord<'a>,
    batch: &'a Bytes,
    position: u64,
    published: SystemTime,
}

impl Found<'_> {
    /// The message, its payload sharing the read buffer.
    pub fn message(&self, topic: &Arc<str>, keys: &mut Keys) -> Result<Message> {
        self.record
            .to_received(topic.clone(), self.batch, Some(self.published), keys)
            .map_err(|e| corrupt(Path::new("log"), self.position, e))
    }
}

impl Engine {
    /// Hands the records of `topic`/`partition` with offsets in `range` to
    /// `visit`, in offset order, stopping after `max`, with the reader's
    /// shared keys to decode them with.
    pub fn read_range(
        &self,
        topic: &Topic,
        partition: u32,
        range: std::ops::Range<u64>,
        max: usize,
        reader: &mut LogReader,
        mut visit: impl FnMut(Found<'_>, &mut Keys) -> Result<()>,
    ) -> Result<()> {
        let (from, to) = (range.start, range.end);
        let Some(part) = topic.partitions.get(partition as usize) else {
            return Ok(());
        };
        if from >= to || max == 0 {
            return Ok(());
        }
        let mut left = max;
        if part.index.lock().is_empty() {
            return Ok(());
        }
        // Index reads from the file happen without the index lock, which
        // appends take under the writer lock.
        let mut k = find_shared(&part.index, from, 0)
            .map_err(|e| io_error(format!("reading the index of {}", topic.name), e))?;
        loop {
            let entries = range_shared(&part.index, k, 64)
                .map_err(|e| io_error(format!("reading the index of {}", topic.name), e))?;
            if entries.is_empty() {
                return Ok(());
            }
            for entry in &entries {
                if entry.key >= to || left == 0 {
                    return Ok(());
                }
                let bytes = reader.batch_at(&self.log, entry.position)?;
                let batch = batch::parse_checked(&bytes)
                    .map_err(|e| corrupt(Path::new("log"), entry.position, e))?;
                let published = UNIX_EPOCH + Duration::from_micros(batch.timestamp_us);
                for record in batch.messages_of(topic.id, partition) {
                    let m = record.map_err(|e| corrupt(Path::new("log"), entry.position, e))?;
                    if m.offset < from || m.offset >= to {
                        continue;
                    }
                    if left == 0 {
                        return Ok(());
                    }
                    left -= 1;
                    visit(
                        Found {
                            offset: m.offset,
                            visible_at_us: m.visible_at_us,
                            record: m,
                            batch: &bytes,
                            position: entry.position,
                            published,
                        },
                        &mut reader.keys,
                    )?;
                }
                k += 1;
            }
        }
    }
}
