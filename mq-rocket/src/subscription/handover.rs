//! What a member leaves for the next owner of a queue it hands on.
//!
//! RocketMQ keeps one offset per group and queue, so a queue handed on
//! (revoked, or its member closed) resumes at its first message not acked,
//! and messages acked after that one would be read again. The member
//! handing the queue on therefore commits that offset itself and, when
//! messages after it were acked, writes their offsets down in the name
//! servers' key-value store ([`NAMESPACE`], one key per group and queue)
//! before the client lets the queue's lock go. The next owner, in this
//! process or another, reads the [`Record`] with its first batch of the
//! queue: when that batch starts at the record's offset it skips the
//! offsets listed (they count as acked, and are listed again if it hands
//! the queue on before passing them); any other start means the record is
//! stale (a later commit, a reset), and it is deleted, as it is once its
//! offsets are committed past. Resetting a group and deleting a topic
//! delete their records (offsets start over there, and a record would
//! skip messages never acked). Without a reachable name server nothing is
//! recorded or read, and those messages come again (at-least-once).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rocketmq_client_rust::OffsetStore;
use rocketmq_model::common::message::message_queue::MessageQueue;

use crate::cluster::Cluster;
use crate::driver::Inner;

/// The name servers' key-value namespace of the records.
pub(crate) const NAMESPACE: &str = "MQ_HANDOVER";
/// Longest wait for the name servers or the broker while a queue changes hands.
const LIMIT: Duration = Duration::from_secs(5);

/// The record's key for `group` (its broker name) on `queue`.
pub(crate) fn key(group: &str, queue: &MessageQueue) -> String {
    format!(
        "{group}/{}/{}/{}",
        queue.topic(),
        queue.broker_name(),
        queue.queue_id()
    )
}

/// Where a queue was handed on: the offset committed, and the messages
/// after it that were acked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) committed: u64,
    /// Ascending, all above `committed`.
    pub(crate) acked: Vec<u64>,
}

impl Record {
    /// `committed:acked,acked,...`
    fn encode(&self) -> String {
        let acked: Vec<String> = self.acked.iter().map(u64::to_string).collect();
        format!("{}:{}", self.committed, acked.join(","))
    }

    fn decode(text: &str) -> Option<Record> {
        let (committed, acked) = text.split_once(':')?;
        let committed = committed.parse().ok()?;
        let acked = acked
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<u64>, _>>()
            .ok()?;
        Some(Record { committed, acked })
    }
}

/// One member's side of hand-overs.
pub(crate) struct Handovers {
    inner: Arc<Inner>,
    /// The group's broker name.
    group: String,
    /// The consumer's offsets, once it has started.
    offsets: OnceLock<Arc<OffsetStore>>,
}

impl Handovers {
    pub(crate) fn new(inner: Arc<Inner>, group: &str) -> Handovers {
        Handovers {
            inner,
            group: crate::names::to_broker(group),
            offsets: OnceLock::new(),
        }
    }

    /// Takes the started consumer's offset store, where a hand-over commits.
    pub(crate) fn set_offsets(&self, store: Option<Arc<OffsetStore>>) {
        if let Some(store) = store {
            let _ = self.offsets.set(store);
        }
    }

    /// The record left for `queue`, if any (blocks; on a listener thread).
    pub(crate) fn read(&self, queue: &MessageQueue) -> Option<Record> {
        let key = key(&self.group, queue);
        let cluster = &self.inner.cluster;
        match run(cluster.kv_get(NAMESPACE, &key))? {
            Ok(value) => value.as_deref().and_then(Record::decode),
            Err(error) => {
                tracing::warn!(%error, queue = %queue, "reading what the last owner acked failed; its acked messages may come again");
                None
            }
        }
    }

    /// Hands `queue` on: commits `record.committed` at the broker, then
    /// records the acked messages after it, if any (blocks; on a listener
    /// thread, before it returns the queue to the client).
    pub(crate) fn hand_on(&self, queue: &MessageQueue, record: &Record) {
        let committed = record.committed.min(i64::MAX as u64) as i64;
        let store = self.offsets.get().cloned();
        let commit = run(async move {
            let store = store?;
            // The client persists its own value later, so it must not be
            // lower than what is written to the broker here.
            store.update_offset(queue, committed, true).await;
            Some(
                store
                    .update_consume_offset_to_broker(queue, committed, false)
                    .await,
            )
        });
        if let Some(Some(Err(error))) = commit {
            tracing::warn!(error = %crate::error::describe(&error), queue = %queue, "committing a queue handed on failed; its acked messages may come again");
        }
        if record.acked.is_empty() {
            return;
        }
        let key = key(&self.group, queue);
        let value = record.encode();
        let cluster = &self.inner.cluster;
        if let Some(Err(error)) = run(cluster.kv_put(NAMESPACE, &key, &value)) {
            tracing::warn!(%error, queue = %queue, "recording acked messages of a queue handed on failed; they may come again");
        }
    }

    /// Deletes the record of `queue` in the background: passed, or stale.
    pub(crate) fn forget(&self, queue: &MessageQueue) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (inner, key) = (self.inner.clone(), key(&self.group, queue));
        runtime.spawn(async move {
            if let Err(error) = inner.cluster.kv_delete(NAMESPACE, &key).await {
                tracing::debug!(%error, key, "deleting a hand-over record failed");
            }
        });
    }
}

/// Deletes the records of `group` on the queues of `topic` (a reset moves
/// its offsets, so what they say no longer holds).
pub(crate) async fn forget_group(
    cluster: &Cluster,
    group: &str,
    queues: &[MessageQueue],
) -> mq_core::Result<()> {
    let group = crate::names::to_broker(group);
    for queue in queues {
        cluster.kv_delete(NAMESPACE, &key(&group, queue)).await?;
    }
    Ok(())
}

/// Deletes every record on the queues of `topic` (deleted: a topic
/// created again under its name starts its offsets over).
pub(crate) async fn forget_topic(cluster: &Cluster, topic: &str) -> mq_core::Result<()> {
    let topic = crate::names::to_broker(topic);
    for key in cluster.kv_keys(NAMESPACE).await? {
        if key.split('/').nth(1) == Some(topic.as_str()) {
            cluster.kv_delete(NAMESPACE, &key).await?;
        }
    }
    Ok(())
}

/// Runs `work` to completion on the client runtime the calling listener
/// thread belongs to, bounded by [`LIMIT`]; `None` off that runtime or on
/// time-out. A thread of its own, so it also works where the caller is
/// inside an async context.
fn run<F>(work: F) -> Option<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    std::thread::scope(|s| {
        s.spawn(move || runtime.block_on(async { tokio::time::timeout(LIMIT, work).await.ok() }))
            .join()
            .ok()
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back() {
        let record = Record {
            committed: 41,
            acked: vec![43, 44, 70],
        };
        assert_eq!(Record::decode(&record.encode()), Some(record));
        let empty = Record {
            committed: 7,
            acked: vec![],
        };
        assert_eq!(Record::decode(&empty.encode()), Some(empty));
        assert_eq!(Record::decode("garbage"), None);
        assert_eq!(Record::decode("1:2,x"), None);
    }

    #[test]
    fn one_key_per_group_and_queue() {
        let queue = MessageQueue::from_parts("t", "broker-a", 3);
        assert_eq!(key("g", &queue), "g/t/broker-a/3");
        assert_ne!(
            key("g", &queue),
            key("g", &MessageQueue::from_parts("t", "broker-a", 4))
        );
    }
}
