//! Reading a partition: binary search of its index for the batch holding
//! the first wanted offset, then batches in index order.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use mq_core::{Message, Result};

use super::topics::Topic;
use super::Engine;
use crate::error::{corrupt, io_error};
use crate::log::batch;
use crate::log::LogReader;

impl Engine {
    /// Appends the records of `topic`/`partition` with offsets in `range`
    /// to `out`, in offset order, stopping after `max`.
    pub fn read_range(
        &self,
        topic: &Topic,
        partition: u32,
        range: std::ops::Range<u64>,
        max: usize,
        reader: &mut LogReader,
        out: &mut Vec<(u64, Message)>,
    ) -> Result<()> {
        let (from, to) = (range.start, range.end);
        let Some(part) = topic.partitions.get(partition as usize) else {
            return Ok(());
        };
        if from >= to || max == 0 {
            return Ok(());
        }
        let limit = out.len() + max;
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
                if entry.key >= to || out.len() >= limit {
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
                    if out.len() >= limit {
                        return Ok(());
                    }
                    let message = m
                        .to_message(topic.name.clone(), &bytes)
                        .map_err(|e| corrupt(Path::new("log"), entry.position, e))?;
                    out.push((m.offset, message.with_published_at(published)));
                }
                k += 1;
            }
        }
    }
}
