//! What a member knows about its partitions: which it reads, the records
//! read and not yet fetched, and per partition the core's offset
//! [`Cursor`], which turns acks in any order into the offset to commit.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use mq_core::driver::offsets::{Cursor, Taken};
use mq_core::driver::{AckToken, RawDelivery, TopicPartition};

/// Delivery progress as commit metadata: `mq:d=<offset>`, the offset up
/// to which records were delivered, so that a member taking a partition
/// over counts redeliveries (Kafka keeps no delivery count).
pub(super) struct Progress;

impl Progress {
    const PREFIX: &'static str = "mq:d=";

    /// The metadata for progress `delivered`.
    pub(super) fn encode(delivered: u64) -> String {
        format!("{}{delivered}", Self::PREFIX)
    }

    /// The progress in commit metadata, if mq wrote it.
    pub(super) fn decode(metadata: &str) -> Option<u64> {
        metadata.strip_prefix(Self::PREFIX)?.parse().ok()
    }
}

/// A partition of one of the subscription's topics: (topic index, partition).
pub(super) type Slot = (usize, i32);

/// The one member id this process uses in its cursors: a Kafka member
/// holds its partitions alone.
const MEMBER: u64 = 0;

/// One assigned partition.
#[derive(Debug, Default)]
pub(super) struct Part {
    /// Records read from it are handed out (false while it is revoked).
    pub(super) readable: bool,
    /// Its position, from the first record read after the assignment.
    cursor: Option<Cursor>,
    /// The offset last committed by this member (or a transaction).
    committed: u64,
    /// How far delivery went at the last commit, as the commit's metadata
    /// tells (see [`Progress`]).
    delivered: u64,
    /// The delivery progress a previous member committed: `None` until
    /// looked up (before the first record is taken), then kept until the
    /// cursor starts.
    restored: Option<Option<u64>>,
    /// The offset after the last record handed to the runtime: what the
    /// progress committed says (records read and still buffered were not
    /// delivered).
    handed: u64,
    /// The offset after the last record read (where the broker goes on).
    next: Option<u64>,
    /// Set by a rewind: the consumer's position is not to be trusted
    /// until a record arrives.
    rewound: bool,
}

impl Part {
    /// Every record read was acked, and the position can be trusted.
    fn settled(&self) -> bool {
        !self.rewound
            && self
                .cursor
                .as_ref()
                .is_none_or(|c| c.committed() == c.delivered())
    }
}

/// The member's partitions and buffer.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) parts: HashMap<Slot, Part>,
    /// Records read and not yet returned by `fetch`.
    pub(super) buffer: VecDeque<RawDelivery>,
    taken: Taken,
}

impl State {
    /// Starts reading newly assigned partitions.
    pub(super) fn assign(&mut self, slots: &[Slot]) {
        for slot in slots {
            let part = self.parts.entry(*slot).or_default();
            part.readable = true;
            part.restored = None;
        }
    }

    /// Of the partitions of `slots`, those whose committed progress is
    /// still to be looked up.
    pub(super) fn without_progress(&self, slots: impl Iterator<Item = Slot>) -> Vec<Slot> {
        let mut out: Vec<Slot> = Vec::new();
        for slot in slots {
            let unknown = self
                .parts
                .get(&slot)
                .is_some_and(|p| p.cursor.is_none() && p.restored.is_none());
            if unknown && !out.contains(&slot) {
                out.push(slot);
            }
        }
        out
    }

    /// Sets the committed progress looked up for a partition.
    pub(super) fn set_progress(&mut self, slot: Slot, delivered: Option<u64>) {
        if let Some(part) = self.parts.get_mut(&slot) {
            part.restored = Some(delivered);
        }
    }

    /// Stops handing out records of partitions being revoked and drops
    /// those read and not fetched; acks still count until [`remove`](Self::remove).
    pub(super) fn stop_reading(&mut self, slots: &[Slot], topics: &[Arc<str>]) {
        for slot in slots {
            if let Some(part) = self.parts.get_mut(slot) {
                part.readable = false;
            }
        }
        self.buffer.retain(|d| {
            !slots
                .iter()
                .any(|(t, p)| *p as u32 == d.partition && *d.token.topic == *topics[*t])
        });
    }

    /// Forgets revoked partitions.
    pub(super) fn remove(&mut self, slots: &[Slot]) {
        for slot in slots {
            self.parts.remove(slot);
        }
    }

    /// Takes a record just read into its partition's cursor and returns
    /// its delivery count, or `None` when the record is not to be handed
    /// out (its partition is not readable, or it was read already).
    pub(super) fn accept(&mut self, slot: Slot, offset: u64) -> Option<u32> {
        let part = self.parts.get_mut(&slot).filter(|p| p.readable)?;
        part.rewound = false;
        // Records below the progress a previous member committed were
        // delivered before: their next delivery counts as a second one.
        let restored = part.restored.take().flatten();
        let cursor = part
            .cursor
            .get_or_insert_with(|| Cursor::restored(offset, restored.unwrap_or(offset), []));
        let next = *part.next.get_or_insert(offset);
        if offset < next {
            return None;
        }
        if offset > next {
            // Offsets without a record for this member: transaction
            // markers, aborted records, compacted or deleted ones.
            if cursor.committed() == next {
                cursor.skip_to(offset);
            } else {
                for gap in next..offset {
                    cursor.mark_acked(gap);
                }
            }
        }
        part.next = Some(offset + 1);
        self.taken.fresh.clear();
        self.taken.again.clear();
        cursor.take(MEMBER, Instant::now(), offset + 1, 1, &mut self.taken);
        self.taken.fresh.first().map(|(_, count, _)| *count)
    }

    /// Takes up to `max` buffered records for the runtime, noting how far
    /// each partition's records were handed out.
    pub(super) fn take(
        &mut self,
        max: usize,
        slot_of: impl Fn(&RawDelivery) -> Option<Slot>,
    ) -> Vec<RawDelivery> {
        let n = max.min(self.buffer.len());
        let batch: Vec<RawDelivery> = self.buffer.drain(..n).collect();
        let mut last: Option<(Slot, u64)> = None;
        for d in &batch {
            let Some(slot) = slot_of(d) else { continue };
            match &mut last {
                Some((s, at)) if *s == slot => *at = (*at).max(d.token.offset + 1),
                _ => {
                    self.note_handed(last);
                    last = Some((slot, d.token.offset + 1));
                }
            }
        }
        self.note_handed(last);
        batch
    }

    fn note_handed(&mut self, last: Option<(Slot, u64)>) {
        if let Some(part) = last.and_then(|(slot, at)| Some((self.parts.get_mut(&slot)?, at))) {
            part.0.handed = part.0.handed.max(part.1);
        }
    }

    /// Acks records of partitions still held; others are ignored.
    pub(super) fn ack(&mut self, tokens: &[AckToken], slot_of: impl Fn(&AckToken) -> Option<Slot>) {
        let mut i = 0;
        while i < tokens.len() {
            let Some(slot) = slot_of(&tokens[i]) else {
                i += 1;
                continue;
            };
            // Tokens come in runs of one partition: ack each run at once.
            let run = tokens[i..]
                .iter()
                .take_while(|t| t.partition as i32 == slot.1 && *t.topic == *tokens[i].topic)
                .count();
            if let Some(cursor) = self.parts.get_mut(&slot).and_then(|p| p.cursor.as_mut()) {
                cursor.ack_all(tokens[i..i + run].iter().map(|t| t.offset));
            }
            i += run;
        }
    }

    /// What to commit: per partition whose committed offset or delivery
    /// progress moved, `(slot, offset, delivered)`. Where everything read
    /// was acked (or nothing was read), the consumer's `position` is used
    /// when it is further: it moves past transaction markers and aborted
    /// records, which no record reports.
    pub(super) fn offsets_to_commit(
        &mut self,
        position: impl Fn(Slot) -> Option<u64>,
    ) -> Vec<(Slot, u64, u64)> {
        let mut out = Vec::new();
        for (slot, part) in &mut self.parts {
            let mut at = part.cursor.as_ref().map_or(0, Cursor::committed);
            if part.settled() {
                if let Some(p) = position(*slot) {
                    at = at.max(p);
                }
            }
            let at = at.max(part.committed);
            let delivered = part.handed.max(at);
            if at > part.committed || delivered > part.delivered {
                part.committed = at;
                part.delivered = delivered;
                out.push((*slot, at, delivered));
            }
        }
        out
    }

    /// Undoes the bookkeeping of a commit that failed, so the next one
    /// carries its offsets again.
    pub(super) fn commit_failed(&mut self, offsets: &[(Slot, u64, u64)]) {
        for (slot, _, _) in offsets {
            if let Some(part) = self.parts.get_mut(slot) {
                part.committed = 0;
                part.delivered = 0;
            }
        }
    }

    /// Whether some partition's position may be past its committed offset.
    pub(super) fn wants_position(&self) -> bool {
        self.parts.values().any(Part::settled)
    }

    /// Records that a transaction committed `offset` for `slot`, and acks
    /// its records.
    pub(super) fn committed_in_transaction(&mut self, slot: Slot, offsets: &[u64]) {
        if let Some(part) = self.parts.get_mut(&slot) {
            if let Some(cursor) = part.cursor.as_mut() {
                cursor.ack_all(offsets.iter().copied());
            }
            if let Some(last) = offsets.iter().max() {
                part.committed = part.committed.max(last + 1);
            }
        }
    }

    /// Rewinds a partition to its committed offset, to read again every
    /// record not acked there (a record given back); returns the offset
    /// to seek to.
    pub(super) fn rewind(&mut self, slot: Slot, topics: &[Arc<str>]) -> Option<u64> {
        let part = self.parts.get_mut(&slot).filter(|p| p.readable)?;
        let at = part.cursor.as_ref()?.committed();
        part.cursor = Some(Cursor::at(at));
        part.next = None;
        part.rewound = true;
        let topic = &topics[slot.0];
        self.buffer
            .retain(|d| !(d.partition == slot.1 as u32 && *d.token.topic == **topic));
        Some(at)
    }

    /// The partitions held, as the SPI names them.
    pub(super) fn partitions(slots: &[Slot], topics: &[Arc<str>]) -> Vec<TopicPartition> {
        slots
            .iter()
            .map(|(t, p)| TopicPartition::new(topics[*t].clone(), *p as u32))
            .collect()
    }
}
