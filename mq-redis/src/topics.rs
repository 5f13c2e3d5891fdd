//! Topic settings shared through Redis: the partition count (so every
//! client maps keys to the same stream) and the trimming of its streams;
//! and the consumer groups on a topic's streams.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mq_core::driver::clock::epoch_millis;
use mq_core::{Result, StartFrom, TopicSpec};
use parking_lot::RwLock;

use crate::codec::{array_of, text_of};
use crate::connection::Inner;
use crate::error::unexpected;

/// How a topic's streams are trimmed on each write (approximately, `~`,
/// which lets Redis drop whole stream nodes cheaply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trim {
    /// Kept until the topic is deleted.
    None,
    /// At most about this many entries per stream (`MAXLEN ~`).
    MaxLen(u64),
    /// Entries older than this are dropped (`MINID ~`, entry ids are times).
    MaxAge(Duration),
}

impl Trim {
    /// The XADD trimming arguments for a write at `now`: (strategy, threshold).
    pub(crate) fn args(&self, now: SystemTime) -> Option<(&'static str, String)> {
        match self {
            Trim::None => None,
            Trim::MaxLen(n) => Some(("MAXLEN", n.to_string())),
            Trim::MaxAge(age) => {
                let oldest = now.checked_sub(*age).map_or(0, epoch_millis);
                Some(("MINID", oldest.to_string()))
            }
        }
    }
}

/// What every client agrees on about one topic.
#[derive(Debug)]
pub(crate) struct TopicInfo {
    pub(crate) name: Arc<str>,
    pub(crate) partitions: u32,
    pub(crate) trim: Trim,
    /// The stream key of each partition, built once (hot on every send).
    pub(crate) streams: Vec<String>,
}

/// Topic settings read from Redis, cached: they never change while the topic exists.
#[derive(Default)]
pub(crate) struct TopicCache {
    topics: RwLock<HashMap<String, Arc<TopicInfo>>>,
}

impl TopicCache {
    pub(crate) fn forget(&self, topic: &str) {
        self.topics.write().remove(topic);
    }

    fn cached(&self, topic: &str) -> Option<Arc<TopicInfo>> {
        self.topics.read().get(topic).cloned()
    }
}

impl Inner {
    /// The topic's settings, creating it (with `spec`, or the defaults) when missing.
    pub(crate) async fn topic(
        &self,
        topic: &str,
        spec: Option<&TopicSpec>,
    ) -> Result<Arc<TopicInfo>> {
        if spec.is_none() {
            if let Some(info) = self.topics.cached(topic) {
                return Ok(info);
            }
        }
        let o = &self.options;
        let partitions = spec.map_or(o.partitions, |s| s.partitions.max(1));
        let retention = spec.and_then(|s| s.retention).or(o.retention);
        let maxlen = o.maxlen.map(|n| n.to_string()).unwrap_or_default();
        let retention = retention
            .map(|r| r.as_millis().to_string())
            .unwrap_or_default();
        let key = self.keys.meta(topic);
        let reply: redis::Value = self
            .retrying("create topic", |mut c| {
                let mut inv = self.scripts.ensure_topic.script.key(&key);
                inv.arg(partitions).arg(&maxlen).arg(&retention);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        let fields = array_of(&reply).ok_or_else(|| unexpected("topic settings"))?;
        let field = |i: usize| fields.get(i).and_then(text_of).unwrap_or_default();
        let partitions: u32 = field(0)
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| unexpected("topic settings (partitions)"))?;
        let trim = if let Ok(ms) = field(2).parse::<u64>() {
            Trim::MaxAge(Duration::from_millis(ms))
        } else if let Ok(n) = field(1).parse::<u64>() {
            Trim::MaxLen(n)
        } else {
            Trim::None
        };
        let info = Arc::new(TopicInfo {
            name: Arc::from(topic),
            partitions,
            trim,
            streams: (0..partitions)
                .map(|p| self.keys.stream(topic, p))
                .collect(),
        });
        self.topics
            .topics
            .write()
            .insert(topic.to_owned(), info.clone());
        Ok(info)
    }

    /// Creates `group` on every stream of `topic` (`XGROUP CREATE ...
    /// MKSTREAM`, at `0` or `$`); an existing group is left where it is.
    pub(crate) async fn ensure_group(
        &self,
        topic: &TopicInfo,
        group: &str,
        start: StartFrom,
    ) -> Result<()> {
        let start = match start {
            StartFrom::Earliest => "0",
            StartFrom::Latest => "$",
        };
        for stream in &topic.streams {
            self.retrying("create consumer group", |mut c| async move {
                match redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(stream)
                    .arg(group)
                    .arg(start)
                    .arg("MKSTREAM")
                    .query_async::<()>(&mut c)
                    .await
                {
                    Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                    other => other,
                }
            })
            .await?;
        }
        Ok(())
    }
}
