//! One partition of a memory topic: the message log and each group's
//! cursor over it (the core's offset tracker).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::driver::offsets::Cursor;
use crate::message::Message;

/// The record at `offset` of a log starting at `base`.
pub(super) fn record_at(records: &VecDeque<Record>, base: u64, offset: u64) -> Option<&Record> {
    records.get(offset.checked_sub(base)? as usize)
}

/// A stored record.
pub(super) struct Record {
    pub(super) message: Message,
}

/// One partition.
pub(super) struct PartitionLog {
    /// Offset of `records[0]`.
    pub(super) base: u64,
    pub(super) records: VecDeque<Record>,
    pub(super) cursors: HashMap<Arc<str>, Cursor>,
}

impl PartitionLog {
    pub(super) fn new() -> Self {
        PartitionLog {
            base: 0,
            records: VecDeque::new(),
            cursors: HashMap::new(),
        }
    }

    pub(super) fn end(&self) -> u64 {
        self.base + self.records.len() as u64
    }

    pub(super) fn append(&mut self, message: Message) -> u64 {
        let offset = self.end();
        self.records.push_back(Record { message });
        offset
    }

    /// The group's cursor, created at the start or the end of the log.
    pub(super) fn cursor(&mut self, group: &Arc<str>, from_end: bool) -> &mut Cursor {
        let start = if from_end { self.end() } else { self.base };
        self.cursors
            .entry(group.clone())
            .or_insert_with(|| Cursor::at(start))
    }

    /// Messages the group has not acked.
    pub(super) fn lag(&self, group: &str) -> u64 {
        match self.cursors.get(group) {
            None => self.records.len() as u64,
            Some(c) => c.lag(self.end()),
        }
    }

    pub(super) fn committed(&self, group: &str) -> Option<u64> {
        self.cursors.get(group).map(Cursor::committed)
    }
}
