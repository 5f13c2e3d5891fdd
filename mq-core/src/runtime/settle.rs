//! Settling deliveries: ack, retry later, dead-letter. One implementation for
//! the handler runtime and for stream consumers.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::client::publish::{republishable, Origin};
use crate::client::Client;
use crate::driver::TopicPartition;
use crate::driver::{AckToken, DriverSubscription, Support};
use crate::error::Result;
use crate::message::{reserved, Delivery, Message};
use crate::runtime::rebalance::{Held, Revoked};
use crate::runtime::retry::retry_topic;
use crate::runtime::RetryPolicy;

/// Where dead letters go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadLetter {
    /// `<topic>.dlq`, the default.
    Suffix,
    /// A topic of your choice.
    Topic(String),
    /// No dead-letter topic: give up by logging an error and acking.
    Disabled,
    /// Keep the message where it is: after its last attempt (or a reject)
    /// it is tried again after the policy's longest backoff, for as long
    /// as it fails; never dropped, never moved. The default when consuming
    /// a dead-letter topic, so reading `orders.dlq` creates no
    /// `orders.dlq.dlq`.
    Keep,
}

/// Acks are buffered and sent in batches of up to this many.
const MAX_ACK_BATCH: usize = 256;

/// Acks waiting to be sent, and the settled deliveries whose prefetch
/// slots are still held for them.
#[derive(Default)]
struct AckBuffer {
    tokens: Vec<AckToken>,
    /// Acks taken from `tokens` and not yet answered by the broker.
    sending: usize,
    settled_unreleased: usize,
    /// Deliveries held per partition, for revocations to wait on.
    held: Held,
}

impl AckBuffer {
    fn take_for_sending(&mut self) -> Vec<AckToken> {
        self.sending += self.tokens.len();
        std::mem::take(&mut self.tokens)
    }
}

/// What [`Settler::settle`] did.
pub(crate) struct Settled {
    pub(crate) count: usize,
    pub(crate) free: usize,
    /// A full batch of acks waits: the caller should [`flush`](Settler::flush).
    pub(crate) send: bool,
}

/// Settles deliveries of one subscription.
pub(crate) struct Settler {
    pub(crate) client: Client,
    pub(crate) subscription: Arc<dyn DriverSubscription>,
    pub(crate) group: Arc<str>,
    pub(crate) policy: RetryPolicy,
    pub(crate) dead_letter: DeadLetter,
    /// The partitions revoked and not yet let go of.
    pub(crate) revoked: Revoked,
    pending_acks: Mutex<AckBuffer>,
    /// Held from taking acks out of the buffer until the broker answered,
    /// so they reach it in the order they were settled: a later batch
    /// accepted while an earlier one is refused (its partition being handed
    /// over meanwhile) would redeliver a key's earlier messages after a
    /// later one.
    send_order: tokio::sync::Mutex<()>,
    /// Stream mode: deliveries handed out and not yet settled, bounded by `prefetch`.
    unsettled: AtomicUsize,
    prefetch: usize,
    room: Notify,
    /// Buffered acks are sent once this many wait: a quarter of the
    /// prefetch, so the broker always sees room to deliver more.
    ack_batch: usize,
    /// Stream mode: the subscription was closed, which gave back every
    /// unsettled delivery; one dropped later must not be released again
    /// (its record may already be with another member).
    pub(crate) closed: std::sync::atomic::AtomicBool,
}

impl Settler {
    pub(crate) fn new(
        client: Client,
        subscription: Arc<dyn DriverSubscription>,
        group: Arc<str>,
        policy: RetryPolicy,
        dead_letter: DeadLetter,
        prefetch: usize,
    ) -> Self {
        Settler {
            client,
            subscription,
            group,
            policy,
            dead_letter,
            revoked: Revoked::default(),
            pending_acks: Mutex::new(AckBuffer::default()),
            send_order: tokio::sync::Mutex::new(()),
            unsettled: AtomicUsize::new(0),
            prefetch,
            room: Notify::new(),
            ack_batch: (prefetch / 4).clamp(1, MAX_ACK_BATCH),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Stream mode: how many more deliveries may be fetched, waiting until
    /// at least one may.
    pub(crate) async fn wait_for_room(&self) -> usize {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let unsettled = self.unsettled.load(Ordering::Acquire);
            if unsettled < self.prefetch {
                return self.prefetch - unsettled;
            }
            notified.await;
        }
    }

    /// Takes fetched deliveries into account: drops those of partitions
    /// revoked meanwhile (their next owner gets them) and counts the rest
    /// per partition. Returns how many it dropped.
    pub(crate) fn hand_out<T>(&self, items: &mut Vec<T>, token: impl Fn(&T) -> &AckToken) -> usize {
        let dropped = self.revoked.retain(items, &token);
        self.pending_acks
            .lock()
            .held
            .add_all(items.iter().map(token));
        dropped
    }

    /// Stream mode: `count` deliveries were handed out.
    pub(crate) fn handed_out(&self, count: usize) {
        self.unsettled.fetch_add(count, Ordering::AcqRel);
    }

    /// Stream mode: one delivery was settled (or dropped unsettled).
    pub(crate) fn settled(&self, token: &AckToken) {
        let last = self.pending_acks.lock().held.remove(token);
        self.released_last(last);
        self.unsettled.fetch_sub(1, Ordering::AcqRel);
        self.room.notify_one();
    }

    /// Wakes a revocation waiting for its partitions' last deliveries.
    fn released_last(&self, last: bool) {
        if last && self.revoked.any() {
            self.revoked.released.notify_waiters();
        }
    }

    /// Waits until no delivery of `partitions` is held, at most `deadline`;
    /// false when the deadline passed first.
    pub(crate) async fn drained(&self, partitions: &[TopicPartition], deadline: Duration) -> bool {
        let wait = async {
            loop {
                let released = self.revoked.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                let holds = {
                    let acks = self.pending_acks.lock();
                    partitions.iter().any(|tp| acks.held.holds(tp))
                };
                if !holds {
                    return;
                }
                released.await;
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }

    /// Acks now.
    pub(crate) async fn ack(&self, delivery: &Delivery) -> Result<()> {
        self.subscription.ack(vec![delivery.token.clone()]).await
    }

    /// Settles deliveries under one lock: `acks` (taken) join the buffered
    /// acks, `others` were settled otherwise. Returns how many were
    /// settled, how many prefetch slots may be freed now (as
    /// [`releasable`](Self::releasable)), and whether a full batch of acks
    /// waits to be sent.
    pub(crate) fn settle(&self, acks: &mut Vec<AckToken>, others: &[AckToken]) -> Settled {
        let (settled, last) = {
            let mut buffer = self.pending_acks.lock();
            let mut last = false;
            for token in acks.iter().chain(others) {
                last |= buffer.held.remove(token);
            }
            let count = acks.len() + others.len();
            buffer.tokens.append(acks);
            let send = buffer.tokens.len() >= self.ack_batch;
            buffer.settled_unreleased += count;
            let waiting = buffer.tokens.len() + buffer.sending;
            let free = buffer.settled_unreleased.saturating_sub(waiting);
            buffer.settled_unreleased -= free;
            (Settled { count, free, send }, last)
        };
        self.released_last(last);
        settled
    }

    /// Records that the deliveries of `tokens` were settled (or dropped)
    /// and returns how many prefetch slots may be freed now: settled
    /// deliveries whose acks are no longer waiting in the buffer. So the
    /// slots held always equal the deliveries the broker still sees unacked.
    pub(crate) fn releasable<'a>(
        &self,
        tokens: impl IntoIterator<Item = &'a AckToken>,
    ) -> (usize, usize) {
        let (count, free, last) = {
            let mut acks = self.pending_acks.lock();
            let (mut count, mut last) = (0, false);
            for token in tokens {
                last |= acks.held.remove(token);
                count += 1;
            }
            acks.settled_unreleased += count;
            let waiting = acks.tokens.len() + acks.sending;
            let free = acks.settled_unreleased.saturating_sub(waiting);
            acks.settled_unreleased -= free;
            (count, free, last)
        };
        self.released_last(last);
        (count, free)
    }

    /// Sends queued acks, after those taken earlier were answered; until
    /// the broker answered they still hold their slots.
    pub(crate) async fn flush(&self) -> Result<()> {
        let _turn = self.send_order.lock().await;
        let tokens = self.pending_acks.lock().take_for_sending();
        if tokens.is_empty() {
            return Ok(());
        }
        let count = tokens.len();
        let result = self.subscription.ack(tokens).await;
        self.pending_acks.lock().sending -= count;
        result
    }

    /// The pause before the attempt after failed attempt `attempt`: the
    /// handler's own, or the policy's backoff; never longer than the
    /// backend's longest delay, so a `retry_after(_, Duration::MAX)` waits
    /// that long instead of failing.
    pub(crate) fn pause(&self, asked: Option<Duration>, attempt: u32) -> Duration {
        asked
            .unwrap_or_else(|| self.policy.backoff(attempt))
            .min(self.client.inner.capabilities.max_delay)
    }

    /// Schedules another attempt after `after`, or dead-letters when the
    /// attempts are used up. Does not block other messages.
    pub(crate) async fn retry(
        &self,
        delivery: &Delivery,
        after: Duration,
        error: String,
    ) -> Result<()> {
        if self.policy.exhausted(delivery.attempt) {
            return self.dead_letter(delivery, error).await;
        }
        let after = self.pause(Some(after), delivery.attempt);
        self.redeliver(delivery, after).await
    }

    /// Has the group get `delivery` again after `after`: a nack where the
    /// broker delays redelivery, else a delayed copy in the group's retry
    /// topic and an ack.
    async fn redeliver(&self, delivery: &Delivery, after: Duration) -> Result<()> {
        if self.client.inner.capabilities.redelivery_delay == Support::Native {
            return self.subscription.nack(delivery.token.clone(), after).await;
        }
        let mut copy = republishable(Message::clone(&delivery.message));
        let original_topic = delivery.message.topic().to_owned();
        let headers = copy.headers_mut();
        headers.insert(reserved::PRIOR_ATTEMPTS, delivery.attempt.to_string());
        headers.insert(
            reserved::FIRST_SEEN,
            millis(delivery.first_seen).to_string(),
        );
        headers.insert(reserved::RETRY_TOPIC, original_topic.clone());
        let copy = copy
            .with_topic(retry_topic(
                &self.client.inner.capabilities.names,
                &self.group,
                &original_topic,
            ))
            .with_delay(after);
        self.client
            .publisher()
            .publish(vec![copy], Origin::Internal)
            .await?;
        self.ack(delivery).await
    }

    /// The dead-letter topic for messages of `topic`, if dead-lettering is on.
    pub(crate) fn dead_letter_topic(&self, topic: &str) -> Option<String> {
        match &self.dead_letter {
            DeadLetter::Suffix => Some(
                self.client
                    .inner
                    .capabilities
                    .names
                    .dead_letter_topic(topic),
            ),
            DeadLetter::Topic(t) => Some(t.clone()),
            DeadLetter::Disabled | DeadLetter::Keep => None,
        }
    }

    /// Publishes the message to the dead-letter topic with headers saying why, then acks it.
    pub(crate) async fn dead_letter(&self, delivery: &Delivery, reason: String) -> Result<()> {
        let topic = delivery.message.topic();
        if self.dead_letter == DeadLetter::Keep {
            tracing::warn!(
                topic,
                group = &*self.group,
                attempts = delivery.attempt,
                reason,
                "a message failed its last attempt; keeping it for a later one"
            );
            let pause = self.pause(None, u32::MAX);
            return self.redeliver(delivery, pause).await;
        }
        let target = match self.dead_letter_topic(topic) {
            Some(target) => target,
            None => {
                tracing::error!(
                    topic,
                    group = &*self.group,
                    id = %delivery.message.id().map(|i| i.to_string()).unwrap_or_default(),
                    attempts = delivery.attempt,
                    reason,
                    "giving up on a message; no dead-letter topic is configured"
                );
                return self.ack(delivery).await;
            }
        };
        let mut copy = republishable(Message::clone(&delivery.message));
        let headers = copy.headers_mut();
        headers.insert(reserved::DLQ_TOPIC, topic);
        headers.insert(reserved::DLQ_GROUP, &*self.group);
        headers.insert(reserved::DLQ_ATTEMPTS, delivery.attempt.to_string());
        headers.insert(reserved::DLQ_ERROR, reason);
        headers.insert(reserved::DLQ_TIME, rfc3339(SystemTime::now()));
        headers.insert(reserved::DLQ_PARTITION, delivery.partition.to_string());
        if let Some(offset) = delivery.offset {
            headers.insert(reserved::DLQ_OFFSET, offset.to_string());
        }
        self.client
            .publisher()
            .publish(vec![copy.with_topic(target)], Origin::Internal)
            .await?;
        self.ack(delivery).await
    }

    /// Gives a delivery back for immediate redelivery, used when settling failed.
    pub(crate) async fn release(&self, delivery: &Delivery) -> Result<()> {
        self.subscription
            .nack(delivery.token.clone(), Duration::ZERO)
            .await
    }
}

pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
    }
}
