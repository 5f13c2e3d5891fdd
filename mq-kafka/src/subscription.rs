//! A member of a consumer group ([`KafkaSubscription`]): a librdkafka
//! consumer with cooperative-sticky assignment, polled by a thread of its
//! own ([`poller`]), with the member's partitions, buffer and offsets in
//! [`state`].
//!
//! - **Assignment**: librdkafka's assign callback is reported as
//!   `Rebalance::Assigned`. A revoke callback stops handing out the
//!   partitions' records, reports `Rebalance::Revoked`, blocks (the poll
//!   thread only; heartbeats go on in librdkafka's threads) until the
//!   runtime has let go of them or [`REVOKE_LIMIT`](mq_core::driver::REVOKE_LIMIT),
//!   commits their offsets and only then returns, so the next owner starts
//!   after the last ack.
//! - **Offsets**: acks go into the core's per-partition cursor; the poll
//!   thread commits the lowest unacked offset of each partition every
//!   `commit_interval`, on revoke and on close. librdkafka never commits
//!   on its own (`enable.auto.commit=false`).
//! - **Backpressure**: when the buffer holds `buffer_limit` records (twice
//!   the prefetch, at least 1024) the poll thread stops taking records and
//!   waits for the runtime to take some, leaving what librdkafka fetched
//!   ahead in its queue. Only a buffer full for longer than
//!   `poller::PAUSE_AFTER` (the runtime is stalled, not just busy) pauses
//!   the assigned partitions, which drops librdkafka's queue, until half
//!   was taken; polling then goes on, so the member never exceeds
//!   `max.poll.interval.ms` however slow its handlers.
//! - **Give back** (`nack`): Kafka cannot redeliver one record, so the
//!   partition is rewound to its committed offset and every unacked record
//!   there is read again (at-least-once: records in flight may be seen twice).
//! - **Close**: a final commit, then `close_queue` and polls until the
//!   consumer has left the group, bounded in time.

mod leaving;
mod poller;
mod state;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mq_core::driver::{
    AckToken, DriverSubscription, DriverTransaction, RawDelivery, Rebalance, RebalanceQueue,
    StartFrom, SubscribeSpec,
};
use mq_core::{Error, Result};
use parking_lot::{Condvar, Mutex};
use rdkafka::consumer::{Consumer, ConsumerGroupMetadata};
use rdkafka::TopicPartitionList;
use tokio::sync::{oneshot, Notify};

use crate::driver::Inner;
use crate::error::map;
use crate::transaction::KafkaTransaction;
use leaving::Leaving;
use poller::{MemberConsumer, MemberContext};
use state::{Slot, State};

/// What the subscription, its poll thread and its transactions share.
pub(crate) struct Shared {
    /// The subscribed topics; a [`Slot`] indexes them.
    topics: Vec<Arc<str>>,
    state: Mutex<State>,
    /// Wakes a fetch waiting for records.
    ready: Notify,
    /// Wakes the poll thread waiting for room in a full buffer.
    room_freed: Condvar,
    rebalances: RebalanceQueue,
    /// Set on close: the poll thread leaves the group.
    closing: AtomicBool,
    /// Held from the close until the poll thread has left.
    leaving: Mutex<Option<Leaving>>,
    /// Set while a revocation commits its offsets.
    revoking: AtomicBool,
    /// A client of the group that is not a member, for commits the
    /// member's generation no longer allows (see `poller::commit`).
    outsider: Arc<rdkafka::consumer::BaseConsumer>,
    /// Whether the assigned partitions are paused for backpressure.
    paused: AtomicBool,
    /// Set once the member got its first assignment (empty or not).
    joined: AtomicBool,
    /// Wakes a join waiting for the first assignment.
    joined_wake: Notify,
    /// Partitions to rewind to their committed offset (records given back).
    rewinds: Mutex<Vec<Slot>>,
    /// The group generation, for offsets committed in transactions.
    group_metadata: Mutex<Option<Arc<ConsumerGroupMetadata>>>,
    /// Records buffered before the partitions are paused.
    buffer_limit: usize,
    commit_interval: Duration,
    group: String,
}

impl Shared {
    /// The slot of a record's topic and partition, if it is subscribed.
    fn slot(&self, topic: &str, partition: i32) -> Option<Slot> {
        let t = self.topics.iter().position(|name| **name == *topic)?;
        Some((t, partition))
    }

    fn slot_of_token(&self, token: &AckToken) -> Option<Slot> {
        let t = self
            .topics
            .iter()
            .position(|name| Arc::ptr_eq(name, &token.topic) || **name == *token.topic)?;
        Some((t, token.partition as i32))
    }

    fn slots_of(&self, tpl: &TopicPartitionList) -> Vec<Slot> {
        tpl.elements()
            .iter()
            .filter_map(|e| self.slot(e.topic(), e.partition()))
            .collect()
    }

    /// Tells the poll thread to leave the group (once).
    fn start_closing(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            *self.leaving.lock() = Some(Leaving::begin());
        }
    }

    fn take_rewinds(&self) -> Vec<Slot> {
        std::mem::take(&mut *self.rewinds.lock())
    }

    /// Buffers records just read, those of partitions still readable.
    fn accept(&self, batch: &mut Vec<RawDelivery>) {
        let mut state = self.state.lock();
        for d in batch.drain(..) {
            let slot = (
                self.topics
                    .iter()
                    .position(|t| Arc::ptr_eq(t, &d.token.topic))
                    .unwrap_or(usize::MAX),
                d.partition as i32,
            );
            if let Some(count) = state.accept(slot, d.token.offset) {
                state.buffer.push_back(d.with_delivery_count(count));
            }
        }
        drop(state);
        self.ready.notify_one();
    }

    /// Up to `max` buffered records, if any.
    fn take(&self, max: usize) -> Option<Vec<RawDelivery>> {
        let mut state = self.state.lock();
        if state.buffer.is_empty() {
            return None;
        }
        let taken = state.take(max, |d| self.slot_of_token(&d.token));
        self.room_freed.notify_one();
        Some(taken)
    }

    /// Waits up to `limit` while the buffer is full; whether it still is.
    fn wait_for_room(&self, limit: Duration) -> bool {
        let mut state = self.state.lock();
        if state.buffer.len() >= self.buffer_limit {
            self.room_freed.wait_for(&mut state, limit);
        }
        state.buffer.len() >= self.buffer_limit
    }

    /// How many more records the buffer takes before it is full.
    fn room(&self) -> usize {
        self.buffer_limit
            .saturating_sub(self.state.lock().buffer.len())
    }

    /// The offsets a transaction commits for `tokens` (one past the last
    /// record of each partition), refusing records of partitions this
    /// member no longer holds.
    pub(crate) fn transaction_offsets(
        &self,
        tokens: &[AckToken],
    ) -> Result<(TopicPartitionList, Arc<ConsumerGroupMetadata>)> {
        let metadata = self.group_metadata.lock().clone().ok_or_else(|| {
            Error::Rejected(format!(
                "the member of {} has no group generation yet",
                self.group
            ))
        })?;
        let mut last: Vec<(Slot, u64)> = Vec::new();
        let state = self.state.lock();
        for token in tokens {
            let slot = self
                .slot_of_token(token)
                .filter(|s| state.parts.contains_key(s))
                .ok_or_else(|| {
                    Error::Rejected(format!(
                        "partition {} of {} is no longer this member's",
                        token.partition, token.topic
                    ))
                })?;
            match last.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, at)) => *at = (*at).max(token.offset),
                None => last.push((slot, token.offset)),
            }
        }
        drop(state);
        let mut tpl = TopicPartitionList::with_capacity(last.len());
        for ((t, p), offset) in last {
            tpl.add_partition_offset(
                &self.topics[t],
                p,
                rdkafka::Offset::Offset(offset as i64 + 1),
            )
            .map_err(|e| map(e, "transaction offsets"))?;
        }
        Ok((tpl, metadata))
    }

    /// Acks `tokens` after the transaction that committed their offsets.
    pub(crate) fn committed_in_transaction(&self, tokens: &[AckToken]) {
        let mut state = self.state.lock();
        let mut by_slot: Vec<(Slot, Vec<u64>)> = Vec::new();
        for token in tokens {
            let Some(slot) = self.slot_of_token(token) else {
                continue;
            };
            match by_slot.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, offsets)) => offsets.push(token.offset),
                None => by_slot.push((slot, vec![token.offset])),
            }
        }
        for (slot, offsets) in by_slot {
            state.committed_in_transaction(slot, &offsets);
        }
    }
}

/// The subscription handed to the core.
pub(crate) struct KafkaSubscription {
    inner: Arc<Inner>,
    shared: Arc<Shared>,
    /// Resolves when the poll thread has left the group.
    left: Mutex<Option<oneshot::Receiver<()>>>,
}

impl KafkaSubscription {
    /// Joins `spec.group` on `spec.topics` (creating missing topics).
    pub(crate) async fn join(inner: Arc<Inner>, spec: SubscribeSpec) -> Result<Self> {
        let mut topics = Vec::with_capacity(spec.topics.len());
        for topic in &spec.topics {
            inner.topics.partitions(topic).await?;
            if spec.start == StartFrom::Latest {
                // Positions the group now, so that what is published
                // between this call and the first assignment is read.
                inner
                    .topics
                    .ensure_group(topic, &spec.group, StartFrom::Latest)
                    .await?;
            }
            topics.push(Arc::<str>::from(topic.as_str()));
        }
        let shared = Arc::new(Shared {
            topics,
            state: Mutex::default(),
            ready: Notify::new(),
            room_freed: Condvar::new(),
            rebalances: RebalanceQueue::new(),
            closing: AtomicBool::new(false),
            leaving: Mutex::default(),
            joined: AtomicBool::new(false),
            joined_wake: Notify::new(),
            paused: AtomicBool::new(false),
            revoking: AtomicBool::new(false),
            outsider: inner.topics.group_client(&spec.group)?,
            rewinds: Mutex::default(),
            group_metadata: Mutex::default(),
            buffer_limit: spec.prefetch.saturating_mul(2).max(1024),
            commit_interval: inner.options.commit_interval,
            group: spec.group.clone(),
        });
        let consumer: MemberConsumer = inner
            .options
            .consumer(&spec.group, spec.start)
            .create_with_context(MemberContext {
                shared: shared.clone(),
            })
            .map_err(crate::config::config_error)?;
        let names: Vec<&str> = spec.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| map(e, "subscribe"))?;
        let (done, left) = oneshot::channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("mq-kafka-{}", spec.group))
            .spawn(move || {
                poller::run(consumer, &thread_shared);
                thread_shared.leaving.lock().take();
                let _ = done.send(());
            })
            .map_err(|e| {
                Error::backend(crate::error::BACKEND, "cannot start the poll thread", e)
            })?;
        // Returned once a member, so what is published next is read: the
        // first assignment comes within a rebalance (bounded by the session
        // time-out, after which the member goes on joining in the background).
        let _ = tokio::time::timeout(inner.options.session_timeout, async {
            while !shared.joined.load(Ordering::Acquire) {
                let woken = shared.joined_wake.notified();
                if shared.joined.load(Ordering::Acquire) {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(50), woken).await;
            }
        })
        .await;
        Ok(KafkaSubscription {
            inner,
            shared,
            left: Mutex::new(Some(left)),
        })
    }

    fn check_open(&self) -> Result<()> {
        self.inner.check_open()?;
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(Error::Closed("subscription"));
        }
        Ok(())
    }
}

#[async_trait]
impl DriverSubscription for KafkaSubscription {
    async fn fetch(&self, max: usize) -> Result<Vec<RawDelivery>> {
        let max = max.max(1);
        loop {
            self.check_open()?;
            let ready = self.shared.ready.notified();
            if let Some(batch) = self.shared.take(max) {
                return Ok(batch);
            }
            // Woken by new records; the time-out re-checks for a close.
            let _ = tokio::time::timeout(Duration::from_millis(200), ready).await;
        }
    }

    async fn ack(&self, tokens: Vec<AckToken>) -> Result<()> {
        let shared = &self.shared;
        shared
            .state
            .lock()
            .ack(&tokens, |t| shared.slot_of_token(t));
        Ok(())
    }

    /// `after` is always zero (redelivery delay is not native): the
    /// partition is rewound to its committed offset.
    async fn nack(&self, token: AckToken, _after: Duration) -> Result<()> {
        if let Some(slot) = self.shared.slot_of_token(&token) {
            let mut rewinds = self.shared.rewinds.lock();
            if !rewinds.contains(&slot) {
                rewinds.push(slot);
            }
        }
        Ok(())
    }

    async fn rebalance(&self) -> Option<Rebalance> {
        self.shared.rebalances.next().await
    }

    async fn begin(&self) -> Result<Box<dyn DriverTransaction>> {
        self.check_open()?;
        Ok(Box::new(
            KafkaTransaction::begin(self.inner.clone(), Some(self.shared.clone())).await?,
        ))
    }

    async fn close(&self) -> Result<()> {
        self.shared.start_closing();
        let left = self.left.lock().take();
        if let Some(left) = left {
            // The poll thread bounds its own leaving; this bound is for a
            // thread stuck in a callback.
            let _ = tokio::time::timeout(Duration::from_secs(30), left).await;
        }
        Ok(())
    }
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        // The poll thread sees it and leaves the group on its own.
        self.shared.start_closing();
    }
}
