//! Moving one shard's deliveries into the subscription's buffer.
//!
//! The pump is the shard consumer's lapin delegate, so it runs as lapin
//! reads each delivery off the connection, in order, and before lapin
//! sees any later reply on the channel: a delivery is counted as held
//! ([`crate::holdings`]) before a round trip on its channel completes.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use lapin::message::DeliveryResult;
use lapin::ConsumerDelegate;
use mq_core::driver::TopicPartition;
use tokio::sync::mpsc;

use super::{Event, Shared, State};
use crate::codec::{self, Origin};

pub(super) struct Pump {
    /// Weak: the subscription's state holds the consumer that holds this.
    shared: Weak<Shared>,
    origin: Origin,
    tp: TopicPartition,
    events: mpsc::UnboundedSender<Event>,
}

impl Pump {
    pub(super) fn new(
        shared: &Arc<Shared>,
        origin: Origin,
        tp: TopicPartition,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        Pump {
            shared: Arc::downgrade(shared),
            origin,
            tp,
            events,
        }
    }

    fn take(&self, delivery: DeliveryResult) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        match delivery {
            Ok(Some(delivery)) => {
                let tag = delivery.delivery_tag;
                let raw = codec::decode(delivery, &self.origin);
                let mut state = shared.state.lock();
                let State { buffer, shards } = &mut *state;
                let Some(shard) = shards
                    .get_mut(&self.tp)
                    .filter(|s| s.epoch == self.origin.epoch)
                else {
                    return;
                };
                // Held either way. One of a revoked (or releasing) shard is
                // not buffered: the channel keeps it unacked until it is
                // closed, which requeues it for the shard's next owner.
                shard.unsettled.insert(tag);
                shared.topology.holdings().received(&shard.queue);
                if shard.readable {
                    buffer.push_back(raw);
                    drop(state);
                    shared.arrived.notify_waiters();
                }
            }
            // The broker cancelled the consumer (its queue was deleted).
            Ok(None) => {}
            Err(error) => {
                let current = shared
                    .state
                    .lock()
                    .shards
                    .get(&self.tp)
                    .is_some_and(|s| s.epoch == self.origin.epoch && !s.releasing);
                // A channel closed on purpose is no failure.
                if current {
                    let _ = self.events.send(Event::Failed(error));
                }
            }
        }
    }
}

impl ConsumerDelegate for Pump {
    fn on_new_delivery(
        &self,
        delivery: DeliveryResult,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        // Done here rather than in the future, which lapin spawns: the
        // spawned futures of successive deliveries may run in any order.
        self.take(delivery);
        Box::pin(std::future::ready(()))
    }
}
