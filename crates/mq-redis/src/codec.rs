//! Messages as stream entries, and parsing of the replies that carry them.
//!
//! An entry's fields, in order: `i` (message id), `k` (ordering key, when
//! set), `x` (idempotency key, when set), `h:<name>` per header in header
//! order, and `p` (payload) last. Field names repeat identically across
//! entries, so Redis stores them once per stream node. The publish time is
//! the entry id's milliseconds. An entry written by another program is read
//! as well: fields it has that mq does not know become headers, and its id
//! is derived from the entry id so redeliveries keep it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mq_core::driver::{AckToken, RawDelivery};
use mq_core::{Headers, Message, MessageId};
use redis::Value;

use crate::error::unexpected;

pub(crate) const F_ID: &str = "i";
pub(crate) const F_KEY: &str = "k";
pub(crate) const F_IDEMPOTENCY: &str = "x";
pub(crate) const F_PAYLOAD: &str = "p";
const HEADER_PREFIX: &str = "h:";

/// The entry fields of `message`, as flat name/value pairs for XADD.
pub(crate) fn fields(message: &Message, id: MessageId) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(4 + 2 * message.headers().len() + 2);
    out.push(F_ID.as_bytes().to_vec());
    out.push(id.to_string().into_bytes());
    if let Some(key) = message.key() {
        out.push(F_KEY.as_bytes().to_vec());
        out.push(key.as_bytes().to_vec());
    }
    if let Some(key) = message.idempotency_key() {
        out.push(F_IDEMPOTENCY.as_bytes().to_vec());
        out.push(key.as_bytes().to_vec());
    }
    for (name, value) in message.headers().iter() {
        let mut field = Vec::with_capacity(HEADER_PREFIX.len() + name.len());
        field.extend_from_slice(HEADER_PREFIX.as_bytes());
        field.extend_from_slice(name.as_bytes());
        out.push(field);
        out.push(value.as_bytes().to_vec());
    }
    out.push(F_PAYLOAD.as_bytes().to_vec());
    out.push(message.payload().to_vec());
    out
}

/// A stream entry id, `<ms>-<seq>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct EntryId {
    pub(crate) ms: u64,
    pub(crate) seq: u64,
}

impl EntryId {
    pub(crate) fn parse(text: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(text).ok()?;
        let (ms, seq) = text.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    pub(crate) fn from_token(token: &AckToken) -> Self {
        EntryId {
            ms: token.offset,
            seq: token.tag,
        }
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Bytes of a string-like reply.
pub(crate) fn bytes_of(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

/// A string-like or integer reply as text.
pub(crate) fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Int(i) => Some(i.to_string()),
        Value::Double(d) => Some(d.to_string()),
        other => bytes_of(other).and_then(|b| String::from_utf8(b.to_vec()).ok()),
    }
}

/// An integer reply, also when sent as a string.
pub(crate) fn int_of(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        other => text_of(other).and_then(|t| t.parse().ok()),
    }
}

/// Items of an array reply.
pub(crate) fn array_of(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// Where a read entry came from.
pub(crate) struct Origin<'a> {
    pub(crate) topic: &'a Arc<str>,
    pub(crate) partition: u32,
}

/// Decodes one entry `[id, [field, value, ...]]` into a delivery.
///
/// Returns `Ok(None)` for an entry that no longer exists (trimmed while
/// pending: Redis reports it with nil fields).
pub(crate) fn delivery(
    origin: &Origin<'_>,
    entry: &Value,
    delivery_count: u32,
    first_seen: SystemTime,
) -> mq_core::Result<Option<RawDelivery>> {
    let items = array_of(entry).ok_or_else(|| unexpected("a stream read (entry)"))?;
    let (Some(id), Some(fields)) = (items.first(), items.get(1)) else {
        return Err(unexpected("a stream read (entry)"));
    };
    let id = bytes_of(id)
        .and_then(EntryId::parse)
        .ok_or_else(|| unexpected("a stream read (entry id)"))?;
    let Some(fields) = array_of(fields) else {
        return Ok(None);
    };
    let message = decode(origin.topic, id, fields);
    Ok(Some(RawDelivery {
        message,
        partition: origin.partition,
        offset: None,
        delivery_count: delivery_count.max(1),
        first_seen,
        token: AckToken {
            topic: origin.topic.clone(),
            partition: origin.partition,
            offset: id.ms,
            tag: id.seq,
        },
    }))
}

fn decode(topic: &Arc<str>, entry: EntryId, fields: &[Value]) -> Message {
    let mut id = None;
    let mut key = None;
    let mut idempotency = None;
    let mut payload = Bytes::new();
    let mut headers = Headers::new();
    for pair in fields.chunks_exact(2) {
        let (Some(name), Some(value)) = (bytes_of(&pair[0]), bytes_of(&pair[1])) else {
            continue;
        };
        let text = || String::from_utf8_lossy(value).into_owned();
        match name {
            b"i" => {
                id = std::str::from_utf8(value)
                    .ok()
                    .and_then(|t| MessageId::parse(t).ok())
            }
            b"k" => key = Some(text()),
            b"x" => idempotency = Some(text()),
            b"p" => payload = Bytes::copy_from_slice(value),
            other => {
                let name = String::from_utf8_lossy(
                    other
                        .strip_prefix(HEADER_PREFIX.as_bytes())
                        .unwrap_or(other),
                );
                headers.insert(name.into_owned(), text());
            }
        }
    }
    let id = id.unwrap_or_else(|| {
        // A foreign entry: a stable id from its position, so every
        // redelivery and every group sees the same one.
        MessageId::from_uuid(uuid::Uuid::from_u64_pair(entry.ms, entry.seq))
    });
    let mut message = Message::new(topic.clone(), payload)
        .with_id(id)
        .with_headers(headers)
        .with_published_at(UNIX_EPOCH + Duration::from_millis(entry.ms));
    if let Some(key) = key {
        message = message.with_key(key);
    }
    if let Some(key) = idempotency {
        message = message.with_idempotency_key(key);
    }
    message
}

/// Milliseconds since the Unix epoch.
pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &[u8]) -> Value {
        Value::BulkString(b.to_vec())
    }

    #[test]
    fn round_trips_through_fields() {
        let id = MessageId::new();
        let m = Message::new("t", vec![0u8, 255])
            .with_key("k1")
            .with_header("b", "2")
            .with_header("a", "1")
            .with_header("mq-retry-topic", "x")
            .with_idempotency_key("idem");
        let f = fields(&m, id);
        let entry = Value::Array(vec![
            bulk(b"1700000000000-5"),
            Value::Array(f.iter().map(|b| bulk(b)).collect()),
        ]);
        let topic: Arc<str> = Arc::from("t");
        let origin = Origin {
            topic: &topic,
            partition: 2,
        };
        let d = delivery(&origin, &entry, 3, SystemTime::now())
            .unwrap()
            .unwrap();
        assert_eq!(d.message.id(), Some(id));
        assert_eq!(d.message.key(), Some("k1"));
        assert_eq!(d.message.idempotency_key(), Some("idem"));
        assert_eq!(&d.message.payload()[..], &[0u8, 255]);
        let names: Vec<&str> = d.message.headers().iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["b", "a", "mq-retry-topic"]);
        assert_eq!(d.delivery_count, 3);
        assert_eq!(
            (d.token.offset, d.token.tag, d.token.partition),
            (1_700_000_000_000, 5, 2)
        );
        assert_eq!(millis(d.message.published_at().unwrap()), 1_700_000_000_000);
    }

    #[test]
    fn foreign_and_deleted_entries() {
        let topic: Arc<str> = Arc::from("t");
        let origin = Origin {
            topic: &topic,
            partition: 0,
        };
        let foreign = Value::Array(vec![
            bulk(b"5-1"),
            Value::Array(vec![bulk(b"temp"), bulk(b"21")]),
        ]);
        let a = delivery(&origin, &foreign, 1, SystemTime::now())
            .unwrap()
            .unwrap();
        let b = delivery(&origin, &foreign, 1, SystemTime::now())
            .unwrap()
            .unwrap();
        assert_eq!(a.message.id(), b.message.id());
        assert_eq!(a.message.headers().get("temp"), Some("21"));
        let deleted = Value::Array(vec![bulk(b"5-2"), Value::Nil]);
        assert!(delivery(&origin, &deleted, 1, SystemTime::now())
            .unwrap()
            .is_none());
        assert!(delivery(&origin, &Value::Int(3), 1, SystemTime::now()).is_err());
        assert_eq!(EntryId::parse(b"12-x"), None);
    }
}
