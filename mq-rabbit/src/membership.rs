//! Who else is in the group, so members split the shards between them.
//!
//! With single-active-consumer, RabbitMQ gives each shard queue to its
//! first consumer, so members that all consumed every shard would leave
//! all work to the first one. Instead members announce themselves on a
//! fanout exchange per topic and group (`join` on arrival, `hb` every
//! `member_heartbeat`, `bye` on leaving; each member reads them through an
//! exclusive queue) and consume only their share: sorted by id (time
//! ordered, so join order), member `i` of `n` consumes the shards of
//! [`share`](mq_core::driver::assignment::share). A member silent for three
//! heartbeats is dropped and its shards taken over. Views may briefly
//! differ while a member joins or leaves; single active consumer still
//! keeps one active consumer per shard queue at any time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use mq_core::Result;
use tokio::sync::mpsc;

use crate::error::map;
use crate::names;
use crate::subscription::Event;

/// The members this member knows of, itself included.
pub(crate) struct Members {
    me: String,
    seen: BTreeMap<String, Instant>,
    ttl: Duration,
}

impl Members {
    pub(crate) fn new(me: String, heartbeat: Duration) -> Self {
        let mut seen = BTreeMap::new();
        seen.insert(me.clone(), Instant::now());
        Members {
            me,
            seen,
            ttl: heartbeat * 3 + Duration::from_millis(500),
        }
    }

    /// Records an announcement; true when the member set changed.
    pub(crate) fn observe(&mut self, kind: &str, id: &str) -> bool {
        if id == self.me {
            return false;
        }
        if kind == "bye" {
            return self.seen.remove(id).is_some();
        }
        self.seen.insert(id.to_owned(), Instant::now()).is_none()
    }

    /// Drops members silent for too long; true when any was dropped.
    pub(crate) fn expire(&mut self) -> bool {
        let now = Instant::now();
        self.seen.insert(self.me.clone(), now);
        let before = self.seen.len();
        let ttl = self.ttl;
        self.seen.retain(|_, at| now.duration_since(*at) <= ttl);
        self.seen.len() != before
    }

    /// This member's index among the members ordered by id, and how many
    /// there are: its place in the split of the shards.
    pub(crate) fn position(&self) -> (usize, usize) {
        let index = self.seen.keys().position(|id| *id == self.me).unwrap_or(0);
        (index, self.seen.len())
    }
}

/// This member's announcements on the group's fanout exchange.
pub(crate) struct Membership {
    exchange: ShortString,
    member: Vec<u8>,
}

impl Membership {
    /// Listens for the other members and announces this one.
    pub(crate) async fn start(
        channel: &Channel,
        topic: &str,
        group: &str,
        member: &str,
        events: mpsc::UnboundedSender<Event>,
    ) -> Result<Self> {
        let exchange = names::short(&names::members_exchange(topic, group));
        channel
            .exchange_declare(
                exchange.clone(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| map(e, "declaring the membership exchange"))?;
        let queue = channel
            .queue_declare(
                ShortString::from(""),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| map(e, "declaring the membership queue"))?;
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.clone(),
                ShortString::from(""),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| map(e, "binding the membership queue"))?;
        let mut consumer = channel
            .basic_consume(
                queue.name().clone(),
                ShortString::from(format!("{member}-members")),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| map(e, "reading the membership queue"))?;
        tokio::spawn(async move {
            while let Some(item) = consumer.next().await {
                match item {
                    Ok(delivery) => {
                        let Ok(id) = String::from_utf8(delivery.data) else {
                            continue;
                        };
                        let kind = delivery.routing_key.as_str().to_owned();
                        if events.send(Event::Member { kind, id }).is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        let _ = events.send(Event::Failed(error));
                        return;
                    }
                }
            }
        });
        let membership = Membership {
            exchange,
            member: member.as_bytes().to_vec(),
        };
        membership.announce(channel, "join").await?;
        Ok(membership)
    }

    /// Publishes `join`, `hb` or `bye`.
    pub(crate) async fn announce(&self, channel: &Channel, kind: &str) -> Result<()> {
        channel
            .basic_publish(
                self.exchange.clone(),
                ShortString::from(kind),
                BasicPublishOptions::default(),
                &self.member,
                BasicProperties::default(),
            )
            .await
            .map_err(|e| map(e, "announcing group membership"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mq_core::driver::assignment::owns;

    #[test]
    fn members_split_shards_in_join_order() {
        let mut a = Members::new("a".into(), Duration::from_secs(1));
        assert_eq!(a.position(), (0, 1));
        assert!(a.observe("join", "b"));
        assert!(!a.observe("hb", "b"));
        assert_eq!(a.position(), (0, 2));
        let mut b = Members::new("b".into(), Duration::from_secs(1));
        b.observe("hb", "a");
        assert_eq!(b.position(), (1, 2));
        let (index, count) = b.position();
        assert!(owns(3, count, index) && !owns(2, count, index));
        assert!(a.observe("bye", "b"));
        assert!(!a.observe("bye", "b"));
        assert_eq!(a.position(), (0, 1));
    }
}
