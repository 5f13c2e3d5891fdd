//! Group membership and delivery: joining, taking records for a member,
//! acks, nacks, lag.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use mq_core::driver::{AckToken, PartitionLag, RawDelivery, StartFrom};
use mq_core::Result;

use super::topics::Topic;
use super::Engine;
use crate::group::cursor::{Cursor, InFlight, MemberId};
use crate::log::LogReader;

impl Engine {
    /// Adds `member` to `group` on `topic`; a new group starts per `start`.
    pub fn join(&self, topic: &Topic, group: &Arc<str>, member: MemberId, start: StartFrom) {
        for part in &topic.partitions {
            let begin = match start {
                StartFrom::Earliest => part.start.load(Ordering::Acquire),
                StartFrom::Latest => part.visible.load(Ordering::Acquire),
            };
            part.cursors
                .lock()
                .entry(group.clone())
                .or_insert_with(|| Cursor::at(begin));
        }
        topic
            .members
            .lock()
            .entry(group.clone())
            .or_default()
            .push(member);
        self.offsets_dirty.store(true, Ordering::Release);
        topic.changed.notify_waiters();
    }

    /// Removes `member`; what it held goes back to the group.
    pub fn leave(&self, topic: &Topic, group: &Arc<str>, member: MemberId) {
        if let Some(members) = topic.members.lock().get_mut(group) {
            members.retain(|m| *m != member);
        }
        let now = Instant::now();
        for part in &topic.partitions {
            if let Some(c) = part.cursors.lock().get_mut(group) {
                c.release_member(member, now);
            }
        }
        topic.changed.notify_waiters();
    }

    /// Takes up to `max - out.len()` deliverable records of `topic` for
    /// `member`; returns when the earliest returned record falls due.
    ///
    /// Synchronous from marking records in flight to returning them, so a
    /// fetch dropped at an await point never loses one.
    pub fn take(
        &self,
        topic: &Arc<Topic>,
        group: &Arc<str>,
        member: MemberId,
        max: usize,
        reader: &mut LogReader,
        out: &mut Vec<RawDelivery>,
    ) -> Result<Option<Instant>> {
        let assigned = topic.assigned(group, member);
        if assigned.is_empty() || topic.deleted.load(Ordering::Acquire) {
            return Ok(None);
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut next_due: Option<Instant> = None;
        let rotate = (self.next_rotation() as usize) % assigned.len();
        for &p in assigned[rotate..].iter().chain(&assigned[..rotate]) {
            if out.len() >= max {
                break;
            }
            let part = &topic.partitions[p];
            let visible = part.visible.load(Ordering::Acquire);
            let start = part.start.load(Ordering::Acquire);
            // Decide under the cursor lock, read outside it.
            let (again, fresh) = {
                let mut cursors = part.cursors.lock();
                let Some(c) = cursors.get_mut(group) else {
                    continue;
                };
                if c.held_by_other(member) {
                    continue;
                }
                c.skip_to(start);
                let room = max - out.len();
                let due: Vec<u64> = c
                    .returned
                    .iter()
                    .filter(|(_, r)| r.due <= now)
                    .map(|(o, _)| *o)
                    .take(room)
                    .collect();
                let mut again = Vec::with_capacity(due.len());
                for offset in due {
                    if let Some(r) = c.returned.remove(&offset) {
                        let count = r.count.saturating_add(1);
                        c.in_flight.insert(
                            offset,
                            InFlight {
                                owner: member,
                                count,
                                first_seen: r.first_seen,
                            },
                        );
                        again.push((offset, count, r.first_seen));
                    }
                }
                let mut fresh = Vec::new();
                while again.len() + fresh.len() < room && c.next < visible {
                    let offset = c.next;
                    c.next += 1;
                    if c.acked.contains(&offset) || offset < c.committed {
                        continue;
                    }
                    let count = if offset < c.delivered_before { 2 } else { 1 };
                    c.in_flight.insert(
                        offset,
                        InFlight {
                            owner: member,
                            count,
                            first_seen: wall,
                        },
                    );
                    fresh.push((offset, count, wall));
                }
                if let Some(due) = c.next_due() {
                    next_due = Some(next_due.map_or(due, |d: Instant| d.min(due)));
                }
                (again, fresh)
            };
            if again.is_empty() && fresh.is_empty() {
                continue;
            }
            match self.read_taken(topic, p as u32, &again, &fresh, reader, out) {
                Ok(missing) => {
                    if !missing.is_empty() {
                        // Records that no longer exist (retention): done.
                        let mut cursors = part.cursors.lock();
                        if let Some(c) = cursors.get_mut(group) {
                            for offset in missing {
                                c.mark_acked(offset);
                            }
                        }
                    }
                }
                Err(e) => {
                    let mut cursors = part.cursors.lock();
                    if let Some(c) = cursors.get_mut(group) {
                        for (offset, _, _) in again.iter().chain(&fresh) {
                            c.give_back(*offset, now);
                        }
                    }
                    out.retain(|d| !(d.token.topic == topic.name && d.partition == p as u32));
                    return Err(e);
                }
            }
        }
        Ok(next_due)
    }

    /// Reads the records `take` picked; returns offsets that were not found.
    fn read_taken(
        &self,
        topic: &Arc<Topic>,
        partition: u32,
        again: &[(u64, u32, SystemTime)],
        fresh: &[(u64, u32, SystemTime)],
        reader: &mut LogReader,
        out: &mut Vec<RawDelivery>,
    ) -> Result<Vec<u64>> {
        let mut missing = Vec::new();
        let deliver = |out: &mut Vec<RawDelivery>,
                       offset: u64,
                       count: u32,
                       first_seen: SystemTime,
                       message| {
            out.push(RawDelivery {
                message,
                partition,
                offset: Some(offset),
                delivery_count: count,
                first_seen,
                token: AckToken {
                    topic: topic.name.clone(),
                    partition,
                    offset,
                    tag: u64::from(topic.id),
                },
            })
        };
        let mut found = Vec::new();
        for &(offset, count, first_seen) in again {
            found.clear();
            self.read_range(topic, partition, offset..offset + 1, 1, reader, &mut found)?;
            match found.pop() {
                Some((_, message)) => deliver(out, offset, count, first_seen, message),
                None => missing.push(offset),
            }
        }
        if let (Some(first), Some(last)) = (fresh.first(), fresh.last()) {
            found.clear();
            let span = (last.0 + 1 - first.0) as usize;
            self.read_range(
                topic,
                partition,
                first.0..last.0 + 1,
                span,
                reader,
                &mut found,
            )?;
            // Both in offset order; `found` may hold offsets the cursor
            // skipped as already acked.
            let mut found = found.into_iter().peekable();
            for &(offset, count, first_seen) in fresh {
                while found.next_if(|(o, _)| *o < offset).is_some() {}
                match found.next_if(|(o, _)| *o == offset) {
                    Some((_, message)) => deliver(out, offset, count, first_seen, message),
                    None => missing.push(offset),
                }
            }
        }
        Ok(missing)
    }

    fn topic_of(&self, token: &AckToken) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .get(&token.topic)
            .filter(|t| u64::from(t.id) == token.tag)
    }

    /// Acks records for `group`.
    pub fn ack(&self, group: &Arc<str>, tokens: Vec<AckToken>) {
        let mut last: Option<Arc<Topic>> = None;
        for token in tokens {
            let topic = match &last {
                Some(t) if t.name == token.topic && u64::from(t.id) == token.tag => t.clone(),
                _ => match self.topic_of(&token) {
                    Some(t) => {
                        last = Some(t.clone());
                        t
                    }
                    None => continue,
                },
            };
            if let Some(part) = topic.partitions.get(token.partition as usize) {
                if let Some(c) = part.cursors.lock().get_mut(group) {
                    c.ack(token.offset);
                }
            }
        }
        self.offsets_dirty.store(true, Ordering::Release);
    }

    /// Gives a record back to `group` for redelivery after `after`.
    pub fn nack(&self, group: &Arc<str>, token: &AckToken, after: std::time::Duration) {
        let Some(topic) = self.topic_of(token) else {
            return;
        };
        let moved = topic
            .partitions
            .get(token.partition as usize)
            .and_then(|p| {
                p.cursors
                    .lock()
                    .get_mut(group)
                    .map(|c| c.give_back(token.offset, Instant::now() + after))
            })
            .unwrap_or(false);
        if moved {
            topic.changed.notify_waiters();
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
                PartitionLag {
                    partition: p as u32,
                    lag: cursor.map_or(end.saturating_sub(start), |c| c.lag(end)),
                    end_offset: Some(end),
                    committed_offset: cursor.map(|c| c.committed.max(start)),
                }
            })
            .collect()
    }

    /// Topics of a subscription, created when missing and allowed.
    pub fn topics_for(&self, names: &[String]) -> Result<Vec<Arc<Topic>>> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for name in names {
            if seen.insert(name.clone()) {
                out.push(self.topic_or_create(name, None)?);
            }
        }
        Ok(out)
    }

    /// The topic, created with `partitions` (or the default) when missing and auto-create is on.
    pub fn topic_or_create(&self, name: &str, partitions: Option<u32>) -> Result<Arc<Topic>> {
        if let Some(t) = self.topics.read().get(name) {
            return Ok(t);
        }
        if partitions.is_none() && !self.options.auto_create {
            return Err(mq_core::Error::Rejected(format!(
                "unknown topic {name:?} (auto_create is off: create it with ensure_topic)"
            )));
        }
        let mut topics = self.topics.write();
        if let Some(t) = topics.get(name) {
            return Ok(t);
        }
        topics.create(name, partitions.unwrap_or(self.options.partitions))
    }
}
