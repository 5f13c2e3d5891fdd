//! A member of a consumer group ([`RocketSubscription`]): a clustering push
//! consumer with an orderly listener, bridged to fetch and ack ([`bridge`]).
//!
//! - **Order and exclusivity**: the orderly consumer locks each queue at
//!   the broker and runs one listener call per queue at a time, so a queue
//!   is read by one member, in order; the runtime's per-key executor does
//!   the rest.
//! - **Settling**: the listener returns only when the runtime has acked
//!   its messages (see [`bridge`]); the client commits past acked messages
//!   only and writes offsets to the broker every `commit_interval`.
//! - **Rebalances** are reported from the allocation strategy
//!   ([`allocation`]) once the revoked queues' listener calls finished or
//!   were handed on ([`handover`]); the broker's queue lock keeps the next
//!   owner waiting until then.
//! - **Backpressure**: at most one batch per assigned queue waits for the
//!   runtime, and the client pulls ahead by at most `pull_threshold` per queue.
//! - **Give back** (`nack`): only that message is offered again, at once,
//!   ahead of its batch's messages not fetched yet; the driver counts its
//!   deliveries ([`counts`]), RocketMQ's `reconsume_times` being per batch.

mod allocation;
mod bridge;
pub(crate) mod counts;
pub(crate) mod handover;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mq_core::driver::{
    AckToken, DriverSubscription, RawDelivery, Rebalance, StartFrom, SubscribeSpec,
};
use mq_core::{Error, Result};
use rocketmq_client_rust::{DefaultMQPushConsumer, MQPushConsumer};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_protocol::protocol::heartbeat::message_model::MessageModel;

use crate::cluster::client_config;
use crate::driver::Inner;
use crate::error::map;
use bridge::{Bridge, Listener, Settle, BATCH};

/// The subscription handed to the core.
pub(crate) struct RocketSubscription {
    bridge: Arc<Bridge>,
    consumer: tokio::sync::Mutex<Option<DefaultMQPushConsumer>>,
}

impl RocketSubscription {
    /// Joins `spec.group` on `spec.topics` (creating missing topics).
    pub(crate) async fn join(inner: Arc<Inner>, spec: SubscribeSpec) -> Result<Self> {
        crate::names::check_group(&spec.group)?;
        for topic in &spec.topics {
            crate::names::check_topic(topic)?;
            // Creates the topic and the group, positioned where `start`
            // says for queues where it has no offset yet.
            inner.ensure_group(topic, &spec.group, spec.start).await?;
        }
        let handovers = handover::Handovers::new(inner.clone(), &spec.group);
        let bridge = Bridge::new(&spec.topics, &spec.group, inner.counts.clone(), handovers);
        let options = &inner.options;
        // The client pulls ahead per queue; a small threshold keeps memory
        // bounded by the queues held, whatever the runtime's pace.
        let per_queue = (spec.prefetch as u32).clamp(16, 1024);
        let mut consumer = DefaultMQPushConsumer::builder(inner.runtime.client())
            .client_config(client_config(options, "consumer"))
            .name_server_addr(options.name_servers.clone())
            .consumer_group(crate::names::to_broker(&spec.group))
            .message_model(MessageModel::Clustering)
            .consume_from_where(match spec.start {
                StartFrom::Earliest => ConsumeFromWhere::ConsumeFromFirstOffset,
                StartFrom::Latest => ConsumeFromWhere::ConsumeFromLastOffset,
            })
            .allocate_message_queue_strategy(Arc::new(allocation::Watched {
                bridge: bridge.clone(),
            }))
            .consume_message_batch_max_size(BATCH)
            .consume_thread_min(64)
            .consume_thread_max(64)
            .pull_threshold_for_queue(per_queue)
            .pull_batch_size(per_queue.min(32))
            .max_reconsume_times(i32::MAX)
            .suspend_current_queue_time_millis(20)
            .build();
        for topic in &spec.topics {
            consumer
                .subscribe(crate::names::to_broker(topic), "*")
                .await
                .map_err(|e| map(e, &format!("subscribing {} to {topic}", spec.group)))?;
        }
        consumer.register_message_listener_orderly(Listener(bridge.clone()));
        consumer
            .start()
            .await
            .map_err(|e| map(e, &format!("starting a member of {}", spec.group)))?;
        bridge.handovers.set_offsets(consumer.offset_store());
        // Returned once the first rebalance gave this member its share, so
        // what is published next is read (bounded: the broker may be slow
        // to route a topic just created).
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !bridge.balanced() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        Ok(RocketSubscription {
            bridge,
            consumer: tokio::sync::Mutex::new(Some(consumer)),
        })
    }

    fn check_open(&self) -> Result<()> {
        if self
            .bridge
            .closing
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(Error::Closed("subscription"));
        }
        Ok(())
    }
}

#[async_trait]
impl DriverSubscription for RocketSubscription {
    async fn fetch(&self, max: usize) -> Result<Vec<RawDelivery>> {
        let max = max.max(1);
        loop {
            self.check_open()?;
            let ready = self.bridge.ready.notified();
            let batch = self.bridge.take(max);
            if !batch.is_empty() {
                return Ok(batch);
            }
            // Woken by new deliveries; the time-out re-checks for a close.
            let _ = tokio::time::timeout(Duration::from_millis(200), ready).await;
        }
    }

    async fn ack(&self, tokens: Vec<AckToken>) -> Result<()> {
        for token in &tokens {
            self.bridge.settle(token, Settle::Ack);
        }
        Ok(())
    }

    /// `after` is always zero (redelivery delay is not native): the
    /// message is offered again at once, in place.
    async fn nack(&self, token: AckToken, _after: Duration) -> Result<()> {
        self.bridge.settle(&token, Settle::Again);
        Ok(())
    }

    async fn rebalance(&self) -> Option<Rebalance> {
        self.bridge.rebalances.next().await
    }

    async fn close(&self) -> Result<()> {
        self.bridge.release_all();
        // The calls commit and record what they hand on before the
        // consumer writes its own offsets and unlocks the queues.
        self.bridge.calls_ended().await;
        if let Some(mut consumer) = self.consumer.lock().await.take() {
            // Persists the committed offsets and unlocks the queues, so the
            // next owner starts at once.
            let _ = tokio::time::timeout(Duration::from_secs(20), consumer.shutdown()).await;
        }
        Ok(())
    }
}

impl Drop for RocketSubscription {
    fn drop(&mut self) {
        self.bridge.release_all();
        if let Some(mut consumer) = self.consumer.get_mut().take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { consumer.shutdown().await });
            }
        }
    }
}
