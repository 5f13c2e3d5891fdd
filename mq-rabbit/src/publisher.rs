//! Publishing with confirms over one shared confirm channel.
//!
//! A batch is pipelined: every message is sent, then every confirm awaited.
//! A message no group queue takes (a topic without groups) is confirmed
//! and dropped, as RabbitMQ does by default and as
//! `Capabilities::retains_before_group` (false) says: it is not
//! `mandatory`. When the channel or connection dies with
//! messages unconfirmed, they are published again on a new one (after a
//! reconnect) until `publish_timeout`; consumers dedup repeats by message id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::protocol::AMQPSoftError;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};
use mq_core::driver::Backoff;
use mq_core::{Error, Message, Receipt, Result};
use tokio::time::Instant;

use crate::codec;
use crate::connection::Connector;
use crate::error::{is_transport, map, oversize, soft_kind};
use crate::names;
use crate::topology::Topology;

/// A message ready to send.
pub(crate) struct Outgoing {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    pub properties: BasicProperties,
    pub payload: Bytes,
    pub topic: Arc<str>,
}

/// Encodes a batch and computes its receipts; declares exchanges of topics
/// not seen before.
pub(crate) async fn prepare(
    topology: &Topology,
    round_robin: &AtomicU32,
    batch: Vec<Message>,
) -> Result<(Vec<Outgoing>, Vec<Receipt>)> {
    let now = SystemTime::now();
    let mut shards: HashMap<Arc<str>, u32> = HashMap::new();
    let mut outgoing = Vec::with_capacity(batch.len());
    let mut receipts = Vec::with_capacity(batch.len());
    for message in batch {
        let topic = message.topic_arc().clone();
        let count = match shards.get(&topic) {
            Some(count) => *count,
            None => {
                let count = topology.prepare_publish(&topic).await?;
                shards.insert(topic.clone(), count);
                count
            }
        };
        let bits = match message.key() {
            Some(key) => names::key_bits(key),
            None => round_robin.fetch_add(1, Ordering::Relaxed),
        };
        let id = message.id().unwrap_or_default();
        receipts.push(Receipt::new(id, topic.clone(), bits % count.max(1), None));
        outgoing.push(Outgoing {
            exchange: names::short(&names::exchange(&topic)),
            routing_key: names::routing_key(bits),
            properties: codec::encode(&message, id, now),
            payload: message.payload().clone(),
            topic,
        });
    }
    Ok((outgoing, receipts))
}

pub(crate) struct Publisher {
    connector: Arc<Connector>,
    channel: tokio::sync::Mutex<Option<Channel>>,
}

/// How one message fared in one round.
enum Fate {
    Confirmed,
    Retry(Error),
    Fail(Error),
}

impl Publisher {
    pub(crate) fn new(connector: Arc<Connector>) -> Self {
        Publisher {
            connector,
            channel: tokio::sync::Mutex::new(None),
        }
    }

    /// The confirm channel, opened (after a reconnect if need be) when missing or dead.
    async fn channel(&self, deadline: Instant) -> Result<Channel> {
        let mut slot = self.channel.lock().await;
        if let Some(channel) = slot.as_ref() {
            if channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        let (channel, _) = self.connector.channel(deadline).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| map(e, "enabling publisher confirms"))?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Publishes and waits for every confirm, re-publishing what a lost
    /// channel left unconfirmed.
    pub(crate) async fn publish(&self, topology: &Topology, messages: &[Outgoing]) -> Result<()> {
        let started = Instant::now();
        let deadline = self.connector.deadline();
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        let backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        let mut rounds = 0;
        loop {
            let channel = self.channel(deadline).await?;
            let fates = send_round(&channel, messages, &pending).await;
            let mut retry = Vec::new();
            let mut last_error = None;
            for (index, fate) in pending.iter().zip(fates) {
                match fate {
                    Fate::Confirmed => {}
                    Fate::Fail(error) => return Err(error),
                    Fate::Retry(error) => {
                        if let Error::Rejected(_) = error {
                            // The exchange vanished (deleted elsewhere): declare it again.
                            topology.forget(&messages[*index].topic);
                            let _ = topology.prepare_publish(&messages[*index].topic).await;
                        }
                        retry.push(*index);
                        last_error = Some(error);
                    }
                }
            }
            if retry.is_empty() {
                return Ok(());
            }
            rounds += 1;
            let Some(pause) = backoff.within(rounds, deadline) else {
                return Err(last_error.unwrap_or(Error::Timeout(started.elapsed())));
            };
            if let Some(error) = &last_error {
                tracing::warn!(%error, count = retry.len(), "re-publishing unconfirmed messages");
            }
            tokio::time::sleep(pause).await;
            pending = retry;
        }
    }
}

/// Sends `pending` on `channel`, then collects each confirm.
async fn send_round(channel: &Channel, messages: &[Outgoing], pending: &[usize]) -> Vec<Fate> {
    let mut confirms = Vec::with_capacity(pending.len());
    for &index in pending {
        let m = &messages[index];
        let sent = channel
            .basic_publish(
                m.exchange.clone(),
                m.routing_key.clone(),
                BasicPublishOptions::default(),
                &m.payload,
                m.properties.clone(),
            )
            .await;
        confirms.push(sent);
    }
    let mut fates = Vec::with_capacity(pending.len());
    for (&index, sent) in pending.iter().zip(confirms) {
        let m = &messages[index];
        let confirmed = match sent {
            Ok(confirm) => confirm.await,
            Err(error) => Err(error),
        };
        fates.push(match confirmed {
            Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested) => Fate::Confirmed,
            Ok(Confirmation::Nack(_)) => Fate::Retry(Error::Backend {
                backend: crate::error::BACKEND,
                message: format!("the broker could not store a message for topic {}", m.topic),
                source: None,
            }),
            Err(error) => classify(error, m),
        });
    }
    fates
}

fn classify(error: lapin::Error, message: &Outgoing) -> Fate {
    if let lapin::ErrorKind::ProtocolError(amqp) = error.kind() {
        if let Some((size, limit)) = oversize(amqp.get_message().as_str()) {
            // The channel closes for the oversize message; the others on it are re-sent.
            return if size == message.payload.len() {
                Fate::Fail(Error::TooLarge { size, limit })
            } else {
                Fate::Retry(map(error, "publishing"))
            };
        }
    }
    if soft_kind(&error) == Some(AMQPSoftError::NOTFOUND) {
        return Fate::Retry(Error::Rejected(format!(
            "the exchange of topic {} is missing",
            message.topic
        )));
    }
    if is_transport(&error) {
        // The channel or connection died (maybe for another message): publish again.
        return Fate::Retry(map(error, &format!("publishing to {}", message.topic)));
    }
    Fate::Fail(map(error, &format!("publishing to {}", message.topic)))
}
