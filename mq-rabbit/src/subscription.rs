//! A member of a consumer group: consumers on the group's shard queues,
//! feeding a buffer that `fetch` drains.
//!
//! One channel per member carries its consumers (prefetch = the runtime's
//! in-flight bound, per shard queue), its acks and its membership
//! messages. A supervisor task owns the channel: it declares the group's
//! queues, consumes the shards this member owns (see [`crate::membership`]),
//! and after a lost connection reconnects, re-declares and consumes again.
//! Deliveries carry the channel's epoch in their token; acks for an older
//! channel are void (the broker redelivers those messages anyway).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::Channel;
use mq_core::driver::{AckToken, DriverSubscription, RawDelivery, SubscribeSpec};
use mq_core::{Error, Result};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::codec::{self, Origin};
use crate::connection::Connector;
use crate::error::map;
use crate::membership::{Members, Membership};
use crate::names;
use crate::options::Options;
use crate::topology::{GroupSpec, Topology};

/// One topic of the subscription and its shard queues.
struct Plan {
    topic: Arc<str>,
    shards: u32,
    queues: Vec<Arc<str>>,
}

struct Shared {
    connector: Arc<Connector>,
    topology: Arc<Topology>,
    options: Options,
    group: String,
    plans: Vec<Plan>,
    prefetch: u16,
    member: String,
    buffer: Mutex<VecDeque<RawDelivery>>,
    arrived: Notify,
    /// The current channel's epoch and the channel itself.
    current: Mutex<(u64, Option<Channel>)>,
    epochs: AtomicU64,
    /// Delivery tags of the current channel not yet settled, with their queue.
    outstanding: Mutex<BTreeMap<u64, Arc<str>>>,
    fatal: Mutex<Option<Error>>,
    closed: AtomicBool,
}

pub(crate) struct RabbitSubscription {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// What the consumer and membership tasks report to the supervisor.
pub(crate) enum Event {
    /// A member announced itself (`join`, `hb`) or left (`bye`).
    Member { kind: String, id: String },
    /// A consumer stream ended; with an error when the channel died.
    Ended(Option<lapin::Error>),
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
        let mut plans = Vec::with_capacity(spec.topics.len());
        for topic in &spec.topics {
            let shards = topology.ensure_topic(topic, Some(first_shards)).await?;
            plans.push(Plan {
                topic: Arc::from(topic.as_str()),
                shards,
                queues: (0..shards)
                    .map(|s| Arc::from(names::shard_queue(topic, &spec.group, s)))
                    .collect(),
            });
        }
        let shared = Arc::new(Shared {
            connector,
            topology,
            options,
            group: spec.group,
            plans,
            prefetch: spec.prefetch.clamp(1, usize::from(u16::MAX)) as u16,
            member: uuid::Uuid::now_v7().simple().to_string(),
            buffer: Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
            current: Mutex::new((0, None)),
            epochs: AtomicU64::new(0),
            outstanding: Mutex::new(BTreeMap::new()),
            fatal: Mutex::new(None),
            closed: AtomicBool::new(false),
        });
        let channel = open(&shared).await?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(shared.clone(), channel, stop_rx));
        Ok(RabbitSubscription {
            shared,
            stop,
            task: Mutex::new(Some(task)),
        })
    }
}

/// Opens a channel with the prefetch bound and declares the group on it.
async fn open(shared: &Shared) -> Result<Channel> {
    let (channel, _) = shared
        .connector
        .channel(shared.connector.deadline())
        .await?;
    channel
        .basic_qos(shared.prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| map(e, "setting the prefetch"))?;
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

/// Resolves once the subscription is told to stop (or its handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs sessions until stopped; after a failure reconnects with backoff.
async fn supervise(shared: Arc<Shared>, first: Channel, mut stop: watch::Receiver<bool>) {
    let mut channel = Some(first);
    let mut pause = Duration::from_millis(50);
    loop {
        let ready = match channel.take() {
            Some(channel) => Ok(channel),
            None => open(&shared).await,
        };
        let outcome = match ready {
            Ok(channel) => session(&shared, channel, &mut stop).await,
            Err(error) => Err(error),
        };
        shared.void_channel();
        match outcome {
            Ok(()) => return,
            Err(error) if !error.is_retryable() || shared.connector.is_closed() => {
                if !shared.closed.load(Ordering::Acquire) {
                    tracing::error!(%error, group = %shared.group, "subscription failed");
                    *shared.fatal.lock() = Some(error);
                    shared.arrived.notify_waiters();
                }
                return;
            }
            Err(error) => {
                tracing::warn!(%error, group = %shared.group, ?pause, "subscription lost its channel; resubscribing");
                let stopped = tokio::select! {
                    _ = stopped(&mut stop) => true,
                    _ = tokio::time::sleep(pause) => false,
                };
                if stopped {
                    return;
                }
                pause = (pause * 2).min(shared.options.max_backoff);
            }
        }
    }
}

/// One channel's life: consume the owned shards, follow membership, stop.
async fn session(
    shared: &Arc<Shared>,
    channel: Channel,
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    let epoch = shared.epochs.fetch_add(1, Ordering::AcqRel) + 1;
    {
        let mut current = shared.current.lock();
        *current = (epoch, Some(channel.clone()));
        // Deliveries of a dead channel cannot be acked: the broker redelivers them.
        shared.buffer.lock().retain(|d| d.token.tag == epoch);
    }
    let (events, mut events_rx) = mpsc::unbounded_channel();
    let spread = shared.plans.iter().any(|p| p.shards > 1);
    let mut members = Members::new(shared.member.clone(), shared.options.member_heartbeat);
    let membership = if spread {
        let topic = &shared.plans[0].topic;
        Some(
            Membership::start(
                &channel,
                topic,
                &shared.group,
                &shared.member,
                events.clone(),
            )
            .await?,
        )
    } else {
        None
    };
    let mut consumers: HashMap<(usize, u32), ShortString> = HashMap::new();
    rebalance(shared, &channel, epoch, &members, &mut consumers, &events).await?;
    let mut tick = tokio::time::interval(shared.options.member_heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            _ = stopped(stop) => break Ok(()),
            event = events_rx.recv() => match event {
                Some(Event::Member { kind, id }) => {
                    let changed = members.observe(&kind, id);
                    if changed && kind == "join" {
                        if let Some(m) = &membership {
                            m.announce(&channel, "hb").await?;
                        }
                    }
                    if changed {
                        rebalance(shared, &channel, epoch, &members, &mut consumers, &events).await?;
                    }
                }
                // A channel error while consuming is worth a new channel,
                // whatever its cause: report it as retryable.
                Some(Event::Ended(Some(error))) => break Err(Error::connection("consuming", error)),
                Some(Event::Ended(None)) | None => {}
            },
            _ = tick.tick() => {
                if !channel.status().connected() {
                    break Err(Error::Connection { message: "the subscription channel closed".into(), source: None });
                }
                if let Some(m) = &membership {
                    m.announce(&channel, "hb").await?;
                    if members.expire() {
                        rebalance(shared, &channel, epoch, &members, &mut consumers, &events).await?;
                    }
                }
            }
        }
    };
    if result.is_ok() {
        if let Some(m) = &membership {
            let _ = m.announce(&channel, "bye").await;
        }
        // Closing the channel cancels the consumers and returns unacked messages.
        if channel.status().connected() {
            let _ = channel.close(200, "leaving".into()).await;
        }
    }
    result
}

/// Consumes the shards this member owns now and cancels the others.
async fn rebalance(
    shared: &Arc<Shared>,
    channel: &Channel,
    epoch: u64,
    members: &Members,
    consumers: &mut HashMap<(usize, u32), ShortString>,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<()> {
    for (index, plan) in shared.plans.iter().enumerate() {
        for shard in 0..plan.shards {
            let owned = plan.shards == 1 || members.owns(shard);
            let key = (index, shard);
            match (owned, consumers.contains_key(&key)) {
                (true, false) => {
                    let tag =
                        ShortString::from(format!("{}-{index}-{shard}-{epoch}", shared.member));
                    let queue = plan.queues[shard as usize].clone();
                    let consumer = channel
                        .basic_consume(
                            names::short(&queue),
                            tag.clone(),
                            BasicConsumeOptions::default(),
                            FieldTable::default(),
                        )
                        .await
                        .map_err(|e| map(e, &format!("consuming {queue}")))?;
                    consumers.insert(key, tag);
                    let origin = Origin {
                        topic: plan.topic.clone(),
                        shard,
                        epoch,
                    };
                    tokio::spawn(pump(
                        shared.clone(),
                        consumer,
                        origin,
                        queue,
                        events.clone(),
                    ));
                }
                (false, true) => {
                    if let Some(tag) = consumers.remove(&key) {
                        channel
                            .basic_cancel(tag, BasicCancelOptions::default())
                            .await
                            .map_err(|e| map(e, "handing a shard to another member"))?;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Moves deliveries of one consumer into the buffer.
async fn pump(
    shared: Arc<Shared>,
    mut consumer: lapin::Consumer,
    origin: Origin,
    queue: Arc<str>,
    events: mpsc::UnboundedSender<Event>,
) {
    while let Some(item) = consumer.next().await {
        match item {
            Ok(delivery) => {
                let tag = delivery.delivery_tag;
                let raw = codec::decode(delivery, &origin);
                let current = shared.current.lock();
                if current.0 != origin.epoch {
                    return;
                }
                shared.outstanding.lock().insert(tag, queue.clone());
                shared.topology.track(&queue, 1);
                shared.buffer.lock().push_back(raw);
                drop(current);
                shared.arrived.notify_waiters();
            }
            Err(error) => {
                let _ = events.send(Event::Ended(Some(error)));
                return;
            }
        }
    }
    let _ = events.send(Event::Ended(None));
}

impl Shared {
    /// Forgets the channel: its buffered deliveries and unsettled tags are void.
    fn void_channel(&self) {
        let mut current = self.current.lock();
        current.1 = None;
        self.buffer.lock().clear();
        let voided = std::mem::take(&mut *self.outstanding.lock());
        for queue in voided.values() {
            self.topology.track(queue, -1);
        }
    }

    /// The channel for settling `tokens`, keeping only those of the current
    /// channel (and forgetting them as outstanding).
    fn settleable(&self, tokens: &[AckToken]) -> Option<(Channel, Vec<u64>)> {
        let current = self.current.lock();
        let (epoch, Some(channel)) = &*current else {
            return None;
        };
        let mut outstanding = self.outstanding.lock();
        let mut tags: Vec<u64> = tokens
            .iter()
            .filter(|t| t.tag == *epoch)
            .map(|t| t.offset)
            .collect();
        tags.sort_unstable();
        tags.dedup();
        if tags.is_empty() {
            return None;
        }
        for tag in &tags {
            if let Some(queue) = outstanding.remove(tag) {
                self.topology.track(&queue, -1);
            }
        }
        Some((channel.clone(), tags))
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
                let mut buffer = self.shared.buffer.lock();
                if !buffer.is_empty() {
                    let take = max.min(buffer.len());
                    return Ok(buffer.drain(..take).collect());
                }
            }
            // Also wake now and then, to notice a close from elsewhere.
            let _ = tokio::time::timeout(Duration::from_millis(500), arrived).await;
        }
    }

    async fn ack(&self, tokens: Vec<AckToken>) -> Result<()> {
        let Some((channel, tags)) = self.shared.settleable(&tokens) else {
            return Ok(());
        };
        // One ack per tag: `multiple` could also ack a delivery that reached
        // the channel but not yet this buffer, and a second ack of it would
        // close the channel.
        let acks = tags
            .iter()
            .map(|tag| channel.basic_ack(*tag, BasicAckOptions::default()));
        for result in futures::future::join_all(acks).await {
            result.map_err(|e| map(e, "acknowledging"))?;
        }
        Ok(())
    }

    async fn nack(&self, token: AckToken, after: Duration) -> Result<()> {
        if !after.is_zero() {
            // Not called: redelivery delay is emulated by the core.
            tracing::debug!(?after, "rabbitmq redelivers at once; the pause is ignored");
        }
        let Some((channel, tags)) = self.shared.settleable(std::slice::from_ref(&token)) else {
            return Ok(());
        };
        for tag in tags {
            channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    },
                )
                .await
                .map_err(|e| map(e, "returning a message"))?;
        }
        Ok(())
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
