//! The admin operations over the engine: listing topics and groups,
//! browsing a partition without consuming it, and moving a group's durable
//! position (the reference semantics are the memory broker's).
//!
//! Browsing and resetting by time read the log (they block on file I/O):
//! the driver runs them off the async workers, as it runs fetches.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use mq_core::driver::clock::epoch_micros;
use mq_core::driver::offsets::Cursor;
use mq_core::driver::{BrowseFrom, BrowseSpec, BrowsedMessage, ResetTo, TopicInfo};
use mq_core::{Error, Result};

use super::topics::{Partition, Topic};
use super::Engine;
use crate::error::{backend, corrupt, io_error, BACKEND};
use crate::log::batch;
use crate::log::index::{find_shared, get_shared};
use crate::log::LogReader;

impl Engine {
    /// Every topic with its partition count, by name.
    pub fn topic_infos(&self) -> Vec<TopicInfo> {
        let mut topics: Vec<TopicInfo> = self
            .topics
            .read()
            .all()
            .iter()
            .map(|t| TopicInfo::new(t.name.to_string(), t.partitions.len() as u32))
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// The groups with a position on `topic` (a cursor on any partition:
    /// joined once, or created by `ensure_group`), by name; none for a
    /// topic that does not exist.
    pub fn groups_of(&self, topic: &str) -> Vec<String> {
        let Some(topic) = self.topic(topic) else {
            return Vec::new();
        };
        let mut groups: Vec<String> = topic
            .partitions
            .iter()
            .flat_map(|part| {
                part.cursors
                    .lock()
                    .keys()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        groups.sort();
        groups.dedup();
        groups
    }

    /// Up to `spec.max` visible records of one partition of `topic`, oldest
    /// first, read like a fetch reads them but touching no cursor. Nothing
    /// for a topic that does not exist; `Invalid` for a partition it lacks.
    pub fn browse(&self, topic: &str, spec: &BrowseSpec) -> Result<Vec<BrowsedMessage>> {
        let Some(topic) = self.topic(topic) else {
            return Ok(Vec::new());
        };
        let part = partition_in(&topic, spec.partition)?;
        let (start, end) = ends(part);
        let mut reader = LogReader::default();
        let from = match spec.from {
            BrowseFrom::Offset(offset) => offset.max(start),
            BrowseFrom::Last(n) => end.saturating_sub(n).max(start),
            BrowseFrom::Time(at) => {
                self.first_at_or_after(&topic, spec.partition, at, &mut reader)?
            }
            // A start a newer mq-core added: refused by name, not guessed.
            _ => return Err(Error::unsupported("this browse start", BACKEND)),
        };
        let mut out = Vec::with_capacity(spec.max.min(end.saturating_sub(from) as usize));
        self.read_range(
            &topic,
            spec.partition,
            from..end,
            spec.max,
            &mut reader,
            |found, keys| {
                let message = found.message(&topic.name, keys)?;
                out.push(BrowsedMessage::new(
                    spec.partition,
                    Some(found.offset),
                    message,
                ));
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// Moves `group` on every partition of `topic` to `to`, dropping what
    /// it had in flight, and saves the offsets before returning, so the
    /// new position survives a crash. Refused while the group has members
    /// in this process: they hold records of the old position. (A member
    /// joining during the reset is not kept out, as in the memory broker;
    /// its acks of old records then only count for the new position.)
    pub fn reset_group(&self, topic: &str, group: &str, to: ResetTo) -> Result<()> {
        let Some(topic) = self.topic(topic) else {
            return Err(Error::invalid("topic", topic, "no such topic"));
        };
        if topic.members.has_members(group) {
            return Err(Error::invalid(
                "group",
                group,
                format!(
                    "the group has active members on {}; stop its consumers first",
                    topic.name
                ),
            ));
        }
        // Positions are found before any cursor moves: a read error leaves
        // the group where it was on every partition.
        let mut reader = LogReader::default();
        let positions = (0..topic.partitions.len() as u32)
            .map(|p| {
                let (start, end) = ends(&topic.partitions[p as usize]);
                match to {
                    ResetTo::Earliest => Ok(start),
                    ResetTo::Latest => Ok(end),
                    ResetTo::Time(at) => self.first_at_or_after(&topic, p, at, &mut reader),
                    _ => Err(Error::unsupported("this reset target", BACKEND)),
                }
            })
            .collect::<Result<Vec<u64>>>()?;
        let group: Arc<str> = Arc::from(group);
        for (part, position) in topic.partitions.iter().zip(positions) {
            part.cursors
                .lock()
                .insert(group.clone(), Cursor::at(position));
        }
        self.offsets_dirty.store(true, Ordering::Release);
        topic.changed.notify_waiters();
        self.save_offsets()
    }

    /// The offset of the first visible record of `partition` appended at
    /// or after `at` (its end when none is), clamped to the start.
    ///
    /// A binary search of the partition's index by the timestamps of the
    /// batches its entries point at, reading about log2(entries) batch
    /// headers: every record of a batch shares its timestamp, and batches
    /// are appended in timestamp order. (Each append takes its timestamp
    /// just before the writer lock, so two racing appends may land a few
    /// microseconds out of order; the search then finds one of the two.)
    fn first_at_or_after(
        &self,
        topic: &Topic,
        partition: u32,
        at: SystemTime,
        reader: &mut LogReader,
    ) -> Result<u64> {
        let part = partition_in(topic, partition)?;
        let (start, end) = ends(part);
        if start >= end || part.index.lock().is_empty() {
            return Ok(end);
        }
        let index_error = |e| io_error(format!("reading the index of {}", topic.name), e);
        // The entry holding `start`, and one past the last holding a
        // visible record: entries beyond it may point at unwritten bytes.
        let first = find_shared(&part.index, start, 0).map_err(index_error)?;
        let past = find_shared(&part.index, end - 1, first).map_err(index_error)? + 1;
        let at_us = epoch_micros(at);
        let (mut lo, mut hi) = (first, past);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let entry = get_shared(&part.index, mid)
                .map_err(index_error)?
                .ok_or_else(|| backend(format!("the index of {} shrank", topic.name)))?;
            let bytes = reader.batch_at(&self.log, entry.position)?;
            let stamp = batch::parse_checked(&bytes)
                .map_err(|e| corrupt(std::path::Path::new("log"), entry.position, e))?
                .timestamp_us;
            if stamp < at_us {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == past {
            return Ok(end);
        }
        let entry = get_shared(&part.index, lo).map_err(index_error)?;
        Ok(entry.map_or(end, |e| e.key.max(start)))
    }
}

/// The partition's retained start and visible end.
fn ends(part: &Partition) -> (u64, u64) {
    let start = part.start.load(Ordering::Acquire);
    let end = part.visible.load(Ordering::Acquire);
    (start.min(end), end)
}

/// Partition `partition` of `topic`, or `Invalid` naming it.
fn partition_in(topic: &Topic, partition: u32) -> Result<&Partition> {
    topic.partitions.get(partition as usize).ok_or_else(|| {
        Error::invalid(
            "partition",
            partition.to_string(),
            format!("{} has {} partitions", topic.name, topic.partitions.len()),
        )
    })
}
