//! Dead-letter operations: inspect, redrive, purge. A dead-letter topic's
//! letters are the ones its retaining group (`__mq.dlq`, see
//! [`dead_letter_group`](crate::client::dead_letter_group)) has not acked:
//! redriving or purging a letter acks it there. The same on every backend,
//! queue brokers included, because it goes through the consumer API.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;

use crate::client::publish::{republishable, Origin};
use crate::client::{dead_letter_group, Admin, Subscription};
use crate::error::Result;
use crate::message::{reserved, DeadLetterInfo, Delivery, Message, MessageId};
use crate::StartFrom;

/// Letters held at once while inspecting or skipping during a redrive.
const MAX_HELD: usize = 10_000;

/// Which dead letters a redrive takes, and how.
///
/// ```
/// use mq_core::RedriveOptions;
/// let careful = RedriveOptions::default().with_dry_run(true).with_error_containing("timeout");
/// # let _ = careful;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedriveOptions {
    max: usize,
    max_replays: u32,
    dry_run: bool,
    key: Option<String>,
    error_containing: Option<String>,
    header: Option<(String, String)>,
    ids: Option<HashSet<MessageId>>,
    idle: Duration,
}

impl Default for RedriveOptions {
    /// Every letter, each redriven at most 3 times in its life, waiting up
    /// to 1 s for more.
    fn default() -> Self {
        RedriveOptions {
            max: MAX_HELD,
            max_replays: 3,
            dry_run: false,
            key: None,
            error_containing: None,
            header: None,
            ids: None,
            idle: Duration::from_secs(1),
        }
    }
}

impl RedriveOptions {
    /// Looks at most `max` letters (at most 10,000).
    pub fn with_max(mut self, max: usize) -> Self {
        self.max = max.clamp(1, MAX_HELD);
        self
    }

    /// Refuses letters already redriven `max_replays` times.
    pub fn with_max_replays(mut self, max_replays: u32) -> Self {
        self.max_replays = max_replays;
        self
    }

    /// Reports what would be redriven without changing anything.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Only letters with this key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Only letters whose error contains `text`.
    pub fn with_error_containing(mut self, text: impl Into<String>) -> Self {
        self.error_containing = Some(text.into());
        self
    }

    /// Only letters with header `name` set to `value`.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.header = Some((name.into(), value.into()));
        self
    }

    /// How long to wait for another letter before the run ends.
    pub fn with_idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Only the letters with these ids (a console's "redrive these").
    pub fn with_ids(mut self, ids: impl IntoIterator<Item = MessageId>) -> Self {
        self.ids = Some(ids.into_iter().collect());
        self
    }

    fn matches(&self, message: &Message, info: &DeadLetterInfo) -> bool {
        self.ids
            .as_ref()
            .is_none_or(|ids| message.id().is_some_and(|id| ids.contains(&id)))
            && self.key.as_deref().is_none_or(|k| message.key() == Some(k))
            && self
                .error_containing
                .as_deref()
                .is_none_or(|t| info.error.contains(t))
            && self
                .header
                .as_ref()
                .is_none_or(|(n, v)| message.headers().get(n) == Some(v.as_str()))
    }
}

/// What a redrive did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RedriveReport {
    /// Republished to their topics and removed from the dead letters (or,
    /// in a dry run, that would have been).
    pub redriven: u64,
    /// Left where they are: redriven `max_replays` times already.
    pub refused: u64,
    /// Left where they are: not matching the filters, or back again after
    /// being redriven in this run.
    pub skipped: u64,
}

/// A dead letter as [`Admin::dead_letters`] shows it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeadLetterView {
    /// The letter, headers included.
    pub message: Message,
    /// Why it is there, when its headers say.
    pub info: Option<DeadLetterInfo>,
    /// Times it was redriven before.
    pub replays: u32,
}

fn replays(message: &Message) -> u32 {
    message
        .headers()
        .get(reserved::REPLAYS)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The dead letters being read, and how many the broker said were pending
/// when reading began.
struct Letters {
    stream: Subscription,
    pending: u64,
    seen: u64,
}

/// Longest wait for a letter the broker reported pending: a group just
/// left by another reader (an earlier `mq dlq` run) can take seconds to
/// deliver again, which the short idle wait would take for "no letters".
const PENDING_WAIT: Duration = Duration::from_secs(10);

impl Letters {
    /// The next letter, or `None` when none came in time: up to
    /// [`PENDING_WAIT`] for the first when some were pending, `idle` for
    /// the others (offset-based lag can count more than will come:
    /// transaction markers, records acked above the committed offset).
    async fn next(&mut self, idle: Duration) -> Result<Option<Delivery>> {
        let wait = if self.seen == 0 && self.pending > 0 {
            idle.max(PENDING_WAIT)
        } else {
            idle
        };
        let next = next_within(&mut self.stream, wait).await?;
        self.seen += u64::from(next.is_some());
        Ok(next)
    }
}

impl Admin {
    async fn open_dead_letters(&self, dlq_topic: &str) -> Result<Letters> {
        let group = dead_letter_group(&self.client.inner.capabilities.names);
        let stream = self
            .client
            .consumer(dlq_topic, group.clone())
            .internal()
            .start_from(StartFrom::Earliest)
            .prefetch(MAX_HELD)
            .subscribe()
            .await?;
        // Without a lag answer (a group not there yet) only `idle` is waited.
        let pending = self.total_lag(dlq_topic, &group).await.unwrap_or(0);
        Ok(Letters {
            stream,
            pending,
            seen: 0,
        })
    }

    /// Up to `max` pending letters of `dlq_topic`, oldest first per
    /// partition, left where they are.
    pub async fn dead_letters(&self, dlq_topic: &str, max: usize) -> Result<Vec<DeadLetterView>> {
        let mut letters = self.open_dead_letters(dlq_topic).await?;
        let mut held = Vec::new();
        while held.len() < max.min(MAX_HELD) {
            match letters.next(Duration::from_secs(1)).await? {
                Some(delivery) => held.push(delivery),
                None => break,
            }
        }
        let views = held
            .iter()
            .map(|d| DeadLetterView {
                message: d.message().clone(),
                info: d.message().dead_letter_info(),
                replays: replays(d.message()),
            })
            .collect();
        // Closing first returns them to the group as they were.
        letters.stream.close().await?;
        drop(held);
        Ok(views)
    }

    /// Republishes the letters of `dlq_topic` that `options` select to the
    /// topics named in their headers, each before it is removed from the
    /// dead letters, so an interrupted run resumes without losing one.
    /// A letter gets an `mq-replays` count; one already redriven
    /// `max_replays` times stays.
    pub async fn redrive(&self, dlq_topic: &str, options: RedriveOptions) -> Result<RedriveReport> {
        let mut letters = self.open_dead_letters(dlq_topic).await?;
        let mut report = RedriveReport::default();
        let mut left = Vec::new();
        // A letter redriven now that fails again comes back while the run
        // goes on: it is left for a later run, not chased.
        let mut redriven_ids = std::collections::HashSet::new();
        let mut seen = 0;
        while seen < options.max {
            let Some(delivery) = letters.next(options.idle).await? else {
                break;
            };
            seen += 1;
            if delivery
                .message()
                .id()
                .is_some_and(|id| redriven_ids.contains(&id))
            {
                report.skipped += 1;
                left.push(delivery);
                continue;
            }
            let Some(info) = delivery.message().dead_letter_info() else {
                report.skipped += 1;
                left.push(delivery);
                continue;
            };
            if !options.matches(delivery.message(), &info) {
                report.skipped += 1;
                left.push(delivery);
                continue;
            }
            let replayed = replays(delivery.message());
            if replayed >= options.max_replays {
                report.refused += 1;
                left.push(delivery);
                continue;
            }
            report.redriven += 1;
            if options.dry_run {
                left.push(delivery);
                continue;
            }
            redriven_ids.extend(delivery.message().id());
            let copy = back_to(delivery.message(), &info, replayed + 1);
            self.client
                .publisher()
                .publish(vec![copy], Origin::Internal)
                .await?;
            delivery.ack().await?;
        }
        letters.stream.close().await?;
        drop(left);
        Ok(report)
    }

    /// Removes every pending letter of `dlq_topic`; returns how many.
    pub async fn purge_dead_letters(&self, dlq_topic: &str) -> Result<u64> {
        let mut letters = self.open_dead_letters(dlq_topic).await?;
        let mut purged = 0;
        while let Some(delivery) = letters.next(Duration::from_secs(1)).await? {
            delivery.ack().await?;
            purged += 1;
        }
        letters.stream.close().await?;
        Ok(purged)
    }
}

/// The letter as its topic gets it again: the dead-letter headers gone,
/// the replay count set, id and key kept.
fn back_to(letter: &Message, info: &DeadLetterInfo, replays: u32) -> Message {
    let mut copy = republishable(letter.clone());
    let headers = copy.headers_mut();
    for name in [
        reserved::DLQ_TOPIC,
        reserved::DLQ_GROUP,
        reserved::DLQ_ATTEMPTS,
        reserved::DLQ_ERROR,
        reserved::DLQ_TIME,
        reserved::DLQ_PARTITION,
        reserved::DLQ_OFFSET,
    ] {
        headers.remove(name);
    }
    headers.insert(reserved::REPLAYS, replays.to_string());
    copy.with_topic(info.topic.as_str())
}

/// The next delivery, or `None` when none came within `idle` or the
/// stream ended.
async fn next_within(stream: &mut Subscription, idle: Duration) -> Result<Option<Delivery>> {
    match tokio::time::timeout(idle, stream.next()).await {
        Err(_) | Ok(None) => Ok(None),
        Ok(Some(delivery)) => delivery.map(Some),
    }
}
