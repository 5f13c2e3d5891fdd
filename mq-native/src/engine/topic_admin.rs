//! Creating, deleting and changing topics: each change is made durable in
//! the topic table first and only then becomes visible, so a topic a send
//! was acknowledged on is never lost to a crash.
//!
//! These block on file I/O (index files, the table's fsync): the driver
//! calls them from blocking threads, never from async workers. The table
//! lock is held across that I/O, but it only orders topic changes: sends,
//! fetches and acks read `topics`, whose lock is taken for an insert or a
//! removal, never across I/O.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mq_core::{Error, Result};

use super::topic_table::{Change, TopicMeta};
use super::topics::{index_root, retention_ms, Topic};
use super::Engine;

impl Engine {
    /// The topic, when it exists (no I/O: callable anywhere).
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name)
    }

    /// Topics of a subscription, created when missing and allowed.
    pub fn topics_for(&self, names: &[String]) -> Result<Vec<Arc<Topic>>> {
        let mut out: Vec<Arc<Topic>> = Vec::new();
        for name in names {
            if !out.iter().any(|t| *t.name == **name) {
                out.push(self.topic_or_create(name, None)?);
            }
        }
        Ok(out)
    }

    /// The topic, created with `partitions` (or the default) when missing
    /// and auto-create is on.
    pub fn topic_or_create(&self, name: &str, partitions: Option<u32>) -> Result<Arc<Topic>> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        if partitions.is_none() && !self.options.auto_create {
            return Err(Error::Rejected(format!(
                "unknown topic {name:?} (auto_create is off: create it with ensure_topic)"
            )));
        }
        let mut table = self.table.lock();
        // Another caller may have created it while this one waited.
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        let meta = TopicMeta {
            id: table.next_id(),
            name: name.to_owned(),
            partitions: partitions.unwrap_or(self.options.partitions),
            retention_ms: None,
        };
        let topic = Arc::new(Topic::open(
            &self.fs,
            &meta,
            &index_root(&self.dir),
            &|_| (0, 0),
        )?);
        table.commit(Change::Create(meta))?;
        self.topics.write().insert(topic.clone());
        Ok(topic)
    }

    /// Deletes a topic: durably out of the table, then out of memory, then
    /// its index files (with no lock held; a leftover is removed at the
    /// next open). False when there was no such topic.
    pub fn delete_topic(&self, name: &str) -> Result<bool> {
        let topic = {
            let mut table = self.table.lock();
            let Some(topic) = self.topic(name) else {
                return Ok(false);
            };
            table.commit(Change::Delete { id: topic.id })?;
            self.topics.write().remove(&topic);
            topic
        };
        topic.deleted.store(true, Ordering::Release);
        topic.changed.notify_waiters();
        if let Err(e) = self.fs.remove_dir_all(&topic.dir) {
            tracing::warn!(error = %e, dir = %topic.dir.display(), "native engine: removing a deleted topic's indexes failed; the next open retries");
        }
        Ok(true)
    }

    /// Gives `topic` its own retention, durably.
    pub(super) fn set_topic_retention(&self, topic: &Topic, retention: Duration) -> Result<()> {
        let mut table = self.table.lock();
        let wanted = Some(retention_ms(retention));
        // A topic deleted meanwhile has nothing left to change.
        let Some(meta) = table.get(topic.id) else {
            return Ok(());
        };
        if meta.retention_ms == wanted {
            return Ok(());
        }
        table.commit(Change::Retention {
            id: topic.id,
            retention_ms: wanted,
        })?;
        topic.set_retention_ms(wanted);
        Ok(())
    }
}
