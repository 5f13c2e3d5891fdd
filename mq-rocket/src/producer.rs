//! Publishing: one producer per driver, sends bounded in flight.
//!
//! Each message of a batch gets its queue first: a keyed message the
//! queue of [`partition_for_key`] over the topic's partitions (so one key
//! stays on one queue, in order), others round robin. Then the batch is
//! split per queue, keeping publish order inside each part, and each part
//! is sent as RocketMQ batches (one request, stored in order) of at most
//! [`BATCH_BYTES`]; timer messages, which RocketMQ does not batch, go one
//! by one. Parts for different queues are sent concurrently, at most
//! `max_in_flight` requests at once across the driver: the client's own
//! async sends fail with `transport.admission.queue_saturated` when many
//! are started unthrottled.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::try_join_all;
use mq_core::driver::{partition_for_key, Backoff};
use mq_core::{Error, Message, MessageId, Receipt, Result};
use rocketmq_client_rust::DefaultMQProducer;
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_model::common::message::message_single::Message as RocketMessage;
use rocketmq_model::result::SendResult;
use tokio::sync::Semaphore;

use crate::cluster::Route;
use crate::codec;
use crate::error::map;

/// Largest body total of one batch request (the broker takes 4 MiB).
const BATCH_BYTES: usize = 1024 * 1024;
/// Most messages in one batch request.
const BATCH_COUNT: usize = 256;
/// Retries of a send the broker refused as busy (its flow control), and
/// the pauses between them: about 6.5 s in all, as a loaded broker (a
/// slow disk, a busy machine) can refuse for seconds.
const BUSY_RETRIES: u32 = 10;
const BUSY_PAUSE: Backoff = Backoff::new(
    std::time::Duration::from_millis(50),
    std::time::Duration::from_secs(1),
);

/// The driver's producer and its in-flight bound.
pub(crate) struct Producer {
    /// Written only to shut it down.
    producer: tokio::sync::RwLock<DefaultMQProducer>,
    permits: Semaphore,
    next: AtomicUsize,
    timeout: u64,
}

/// Messages of one batch bound for one queue, in publish order.
struct Part {
    queue: MessageQueue,
    partition: u32,
    /// Positions in the batch and the encoded messages.
    items: Vec<(usize, MessageId, RocketMessage, bool)>,
}

impl Producer {
    pub(crate) fn new(producer: DefaultMQProducer, max_in_flight: usize, timeout: u64) -> Self {
        Producer {
            producer: tokio::sync::RwLock::new(producer),
            permits: Semaphore::new(max_in_flight),
            next: AtomicUsize::new(0),
            timeout,
        }
    }

    /// Stops the producer; sends fail from then on.
    pub(crate) async fn shutdown(&self) {
        self.permits.close();
        self.producer.write().await.shutdown().await;
    }

    /// Publishes `batch` (all of `route`'s topic) and returns receipts in order.
    pub(crate) async fn publish(&self, route: &Route, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        let n = route.queues.len() as u32;
        let mut parts: Vec<Part> = Vec::new();
        let count = batch.len();
        for (index, message) in batch.iter().enumerate() {
            let partition = match message.key() {
                Some(key) => partition_for_key(key, n),
                None => (self.next.fetch_add(1, Ordering::Relaxed) % n as usize) as u32,
            };
            let id = message
                .id()
                .ok_or_else(|| Error::invalid("message", message.topic(), "has no id"))?;
            let timed = message.deliver_at().is_some();
            let encoded = codec::encode(message)?;
            match parts.iter_mut().find(|p| p.partition == partition) {
                Some(part) => part.items.push((index, id, encoded, timed)),
                None => parts.push(Part {
                    queue: route.queues[partition as usize].clone(),
                    partition,
                    items: vec![(index, id, encoded, timed)],
                }),
            }
        }
        let topic: Arc<str> = batch
            .first()
            .map(|m| m.topic_arc().clone())
            .unwrap_or_else(|| Arc::from(""));
        drop(batch);
        let sent = try_join_all(parts.into_iter().map(|part| self.send_part(&topic, part))).await?;
        let mut receipts: Vec<Option<Receipt>> = vec![None; count];
        for (index, receipt) in sent.into_iter().flatten() {
            receipts[index] = Some(receipt);
        }
        receipts
            .into_iter()
            .map(|r| {
                r.ok_or_else(|| {
                    Error::backend(
                        crate::error::BACKEND,
                        "a send had no result",
                        std::io::Error::other("missing receipt"),
                    )
                })
            })
            .collect()
    }

    /// Sends one queue's messages in order: runs of plain messages as
    /// batches, timer messages alone.
    async fn send_part(&self, topic: &Arc<str>, part: Part) -> Result<Vec<(usize, Receipt)>> {
        let mut out = Vec::with_capacity(part.items.len());
        let mut run: Vec<(usize, MessageId, RocketMessage)> = Vec::new();
        let mut run_bytes = 0;
        for (index, id, message, timed) in part.items {
            let size = message.body_slice().len() + 256;
            if timed
                || run.len() == BATCH_COUNT
                || (run_bytes + size > BATCH_BYTES && !run.is_empty())
            {
                let chunk = std::mem::take(&mut run);
                run_bytes = 0;
                out.extend(
                    self.send_run(topic, &part.queue, part.partition, chunk)
                        .await?,
                );
            }
            if timed {
                let single = vec![(index, id, message)];
                out.extend(
                    self.send_run(topic, &part.queue, part.partition, single)
                        .await?,
                );
            } else {
                run_bytes += size;
                run.push((index, id, message));
            }
        }
        if !run.is_empty() {
            out.extend(
                self.send_run(topic, &part.queue, part.partition, run)
                    .await?,
            );
        }
        Ok(out)
    }

    /// One request: a single send or a batch, to `queue`.
    async fn send_run(
        &self,
        topic: &Arc<str>,
        queue: &MessageQueue,
        partition: u32,
        run: Vec<(usize, MessageId, RocketMessage)>,
    ) -> Result<Vec<(usize, Receipt)>> {
        if run.is_empty() {
            return Ok(Vec::new());
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Closed("rocketmq producer"))?;
        let positions: Vec<(usize, MessageId)> = run.iter().map(|(i, id, _)| (*i, *id)).collect();
        let messages: Vec<RocketMessage> = run.into_iter().map(|(_, _, m)| m).collect();
        let producer = self.producer.read().await;
        let mut attempt = 0;
        let result: SendResult = loop {
            let sent = if messages.len() == 1 {
                producer
                    .send_to_queue_with_timeout(messages[0].clone(), queue.clone(), self.timeout)
                    .await
            } else {
                producer
                    .send_batch_to_queue_with_timeout(messages.clone(), queue.clone(), self.timeout)
                    .await
                    .map(Some)
            };
            match sent {
                Ok(Some(result)) => break result,
                Ok(None) => {
                    return Err(Error::Timeout(std::time::Duration::from_millis(
                        self.timeout,
                    )))
                }
                // A busy broker stored nothing: try again shortly, as
                // RocketMQ's own clients do, before giving up.
                Err(e) if attempt < BUSY_RETRIES && crate::error::is_busy(&e) => {
                    attempt += 1;
                    tokio::time::sleep(BUSY_PAUSE.after(attempt)).await;
                }
                Err(e) => return Err(map(e, &format!("publishing to {topic}"))),
            }
        };
        let ids: Vec<&str> = result
            .msg_id
            .as_ref()
            .map(|ids| ids.as_str().split(',').collect())
            .unwrap_or_default();
        Ok(positions
            .into_iter()
            .enumerate()
            .map(|(i, (index, id))| {
                let mut receipt = Receipt::new(
                    id,
                    topic.clone(),
                    partition,
                    Some(result.queue_offset + i as u64),
                );
                receipt.broker_id = ids.get(i).map(|s| (*s).to_owned());
                (index, receipt)
            })
            .collect())
    }
}
