//! Retention. The log is shared by every topic, so space comes back by
//! deleting whole segments, by the engine-wide age (`retention`) and size
//! (`retention_bytes`). A topic may also have its own, shorter, retention
//! by age (`TopicSpec::with_retention`): its records past that age are
//! expired by moving the partitions' start offsets past them (as Kafka's
//! log start offset moves), so no group is served them and lag stops
//! counting them; their bytes go with their segment. This is RocketMQ's
//! split between a shared commit log and per-topic consume queues.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use mq_core::driver::clock::epoch_micros;
use mq_core::{Error, Result};

use std::sync::Arc;

use super::topics::{Partition, Topic};
use super::Engine;
use crate::error::{corrupt, io_error};
use crate::log::batch;
use crate::log::index::{find_shared, get_shared};
use crate::log::LogReader;
use crate::options::{MAX_PARTITIONS, PARTITIONS_RANGE};
use mq_core::driver::options::PARTITIONS;

impl Engine {
    /// Creates `name` with `partitions` if it does not exist; with a
    /// `retention`, gives the topic that retention (an existing topic keeps
    /// its own otherwise) and expires what is already past it. A retention
    /// the engine cannot honour is refused before anything is created.
    pub fn ensure_topic(
        &self,
        name: &str,
        partitions: u32,
        retention: Option<Duration>,
    ) -> Result<Arc<Topic>> {
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(Error::invalid(
                PARTITIONS,
                partitions.to_string(),
                PARTITIONS_RANGE,
            ));
        }
        if let Some(retention) = retention {
            self.check_topic_retention(retention)?;
        }
        let topic = self.topic_or_create(name, Some(partitions))?;
        if let Some(retention) = retention {
            self.set_topic_retention(&topic, retention)?;
            let _one_at_a_time = self.retaining.lock();
            self.expire_topic(&topic, &mut LogReader::default())?;
        }
        Ok(topic)
    }

    /// Checks a topic's own retention against the engine's: a topic cannot
    /// keep records longer than the segments holding them live.
    fn check_topic_retention(&self, wanted: Duration) -> Result<()> {
        if wanted.is_zero() {
            return Err(Error::invalid(
                "retention",
                "0s",
                "a topic's retention must be positive",
            ));
        }
        match self.options.retention {
            Some(engine) if wanted > engine => Err(Error::invalid(
                "retention",
                format!("{wanted:?}"),
                format!(
                    "longer than the engine's retention ({engine:?}), which deletes the shared \
                     log's segments; raise `retention` in the native:// URL (0 keeps forever)"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Applies retention: expires records past their topic's own
    /// retention, then deletes whole segments past the engine-wide age or
    /// size.
    pub fn enforce_retention(&self) -> Result<()> {
        let _one_at_a_time = self.retaining.lock();
        self.expire_topics()?;
        self.delete_segments()
    }

    /// Deletes whole segments past the retention age or size. Never the
    /// active segment, nor one the last checkpoint does not cover, nor one
    /// holding a pending delay or an unresolved half message.
    fn delete_segments(&self) -> Result<()> {
        if self.options.retention.is_none() && self.options.retention_bytes.is_none() {
            return Ok(());
        }
        let segments = self.log.all();
        if segments.len() < 2 {
            return Ok(());
        }
        let covered = self.checkpoint_position.load(Ordering::Acquire);
        let pinned = {
            let delay = self.delay.lock();
            let committed = delay.done.committed();
            delay
                .index
                .get(committed)
                .ok()
                .flatten()
                .map_or(u64::MAX, |e| e.position)
        };
        let pinned = pinned.min(self.half.lock().pinned().unwrap_or(u64::MAX));
        let mut total: u64 = segments.iter().map(|s| s.len().unwrap_or(0)).sum();
        let now = SystemTime::now();
        let mut removed = false;
        for pair in segments.windows(2) {
            let (seg, next) = (&pair[0], &pair[1]);
            if next.base > covered || next.base > pinned {
                break;
            }
            let too_old = self.options.retention.is_some_and(|age| {
                seg.modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|a| a > age)
            });
            let too_big = self.options.retention_bytes.is_some_and(|max| total > max);
            if !too_old && !too_big {
                break;
            }
            let len = seg.len().unwrap_or(0);
            self.log
                .remove(seg.base)
                .map_err(|e| io_error(format!("deleting {}", seg.path.display()), e))?;
            total = total.saturating_sub(len);
            removed = true;
        }
        if removed {
            let log_start = self.log.first().map_or(0, |s| s.base);
            // Listed first: a `for` over the guard would hold the topics
            // lock across the index reads.
            let topics = self.topics.read().all();
            for t in topics {
                for part in &t.partitions {
                    let first = super::open::first_offset_at(&part.index, log_start)
                        .map_err(|e| io_error("reading an index", e))?;
                    advance_start(
                        part,
                        first.unwrap_or_else(|| part.next.load(Ordering::Acquire)),
                    );
                }
            }
        }
        Ok(())
    }

    /// Moves every partition of topics with their own retention past the
    /// records older than it.
    fn expire_topics(&self) -> Result<()> {
        let mut reader = LogReader::default();
        // Listed first: the topics lock is not held across log reads.
        let topics = self.topics.read().all();
        for topic in topics {
            self.expire_topic(&topic, &mut reader)?;
        }
        Ok(())
    }

    fn expire_topic(&self, topic: &Topic, reader: &mut LogReader) -> Result<()> {
        let Some(retention) = topic.retention() else {
            return Ok(());
        };
        let cutoff_us = epoch_micros(SystemTime::now())
            .saturating_sub(u64::try_from(retention.as_micros()).unwrap_or(u64::MAX));
        let mut moved = false;
        for part in &topic.partitions {
            let start = self.first_kept(topic, part, cutoff_us, reader)?;
            moved |= advance_start(part, start);
        }
        if moved {
            self.offsets_dirty.store(true, Ordering::Release);
            topic.changed.notify_waiters();
        }
        Ok(())
    }

    /// The first offset of `part` in a batch written at or after
    /// `cutoff_us`: a binary search over the index, reading each probed
    /// batch's timestamp (batches are appended in time order).
    fn first_kept(
        &self,
        topic: &Topic,
        part: &Partition,
        cutoff_us: u64,
        reader: &mut LogReader,
    ) -> Result<u64> {
        let index_error = |e| io_error(format!("reading the index of {}", topic.name), e);
        let start = part.start.load(Ordering::Acquire);
        let mut lo = find_shared(&part.index, start, 0).map_err(index_error)?;
        let mut hi = part.index.lock().len();
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(entry) = get_shared(&part.index, mid).map_err(index_error)? else {
                break;
            };
            let bytes = reader.batch_at(&self.log, entry.position)?;
            let written_us = batch::parse_checked(&bytes)
                .map_err(|e| corrupt(Path::new("log"), entry.position, e))?
                .timestamp_us;
            if written_us < cutoff_us {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let first = get_shared(&part.index, lo).map_err(index_error)?;
        Ok(first.map_or_else(|| part.visible.load(Ordering::Acquire), |e| e.key))
    }
}

/// Moves `part`'s start offset forward to `start`, and every group's
/// cursor past what is now gone (so lag stops counting it at once); true
/// when it moved.
fn advance_start(part: &Partition, start: u64) -> bool {
    if part.start.fetch_max(start, Ordering::AcqRel) >= start {
        return false;
    }
    for cursor in part.cursors.lock().values_mut() {
        cursor.skip_to(start);
    }
    true
}
