//! [`RedisDriver`]: the `Driver` implementation.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mq_core::driver::{
    AdminSupport, BrowseSpec, BrowsedMessage, Capabilities, Driver, DriverSubscription,
    DriverTransaction, NameRules, PartitionLag, ResetTo, StartFrom, SubscribeSpec, Support,
    TopicInfo, TopicSpec,
};
use mq_core::{Config, Message, Receipt, Result};
use redis::Value;

use crate::codec::{array_of, bytes_of, fields, int_of, text_of, EntryId};
use crate::connection::Inner;
use crate::error::{map, unexpected};
use crate::subscription::RedisSubscription;
use crate::transaction::RedisTransaction;

/// The Redis Streams driver. See the [crate docs](crate) for the topology.
///
/// ```no_run
/// # async fn demo() -> mq_core::Result<()> {
/// let config = mq_core::Config::from_url("redis://127.0.0.1:6379/0?partitions=8")?;
/// let client = mq_core::Client::new(mq_redis::RedisDriver::connect(&config).await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisDriver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDriver")
            .field("prefix", &self.inner.options.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisDriver {
    /// Connects to the server of a `redis://[user:password@]host:port/db?options`
    /// URL, checks it (version, commands, size limit) and returns the driver.
    ///
    /// Errors: [`Error::Config`](mq_core::Error::Config) for a bad URL or option, [`Error::Connection`](mq_core::Error::Connection)
    /// when the server cannot be reached, [`Error::Rejected`](mq_core::Error::Rejected) for a wrong
    /// user or password, [`Error::Unsupported`](mq_core::Error::Unsupported) for a server without the
    /// stream commands the driver needs (before Redis 6.2). No error shows
    /// the password.
    pub async fn connect(config: &Config) -> Result<RedisDriver> {
        Ok(RedisDriver {
            inner: Inner::connect(config).await?,
        })
    }
}

#[async_trait]
impl Driver for RedisDriver {
    fn backend(&self) -> &'static str {
        crate::error::BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        let o = &self.inner.options;
        let mut caps = Capabilities::minimal();
        caps.delay = Support::Native;
        // Retry-after goes through the core's retry topic, whose delay is
        // this driver's native schedule.
        caps.redelivery_delay = Support::Unsupported;
        caps.transactions = Support::Native;
        caps.idempotent_publish = Support::Native;
        caps.topic_retention = Support::Native;
        // A stream keeps its entries whatever groups exist; a group created
        // later at `0` reads them all.
        caps.retains_before_group = true;
        // Keys take any name, but a brace would break the `{topic}` hash
        // tag: the rules of user names keep internal names plain.
        caps.names = NameRules::default();
        // Every admin operation maps to Redis commands; browsing from an
        // offset other than 0 is the exception (see `admin`): Redis has none.
        caps.admin = AdminSupport::ALL;
        caps.max_message_bytes = self.inner.max_message_bytes;
        caps.delay_precision = o.delay_poll + Duration::from_millis(50);
        caps.max_delay = Duration::from_secs(365 * 24 * 3600);
        caps
    }

    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        self.inner.check_open()?;
        self.inner.publish(batch).await
    }

    async fn begin(&self) -> Result<Box<dyn DriverTransaction>> {
        self.inner.check_open()?;
        Ok(Box::new(RedisTransaction::new(self.inner.clone())))
    }

    async fn subscribe(&self, spec: SubscribeSpec) -> Result<Box<dyn DriverSubscription>> {
        self.inner.check_open()?;
        Ok(Box::new(
            RedisSubscription::join(self.inner.clone(), spec).await?,
        ))
    }

    async fn ensure_group(&self, topic: &str, group: &str, start: StartFrom) -> Result<()> {
        self.inner.check_open()?;
        let topic = self.inner.topic(topic, None).await?;
        self.inner.ensure_group(&topic, group, start).await
    }

    async fn ensure_topic(&self, topic: &str, spec: &TopicSpec) -> Result<()> {
        self.inner.check_open()?;
        self.inner.topic(topic, Some(spec)).await.map(|_| ())
    }

    async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.inner.check_open()?;
        let inner = &self.inner;
        let pattern = inner.keys.topic_pattern(topic);
        let mut conn = inner.conn();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| map(e, "delete topic"))?;
            if !keys.is_empty() {
                redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| map(e, "delete topic"))?;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        redis::cmd("ZREM")
            .arg(inner.keys.delay_index())
            .arg(topic)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| map(e, "delete topic"))?;
        inner.topics.forget(topic);
        Ok(())
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<Vec<PartitionLag>> {
        self.inner.check_open()?;
        let inner = &self.inner;
        let Some(partitions) = inner.partitions_of(topic, "lag").await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let stream = inner.keys.stream(topic, p);
            out.push(PartitionLag::new(
                p,
                partition_lag(inner, &stream, group).await?,
            ));
        }
        Ok(out)
    }

    async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        self.inner.check_open()?;
        self.inner.list_topics().await
    }

    async fn topic_exists(&self, topic: &str) -> Result<Option<bool>> {
        self.inner.check_open()?;
        let partitions = self.inner.partitions_of(topic, "topic exists").await?;
        Ok(Some(partitions.is_some()))
    }

    async fn list_groups(&self, topic: &str) -> Result<Vec<String>> {
        self.inner.check_open()?;
        self.inner.list_groups(topic).await
    }

    async fn browse(&self, topic: &str, spec: &BrowseSpec) -> Result<Vec<BrowsedMessage>> {
        self.inner.check_open()?;
        self.inner.browse(topic, spec).await
    }

    async fn reset_group(&self, topic: &str, group: &str, to: ResetTo) -> Result<()> {
        self.inner.check_open()?;
        self.inner.reset_group(topic, group, to).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        if let Some(p) = self.inner.promoter.lock().take() {
            p.abort();
        }
        Ok(())
    }
}

/// Messages of one stream the group has not acked: `lag` (never
/// delivered) plus `pending` (delivered, unacked) from `XINFO GROUPS`.
async fn partition_lag(inner: &Inner, stream: &str, group: &str) -> Result<u64> {
    let mut conn = inner.conn();
    let groups = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async::<Value>(&mut conn)
        .await
    {
        Ok(v) => v,
        // No stream: nothing was ever published there.
        Err(e) if e.detail().is_some_and(|d| d.contains("no such key")) => return Ok(0),
        Err(e) => return Err(map(e, "lag")),
    };
    let info = array_of(&groups)
        .unwrap_or_default()
        .iter()
        .map(fields)
        .find(|g| {
            g.iter()
                .any(|(k, v)| *k == b"name" && bytes_of(v) == Some(group.as_bytes()))
        });
    let Some(info) = info else {
        // The group never joined this topic: everything is unconsumed.
        let len: u64 = redis::cmd("XLEN")
            .arg(stream)
            .query_async(&mut conn)
            .await
            .map_err(|e| map(e, "lag"))?;
        return Ok(len);
    };
    let get = |name: &[u8]| info.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let pending = get(b"pending").and_then(int_of).unwrap_or(0).max(0) as u64;
    if let Some(lag) = get(b"lag").and_then(int_of) {
        return Ok(lag.max(0) as u64 + pending);
    }
    // Redis cannot tell the lag (entries were deleted mid-stream, or a
    // server before 7.0): count the entries after the last delivered one.
    let last = get(b"last-delivered-id")
        .and_then(text_of)
        .and_then(|t| EntryId::parse(t.as_bytes()))
        .ok_or_else(|| unexpected("XINFO GROUPS"))?;
    let mut unread = 0u64;
    let mut from = format!("({last}");
    loop {
        let batch: Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .map_err(|e| map(e, "lag"))?;
        let entries = array_of(&batch).unwrap_or_default();
        unread += entries.len() as u64;
        let Some(id) = entries
            .last()
            .and_then(array_of)
            .and_then(|e| e.first())
            .and_then(text_of)
        else {
            break;
        };
        if entries.len() < 10_000 {
            break;
        }
        from = format!("({id}");
    }
    Ok(unread + pending)
}
