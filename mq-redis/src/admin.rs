//! The admin operations tools are built on: list topics and groups, browse
//! a partition without consuming it, move a group.
//!
//! - **Topics** are the settings hashes (`mq:{T}:meta`) every client
//!   writes before it uses a topic, found with `SCAN ... TYPE hash`: what
//!   every client agrees on, not what this one has seen.
//! - **Groups** are the consumer groups on the topic's streams (`XINFO GROUPS`).
//! - **Browsing** is `XRANGE` / `XREVRANGE`, which move no group. Redis
//!   has no offsets: entry ids are `<ms>-<seq>`, neither dense nor counted
//!   from the start, and receipts and deliveries of this driver carry no
//!   offset either. So a browsed message has none
//!   ([`BrowsedMessage::offset`] is `None`), and of
//!   [`BrowseFrom::Offset`] only `Offset(0)`, clamped as on every backend
//!   to the oldest entry retained, is meaningful; another offset is
//!   [`Error::Unsupported`]. [`BrowseFrom::Time`] reads from the entry id
//!   of that millisecond on, as an entry id is its publish time.
//! - **Resetting** acks what the group has pending (those records count as
//!   done, as the contract says; records at or after the new position are
//!   delivered again as new), then `XGROUP SETID` to the position: `0`,
//!   `$`, or the last possible id of the millisecond before the time. A
//!   group that does not exist on a stream is created there at the
//!   position, as Kafka creates the offsets of a group it resets
//!   (`XGROUP CREATE` first, `SETID` when it exists). It is
//!   refused while the group has a member with a live
//!   lease; a member joining during the reset is not stopped (nor is one on
//!   Kafka joining right after its check).

use std::time::SystemTime;

use mq_core::driver::clock::epoch_millis;
use mq_core::driver::{BrowseFrom, BrowseSpec, BrowsedMessage, ResetTo, TopicInfo};
use mq_core::{Error, Result};
use redis::Value;

use crate::codec::{array_of, bytes_of, delivery, fields, into_array, text_of, Origin};
use crate::connection::Inner;
use crate::error::{map, BACKEND};

/// Keys asked for per `SCAN` step, and entries per page when walking a
/// stream backwards: large enough for few round trips, small enough not to
/// stall the server.
const PAGE: usize = 1000;

impl Inner {
    /// The partition count of `topic` from its settings hash; `None` when
    /// the topic does not exist.
    pub(crate) async fn partitions_of(&self, topic: &str, what: &str) -> Result<Option<u32>> {
        let key = self.keys.meta(topic);
        let partitions: Option<String> = self
            .retrying(what, |mut c| {
                let key = key.clone();
                async move {
                    redis::cmd("HGET")
                        .arg(key)
                        .arg("partitions")
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(partitions.and_then(|p| p.parse().ok()))
    }

    /// Every topic with a settings hash under this driver's prefix.
    pub(crate) async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let pattern = self.keys.meta_pattern();
        let mut conn = self.conn();
        let mut names: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(PAGE)
                .arg("TYPE")
                .arg("hash")
                .query_async(&mut conn)
                .await
                .map_err(|e| map(e, "list topics"))?;
            names.extend(
                keys.iter()
                    .filter_map(|k| self.keys.topic_of_meta(std::str::from_utf8(k).ok()?))
                    .map(str::to_owned),
            );
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        // SCAN may return a key twice.
        names.sort();
        names.dedup();
        let mut topics = Vec::with_capacity(names.len());
        for name in names {
            // Deleted since the scan: not a topic any more.
            if let Some(partitions) = self.partitions_of(&name, "list topics").await? {
                topics.push(TopicInfo::new(name, partitions));
            }
        }
        Ok(topics)
    }

    /// The consumer groups on any stream of `topic`; none for a missing topic.
    pub(crate) async fn list_groups(&self, topic: &str) -> Result<Vec<String>> {
        let Some(partitions) = self.partitions_of(topic, "list groups").await? else {
            return Ok(Vec::new());
        };
        let mut groups = Vec::new();
        for p in 0..partitions {
            let reply = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(self.keys.stream(topic, p))
                .query_async::<Value>(&mut self.conn())
                .await;
            let reply = match reply {
                Ok(reply) => reply,
                // No stream: nothing was published there and no group made.
                Err(e) if e.detail().is_some_and(|d| d.contains("no such key")) => continue,
                Err(e) => return Err(map(e, "list groups")),
            };
            for info in array_of(&reply).unwrap_or_default() {
                let name = fields(info)
                    .into_iter()
                    .find(|(k, _)| *k == b"name")
                    .and_then(|(_, v)| text_of(v));
                groups.extend(name);
            }
        }
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    /// Up to `spec.max` entries of one partition, oldest first, read
    /// without any group.
    pub(crate) async fn browse(
        &self,
        topic: &str,
        spec: &BrowseSpec,
    ) -> Result<Vec<BrowsedMessage>> {
        let Some(partitions) = self.partitions_of(topic, "browse").await? else {
            return Ok(Vec::new());
        };
        if spec.partition >= partitions {
            return Err(Error::invalid(
                "partition",
                spec.partition.to_string(),
                format!("{topic} has {partitions} partitions"),
            ));
        }
        let stream = self.keys.stream(topic, spec.partition);
        let start = match spec.from {
            BrowseFrom::Offset(0) => "-".to_owned(),
            // Entries have ids, not offsets.
            BrowseFrom::Offset(_) => {
                return Err(Error::unsupported(
                    "browsing from an offset other than 0",
                    BACKEND,
                ))
            }
            BrowseFrom::Time(at) => format!("{}-0", epoch_millis(at)),
            BrowseFrom::Last(0) => return Ok(Vec::new()),
            BrowseFrom::Last(n) => match self.nth_from_end(&stream, n).await? {
                Some(id) => id,
                None => "-".to_owned(),
            },
            // `BrowseFrom` may grow; a position this driver does not know is
            // refused rather than guessed.
            _ => return Err(Error::unsupported("this browse position", BACKEND)),
        };
        let reply: Value = redis::cmd("XRANGE")
            .arg(&stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(spec.max)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| map(e, "browse"))?;
        let topic: std::sync::Arc<str> = std::sync::Arc::from(topic);
        let origin = Origin {
            topic: &topic,
            partition: spec.partition,
        };
        let mut out = Vec::new();
        for entry in into_array(reply).unwrap_or_default() {
            if let Some(d) = delivery(&origin, entry, 1, SystemTime::now())? {
                out.push(BrowsedMessage::new(spec.partition, None, d.message));
            }
        }
        Ok(out)
    }

    /// The id of the `n`-th entry from the end of `stream` (`n` ≥ 1), or
    /// `None` when it holds fewer: walked backwards a page at a time, so a
    /// large `n` costs round trips, not memory.
    async fn nth_from_end(&self, stream: &str, n: u64) -> Result<Option<String>> {
        let mut end = "+".to_owned();
        let mut left = n;
        loop {
            let count = left.min(PAGE as u64);
            let reply: Value = redis::cmd("XREVRANGE")
                .arg(stream)
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(count)
                .query_async(&mut self.conn())
                .await
                .map_err(|e| map(e, "browse"))?;
            let page = array_of(&reply).unwrap_or_default();
            let Some(last) = page.last().and_then(entry_id) else {
                return Ok(None);
            };
            left -= page.len() as u64;
            if left == 0 {
                return Ok(Some(last));
            }
            if (page.len() as u64) < count {
                return Ok(None);
            }
            end = format!("({last}");
        }
    }

    /// Moves `group` on every stream of `topic` to `to`; see the module docs.
    pub(crate) async fn reset_group(&self, topic: &str, group: &str, to: ResetTo) -> Result<()> {
        let Some(partitions) = self.partitions_of(topic, "reset a group").await? else {
            return Err(Error::invalid("topic", topic, "no such topic"));
        };
        if self.live_members(topic, group).await? > 0 {
            return Err(Error::invalid(
                "group",
                group,
                "the group has active members; stop its consumers first",
            ));
        }
        let position = match to {
            ResetTo::Earliest => "0".to_owned(),
            ResetTo::Latest => "$".to_owned(),
            ResetTo::Time(at) => match epoch_millis(at) {
                0 => "0".to_owned(),
                ms => format!("{}-{}", ms - 1, u64::MAX),
            },
            _ => return Err(Error::unsupported("this reset position", BACKEND)),
        };
        for p in 0..partitions {
            let stream = self.keys.stream(topic, p);
            let created = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(group)
                .arg(&position)
                .arg("MKSTREAM")
                .query_async::<()>(&mut self.conn())
                .await;
            match created {
                Ok(()) => continue,
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(map(e, "reset a group")),
            }
            self.ack_pending(&stream, group).await?;
            redis::cmd("XGROUP")
                .arg("SETID")
                .arg(&stream)
                .arg(group)
                .arg(&position)
                .query_async::<()>(&mut self.conn())
                .await
                .map_err(|e| map(e, "reset a group"))?;
        }
        Ok(())
    }

    /// Members of `group` whose lease has not expired.
    async fn live_members(&self, topic: &str, group: &str) -> Result<u64> {
        redis::cmd("ZCOUNT")
            .arg(self.keys.members(topic, group))
            .arg(format!("({}", epoch_millis(SystemTime::now())))
            .arg("+inf")
            .query_async(&mut self.conn())
            .await
            .map_err(|e| map(e, "reset a group"))
    }

    /// Acks every record `group` has pending on `stream`.
    async fn ack_pending(&self, stream: &str, group: &str) -> Result<()> {
        loop {
            let reply: Value = redis::cmd("XPENDING")
                .arg(stream)
                .arg(group)
                .arg("-")
                .arg("+")
                .arg(PAGE)
                .query_async(&mut self.conn())
                .await
                .map_err(|e| map(e, "reset a group"))?;
            let ids: Vec<String> = array_of(&reply)
                .unwrap_or_default()
                .iter()
                .filter_map(entry_id)
                .collect();
            if ids.is_empty() {
                return Ok(());
            }
            redis::cmd("XACK")
                .arg(stream)
                .arg(group)
                .arg(&ids)
                .query_async::<()>(&mut self.conn())
                .await
                .map_err(|e| map(e, "reset a group"))?;
        }
    }
}

/// The id of an entry (`XRANGE`) or pending record (`XPENDING`): the first item.
fn entry_id(item: &Value) -> Option<String> {
    array_of(item)?
        .first()
        .and_then(bytes_of)
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
}
