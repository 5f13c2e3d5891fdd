//! Sending batches: each record goes to librdkafka's queue with an explicit
//! partition for keyed messages, and each send resolves by its delivery
//! report (acks=all on the idempotent producer), so a receipt means the
//! in-sync replicas have the record.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mq_core::{Message, MessageId, Receipt, Result};
use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use rdkafka::Message as _;
use tokio::sync::Notify;

use crate::codec::{headers_of, timestamp_of};
use crate::error::map;
use crate::topics::{partition_of, Topics};

/// A producer whose delivery reports settle the batches that sent them.
pub(crate) type KafkaProducer = ThreadedProducer<Deliveries>;

/// Routes each delivery report to the batch of its record.
pub(crate) struct Deliveries;

impl ClientContext for Deliveries {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        crate::logging::forward(level, facility, message);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Slot>;

    fn delivery(&self, result: &DeliveryResult<'_>, slot: Box<Slot>) {
        let outcome = match result {
            Ok(record) => Ok((record.partition(), record.offset())),
            Err((error, _)) => Err(error.clone()),
        };
        slot.batch.settle(slot.index, outcome);
    }
}

/// One record's place in its batch.
pub(crate) struct Slot {
    batch: Arc<Pending>,
    index: usize,
}

/// Where a delivered record landed, or why it was not.
type Outcome = std::result::Result<(i32, i64), KafkaError>;

/// A batch waiting for its delivery reports.
struct Pending {
    outcomes: Mutex<Vec<Option<Outcome>>>,
    left: AtomicUsize,
    done: Notify,
}

impl Pending {
    fn settle(&self, index: usize, outcome: Outcome) {
        if let Some(slot) = self.outcomes.lock().get_mut(index) {
            *slot = Some(outcome);
        }
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

/// How long a send waits for room when librdkafka's queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(2);

/// Sends `batch` through `producer` and waits for every delivery report.
/// Receipts come in order; the first failure fails the call (records of
/// the batch delivered before it stay delivered: at-least-once).
pub(crate) async fn send(
    producer: &KafkaProducer,
    topics: &Topics,
    batch: Vec<Message>,
) -> Result<Vec<Receipt>> {
    let n = batch.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let pending = Arc::new(Pending {
        outcomes: Mutex::new((0..n).map(|_| None).collect()),
        left: AtomicUsize::new(n),
        done: Notify::new(),
    });
    let mut ids = Vec::with_capacity(n);
    // Partition counts of the batch's topics (a batch has few).
    let mut counts: Vec<(&str, u32)> = Vec::new();
    for (index, message) in batch.iter().enumerate() {
        let id = message.id().unwrap_or_default();
        ids.push(id);
        let topic = message.topic();
        let partition = match message.key() {
            Some(key) => {
                let count = match counts.iter().find(|(t, _)| *t == topic) {
                    Some((_, c)) => *c,
                    None => {
                        let c = topics.partitions(topic).await?;
                        counts.push((topic, c));
                        c
                    }
                };
                Some(partition_of(key, count))
            }
            None => {
                // Created on first use here too, as a keyed send would.
                if !counts.iter().any(|(t, _)| *t == topic) {
                    counts.push((topic, topics.partitions(topic).await?));
                }
                None
            }
        };
        let slot = Box::new(Slot {
            batch: pending.clone(),
            index,
        });
        let mut record = BaseRecord::with_opaque_to(topic, slot)
            .payload(&message.payload()[..])
            .headers(headers_of(message, id))
            .timestamp(timestamp_of(message));
        if let Some(key) = message.key() {
            record = record.key(key.as_bytes());
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((error, back)) => {
                    // The slot comes back with the record: settle it here.
                    drop(back);
                    pending.settle(index, Err(error));
                    break;
                }
            }
        }
    }
    while pending.left.load(Ordering::Acquire) > 0 {
        pending.done.notified().await;
    }
    let outcomes = std::mem::take(&mut *pending.outcomes.lock());
    receipts(&batch, ids, outcomes)
}

fn receipts(
    batch: &[Message],
    ids: Vec<MessageId>,
    outcomes: Vec<Option<Outcome>>,
) -> Result<Vec<Receipt>> {
    let mut out = Vec::with_capacity(batch.len());
    for ((message, id), outcome) in batch.iter().zip(ids).zip(outcomes) {
        match outcome {
            Some(Ok((partition, offset))) => out.push(Receipt::new(
                id,
                message.topic_arc().clone(),
                partition.max(0) as u32,
                u64::try_from(offset).ok(),
            )),
            Some(Err(e)) => return Err(map(e, &format!("publish to {}", message.topic()))),
            None => {
                return Err(mq_core::Error::Backend {
                    backend: crate::error::BACKEND,
                    message: "a send got no delivery report".into(),
                    source: None,
                })
            }
        }
    }
    Ok(out)
}
