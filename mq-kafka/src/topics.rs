//! Topics and groups: the partition counts publishing needs (topics are
//! created on first use), creating and deleting topics, creating a group
//! without joining it, and lag.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mq_core::driver::{partition_for_key, PartitionLag, StartFrom, TopicSpec};
use mq_core::{Error, Result};
use parking_lot::{Mutex, RwLock};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{config_error, KafkaOptions};
use crate::error::map;
use crate::publish::KafkaProducer;
use rdkafka::producer::Producer as _;

/// The partition of a record with ordering key `key` in a topic of
/// `partitions` partitions: the core's murmur2 mapping, which is the Java
/// client's and the `murmur2_random` partitioner librdkafka is configured
/// with. The driver always passes this partition explicitly, so what mq
/// computes and what the broker stores cannot differ.
pub(crate) fn partition_of(key: &str, partitions: u32) -> i32 {
    partition_for_key(key, partitions) as i32
}

/// Clients kept per group for offset look-ups, at most (lag is polled often).
const GROUP_CLIENTS: usize = 32;

/// Topic metadata and admin requests, shared by the driver's parts.
pub(crate) struct Topics {
    options: Arc<KafkaOptions>,
    admin: AdminClient<DefaultClientContext>,
    /// Partition counts of topics known to exist, and when each was looked up.
    counts: RwLock<HashMap<String, (u32, Instant)>>,
    /// Non-member clients of groups, for committed offsets and watermarks.
    groups: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    /// Partition counts are looked up through the producer, so that what
    /// the driver computes partitions with and what librdkafka accepts
    /// come from the same metadata.
    producer: Arc<KafkaProducer>,
}

impl Topics {
    /// The admin client for `options`.
    pub(crate) fn new(options: Arc<KafkaOptions>, producer: Arc<KafkaProducer>) -> Result<Self> {
        let admin = options.admin("__mq.admin").create().map_err(config_error)?;
        Ok(Topics {
            options,
            admin,
            counts: RwLock::default(),
            groups: Mutex::default(),
            producer,
        })
    }

    /// Checks that a broker answers within the connect time-out, naming
    /// the bootstrap list when none does.
    pub(crate) async fn check_reachable(&self) -> Result<()> {
        let client = self.group_client("__mq.admin")?;
        let timeout = self.options.connect_timeout;
        let bootstrap = self.options.bootstrap.clone();
        blocking(move || client.fetch_metadata(None, timeout))
            .await?
            .map(|_| ())
            .map_err(|e| {
                Error::connection(
                    format!("no Kafka broker answered at {bootstrap} within {timeout:?}"),
                    e,
                )
            })
    }

    /// The number of partitions of `topic`, creating it with the default
    /// partition count when it does not exist.
    pub(crate) async fn partitions(&self, topic: &str) -> Result<u32> {
        let max_age = self.options.metadata_max_age;
        if let Some((n, at)) = self.counts.read().get(topic) {
            if at.elapsed() < max_age {
                return Ok(*n);
            }
        }
        if let Some(n) = self.lookup(topic).await? {
            return Ok(n);
        }
        self.ensure(topic, &TopicSpec::new(self.options.partitions))
            .await?;
        self.wait_visible(topic).await
    }

    /// The partition count from the broker's metadata, if the topic exists.
    pub(crate) async fn lookup(&self, topic: &str) -> Result<Option<u32>> {
        let producer = self.producer.clone();
        let timeout = self.options.request_timeout;
        let name = topic.to_owned();
        let metadata = blocking(move || producer.client().fetch_metadata(Some(&name), timeout))
            .await?
            .map_err(|e| map(e, "topic metadata"))?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as u32)
            .filter(|n| *n > 0);
        if let Some(n) = count {
            self.counts
                .write()
                .insert(topic.to_owned(), (n, Instant::now()));
        }
        Ok(count)
    }

    /// Whether `topic` exists, from the metadata of every topic: asking for
    /// one topic by name makes a broker that auto-creates topics create it.
    pub(crate) async fn exists(&self, topic: &str) -> Result<bool> {
        let producer = self.producer.clone();
        let timeout = self.options.request_timeout;
        let metadata = blocking(move || producer.client().fetch_metadata(None, timeout))
            .await?
            .map_err(|e| map(e, "topic metadata"))?;
        Ok(metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none()))
    }

    /// Waits until a topic just created shows in the metadata.
    async fn wait_visible(&self, topic: &str) -> Result<u32> {
        let deadline = tokio::time::Instant::now() + self.options.request_timeout;
        loop {
            if let Some(n) = self.lookup(topic).await? {
                return Ok(n);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(self.options.request_timeout));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates the topic if missing; an existing topic is left as it is.
    pub(crate) async fn ensure(&self, topic: &str, spec: &TopicSpec) -> Result<()> {
        let retention = spec.retention.map(|d| d.as_millis().to_string());
        let mut new = NewTopic::new(
            topic,
            spec.partitions.max(1) as i32,
            TopicReplication::Fixed(self.options.replication),
        );
        if let Some(ms) = &retention {
            new = new.set("retention.ms", ms);
        }
        let opts = AdminOptions::new().request_timeout(Some(self.options.request_timeout));
        let results = self
            .admin
            .create_topics([&new], &opts)
            .await
            .map_err(|e| map(e, "create topic"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(map(
                        KafkaError::AdminOp(code),
                        &format!("create topic {name}"),
                    ))
                }
            }
        }
        self.wait_visible(topic).await.map(|_| ())
    }

    /// Adds partitions to `topic` until it has `partitions` (CreatePartitions).
    pub(crate) async fn grow(&self, topic: &str, partitions: u32) -> Result<()> {
        let opts = AdminOptions::new().request_timeout(Some(self.options.request_timeout));
        let results = self
            .admin
            .create_partitions([&NewPartitions::new(topic, partitions as usize)], &opts)
            .await
            .map_err(|e| map(e, "add partitions"))?;
        for result in results {
            if let Err((name, code)) = result {
                return Err(map(
                    KafkaError::AdminOp(code),
                    &format!("add partitions to {name}"),
                ));
            }
        }
        self.counts.write().remove(topic);
        let deadline = tokio::time::Instant::now() + self.options.request_timeout;
        while self.lookup(topic).await?.unwrap_or(0) < partitions {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(self.options.request_timeout));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Deletes the topic; a missing topic is not an error.
    pub(crate) async fn delete(&self, topic: &str) -> Result<()> {
        self.counts.write().remove(topic);
        let opts = AdminOptions::new().request_timeout(Some(self.options.request_timeout));
        let results = self
            .admin
            .delete_topics(&[topic], &opts)
            .await
            .map_err(|e| map(e, "delete topic"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((name, code)) => {
                    return Err(map(
                        KafkaError::AdminOp(code),
                        &format!("delete topic {name}"),
                    ))
                }
            }
        }
        self.counts.write().remove(topic);
        Ok(())
    }

    /// Creates `group` on `topic` without joining it: commits, for every
    /// partition the group has no offset for, the low (earliest) or high
    /// (latest) watermark.
    pub(crate) async fn ensure_group(
        &self,
        topic: &str,
        group: &str,
        start: StartFrom,
    ) -> Result<()> {
        let partitions = self.partitions(topic).await?;
        let client = self.group_client(group)?;
        let timeout = self.options.request_timeout;
        let topic = topic.to_owned();
        blocking(move || -> Result<()> {
            let committed = committed(&client, &topic, partitions, timeout)?;
            let mut missing = TopicPartitionList::new();
            for (p, offset) in committed.iter().enumerate() {
                if offset.is_some() {
                    continue;
                }
                let (low, high) = client
                    .fetch_watermarks(&topic, p as i32, timeout)
                    .map_err(|e| map(e, "watermarks"))?;
                let at = match start {
                    StartFrom::Earliest => low,
                    StartFrom::Latest => high,
                };
                missing
                    .add_partition_offset(&topic, p as i32, Offset::Offset(at))
                    .map_err(|e| map(e, "ensure group"))?;
            }
            if missing.count() == 0 {
                return Ok(());
            }
            match client.commit(&missing, CommitMode::Sync) {
                // A group with live members refuses commits from outside:
                // it exists, and its members position it.
                Err(KafkaError::ConsumerCommit(
                    RDKafkaErrorCode::UnknownMemberId
                    | RDKafkaErrorCode::IllegalGeneration
                    | RDKafkaErrorCode::RebalanceInProgress,
                )) => Ok(()),
                other => other.map_err(|e| map(e, "ensure group")),
            }
        })
        .await?
    }

    /// Backlog per partition: high watermark minus the committed offset
    /// (the lowest unacked, so records in flight count), or everything
    /// retained where the group has no offset yet.
    pub(crate) async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        let Some(partitions) = self.lookup(topic).await? else {
            return Ok(Vec::new());
        };
        let client = self.group_client(group)?;
        let timeout = self.options.request_timeout;
        let topic = topic.to_owned();
        blocking(move || -> Result<Vec<PartitionLag>> {
            let committed = committed(&client, &topic, partitions, timeout)?;
            let mut out = Vec::with_capacity(partitions as usize);
            for (p, offset) in committed.into_iter().enumerate() {
                let (low, high) = client
                    .fetch_watermarks(&topic, p as i32, timeout)
                    .map_err(|e| map(e, "watermarks"))?;
                let (low, high) = (low.max(0) as u64, high.max(0) as u64);
                let from = offset.unwrap_or(low).max(low);
                out.push(
                    PartitionLag::new(p as u32, high.saturating_sub(from))
                        .with_offsets(high, offset),
                );
            }
            Ok(out)
        })
        .await?
    }

    /// The driver's options.
    pub(crate) fn options(&self) -> &KafkaOptions {
        &self.options
    }

    /// The committed offset of each of the `partitions` of `topic` for `group`.
    pub(crate) async fn committed_of(
        &self,
        group: &str,
        topic: &str,
        partitions: u32,
    ) -> Result<Vec<Option<u64>>> {
        let client = self.group_client(group)?;
        let timeout = self.options.request_timeout;
        let topic = topic.to_owned();
        blocking(move || committed(&client, &topic, partitions, timeout)).await?
    }

    /// A client of `group` that never joins it.
    pub(crate) fn group_client(&self, group: &str) -> Result<Arc<BaseConsumer>> {
        let mut groups = self.groups.lock();
        if let Some(c) = groups.get(group) {
            return Ok(c.clone());
        }
        if groups.len() >= GROUP_CLIENTS {
            groups.clear();
        }
        let client: BaseConsumer = self.options.admin(group).create().map_err(config_error)?;
        let client = Arc::new(client);
        groups.insert(group.to_owned(), client.clone());
        Ok(client)
    }

    /// Drops the cached clients (on close).
    pub(crate) fn close(&self) {
        self.groups.lock().clear();
    }
}

/// The committed offset of each partition of `topic` for the client's group.
fn committed(
    client: &BaseConsumer,
    topic: &str,
    partitions: u32,
    timeout: Duration,
) -> Result<Vec<Option<u64>>> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p as i32);
    }
    let answer = client
        .committed_offsets(tpl, timeout)
        .map_err(|e| map(e, "committed offsets"))?;
    let mut out = vec![None; partitions as usize];
    for e in answer.elements_for_topic(topic) {
        if let (Offset::Offset(o), Some(slot)) = (e.offset(), out.get_mut(e.partition() as usize)) {
            *slot = u64::try_from(o).ok();
        }
    }
    Ok(out)
}

/// Runs a blocking librdkafka call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Backend {
            backend: crate::error::BACKEND,
            message: format!("a blocking Kafka call failed: {e}"),
            source: None,
        })
}
