//! One partition of a memory topic: the message log and each group's
//! cursor over it (acks, in-flight records, redeliveries).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::message::Message;

pub(super) type MemberId = u64;

/// A record handed to a member and not yet acked.
#[derive(Clone, Copy)]
pub(super) struct InFlight {
    pub(super) owner: MemberId,
    pub(super) count: u32,
    pub(super) first_seen: SystemTime,
}

/// A record given back to the group, deliverable again at `due`.
#[derive(Clone, Copy)]
pub(super) struct Returned {
    pub(super) due: Instant,
    pub(super) count: u32,
    pub(super) first_seen: SystemTime,
}

/// A group's position in one partition.
pub(super) struct Cursor {
    /// Every offset below is acked.
    pub(super) committed: u64,
    /// The next offset never delivered to the group.
    pub(super) next: u64,
    pub(super) in_flight: HashMap<u64, InFlight>,
    pub(super) returned: BTreeMap<u64, Returned>,
    /// Acked offsets at or above `committed`.
    pub(super) acked: BTreeSet<u64>,
}

impl Cursor {
    fn at(offset: u64) -> Self {
        Cursor {
            committed: offset,
            next: offset,
            in_flight: HashMap::new(),
            returned: BTreeMap::new(),
            acked: BTreeSet::new(),
        }
    }

    pub(super) fn ack(&mut self, offset: u64) {
        if self.in_flight.remove(&offset).is_none() || offset < self.committed {
            return;
        }
        self.acked.insert(offset);
        while self.acked.first() == Some(&self.committed) {
            self.acked.pop_first();
            self.committed += 1;
        }
    }

    /// Gives an in-flight record back for redelivery at `due`.
    pub(super) fn give_back(&mut self, offset: u64, due: Instant) -> bool {
        match self.in_flight.remove(&offset) {
            Some(f) => {
                self.returned.insert(
                    offset,
                    Returned {
                        due,
                        count: f.count,
                        first_seen: f.first_seen,
                    },
                );
                true
            }
            None => false,
        }
    }

    /// Gives back everything `member` holds; true if anything moved.
    pub(super) fn release_member(&mut self, member: MemberId, now: Instant) -> bool {
        let held: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.owner == member)
            .map(|(o, _)| *o)
            .collect();
        for offset in &held {
            self.give_back(*offset, now);
        }
        !held.is_empty()
    }

    /// Whether a member other than `member` still holds records here.
    pub(super) fn held_by_other(&self, member: MemberId) -> bool {
        self.in_flight.values().any(|f| f.owner != member)
    }

    /// The earliest time a returned record becomes deliverable.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.returned.values().map(|r| r.due).min()
    }
}

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
            Some(c) => (self.end() - c.committed).saturating_sub(c.acked.len() as u64),
        }
    }

    pub(super) fn committed(&self, group: &str) -> Option<u64> {
        self.cursors.get(group).map(|c| c.committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(cursor: &mut Cursor, offset: u64) {
        cursor.in_flight.insert(
            offset,
            InFlight {
                owner: 1,
                count: 1,
                first_seen: SystemTime::now(),
            },
        );
    }

    #[test]
    fn committed_offset_is_lowest_unacked() {
        let mut c = Cursor::at(0);
        for o in 0..4 {
            deliver(&mut c, o);
        }
        c.next = 4;
        c.ack(1);
        c.ack(2);
        assert_eq!(c.committed, 0);
        c.ack(0);
        assert_eq!(c.committed, 3);
        assert!(c.acked.is_empty());
        c.ack(0);
        assert_eq!(c.committed, 3);
        assert!(c.release_member(1, Instant::now()));
        assert!(c.returned.contains_key(&3));
    }
}
