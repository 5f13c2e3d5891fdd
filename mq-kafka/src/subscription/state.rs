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
/// over counts redeliveries (Kafka keeps no delivery count); then
/// `;a=<n>,<n>...`, the records acked above the committed offset (as
/// distances from it), so that the next owner, in this process or
/// another, skips them instead of delivering acked records again. Kafka
/// commits one offset per partition: without the list, every record
/// acked after one still open would come back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Progress {
    /// The offset up to which records were delivered.
    pub(super) delivered: u64,
    /// Offsets acked above the committed one, ascending.
    pub(super) acked: Vec<u64>,
}

impl Progress {
    const PREFIX: &'static str = "mq:d=";
    const ACKED: &'static str = ";a=";
    /// Room for the acked list: brokers cap commit metadata (Kafka's
    /// `offset.metadata.max.bytes`, 4096 by default). Acked records left
    /// off the list are delivered again, which at-least-once allows.
    const MAX_ACKED_BYTES: usize = 2048;

    /// The metadata for a commit at `committed`.
    pub(super) fn encode(&self, committed: u64) -> String {
        let mut text = format!("{}{}", Self::PREFIX, self.delivered);
        let mut first = true;
        for offset in self.acked.iter().filter(|o| **o > committed) {
            let distance = (offset - committed).to_string();
            if text.len() + distance.len() + Self::ACKED.len() > Self::MAX_ACKED_BYTES {
                break;
            }
            text.push_str(if first { Self::ACKED } else { "," });
            text.push_str(&distance);
            first = false;
        }
        text
    }

    /// The progress in the metadata of a commit at `committed`, if mq
    /// wrote it.
    pub(super) fn decode(metadata: &str, committed: u64) -> Option<Progress> {
        let rest = metadata.strip_prefix(Self::PREFIX)?;
        let (delivered, acked) = match rest.split_once(Self::ACKED) {
            Some((delivered, acked)) => (delivered, acked),
            None => (rest, ""),
        };
        let acked = acked
            .split(',')
            .filter(|d| !d.is_empty())
            .map(|d| d.parse::<u64>().ok().and_then(|d| committed.checked_add(d)))
            .collect::<Option<Vec<u64>>>()?;
        Some(Progress {
            delivered: delivered.parse().ok()?,
            acked,
        })
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
    /// How far delivery went at the last commit, and what was acked above
    /// its offset, as the commit's metadata tells (see [`Progress`]).
    progress: Progress,
    /// The delivery progress a previous member committed: `None` until
    /// looked up (before the first record is taken), then kept until the
    /// cursor starts.
    restored: Option<Option<Progress>>,
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
    pub(super) fn set_progress(&mut self, slot: Slot, progress: Option<Progress>) {
        if let Some(part) = self.parts.get_mut(&slot) {
            part.restored = Some(progress);
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
        // delivered before: their next delivery counts as a second one;
        // those it acked above its commit are skipped.
        let restored = part.restored.take().flatten().unwrap_or_default();
        let cursor = part.cursor.get_or_insert_with(|| {
            let acked = restored.acked.into_iter().filter(|o| *o >= offset);
            Cursor::restored(offset, restored.delivered.max(offset), acked)
        });
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

    /// What to commit: per partition whose committed offset, delivery
    /// progress or acks above the offset changed, `(slot, offset,
    /// progress)`. Where everything read was acked (or nothing was read),
    /// the consumer's `position` is used when it is further: it moves past
    /// transaction markers and aborted records, which no record reports.
    pub(super) fn offsets_to_commit(
        &mut self,
        position: impl Fn(Slot) -> Option<u64>,
    ) -> Vec<(Slot, u64, Progress)> {
        let mut out = Vec::new();
        for (slot, part) in &mut self.parts {
            let mut at = part.cursor.as_ref().map_or(0, Cursor::committed);
            if part.settled() {
                if let Some(p) = position(*slot) {
                    at = at.max(p);
                }
            }
            let at = at.max(part.committed);
            let progress = Progress {
                delivered: part.handed.max(at),
                acked: part
                    .cursor
                    .as_ref()
                    .map(|c| c.acked_above().into_iter().filter(|o| *o > at).collect())
                    .unwrap_or_default(),
            };
            if at > part.committed
                || progress.delivered > part.progress.delivered
                || progress.acked != part.progress.acked
            {
                part.committed = at;
                part.progress = progress.clone();
                out.push((*slot, at, progress));
            }
        }
        out
    }

    /// Undoes the bookkeeping of a commit that failed, so the next one
    /// carries its offsets again.
    pub(super) fn commit_failed(&mut self, slots: &[Slot]) {
        for slot in slots {
            if let Some(part) = self.parts.get_mut(slot) {
                part.committed = 0;
                part.progress = Progress::default();
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
    /// record not acked after it (a record given back); returns the offset
    /// to seek to.
    pub(super) fn rewind(&mut self, slot: Slot, topics: &[Arc<str>]) -> Option<u64> {
        let part = self.parts.get_mut(&slot).filter(|p| p.readable)?;
        let cursor = part.cursor.as_ref()?;
        let at = cursor.committed();
        // Only what was not acked comes again.
        part.cursor = Some(Cursor::restored(at, at, cursor.acked_above()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_relative_to_its_commit() {
        let progress = Progress {
            delivered: 120,
            acked: vec![102, 105, 119],
        };
        let text = progress.encode(100);
        assert_eq!(text, "mq:d=120;a=2,5,19");
        assert_eq!(Progress::decode(&text, 100), Some(progress));
        // What older versions wrote: progress only.
        assert_eq!(
            Progress::decode("mq:d=7", 3),
            Some(Progress {
                delivered: 7,
                acked: Vec::new()
            })
        );
        assert_eq!(Progress::decode("someone else's", 3), None);
        assert_eq!(Progress::decode("mq:d=7;a=1,x", 3), None);
        assert_eq!(Progress::decode("mq:d=7;a=1", u64::MAX), None);
    }

    #[test]
    fn progress_metadata_stays_within_what_brokers_take() {
        let progress = Progress {
            delivered: u64::MAX,
            acked: (1..100_000).map(|d| 1_000_000_000 + d * 1_000).collect(),
        };
        let text = progress.encode(1_000_000_000);
        assert!(text.len() <= Progress::MAX_ACKED_BYTES, "{}", text.len());
        let decoded = Progress::decode(&text, 1_000_000_000).expect("decodes");
        assert!(!decoded.acked.is_empty());
        assert_eq!(decoded.acked[..], progress.acked[..decoded.acked.len()]);
    }

    fn held(state: &mut State, slot: Slot, offsets: std::ops::Range<u64>) {
        for offset in offsets {
            state.accept(slot, offset).expect("handed out");
        }
    }

    #[test]
    fn acks_above_an_open_record_are_committed_and_skipped_by_the_next_owner() {
        let slot = (0, 0);
        let mut state = State::default();
        state.assign(&[slot]);
        state.set_progress(slot, None);
        held(&mut state, slot, 10..14);
        let token = |offset| AckToken::new("t", 0, offset);
        // 10 stays open; 11 and 13 are acked.
        state.ack(&[token(11), token(13)], |_| Some(slot));
        let commits = state.offsets_to_commit(|_| None);
        assert_eq!(commits.len(), 1);
        let (_, at, progress) = &commits[0];
        assert_eq!(*at, 10);
        assert_eq!(progress.acked, vec![11, 13]);
        assert!(state.offsets_to_commit(|_| None).is_empty(), "nothing new");

        let metadata = progress.encode(*at);
        let mut next = State::default();
        next.assign(&[slot]);
        next.set_progress(slot, Progress::decode(&metadata, *at));
        let handed: Vec<u64> = (10..14)
            .filter(|o| next.accept(slot, *o).is_some())
            .collect();
        assert_eq!(handed, vec![10, 12]);
    }

    #[test]
    fn a_rewind_reads_again_only_what_was_not_acked() {
        let slot = (0, 0);
        let topics = [Arc::<str>::from("t")];
        let mut state = State::default();
        state.assign(&[slot]);
        state.set_progress(slot, None);
        held(&mut state, slot, 0..4);
        let token = |offset| AckToken::new("t", 0, offset);
        state.ack(&[token(1), token(2)], |_| Some(slot));
        assert_eq!(state.rewind(slot, &topics), Some(0));
        let handed: Vec<u64> = (0..4)
            .filter(|o| state.accept(slot, *o).is_some())
            .collect();
        assert_eq!(handed, vec![0, 3]);
    }
}
