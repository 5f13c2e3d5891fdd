//! Reading a partition: binary search of its index for the batch holding
//! the first wanted offset, then batches in index order.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use mq_core::{Message, Result};

use super::topics::Topic;

/// A record read from a partition.
pub struct Found {
    /// Its offset.
    pub offset: u64,
    /// The message.
    pub message: Message,
    /// A promoted delay: not to be delivered before this time (µs since the epoch).
    pub visible_at_us: Option<u64>,
}
use super::Engine;
use crate::error::{corrupt, io_error};
use crate::log::batch;
use crate::log::LogReader;

impl Engine {
    /// Hands the records of `topic`/`partition` with offsets in `range` to
    /// `visit`, in offset order, stopping after `max`. Records are decoded
    /// one at a time, payloads sharing the read buffer.
    pub fn read_range(
        &self,
        topic: &Topic,
        partition: u32,
        range: std::ops::Range<u64>,
        max: usize,
        reader: &mut LogReader,
        mut visit: impl FnMut(Found),
    ) -> Result<()> {
        let (from, to) = (range.start, range.end);
        let Some(part) = topic.partitions.get(partition as usize) else {
            return Ok(());
        };
        if from >= to || max == 0 {
            return Ok(());
        }
        let mut left = max;
        let mut k = {
            let index = part.index.lock();
            if index.is_empty() {
                return Ok(());
            }
            index
                .find(from, 0)
                .map_err(|e| io_error(format!("reading the index of {}", topic.name), e))?
        };
        loop {
            let entries = part
                .index
                .lock()
                .range(k, 64)
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
                    let message = m
                        .to_message(topic.name.clone(), &bytes, &mut reader.keys)
                        .map_err(|e| corrupt(Path::new("log"), entry.position, e))?;
                    visit(Found {
                        offset: m.offset,
                        message: message.with_published_at(published),
                        visible_at_us: m.visible_at_us,
                    });
                }
                k += 1;
            }
        }
    }
}
