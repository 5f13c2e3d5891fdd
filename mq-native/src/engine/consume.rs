//! Groups and delivery: creating groups, members joining and leaving
//! (and the rebalances that follow), taking records for a member, acks,
//! nacks, lag.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mq_core::driver::clock::epoch_micros;
use mq_core::driver::local_group::{self, Member};
use mq_core::driver::offsets::{Cursor, Taken};
use mq_core::driver::{AckToken, PartitionLag, RawDelivery, StartFrom};
use mq_core::Result;

use super::read::Found;
use super::saturating_after;
use super::topics::Topic;
use super::Engine;
use crate::log::keys::Keys;
use crate::log::LogReader;

/// Records `take` picked but did not hand out.
#[derive(Default)]
struct NotDelivered {
    /// Offsets no longer in the log (removed by retention).
    missing: Vec<u64>,
    /// Promoted delays not yet due: `(offset, visible_at_us)`.
    hidden: Vec<(u64, u64)>,
}

/// Turns records read for a take into deliveries.
struct Deliver<'a> {
    topic: &'a Arc<Topic>,
    partition: u32,
    wall_us: u64,
    out: &'a mut Vec<RawDelivery>,
    left: NotDelivered,
}

impl Deliver<'_> {
    fn deliver(
        &mut self,
        offset: u64,
        count: u32,
        first_seen: SystemTime,
        found: &Found<'_>,
        keys: &mut Keys,
    ) -> Result<()> {
        if let Some(at) = found.visible_at_us.filter(|at| *at > self.wall_us) {
            self.left.hidden.push((offset, at));
            return Ok(());
        }
        // The token holds the topic's own name `Arc`: that is how an ack
        // tells this topic from one deleted and created again since.
        let token = AckToken::new(self.topic.name.clone(), self.partition, offset);
        // Built straight into the pushed delivery: a message is large, and
        // every extra step it passes through by value is a copy of it.
        self.out.push(
            RawDelivery::new(found.message(&self.topic.name, keys)?, token, first_seen)
                .with_offset(offset)
                .with_delivery_count(count),
        );
        Ok(())
    }
}

impl Engine {
    /// Creates `group`'s cursors on `topic` where missing, positioned per
    /// `start`; an existing group stays where it is. Saved with the next
    /// checkpoint, as acks are.
    pub fn ensure_group(&self, topic: &Topic, group: &Arc<str>, start: StartFrom) {
        let mut created = false;
        for part in &topic.partitions {
            let mut cursors = part.cursors.lock();
            if cursors.contains_key(group) {
                continue;
            }
            let begin = match start {
                StartFrom::Earliest => part.start.load(Ordering::Acquire),
                StartFrom::Latest => part.visible.load(Ordering::Acquire),
            };
            cursors.insert(group.clone(), Cursor::at(begin));
            created = true;
        }
        if created {
            self.offsets_dirty.store(true, Ordering::Release);
        }
    }

    /// Adds `member` to `group` on `topic` (a new group starts per
    /// `start`) and rebalances the group.
    pub fn join(
        &self,
        topic: &Arc<Topic>,
        group: &Arc<str>,
        member: &Arc<Member>,
        start: StartFrom,
    ) {
        self.ensure_group(topic, group, start);
        local_group::join(topic, group, member);
    }

    /// Removes `member`: what it held goes back to the group, and the
    /// others share its partitions.
    pub fn leave(&self, topic: &Arc<Topic>, group: &Arc<str>, member: &Member) {
        local_group::leave(topic, group, member);
    }

    /// Takes up to `max - out.len()` deliverable records of `topic` for
    /// `member`; returns when the earliest record held back (given back, or
    /// a promoted delay not yet visible) falls due.
    ///
    /// Synchronous from marking records in flight to returning them, so a
    /// fetch dropped at an await point never loses one.
    pub fn take(
        &self,
        topic: &Arc<Topic>,
        group: &Arc<str>,
        member: &Member,
        max: usize,
        reader: &mut LogReader,
        out: &mut Vec<RawDelivery>,
    ) -> Result<Option<Instant>> {
        let assigned = member.readable(&topic.name);
        if assigned.is_empty() || topic.deleted.load(Ordering::Acquire) {
            return Ok(None);
        }
        let member = member.id();
        let now = Instant::now();
        let mut next_due: Option<Instant> = None;
        let rotate = (self.next_rotation() as usize) % assigned.len();
        for &p in assigned[rotate..].iter().chain(&assigned[..rotate]) {
            if out.len() >= max {
                break;
            }
            let part = &topic.partitions[p as usize];
            let visible = part.visible.load(Ordering::Acquire);
            let start = part.start.load(Ordering::Acquire);
            // Decide under the cursor lock, read outside it.
            let mut taken = Taken::default();
            {
                let mut cursors = part.cursors.lock();
                let Some(c) = cursors.get_mut(group) else {
                    continue;
                };
                if c.held_by_other(member) {
                    continue;
                }
                c.skip_to(start);
                c.take(member, now, visible, max - out.len(), &mut taken);
                if let Some(due) = c.next_due() {
                    next_due = Some(next_due.map_or(due, |d: Instant| d.min(due)));
                }
            }
            if taken.is_empty() {
                continue;
            }
            match self.read_taken(topic, p, &taken, reader, out) {
                Ok(left) => {
                    if !left.missing.is_empty() || !left.hidden.is_empty() {
                        let mut cursors = part.cursors.lock();
                        if let Some(c) = cursors.get_mut(group) {
                            // Records that no longer exist (retention): done.
                            for offset in left.missing {
                                c.mark_acked(offset);
                            }
                            let (wall_us, now) = (epoch_micros(SystemTime::now()), Instant::now());
                            for (offset, visible_at_us) in left.hidden {
                                let wait = visible_at_us.saturating_sub(wall_us);
                                let due = saturating_after(now, Duration::from_micros(wait));
                                c.hold(offset, due);
                                next_due = Some(next_due.map_or(due, |d| d.min(due)));
                            }
                        }
                    }
                }
                Err(e) => {
                    let mut cursors = part.cursors.lock();
                    if let Some(c) = cursors.get_mut(group) {
                        for (offset, _, _) in taken.again.iter().chain(&taken.fresh) {
                            c.give_back(*offset, now);
                        }
                    }
                    out.retain(|d| !(d.token.topic == topic.name && d.partition == p));
                    return Err(e);
                }
            }
        }
        Ok(next_due)
    }

    /// Reads the records `take` picked into `out`; returns those it could not deliver.
    fn read_taken(
        &self,
        topic: &Arc<Topic>,
        partition: u32,
        taken: &Taken,
        reader: &mut LogReader,
        out: &mut Vec<RawDelivery>,
    ) -> Result<NotDelivered> {
        let mut to = Deliver {
            topic,
            partition,
            wall_us: epoch_micros(SystemTime::now()),
            out,
            left: NotDelivered::default(),
        };
        let Taken { again, fresh } = taken;
        for &(offset, count, first_seen) in again {
            let mut hit = false;
            self.read_range(
                topic,
                partition,
                offset..offset + 1,
                1,
                reader,
                |f, keys| {
                    hit = true;
                    to.deliver(offset, count, first_seen, &f, keys)
                },
            )?;
            if !hit {
                to.left.missing.push(offset);
            }
        }
        if let (Some(first), Some(last)) = (fresh.first(), fresh.last()) {
            let span = (last.0 + 1 - first.0) as usize;
            // Both in offset order; the log may hold offsets the cursor
            // skipped as already acked.
            let mut wanted = fresh.iter().peekable();
            self.read_range(
                topic,
                partition,
                first.0..last.0 + 1,
                span,
                reader,
                |f, keys| {
                    while let Some(w) = wanted.next_if(|w| w.0 < f.offset) {
                        to.left.missing.push(w.0);
                    }
                    match wanted.next_if(|w| w.0 == f.offset) {
                        Some(&(offset, count, first_seen)) => {
                            to.deliver(offset, count, first_seen, &f, keys)
                        }
                        None => Ok(()),
                    }
                },
            )?;
            to.left.missing.extend(wanted.map(|w| w.0));
        }
        Ok(to.left)
    }

    /// The topic `token` came from, if it still exists.
    fn topic_of(&self, token: &AckToken) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .get(&token.topic)
            .filter(|t| Arc::ptr_eq(&t.name, &token.topic))
    }

    /// Acks records for `group`.
    pub fn ack(&self, group: &Arc<str>, tokens: Vec<AckToken>) {
        let of = |t: &Topic, k: &AckToken| Arc::ptr_eq(&t.name, &k.topic);
        // Tokens come in fetch order: a run of one partition's tokens takes
        // its cursor lock once.
        let mut tokens = tokens.into_iter().peekable();
        let mut last: Option<Arc<Topic>> = None;
        while let Some(token) = tokens.next() {
            if !last.as_ref().is_some_and(|t| of(t, &token)) {
                last = self.topic_of(&token);
            }
            let Some(topic) = &last else { continue };
            let Some(part) = topic.partitions.get(token.partition as usize) else {
                continue;
            };
            let mut cursors = part.cursors.lock();
            let Some(c) = cursors.get_mut(group) else {
                continue;
            };
            let rest = std::iter::from_fn(|| {
                tokens
                    .next_if(|k| k.partition == token.partition && of(topic, k))
                    .map(|k| k.offset)
            });
            c.ack_all(std::iter::once(token.offset).chain(rest));
        }
        self.offsets_dirty.store(true, Ordering::Release);
    }

    /// Gives a record back to `group` for redelivery after `after`
    /// (saturating: `Duration::MAX` means "not for a century").
    pub fn nack(&self, group: &Arc<str>, token: &AckToken, after: Duration) {
        let Some(topic) = self.topic_of(token) else {
            return;
        };
        let due = saturating_after(Instant::now(), after);
        let moved = topic
            .partitions
            .get(token.partition as usize)
            .and_then(|p| {
                p.cursors
                    .lock()
                    .get_mut(group)
                    .map(|c| c.give_back(token.offset, due))
            })
            .unwrap_or(false);
        if moved {
            topic.changed.notify_waiters();
        }
    }

    /// Takes back records taken but never handed to the consumer (the
    /// fetch was dropped, or failed part way): offered again at once, and
    /// the take does not count as a delivery.
    pub fn untake(&self, group: &Arc<str>, deliveries: &[RawDelivery]) {
        let now = Instant::now();
        let mut last: Option<Arc<Topic>> = None;
        for d in deliveries {
            let token = &d.token;
            if !last
                .as_ref()
                .is_some_and(|t| Arc::ptr_eq(&t.name, &token.topic))
            {
                if let Some(t) = last.take() {
                    t.changed.notify_waiters();
                }
                last = self.topic_of(token);
            }
            let Some(topic) = &last else { continue };
            if let Some(part) = topic.partitions.get(token.partition as usize) {
                if let Some(c) = part.cursors.lock().get_mut(group) {
                    c.hold(token.offset, now);
                }
            }
        }
        if let Some(t) = last {
            t.changed.notify_waiters();
        }
    }

    /// Backlog per partition of `topic` for `group`.
    pub fn lag(&self, topic: &str, group: &str) -> Vec<PartitionLag> {
        let Some(topic) = self.topics.read().get(topic) else {
            return Vec::new();
        };
        topic
            .partitions
            .iter()
            .enumerate()
            .map(|(p, part)| {
                let end = part.visible.load(Ordering::Acquire);
                let start = part.start.load(Ordering::Acquire);
                let cursors = part.cursors.lock();
                let cursor = cursors.get(group);
                let lag = cursor.map_or(end.saturating_sub(start), |c| c.lag(end));
                PartitionLag::new(p as u32, lag)
                    .with_offsets(end, cursor.map(|c| c.committed().max(start)))
            })
            .collect()
    }
}
