//! A member of a consumer group: consumers on the group's shard queues,
//! feeding a buffer that `fetch` drains.
//!
//! A supervisor task runs sessions. A session has a control channel (the
//! group's declarations and the membership announcements of
//! [`crate::membership`]) and one channel per shard queue it consumes,
//! carrying that shard's deliveries and acks.
//!
//! The runtime's in-flight bound holds at the broker: it is split over
//! the subscription's queues ([`prefetch`]).
//!
//! A channel per shard is what makes a hand-over free of overlap. When a
//! member gives a shard up, it reports the revocation, waits until the
//! runtime has let go of the shard's deliveries and flushed their acks,
//! then closes the shard's channel. The broker requeues what the channel
//! still held unacked, in delivery order and ahead of later messages,
//! before it activates the next single active consumer. Cancelling the
//! consumer instead would activate the next one at once, while this member
//! still holds earlier messages; nacking them first would have the broker
//! redeliver them to this member, behind later ones. Either reorders a key.
//!
//! After a failure the supervisor lets go of every shard the same way (the
//! runtime first, then the channels), reconnects with backoff, declares
//! again and consumes again. Tokens carry the epoch of their shard's
//! channel; acks for a channel that is gone are void (the broker requeued
//! those messages).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::Channel;
use mq_core::driver::{
    AckToken, DriverSubscription, RawDelivery, Rebalance, RebalanceQueue, SubscribeSpec,
    TopicPartition,
};
use mq_core::{Error, Result};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::codec::{self, Origin};
use crate::connection::Connector;
use crate::error::{is_transport, map};
use crate::names;
use crate::options::Options;
use crate::topology::{GroupSpec, QueueStat, Topology};

mod prefetch;
mod pump;
mod session;

use prefetch::split_prefetch;
use pump::Pump;
use session::supervise;

/// How long giving a shard back waits for the broker to show the
/// deliveries its channel held as ready again, so lag never misses them.
const RETURN_LIMIT: Duration = Duration::from_secs(2);

/// One topic of the subscription and its shard queues.
struct Plan {
    topic: Arc<str>,
    shards: u32,
    queues: Vec<Arc<str>>,
    /// The prefetch of each shard queue's consumer: its part of the bound.
    prefetch: Vec<u16>,
}

struct Shared {
    connector: Arc<Connector>,
    topology: Arc<Topology>,
    options: Options,
    group: String,
    plans: Vec<Plan>,
    member: String,
    state: Mutex<State>,
    arrived: Notify,
    rebalances: RebalanceQueue,
    epochs: AtomicU64,
    fatal: Mutex<Option<Error>>,
    closed: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Deliveries of readable shards, not fetched yet.
    buffer: VecDeque<RawDelivery>,
    /// The shards consumed now, readable or being given back.
    shards: HashMap<TopicPartition, Shard>,
}

/// A shard queue this member consumes, on a channel of its own.
struct Shard {
    epoch: u64,
    channel: Channel,
    /// Kept until the channel is closed: lapin cancels a consumer when its
    /// last handle goes, and a cancel would let the next member have the
    /// shard while this channel still holds earlier messages.
    consumer: lapin::Consumer,
    queue: Arc<str>,
    /// Reported assigned and not revoked since: its deliveries may be fetched.
    readable: bool,
    /// Its channel is being closed: acks are void, and what still arrives
    /// is counted as held until the broker has it back.
    releasing: bool,
    /// Delivery tags buffered or fetched and not settled yet, and those
    /// that arrived after the revocation.
    unsettled: BTreeSet<u64>,
}

pub(crate) struct RabbitSubscription {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// What the consumer and membership tasks report to the session.
pub(crate) enum Event {
    /// A member announced itself (`join`, `hb`) or left (`bye`).
    Member { kind: String, id: String },
    /// A consumer's channel failed.
    Failed(lapin::Error),
}

impl RabbitSubscription {
    /// Declares the group's queues (failing at once on a refusal, such as
    /// queues declared earlier with other arguments) and starts consuming.
    pub(crate) async fn join(
        connector: Arc<Connector>,
        topology: Arc<Topology>,
        options: Options,
        spec: SubscribeSpec,
    ) -> Result<Self> {
        let Some(first) = spec.topics.first() else {
            return Err(Error::invalid("topics", "", "a subscription needs a topic"));
        };
        let first_shards = topology.ensure_topic(first, None).await?;
        let mut topics = Vec::with_capacity(spec.topics.len());
        for topic in &spec.topics {
            topics.push((
                topic,
                topology.ensure_topic(topic, Some(first_shards)).await?,
            ));
        }
        let counts: Vec<u32> = topics.iter().map(|(_, shards)| *shards).collect();
        let plans = topics
            .into_iter()
            .zip(split_prefetch(spec.prefetch, &counts))
            .map(|((topic, shards), prefetch)| Plan {
                topic: Arc::from(topic.as_str()),
                shards,
                queues: (0..shards)
                    .map(|s| Arc::from(names::shard_queue(topic, &spec.group, s)))
                    .collect(),
                prefetch,
            })
            .collect();
        let shared = Arc::new(Shared {
            connector,
            topology,
            options,
            group: spec.group,
            plans,
            member: uuid::Uuid::now_v7().simple().to_string(),
            state: Mutex::default(),
            arrived: Notify::new(),
            rebalances: RebalanceQueue::new(),
            epochs: AtomicU64::new(0),
            fatal: Mutex::new(None),
            closed: AtomicBool::new(false),
        });
        let control = open(&shared).await?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(shared.clone(), control, stop_rx));
        Ok(RabbitSubscription {
            shared,
            stop,
            task: Mutex::new(Some(task)),
        })
    }
}

/// Opens a control channel and declares the group on it.
async fn open(shared: &Shared) -> Result<Channel> {
    let (channel, _) = shared
        .connector
        .channel(shared.connector.deadline())
        .await?;
    let dead_letter_of = &shared.plans[0].topic;
    for plan in &shared.plans {
        shared
            .topology
            .declare_exchange(&channel, &plan.topic)
            .await?;
        shared
            .topology
            .declare_group(
                &channel,
                &GroupSpec {
                    topic: &plan.topic,
                    group: &shared.group,
                    shards: plan.shards,
                    dead_letter_of,
                },
            )
            .await?;
    }
    Ok(channel)
}

impl Shared {
    /// Consumes shard `tp` on a channel of its own.
    async fn start(
        self: &Arc<Self>,
        tp: &TopicPartition,
        events: &mpsc::UnboundedSender<Event>,
    ) -> Result<()> {
        let Some(plan) = self.plans.iter().find(|p| p.topic == tp.topic) else {
            return Ok(());
        };
        let queue = plan.queues[tp.partition as usize].clone();
        let prefetch = plan.prefetch[tp.partition as usize];
        let (channel, _) = self.connector.channel(self.connector.deadline()).await?;
        // Counted from before the first delivery can arrive.
        let epoch = self.epochs.fetch_add(1, Ordering::AcqRel) + 1;
        let holdings = self.topology.holdings();
        holdings.consuming(&queue, epoch, channel.clone(), prefetch);
        let consumed = async {
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await?;
            channel
                .basic_consume(
                    names::short(&queue),
                    ShortString::from(format!("{}-{}", self.member, tp.partition)),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
        }
        .await;
        let consumer = match consumed {
            Ok(consumer) => consumer,
            Err(error) => {
                holdings.returned(&queue, epoch, 0);
                let _ = channel.close(200, "not consuming".into()).await;
                return Err(map(error, &format!("consuming {queue}")));
            }
        };
        self.state.lock().shards.insert(
            tp.clone(),
            Shard {
                epoch,
                channel,
                consumer: consumer.clone(),
                queue: queue.clone(),
                readable: true,
                releasing: false,
                unsettled: BTreeSet::new(),
            },
        );
        // Set once the shard is known: lapin hands the pump what arrived
        // before, in order, then every delivery as it is read.
        consumer.set_delegate(Pump::new(
            self,
            Origin {
                topic: tp.topic.clone(),
                shard: tp.partition,
                epoch,
            },
            tp.clone(),
            events.clone(),
        ));
        holdings.started(&queue, epoch);
        Ok(())
    }

    /// Stops handing out deliveries of `partitions`; returns those that
    /// were readable until now.
    fn revoke(&self, partitions: &[TopicPartition]) -> Vec<TopicPartition> {
        let mut state = self.state.lock();
        let State { buffer, shards } = &mut *state;
        let revoked: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| {
                shards
                    .get_mut(*tp)
                    .is_some_and(|s| std::mem::replace(&mut s.readable, false))
            })
            .cloned()
            .collect();
        buffer.retain(|d| !revoked.iter().any(|tp| d.token.is_in(tp)));
        revoked
    }

    /// Gives `partitions` back to the group by closing their channels. A
    /// shard stays known until the broker has its deliveries back, so lag
    /// counts those arriving meanwhile too.
    async fn release(&self, partitions: &[TopicPartition]) {
        let releasing: Vec<(TopicPartition, u64, Channel, Arc<str>, u64)> = {
            let mut state = self.state.lock();
            let State { buffer, shards } = &mut *state;
            buffer.retain(|d| !partitions.iter().any(|tp| d.token.is_in(tp)));
            partitions
                .iter()
                .filter_map(|tp| {
                    let shard = shards.get_mut(tp).filter(|s| !s.releasing)?;
                    shard.readable = false;
                    shard.releasing = true;
                    let held = shard.unsettled.len() as u64;
                    Some((
                        tp.clone(),
                        shard.epoch,
                        shard.channel.clone(),
                        shard.queue.clone(),
                        held,
                    ))
                })
                .collect()
        };
        let returns = releasing
            .into_iter()
            .map(|(tp, epoch, channel, queue, held)| async move {
                if channel.status().connected() {
                    self.close_and_await_return(&channel, &queue, held).await;
                }
                let shard = {
                    let shards = &mut self.state.lock().shards;
                    match shards.get(&tp) {
                        Some(s) if s.epoch == epoch => shards.remove(&tp),
                        _ => None,
                    }
                };
                if let Some(shard) = shard {
                    self.topology
                        .holdings()
                        .returned(&queue, epoch, shard.unsettled.len() as u64);
                    drop(shard.consumer);
                }
            });
        futures::future::join_all(returns).await;
    }

    /// Closes a shard's channel, then waits (up to [`RETURN_LIMIT`]) until
    /// the broker has taken back the `held` deliveries it had: it puts them
    /// back in the queue shortly after the close, together with removing
    /// the channel's consumer, and until then they are neither ready nor
    /// this member's, so lag would miss them.
    async fn close_and_await_return(&self, channel: &Channel, queue: &str, held: u64) {
        let context = format!("reading {queue}");
        let before = if held == 0 {
            None
        } else {
            tokio::time::timeout(RETURN_LIMIT, self.topology.queue_stat(queue, &context))
                .await
                .ok()
                .and_then(|stat| stat.ok().flatten())
        };
        if let Err(error) = channel.close(200, "handing on".into()).await {
            tracing::debug!(%error, queue, "closing a shard's channel");
            return;
        }
        let Some(before) = before else {
            return;
        };
        let back = |now: QueueStat| {
            now.consumers < before.consumers
                || u64::from(now.ready) >= u64::from(before.ready) + held
        };
        let waited = tokio::time::timeout(RETURN_LIMIT, async {
            while let Ok(Some(now)) = self.topology.queue_stat(queue, &context).await {
                if back(now) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        if waited.is_err() {
            tracing::debug!(
                queue,
                "the broker did not show the returned deliveries in time"
            );
        }
    }

    async fn release_all(&self) {
        let all: Vec<TopicPartition> = self.state.lock().shards.keys().cloned().collect();
        self.release(&all).await;
    }

    /// Records a failure that ends the subscription, for `fetch` to return.
    fn fail(&self, error: Error) {
        if !self.closed.load(Ordering::Acquire) {
            tracing::error!(%error, group = %self.group, "subscription failed");
            *self.fatal.lock() = Some(error);
            self.arrived.notify_waiters();
        }
    }

    /// The channels for settling `tokens` with the delivery tags on each,
    /// keeping only tokens of a shard's current channel that are unsettled
    /// (and forgetting them as unsettled).
    fn settleable(&self, tokens: &[AckToken]) -> Vec<(Channel, Vec<u64>)> {
        let mut state = self.state.lock();
        let mut settle: HashMap<u64, (Channel, Vec<u64>)> = HashMap::new();
        for token in tokens {
            let Some(epoch) = codec::epoch(token) else {
                continue;
            };
            let Some(shard) = state.shards.get_mut(&token.topic_partition()) else {
                continue;
            };
            if shard.epoch != epoch || shard.releasing || !shard.unsettled.remove(&token.offset) {
                continue;
            }
            self.topology.holdings().settled(&shard.queue, 1);
            settle
                .entry(epoch)
                .or_insert_with(|| (shard.channel.clone(), Vec::new()))
                .1
                .push(token.offset);
        }
        settle.into_values().collect()
    }
}

/// The outcome of settling on a shard's channel: one that closed meanwhile
/// voids the settlement (the broker requeues the message), which is fine.
fn settled(result: lapin::Result<()>, context: &str) -> Result<()> {
    match result {
        Err(error) if !is_transport(&error) => Err(map(error, context)),
        _ => Ok(()),
    }
}

#[async_trait]
impl DriverSubscription for RabbitSubscription {
    async fn fetch(&self, max: usize) -> Result<Vec<RawDelivery>> {
        let max = max.max(1);
        loop {
            if self.shared.closed.load(Ordering::Acquire) || self.shared.connector.is_closed() {
                return Err(Error::Closed("subscription"));
            }
            if let Some(error) = self.shared.fatal.lock().take() {
                self.shared.closed.store(true, Ordering::Release);
                return Err(error);
            }
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let mut state = self.shared.state.lock();
                if !state.buffer.is_empty() {
                    let take = max.min(state.buffer.len());
                    return Ok(state.buffer.drain(..take).collect());
                }
            }
            // Also wake now and then, to notice a close from elsewhere.
            let _ = tokio::time::timeout(Duration::from_millis(500), arrived).await;
        }
    }

    async fn ack(&self, tokens: Vec<AckToken>) -> Result<()> {
        // One ack per tag: `multiple` could also ack a delivery that reached
        // the channel but not yet this buffer, and a second ack of it would
        // close the channel.
        let acks = self
            .shared
            .settleable(&tokens)
            .into_iter()
            .flat_map(|(channel, tags)| {
                tags.into_iter().map(move |tag| {
                    let channel = channel.clone();
                    async move { channel.basic_ack(tag, BasicAckOptions::default()).await }
                })
            });
        for result in futures::future::join_all(acks).await {
            settled(result, "acknowledging")?;
        }
        Ok(())
    }

    async fn nack(&self, token: AckToken, after: Duration) -> Result<()> {
        if !after.is_zero() {
            // Not called: redelivery delay is emulated by the core.
            tracing::debug!(?after, "rabbitmq redelivers at once; the pause is ignored");
        }
        let requeue = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        for (channel, tags) in self.shared.settleable(std::slice::from_ref(&token)) {
            for tag in tags {
                settled(
                    channel.basic_nack(tag, requeue).await,
                    "returning a message",
                )?;
            }
        }
        Ok(())
    }

    async fn rebalance(&self) -> Option<Rebalance> {
        self.shared.rebalances.next().await
    }

    async fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Ordering::Release);
        self.stop.send_replace(true);
        self.shared.arrived.notify_waiters();
        let task = self.task.lock().take();
        if let Some(task) = task {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!(group = %self.shared.group, "leaving the group took over 10 s");
            }
        }
        Ok(())
    }
}

impl Drop for RabbitSubscription {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.stop.send_replace(true);
    }
}
