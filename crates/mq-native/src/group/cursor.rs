//! A consumer group's position in one partition: the committed offset
//! (lowest unacked), acks above it, records in flight and records given back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Instant, SystemTime};

/// Identifies one subscription (a group member) in this process.
pub type MemberId = u64;

/// A record handed to a member and not yet settled.
#[derive(Clone, Copy, Debug)]
pub struct InFlight {
    /// The member holding it.
    pub owner: MemberId,
    /// Deliveries so far, this one included.
    pub count: u32,
    /// When the group first received it.
    pub first_seen: SystemTime,
}

/// A record given back to the group, deliverable again at `due`.
#[derive(Clone, Copy, Debug)]
pub struct Returned {
    /// When it may be delivered again.
    pub due: Instant,
    /// Deliveries so far.
    pub count: u32,
    /// When the group first received it.
    pub first_seen: SystemTime,
}

/// A group's position in one partition.
#[derive(Debug)]
pub struct Cursor {
    /// Every offset below is acked; this is what is checkpointed.
    pub committed: u64,
    /// The next offset never delivered to the group (in this process).
    pub next: u64,
    /// Offsets below this that are not acked were delivered before the
    /// last restart: their next delivery counts as a second one.
    pub delivered_before: u64,
    /// Records held by members.
    pub in_flight: HashMap<u64, InFlight>,
    /// Records given back, by offset.
    pub returned: BTreeMap<u64, Returned>,
    /// Acked offsets at or above `committed`.
    pub acked: BTreeSet<u64>,
}

impl Cursor {
    /// A cursor at `offset` with nothing delivered.
    pub fn at(offset: u64) -> Self {
        Cursor {
            committed: offset,
            next: offset,
            delivered_before: offset,
            in_flight: HashMap::new(),
            returned: BTreeMap::new(),
            acked: BTreeSet::new(),
        }
    }

    /// A cursor restored from a checkpoint: delivery restarts at the
    /// committed offset, skipping what was acked.
    pub fn restored(committed: u64, delivered: u64, acked: impl IntoIterator<Item = u64>) -> Self {
        let mut c = Cursor::at(committed);
        c.delivered_before = delivered.max(committed);
        c.acked = acked.into_iter().filter(|o| *o >= committed).collect();
        c
    }

    /// Acks `offset`; the committed offset moves over every acked prefix.
    pub fn ack(&mut self, offset: u64) {
        if self.in_flight.remove(&offset).is_none() || offset < self.committed {
            return;
        }
        self.mark_acked(offset);
    }

    /// Records `offset` as done without a delivery (a record that no longer exists).
    pub fn mark_acked(&mut self, offset: u64) {
        if offset < self.committed {
            return;
        }
        self.in_flight.remove(&offset);
        self.returned.remove(&offset);
        self.acked.insert(offset);
        while self.acked.first() == Some(&self.committed) {
            self.acked.pop_first();
            self.committed += 1;
        }
    }

    /// Gives an in-flight record back for redelivery at `due`.
    pub fn give_back(&mut self, offset: u64, due: Instant) -> bool {
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
    pub fn release_member(&mut self, member: MemberId, now: Instant) -> bool {
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
    pub fn held_by_other(&self, member: MemberId) -> bool {
        self.in_flight.values().any(|f| f.owner != member)
    }

    /// The earliest time a returned record becomes deliverable.
    pub fn next_due(&self) -> Option<Instant> {
        self.returned.values().map(|r| r.due).min()
    }

    /// Moves past offsets that retention deleted.
    pub fn skip_to(&mut self, start: u64) {
        if self.committed >= start {
            return;
        }
        self.committed = start;
        self.next = self.next.max(start);
        self.acked = self.acked.split_off(&start);
        self.returned = self.returned.split_off(&start);
        while self.acked.first() == Some(&self.committed) {
            self.acked.pop_first();
            self.committed += 1;
        }
    }

    /// Messages below `end` the group has not acked.
    pub fn lag(&self, end: u64) -> u64 {
        end.saturating_sub(self.committed)
            .saturating_sub(self.acked.range(..end).count() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_is_lowest_unacked() {
        let mut c = Cursor::at(0);
        for o in 0..4 {
            c.in_flight.insert(
                o,
                InFlight {
                    owner: 1,
                    count: 1,
                    first_seen: SystemTime::now(),
                },
            );
        }
        c.next = 4;
        c.ack(1);
        c.ack(2);
        assert_eq!(c.committed, 0);
        assert_eq!(c.lag(4), 2);
        c.ack(0);
        assert_eq!(c.committed, 3);
        assert!(c.release_member(1, Instant::now()));
        assert!(c.returned.contains_key(&3));
        c.skip_to(10);
        assert_eq!((c.committed, c.next), (10, 10));
        assert!(c.returned.is_empty());
    }
}
