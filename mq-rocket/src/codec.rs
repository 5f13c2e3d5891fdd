//! Messages as RocketMQ messages, both ways.
//!
//! | mq | RocketMQ message |
//! |---|---|
//! | topic | topic |
//! | payload | body (an empty payload is sent as one byte and property `mq-empty`: the broker refuses empty bodies) |
//! | id | property `mq-id` (hyphenated UUID) |
//! | ordering key | property `mq-key`; the queue is chosen from it (see the producer) |
//! | idempotency key | property `mq-idempotency-key` |
//! | a key RocketMQ's property format cannot carry (empty, or with its separators `\u{1}` `\u{2}`) | the same property name plus `.json`, holding the key as a JSON string |
//! | headers, in order | property `mq-headers`: a JSON array of `[name, value]` pairs (JSON escapes the control characters RocketMQ uses as property separators) |
//! | publish time | the broker's store timestamp (when it accepted the message) |
//! | due time | `TIMER_DELIVER_MS` (a timer message), rounded up to the millisecond |
//!
//! **Foreign messages** (written by other clients) are read as well, never
//! refused: without `mq-id` the id is derived from the broker's message id
//! (the same for every redelivery and every group), without `mq-headers`
//! their user properties become headers, and a message key (`KEYS`) is not
//! taken as an ordering key.

use bytes::Bytes;
use cheetah_string::CheetahString;
use mq_core::driver::clock::{due_millis, from_epoch_millis};
use mq_core::message::reserved::{ID, IDEMPOTENCY_KEY};
use mq_core::message::MessageParts;
use mq_core::{Error, Headers, Message, MessageId, Result};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message as RocketMessage;
use rocketmq_model::common::message::MessageTrait;
use std::sync::Arc;
use uuid::Uuid;

#[cfg(test)]
mod fuzz;

/// Property holding the ordering key.
pub(crate) const KEY: &str = "mq-key";
/// Property holding the headers as JSON.
const HEADERS: &str = "mq-headers";
/// Property marking a payload that was empty.
const EMPTY: &str = "mq-empty";
/// Suffix of a property holding user text as JSON (see [`put_text`]).
const JSON_SUFFIX: &str = ".json";
/// RocketMQ's separators between a property's name and value, and
/// between properties.
const NAME_VALUE_SEPARATOR: char = '\u{1}';
const PROPERTY_SEPARATOR: char = '\u{2}';
/// Namespace of ids derived from broker message ids.
const FOREIGN: Uuid = Uuid::from_u128(0x6d71_726f_636b_6574_8000_0000_0000_0001);

/// The RocketMQ message for `message` (which has its id, assigned by the core).
pub(crate) fn encode(message: &Message) -> Result<RocketMessage> {
    let id = message
        .id()
        .ok_or_else(|| Error::invalid("message", message.topic(), "has no id"))?;
    let payload = message.payload();
    let body = if payload.is_empty() {
        Bytes::from_static(b"\0")
    } else {
        payload.clone()
    };
    let mut out = RocketMessage::builder()
        .topic(crate::names::to_broker(message.topic()))
        .body(body)
        .build_unchecked();
    let mut buf = Uuid::encode_buffer();
    put(
        &mut out,
        ID,
        id.as_uuid().hyphenated().encode_lower(&mut buf),
    );
    if payload.is_empty() {
        put(&mut out, EMPTY, "1");
    }
    if let Some(key) = message.key() {
        put_text(&mut out, KEY, key)?;
    }
    if let Some(key) = message.idempotency_key() {
        put_text(&mut out, IDEMPOTENCY_KEY, key)?;
    }
    if !message.headers().is_empty() {
        let pairs: Vec<(&str, &str)> = message.headers().iter().collect();
        let json = serde_json::to_string(&pairs).map_err(Error::json)?;
        put(&mut out, HEADERS, &json);
    }
    if let Some(due) = message.deliver_at() {
        out.set_deliver_time_ms(due_millis(due));
    }
    Ok(out)
}

/// Sets a property; the names are ours and never a system name, and the
/// values are never empty, so the checked setter would only cost.
fn put(message: &mut RocketMessage, name: &'static str, value: &str) {
    message.put_property(
        CheetahString::from_static_str(name),
        CheetahString::from_string(value.to_owned()),
    );
}

/// Sets a property holding user text: as is where RocketMQ's property
/// format carries it, else as a JSON string under `<name>.json` (the
/// format loses an empty value and splits one containing its separators).
fn put_text(message: &mut RocketMessage, name: &'static str, value: &str) -> Result<()> {
    if !value.is_empty() && !value.contains([NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR]) {
        put(message, name, value);
        return Ok(());
    }
    let json = serde_json::to_string(value).map_err(Error::json)?;
    message.put_property(
        CheetahString::from_string(format!("{name}{JSON_SUFFIX}")),
        CheetahString::from_string(json),
    );
    Ok(())
}

/// User text set by [`put_text`].
fn text(ext: &MessageExt, name: &str) -> Option<Arc<str>> {
    match ext.message.property(&format!("{name}{JSON_SUFFIX}")) {
        Some(json) => serde_json::from_str::<String>(json).ok().map(Arc::from),
        None => ext.message.property(name).map(Arc::from),
    }
}

/// The message a consumed (or browsed) RocketMQ message carries.
pub(crate) fn decode(topic: &Arc<str>, ext: &MessageExt) -> Message {
    let prop = |name: &str| ext.message.property(name);
    let id = prop(ID)
        .and_then(|text| Uuid::try_parse(text).ok())
        .map(MessageId::from_uuid)
        .unwrap_or_else(|| foreign_id(ext));
    let payload = if prop(EMPTY).is_some() {
        Bytes::new()
    } else {
        ext.message.body().unwrap_or_default()
    };
    let mut headers = Headers::new();
    match prop(HEADERS) {
        Some(json) => {
            let pairs: Vec<(String, String)> = serde_json::from_str(json).unwrap_or_default();
            for (name, value) in pairs {
                headers.insert(name, value);
            }
        }
        None if prop(ID).is_none() => {
            for (name, value) in ext.message.properties().as_map() {
                if !is_system(name) {
                    headers.insert(name.as_str(), value.as_str());
                }
            }
        }
        None => {}
    }
    let stored = if ext.store_timestamp > 0 {
        ext.store_timestamp
    } else {
        ext.born_timestamp
    };
    let published_at = u64::try_from(stored)
        .ok()
        .filter(|ms| *ms > 0)
        .map(from_epoch_millis);
    Message::from_parts(MessageParts {
        key: text(ext, KEY),
        headers,
        id: Some(id),
        idempotency_key: text(ext, IDEMPOTENCY_KEY),
        published_at,
        ..MessageParts::new(topic.clone(), payload)
    })
}

/// A stable id for a message without `mq-id`: from the broker's id of it.
fn foreign_id(ext: &MessageExt) -> MessageId {
    let unique = ext
        .message
        .property("UNIQ_KEY")
        .unwrap_or(ext.msg_id.as_str());
    MessageId::from_uuid(Uuid::new_v5(&FOREIGN, unique.as_bytes()))
}

/// Whether a property is one the broker or client keeps for itself (upper
/// case by RocketMQ's convention), not a user's.
fn is_system(name: &str) -> bool {
    name.starts_with("mq-")
        || name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_fields() {
        let message = Message::new("orders", "hello")
            .with_key("k1")
            .with_header("a", "x\u{1}y\u{2}z")
            .with_header("b", "2")
            .with_idempotency_key("idem")
            .with_id(MessageId::from_uuid(Uuid::now_v7()));
        let encoded = encode(&message).unwrap();
        let ext = MessageExt {
            message: encoded,
            ..Default::default()
        };
        let back = decode(&Arc::from("orders"), &ext);
        assert_eq!(back.id(), message.id());
        assert_eq!(back.key(), Some("k1"));
        assert_eq!(back.idempotency_key(), Some("idem"));
        assert_eq!(back.payload_str().unwrap(), "hello");
        let headers: Vec<(&str, &str)> = back.headers().iter().collect();
        assert_eq!(headers, [("a", "x\u{1}y\u{2}z"), ("b", "2")]);
    }

    #[test]
    fn empty_payloads_survive() {
        let message = Message::new("t", "").with_id(MessageId::from_uuid(Uuid::now_v7()));
        let encoded = encode(&message).unwrap();
        assert_eq!(encoded.body_slice(), b"\0");
        let ext = MessageExt {
            message: encoded,
            ..Default::default()
        };
        assert!(decode(&Arc::from("t"), &ext).payload().is_empty());
    }

    #[test]
    fn foreign_ids_are_stable() {
        let ext = MessageExt {
            msg_id: CheetahString::from_static_str("7F0000010001"),
            ..Default::default()
        };
        assert_eq!(foreign_id(&ext), foreign_id(&ext));
        let other = MessageExt {
            msg_id: CheetahString::from_static_str("7F0000010002"),
            ..Default::default()
        };
        assert_ne!(foreign_id(&ext), foreign_id(&other));
    }
}
