//! The admin operations on Kafka: topics from the cluster metadata,
//! groups from the group list and their committed offsets, browsing with
//! a consumer that is assigned partitions and joins no group, and resets
//! committed from outside the group while it has no members (as
//! `kafka-consumer-groups --reset-offsets` does).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mq_core::driver::clock::epoch_millis;
use mq_core::driver::{BrowseFrom, BrowseSpec, BrowsedMessage, ResetTo, TopicInfo};
use mq_core::{Error, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::codec;
use crate::error::map;
use crate::topics::{blocking, Topics};

/// The client id browsing consumers use as their (never joined) group.
const BROWSER_GROUP: &str = "__mq.browse";

/// Topics the broker keeps for itself, not application or mq topics.
fn is_broker_internal(name: &str) -> bool {
    matches!(name, "__consumer_offsets" | "__transaction_state")
}

impl Topics {
    /// Every topic but the broker's own, with its partition count.
    pub(crate) async fn list(&self) -> Result<Vec<TopicInfo>> {
        let client = self.group_client("__mq.admin")?;
        let timeout = self.options().request_timeout;
        let metadata = blocking(move || client.fetch_metadata(None, timeout))
            .await?
            .map_err(|e| map(e, "topic metadata"))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !is_broker_internal(t.name()))
            .map(|t| TopicInfo::new(t.name(), t.partitions().len() as u32))
            .collect())
    }

    /// The groups with a committed offset on some partition of `topic`
    /// (groups mq creates always commit one, see `ensure_group`).
    pub(crate) async fn groups_of(&self, topic: &str) -> Result<Vec<String>> {
        let Some(partitions) = self.lookup(topic).await? else {
            return Ok(Vec::new());
        };
        let client = self.group_client("__mq.admin")?;
        let timeout = self.options().request_timeout;
        // The group list is not Send: only the names leave the blocking call.
        let names: Vec<String> = blocking(move || {
            client.fetch_group_list(None, timeout).map(|list| {
                list.groups()
                    .iter()
                    .filter(|g| g.protocol_type().is_empty() || g.protocol_type() == "consumer")
                    .map(|g| g.name().to_owned())
                    .filter(|name| name != BROWSER_GROUP && name != "__mq.admin")
                    .collect()
            })
        })
        .await?
        .map_err(|e| map(e, "list groups"))?;
        let mut of_topic = Vec::new();
        for name in names {
            let committed = self.committed_of(&name, topic, partitions).await?;
            if committed.iter().any(Option::is_some) {
                of_topic.push(name);
            }
        }
        Ok(of_topic)
    }

    /// Up to `spec.max` records of one partition, read by a consumer that
    /// is assigned the partition and commits nothing.
    pub(crate) async fn browse(
        &self,
        topic: &str,
        spec: &BrowseSpec,
    ) -> Result<Vec<BrowsedMessage>> {
        let Some(partitions) = self.lookup(topic).await? else {
            return Ok(Vec::new());
        };
        if spec.partition >= partitions {
            return Err(Error::invalid(
                "partition",
                spec.partition.to_string(),
                format!("{topic} has {partitions} partitions"),
            ));
        }
        let consumer: BaseConsumer = self
            .options()
            .admin(BROWSER_GROUP)
            .create()
            .map_err(crate::config::config_error)?;
        let timeout = self.options().request_timeout;
        let topic: Arc<str> = Arc::from(topic);
        let spec = *spec;
        blocking(move || read_partition(&consumer, &topic, spec, timeout)).await?
    }

    /// Moves `group` on every partition of `topic`, refused while the
    /// group has members (their commits would undo it).
    pub(crate) async fn reset(&self, topic: &str, group: &str, to: ResetTo) -> Result<()> {
        let partitions = self.partitions(topic).await?;
        let client = self.group_client(group)?;
        let timeout = self.options().request_timeout;
        let (topic, group) = (topic.to_owned(), group.to_owned());
        blocking(move || -> Result<()> {
            let list = client
                .fetch_group_list(Some(&group), timeout)
                .map_err(|e| map(e, "describe group"))?;
            if let Some(live) = list.groups().iter().find(|g| !g.members().is_empty()) {
                return Err(Error::invalid(
                    "group",
                    &group,
                    format!(
                        "has {} live members; stop them before resetting it",
                        live.members().len()
                    ),
                ));
            }
            let mut targets = TopicPartitionList::new();
            for p in 0..partitions as i32 {
                let (low, high) = client
                    .fetch_watermarks(&topic, p, timeout)
                    .map_err(|e| map(e, "watermarks"))?;
                let at = match to {
                    ResetTo::Earliest => low,
                    ResetTo::Latest => high,
                    ResetTo::Time(at) => {
                        offset_at_time(&client, &topic, p, at, timeout)?.unwrap_or(high)
                    }
                    _ => {
                        return Err(Error::unsupported(
                            "this reset target",
                            crate::error::BACKEND,
                        ))
                    }
                };
                targets
                    .add_partition_offset(&topic, p, Offset::Offset(at))
                    .map_err(|e| map(e, "reset group"))?;
            }
            client
                .commit(&targets, CommitMode::Sync)
                .map_err(|e| map(e, "reset group"))
        })
        .await?
    }
}

/// The first offset of `partition` at or after `at`, if any record is.
fn offset_at_time(
    client: &BaseConsumer,
    topic: &str,
    partition: i32,
    at: SystemTime,
    timeout: Duration,
) -> Result<Option<i64>> {
    let ms = i64::try_from(epoch_millis(at)).unwrap_or(i64::MAX);
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset(topic, partition, Offset::Offset(ms))
        .map_err(|e| map(e, "offsets for times"))?;
    let answer = client
        .offsets_for_times(query, timeout)
        .map_err(|e| map(e, "offsets for times"))?;
    Ok(answer
        .elements_for_topic(topic)
        .into_iter()
        .find_map(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }))
}

fn read_partition(
    consumer: &BaseConsumer,
    topic: &Arc<str>,
    spec: BrowseSpec,
    timeout: Duration,
) -> Result<Vec<BrowsedMessage>> {
    let partition = spec.partition as i32;
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, timeout)
        .map_err(|e| map(e, "watermarks"))?;
    let start = match spec.from {
        BrowseFrom::Offset(o) => i64::try_from(o).unwrap_or(i64::MAX).clamp(low, high),
        BrowseFrom::Last(n) => high
            .saturating_sub(i64::try_from(n).unwrap_or(i64::MAX))
            .max(low),
        BrowseFrom::Time(at) => {
            offset_at_time(consumer, topic, partition, at, timeout)?.unwrap_or(high)
        }
        _ => {
            return Err(Error::unsupported(
                "this browse start",
                crate::error::BACKEND,
            ))
        }
    };
    let mut out = Vec::new();
    if start >= high || spec.max == 0 {
        return Ok(out);
    }
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(start))
        .map_err(|e| map(e, "browse"))?;
    consumer.assign(&assignment).map_err(|e| map(e, "browse"))?;
    let deadline = Instant::now() + timeout;
    // Records of aborted transactions and control records leave gaps:
    // reading stops at the high watermark seen at the start, or the limit.
    while out.len() < spec.max && Instant::now() < deadline {
        let Some(record) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let record = record.map_err(|e| map(e, "browse"))?;
        let offset = record.offset();
        if offset >= high {
            break;
        }
        let message = codec::decode(topic, &record);
        out.push(BrowsedMessage::new(
            spec.partition,
            u64::try_from(offset).ok(),
            message,
        ));
        if offset + 1 >= high {
            break;
        }
    }
    Ok(out)
}
