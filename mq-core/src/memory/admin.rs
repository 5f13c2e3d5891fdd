//! The admin operations of the memory broker: list, browse, reset.

use std::sync::Arc;

use super::broker::{Broker, Topic};
use super::log::PartitionLog;
use crate::driver::offsets::Cursor;
use crate::driver::{BrowseFrom, BrowseSpec, BrowsedMessage, ResetTo, TopicInfo};
use crate::error::{Error, Result};

impl Broker {
    pub(super) fn list_topics(&self) -> Vec<TopicInfo> {
        let mut topics: Vec<TopicInfo> = self
            .topics
            .read()
            .values()
            .map(|t| TopicInfo::new(t.name.to_string(), t.partitions.len() as u32))
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    pub(super) fn list_groups(&self, topic: &str) -> Vec<String> {
        let Some(topic) = self.topic(topic) else {
            return Vec::new();
        };
        let mut groups: Vec<String> = topic
            .partitions
            .iter()
            .flat_map(|log| {
                log.lock()
                    .cursors
                    .keys()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        groups.sort();
        groups.dedup();
        groups
    }

    pub(super) fn browse(&self, topic: &str, spec: &BrowseSpec) -> Result<Vec<BrowsedMessage>> {
        let Some(topic) = self.topic(topic) else {
            return Ok(Vec::new());
        };
        let log = partition(&topic, spec.partition)?.lock();
        let start = match spec.from {
            BrowseFrom::Offset(offset) => offset.max(log.base),
            BrowseFrom::Last(n) => log.end().saturating_sub(n).max(log.base),
            BrowseFrom::Time(at) => first_at_or_after(&log, at),
        };
        Ok((start..log.end())
            .take(spec.max)
            .filter_map(|offset| {
                let record = super::log::record_at(&log.records, log.base, offset)?;
                Some(BrowsedMessage::new(
                    spec.partition,
                    Some(offset),
                    record.message.clone(),
                ))
            })
            .collect())
    }

    pub(super) fn reset_group(&self, topic: &str, group: &str, to: ResetTo) -> Result<()> {
        let Some(topic) = self.topic(topic) else {
            return Err(Error::invalid("topic", topic, "no such topic"));
        };
        if topic.members.has_members(group) {
            return Err(Error::invalid(
                "group",
                group,
                "the group has active members; stop its consumers first",
            ));
        }
        let group: Arc<str> = Arc::from(group);
        for log in &topic.partitions {
            let mut log = log.lock();
            let position = match to {
                ResetTo::Earliest => log.base,
                ResetTo::Latest => log.end(),
                ResetTo::Time(at) => first_at_or_after(&log, at),
            };
            log.cursors.insert(group.clone(), Cursor::at(position));
        }
        topic.changed.notify_waiters();
        Ok(())
    }
}

fn partition(topic: &Topic, partition: u32) -> Result<&parking_lot::Mutex<PartitionLog>> {
    topic.partitions.get(partition as usize).ok_or_else(|| {
        Error::invalid(
            "partition",
            partition.to_string(),
            format!("{} has {} partitions", topic.name, topic.partitions.len()),
        )
    })
}

/// The offset of the first record published at or after `at` (the end
/// when none is): records are appended in publish order.
fn first_at_or_after(log: &PartitionLog, at: std::time::SystemTime) -> u64 {
    let skipped = log
        .records
        .partition_point(|r| r.message.published_at().is_some_and(|t| t < at));
    log.base + skipped as u64
}
