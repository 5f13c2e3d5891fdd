//! Messages to AMQP properties and back.
//!
//! - id → `message_id`; publish time → `timestamp` (seconds, for other AMQP
//!   clients) and header `mq-published-at` (milliseconds);
//! - key → header `mq-key` (the routing key carries only its hash bits);
//! - headers → header `mq-headers`, an array `[name, value, name, value, ...]`,
//!   because an AMQP table is unordered and mq headers are ordered;
//! - idempotency key → header `mq-idempotency-key`.
//!
//! Messages from other AMQP clients decode too: their string headers become
//! mq headers (except the broker's `x-*` ones) and a missing id is made up.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use mq_core::driver::{AckToken, RawDelivery};
use mq_core::message::reserved;
use mq_core::{Headers, Message, MessageId};

#[cfg(test)]
mod fuzz;

const KEY: &str = "mq-key";
const HEADERS: &str = "mq-headers";
const DELIVERY_COUNT: &str = "x-delivery-count";
/// AMQP delivery mode "persistent".
const PERSISTENT: u8 = 2;

/// The properties carrying everything of `message` but its payload.
pub(crate) fn encode(message: &Message, id: MessageId, now: SystemTime) -> BasicProperties {
    let mut table = FieldTable::default();
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    table.insert(
        ShortString::from(reserved::PUBLISHED_AT),
        AMQPValue::LongLongInt(since_epoch.as_millis() as i64),
    );
    if let Some(key) = message.key() {
        table.insert(
            ShortString::from(KEY),
            AMQPValue::LongString(LongString::from(key)),
        );
    }
    if !message.headers().is_empty() {
        let mut pairs = FieldArray::default();
        for (name, value) in message.headers().iter() {
            pairs.push(AMQPValue::LongString(LongString::from(name)));
            pairs.push(AMQPValue::LongString(LongString::from(value)));
        }
        table.insert(ShortString::from(HEADERS), AMQPValue::FieldArray(pairs));
    }
    if let Some(key) = message.idempotency_key() {
        table.insert(
            ShortString::from(reserved::IDEMPOTENCY_KEY),
            AMQPValue::LongString(LongString::from(key)),
        );
    }
    BasicProperties::default()
        .with_message_id(ShortString::from(id.to_string()))
        .with_timestamp(since_epoch.as_secs())
        .with_delivery_mode(PERSISTENT)
        .with_headers(table)
}

/// Where a delivery came from, for its token.
pub(crate) struct Origin {
    pub topic: Arc<str>,
    pub shard: u32,
    /// The epoch of the channel the delivery came on (delivery tags are
    /// per channel): acks for a channel that is gone are void.
    pub epoch: u64,
}

/// The channel epoch a token carries in its handle.
pub(crate) fn epoch(token: &AckToken) -> Option<u64> {
    let handle = <[u8; 8]>::try_from(token.handle.as_deref()?).ok()?;
    Some(u64::from_be_bytes(handle))
}

/// The delivery as the core sees it.
pub(crate) fn decode(delivery: lapin::message::Delivery, origin: &Origin) -> RawDelivery {
    let properties = &delivery.properties;
    let empty = FieldTable::default();
    let table = properties.headers().as_ref().unwrap_or(&empty);
    let mut message = Message::new(origin.topic.clone(), Bytes::from(delivery.data));
    let id = properties
        .message_id()
        .as_ref()
        .and_then(|id| MessageId::parse(id.as_str()).ok())
        .unwrap_or_default();
    message = message.with_id(id);
    if let Some(key) = table.inner().get(KEY).and_then(text) {
        message = message.with_key(key);
    }
    let mut headers = Headers::new();
    match table.inner().get(HEADERS) {
        Some(AMQPValue::FieldArray(pairs)) => {
            for pair in pairs.as_slice().chunks_exact(2) {
                if let (Some(name), Some(value)) = (text(&pair[0]), text(&pair[1])) {
                    headers.insert(name, value);
                }
            }
        }
        _ => {
            // A message from another AMQP client: its string headers.
            for (name, value) in table {
                let name = name.as_str();
                if name.starts_with("x-") || name.starts_with("mq-") {
                    continue;
                }
                if let Some(value) = text(value) {
                    headers.insert(name, value);
                }
            }
        }
    }
    if let Some(key) = table.inner().get(reserved::IDEMPOTENCY_KEY).and_then(text) {
        headers.insert(reserved::IDEMPOTENCY_KEY, key);
    }
    message = message.with_headers(headers);
    // Checked: another client may send any 64-bit timestamp, and one past
    // what the clock can hold reads as unknown, like a missing one.
    let published_at = match table.inner().get(reserved::PUBLISHED_AT) {
        Some(value) => {
            integer(value).and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
        }
        None => properties
            .timestamp()
            .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs))),
    };
    message = message.with_published_at(published_at.unwrap_or_else(SystemTime::now));
    // Quorum queues count earlier deliveries in x-delivery-count; other
    // queues only flag a redelivery.
    let earlier = table
        .inner()
        .get(DELIVERY_COUNT)
        .and_then(integer)
        .unwrap_or(0);
    let mut delivery_count = u32::try_from(earlier).unwrap_or(u32::MAX).saturating_add(1);
    if delivery.redelivered {
        delivery_count = delivery_count.max(2);
    }
    let token = AckToken::new(origin.topic.clone(), origin.shard, delivery.delivery_tag)
        .with_handle(origin.epoch.to_be_bytes().to_vec());
    RawDelivery::new(message, token, SystemTime::now()).with_delivery_count(delivery_count)
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn integer(value: &AMQPValue) -> Option<u64> {
    match value {
        AMQPValue::LongLongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::LongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::ShortInt(v) => u64::try_from(*v).ok(),
        AMQPValue::ShortShortInt(v) => u64::try_from(*v).ok(),
        AMQPValue::LongUInt(v) => Some(u64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(u64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(u64::from(*v)),
        AMQPValue::Timestamp(v) => Some(*v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(properties: BasicProperties, redelivered: bool) -> lapin::message::Delivery {
        let mut d = lapin::message::Delivery::mock(
            7,
            "mq/t".into(),
            "0.0".into(),
            redelivered,
            b"payload".to_vec(),
        );
        d.properties = properties;
        d
    }

    #[test]
    fn round_trip_keeps_everything() {
        let id = MessageId::new();
        let message = Message::new("t", "payload")
            .with_key("ключ-🔑")
            .with_header("z", "1")
            .with_header("a", "")
            .with_header(reserved::RETRY_TOPIC, "t");
        let now = SystemTime::now();
        let properties = encode(&message, id, now);
        let origin = Origin {
            topic: Arc::from("t"),
            shard: 3,
            epoch: 9,
        };
        let raw = decode(delivered(properties, false), &origin);
        assert_eq!(raw.message.id(), Some(id));
        assert_eq!(raw.message.key(), Some("ключ-🔑"));
        let names: Vec<&str> = raw.message.headers().iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["z", "a", reserved::RETRY_TOPIC]);
        assert_eq!(raw.delivery_count, 1);
        assert_eq!((&*raw.token.topic, raw.token.partition), ("t", 3));
        assert_eq!((raw.token.offset, epoch(&raw.token)), (7, Some(9)));
        assert_eq!(raw.partition, 3);
        let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
        assert_eq!(ms(raw.message.published_at().unwrap()), ms(now));
    }

    #[test]
    fn foreign_messages_and_delivery_counts() {
        let mut table = FieldTable::default();
        table.insert("x-delivery-count".into(), AMQPValue::LongLongInt(2));
        table.insert("tenant".into(), AMQPValue::LongString("acme".into()));
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::default()),
        );
        let raw = decode(
            delivered(BasicProperties::default().with_headers(table), true),
            &Origin {
                topic: Arc::from("t"),
                shard: 0,
                epoch: 1,
            },
        );
        assert_eq!(raw.delivery_count, 3);
        assert!(raw.message.id().is_some());
        let headers: Vec<(&str, &str)> = raw.message.headers().iter().collect();
        assert_eq!(headers, [("tenant", "acme")]);
        let raw = decode(
            delivered(BasicProperties::default(), true),
            &Origin {
                topic: Arc::from("t"),
                shard: 0,
                epoch: 1,
            },
        );
        assert_eq!(raw.delivery_count, 2);
    }
}
