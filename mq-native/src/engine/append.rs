//! Appending: offsets, delays and idempotency keys are assigned and the
//! batches encoded under the writer lock; the caller then waits for the
//! flusher to make them durable.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use mq_core::driver::clock::{due_micros, epoch_micros};
use mq_core::{Error, Message, Receipt, Result};
use tokio::sync::oneshot;

use super::topics::Topic;
use super::writer::Effect;
use super::Engine;
use crate::dedup::DedupEntry;
use crate::half::record::{self, Resolution, KIND_HALF, KIND_HALF_DONE};
use crate::half::store::Lookup;
use crate::log::batch::{self, BatchWriter, Placement};
use crate::log::index::Entry;

/// Batches of a non-atomic append are cut near this size so readers and
/// recovery handle bounded chunks.
const TARGET_BATCH: usize = 1024 * 1024;

/// Something to append.
pub enum Item {
    /// A message for `topic`/`partition`.
    Message {
        /// Destination topic.
        topic: Arc<Topic>,
        /// Destination partition.
        partition: u32,
        /// The message (a due time in the future makes it a delayed record).
        message: Message,
        /// Whether its idempotency key is checked and recorded.
        dedup: bool,
        /// A delay promoted ahead of its due time: appended as a message
        /// record that consumers skip until then (never a delayed record).
        visible_at_us: Option<u64>,
    },
    /// Delayed message `seq` was delivered (always appended with it).
    DelayDone(u64),
    /// A prepared message of producer group `group`, delivered to nobody
    /// until resolved (see [`crate::half`]).
    Half {
        /// The producer group.
        group: Arc<str>,
        /// The partition it would go to, for the receipt.
        partition: u32,
        /// The message, its topic the destination.
        message: Message,
    },
    /// Half message `seq` is resolved; a commit appends its message in the
    /// same atomic batch. An append holding one for a message resolved
    /// before writes nothing: the first outcome stands.
    HalfDone {
        /// The half message.
        seq: u64,
        /// What became of it.
        outcome: Resolution,
    },
}

impl Item {
    /// Exact encoded size of its record.
    fn record_len(&self) -> usize {
        match self {
            Item::Message { message, .. } => batch::message_record_len(message, true),
            Item::DelayDone(_) => batch::DELAY_DONE_RECORD_LEN,
            Item::Half { group, message, .. } => record::half_record_len(group, message),
            Item::HalfDone { .. } => record::DONE_RECORD_LEN,
        }
    }
}

/// The outcome of an append.
pub struct Appended {
    /// A receipt per message item, in order.
    pub receipts: Vec<Receipt>,
    /// Resolves once everything is durable; `None` when nothing needs waiting for.
    pub wait: Option<oneshot::Receiver<Result<()>>>,
    /// The sequence number of each [`Item::Half`], in order.
    pub half_seqs: Vec<u64>,
}

struct Open {
    writer: BatchWriter,
    position: u64,
    touched: Vec<(Arc<Topic>, u32)>,
    /// The (topic id, partition) of the batch's first message.
    partition: Option<(u32, u32)>,
}

/// Indices of `items` grouped by (topic, partition) in that order, stable
/// within each group, delay-done records last: a counting sort, as a send
/// usually spans a few partitions (a plain sort when it spans many).
fn by_partition(items: &[Item]) -> Vec<usize> {
    let key = |item: &Item| match item {
        Item::Message {
            topic, partition, ..
        } => (topic.id, *partition),
        _ => (u32::MAX, 0),
    };
    let mut keys: Vec<((u32, u32), usize)> = Vec::new();
    for item in items {
        let k = key(item);
        if let Some((_, n)) = keys.iter_mut().find(|(have, _)| *have == k) {
            *n += 1;
        } else if keys.len() < 64 {
            keys.push((k, 1));
        } else {
            let mut order: Vec<usize> = (0..items.len()).collect();
            order.sort_by_key(|&i| key(&items[i]));
            return order;
        }
    }
    keys.sort_unstable();
    // Each group's first slot, by key.
    let mut at = 0;
    let mut next: Vec<((u32, u32), usize)> = keys
        .into_iter()
        .map(|(k, n)| {
            at += n;
            (k, at - n)
        })
        .collect();
    let mut order = vec![0; items.len()];
    for (i, item) in items.iter().enumerate() {
        let k = key(item);
        let group = next.partition_point(|(have, _)| *have < k);
        order[next[group].1] = i;
        next[group].1 += 1;
    }
    order
}

impl Engine {
    /// Appends `items`; with `atomic` they form one batch (all or nothing).
    pub fn append(&self, items: Vec<Item>, atomic: bool) -> Result<Appended> {
        let now = epoch_micros(SystemTime::now());
        let now_ms = now / 1000;
        let size = batch::HEADER_LEN + items.iter().map(Item::record_len).sum::<usize>();
        if atomic {
            let limit = (self.options.segment_bytes as usize).min(batch::MAX_BATCH_LEN);
            if size > limit {
                return Err(Error::TooLarge { size, limit });
            }
        }
        // Outside transactions, records are grouped into one batch per
        // partition (stable order within each), so a consumer of a partition
        // reads only its own records. Receipts keep the caller's order.
        // Decided before taking the writer lock, which every append shares.
        let order: Vec<usize> = if atomic {
            (0..items.len()).collect()
        } else {
            by_partition(&items)
        };
        let mut receipts: Vec<Option<Receipt>> = vec![None; items.len()];
        let mut guard = self.writer.lock();
        if guard.shutdown {
            return Err(Error::Closed("native engine"));
        }
        if let Some(failed) = &guard.failed {
            return Err(crate::error::backend(failed.clone()));
        }
        let w = &mut *guard;
        let written = w.written;
        let mut half = None;
        let mut half_seqs = Vec::new();
        // A resolution decided before makes this append void, checked
        // under the writer lock that every resolution is made under.
        for item in &items {
            let Item::HalfDone { seq, .. } = item else {
                continue;
            };
            let store = half.get_or_insert_with(|| self.half.lock());
            let wait_for_first = match store.lookup(*seq) {
                Lookup::Unresolved(_) => continue,
                Lookup::Resolving { position } => position >= written,
                Lookup::Resolved => false,
                Lookup::Unknown => {
                    return Err(Error::invalid(
                        "half token",
                        seq.to_string(),
                        "no half message has this number in this data directory",
                    ))
                }
            };
            let wait = wait_for_first.then(|| {
                let (tx, rx) = oneshot::channel();
                w.pending.waiters.push(tx);
                rx
            });
            drop(half);
            drop(guard);
            if wait.is_some() {
                self.work.notify_one();
            }
            return Ok(Appended {
                receipts: Vec::new(),
                wait,
                half_seqs,
            });
        }
        let bytes = &mut w.pending.bytes;
        // One reservation instead of repeated doubling and copying.
        bytes.reserve(size + size / TARGET_BATCH * batch::HEADER_LEN);
        let added_from = bytes.len();
        let mut wait_for_duplicate = false;
        let mut dedup = None;
        let mut delay = None;
        let mut open: Option<Open> = None;
        for i in order {
            let item = &items[i];
            let part_key = match item {
                Item::Message {
                    topic, partition, ..
                } => Some((topic.id, *partition)),
                _ => None,
            };
            let rec_len = item.record_len();
            if let Item::Message {
                message,
                dedup: true,
                ..
            } = item
            {
                if let Some(key) = message.idempotency_key() {
                    let d = dedup.get_or_insert_with(|| self.dedup.lock());
                    if let Some(first) = d.get(key, now_ms) {
                        wait_for_duplicate |= first.position >= written;
                        receipts[i] = Some(first.receipt());
                        continue;
                    }
                }
            }
            let cut = open.as_ref().is_some_and(|o| {
                !atomic
                    && !o.writer.is_empty()
                    && (o.writer.len(bytes) + rec_len > TARGET_BATCH
                        || (part_key.is_some() && part_key != o.partition))
            });
            if cut {
                if let Some(o) = open.take() {
                    self.finish_batch(
                        o,
                        bytes,
                        &mut w.pending.effects,
                        &mut w.pending.rolls,
                        &mut w.position,
                        &mut w.segment_base,
                    );
                }
            }
            let o = open.get_or_insert_with(|| Open {
                writer: BatchWriter::begin(bytes, now),
                position: w.position,
                touched: Vec::new(),
                partition: None,
            });
            if o.partition.is_none() {
                o.partition = part_key;
            }
            match item {
                Item::Half {
                    group,
                    partition,
                    message,
                } => {
                    let id = message.id().unwrap_or_default();
                    let seq = half.get_or_insert_with(|| self.half.lock()).prepare(
                        o.position,
                        group.clone(),
                        id,
                        now,
                    );
                    o.writer.record(bytes, KIND_HALF, |b| {
                        record::encode_half(b, seq, group, message, now)
                    });
                    w.pending.effects.push(Effect::Half { seq });
                    half_seqs.push(seq);
                    receipts[i] = Some(Receipt::new(
                        id,
                        message.topic_arc().clone(),
                        *partition,
                        None,
                    ));
                }
                Item::HalfDone { seq, outcome } => {
                    half.get_or_insert_with(|| self.half.lock())
                        .resolve(*seq, o.position);
                    o.writer.record(bytes, KIND_HALF_DONE, |b| {
                        record::encode_done(b, *seq, *outcome)
                    });
                }
                Item::DelayDone(seq) => {
                    o.writer.delay_done(bytes, *seq);
                    delay
                        .get_or_insert_with(|| self.delay.lock())
                        .mark_done(*seq, o.position);
                }
                Item::Message {
                    topic,
                    partition,
                    message,
                    dedup: check,
                    visible_at_us,
                } => {
                    let (partition, check, visible_at_us) = (*partition, *check, *visible_at_us);
                    let id = message.id().unwrap_or_default();
                    let due = message
                        .deliver_at()
                        .map(due_micros)
                        .filter(|due| *due > now && visible_at_us.is_none());
                    let (place, offset) = match due {
                        Some(due) => {
                            let seq = delay
                                .get_or_insert_with(|| self.delay.lock())
                                .add(due, o.position);
                            w.pending.effects.push(Effect::Delay { seq, due_us: due });
                            (
                                Placement {
                                    topic: topic.id,
                                    partition,
                                    offset: seq,
                                    deliver_at_us: Some(due),
                                    visible_at_us: None,
                                },
                                None,
                            )
                        }
                        None => {
                            let part = &topic.partitions[partition as usize];
                            let offset = part.next.load(Ordering::Acquire);
                            part.next.store(offset + 1, Ordering::Release);
                            if !o
                                .touched
                                .iter()
                                .any(|(t, p)| Arc::ptr_eq(t, topic) && *p == partition)
                            {
                                part.index.lock().push(Entry {
                                    key: offset,
                                    position: o.position,
                                });
                                o.touched.push((topic.clone(), partition));
                            }
                            (
                                Placement {
                                    topic: topic.id,
                                    partition,
                                    offset,
                                    deliver_at_us: None,
                                    visible_at_us,
                                },
                                Some(offset),
                            )
                        }
                    };
                    o.writer.message(bytes, place, message);
                    if check {
                        if let Some(key) = message.idempotency_key() {
                            dedup.get_or_insert_with(|| self.dedup.lock()).insert(
                                Arc::from(key),
                                DedupEntry {
                                    id,
                                    topic: topic.name.clone(),
                                    partition,
                                    offset,
                                    at_ms: now_ms,
                                    position: o.position,
                                },
                            );
                        }
                    }
                    receipts[i] = Some(Receipt::new(id, topic.name.clone(), partition, offset));
                }
            }
        }
        if let Some(o) = open.take() {
            self.finish_batch(
                o,
                bytes,
                &mut w.pending.effects,
                &mut w.pending.rolls,
                &mut w.position,
                &mut w.segment_base,
            );
        }
        drop(dedup);
        drop(delay);
        drop(half);
        let receipts: Vec<Receipt> = receipts.into_iter().flatten().collect();
        let added = bytes.len() > added_from;
        if !added && !wait_for_duplicate {
            return Ok(Appended {
                receipts,
                wait: None,
                half_seqs,
            });
        }
        let (tx, rx) = oneshot::channel();
        w.pending.waiters.push(tx);
        drop(guard);
        self.work.notify_one();
        Ok(Appended {
            receipts,
            wait: Some(rx),
            half_seqs,
        })
    }

    fn finish_batch(
        &self,
        open: Open,
        bytes: &mut [u8],
        effects: &mut Vec<Effect>,
        rolls: &mut Vec<u64>,
        position: &mut u64,
        segment_base: &mut u64,
    ) {
        let len = open.writer.finish(bytes) as u64;
        let at = open.position;
        if at > *segment_base && at + len - *segment_base > self.options.segment_bytes {
            rolls.push(at);
            *segment_base = at;
        }
        *position = at + len;
        for (topic, partition) in open.touched {
            let end = topic.partitions[partition as usize]
                .next
                .load(Ordering::Acquire);
            effects.push(Effect::Visible {
                topic,
                partition,
                end,
            });
        }
    }
}
