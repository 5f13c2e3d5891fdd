//! What this client holds of each shard queue: deliveries the broker handed
//! to its channels that are not settled yet, the part of a queue's backlog
//! the queue itself does not report (over AMQP a queue counts only its
//! ready messages).
//!
//! Lag must never read below the backlog, so a delivery is counted from
//! the moment lapin reads it off the connection (the subscription counts
//! it in a consumer delegate, which runs in frame order) until its ack is
//! sent, or, for what a closed channel gave back, until the broker shows
//! it ready again. Before counting, a round trip on each channel that
//! consumes the queue makes sure every delivery the broker sent before is
//! in: the broker answers a channel's requests after the deliveries it
//! sent on it earlier. A channel counts from before its consumer starts,
//! and the round trip waits until the consumer's delegate is installed
//! (lapin keeps what arrives before that, which installing it hands over).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::BasicQosOptions;
use lapin::Channel;
use parking_lot::Mutex;
use tokio::sync::watch;

/// How long a count waits for the round trip on a consuming channel.
const SYNC_LIMIT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Holdings {
    queues: Mutex<HashMap<Arc<str>, Held>>,
}

#[derive(Default)]
struct Held {
    /// Deliveries received and not settled, or given back and not seen
    /// back in the queue yet.
    count: u64,
    /// The channels consuming the queue, by epoch, with their prefetch.
    consumers: Vec<Consuming>,
}

struct Consuming {
    epoch: u64,
    channel: Channel,
    prefetch: u16,
    /// Set once every delivery on the channel reaches [`Holdings::received`].
    started: watch::Sender<bool>,
}

impl Holdings {
    /// `channel` (of `epoch`, with `prefetch`) is about to consume `queue`.
    pub(crate) fn consuming(&self, queue: &Arc<str>, epoch: u64, channel: Channel, prefetch: u16) {
        self.queues
            .lock()
            .entry(queue.clone())
            .or_default()
            .consumers
            .push(Consuming {
                epoch,
                channel,
                prefetch,
                started: watch::channel(false).0,
            });
    }

    /// The consumer of `epoch` on `queue` counts every delivery from now on.
    pub(crate) fn started(&self, queue: &str, epoch: u64) {
        if let Some(held) = self.queues.lock().get(queue) {
            for consumer in held.consumers.iter().filter(|c| c.epoch == epoch) {
                consumer.started.send_replace(true);
            }
        }
    }

    /// A delivery of `queue` arrived.
    pub(crate) fn received(&self, queue: &Arc<str>) {
        self.queues.lock().entry(queue.clone()).or_default().count += 1;
    }

    /// `n` deliveries of `queue` were settled.
    pub(crate) fn settled(&self, queue: &str, n: u64) {
        let mut queues = self.queues.lock();
        if let Some(held) = queues.get_mut(queue) {
            held.count = held.count.saturating_sub(n);
            if held.count == 0 && held.consumers.is_empty() {
                queues.remove(queue);
            }
        }
    }

    /// The channel of `epoch` stopped consuming `queue`, and the `n`
    /// deliveries it held are back in the queue (or will never be seen
    /// there, the connection being gone).
    pub(crate) fn returned(&self, queue: &str, epoch: u64, n: u64) {
        if let Some(held) = self.queues.lock().get_mut(queue) {
            held.consumers.retain(|c| c.epoch != epoch);
        }
        self.settled(queue, n);
    }

    /// Deliveries of `queue` this client holds, including every one the
    /// broker sent before this call.
    pub(crate) async fn count(&self, queue: &str) -> u64 {
        let channels: Vec<(Channel, u16, watch::Receiver<bool>)> =
            match self.queues.lock().get(queue) {
                Some(held) => held
                    .consumers
                    .iter()
                    .map(|c| (c.channel.clone(), c.prefetch, c.started.subscribe()))
                    .collect(),
                None => return 0,
            };
        // The channel's own prefetch again: no change for its consumer, and
        // the reply comes after every delivery sent before it. A channel
        // closing meanwhile gives its deliveries back, which stay counted
        // until the broker has them.
        let syncs = channels
            .into_iter()
            .map(|(channel, prefetch, mut started)| async move {
                let synced = async {
                    let _ = started.wait_for(|s| *s).await;
                    channel
                        .basic_qos(prefetch, BasicQosOptions::default())
                        .await
                };
                let _ = tokio::time::timeout(SYNC_LIMIT, synced).await;
            });
        futures::future::join_all(syncs).await;
        self.queues.lock().get(queue).map_or(0, |held| held.count)
    }
}
