//! Messages as stream entries, and parsing of the replies that carry them.
//!
//! An entry's fields, in order: `i` (message id), `k` (ordering key, when
//! set), `x` (idempotency key, when set), `h:<name>` per header in header
//! order, and `p` (payload) last. Field names repeat identically across
//! entries, so Redis stores them once per stream node. The publish time is
//! the entry id's milliseconds. An entry written by another program is read
//! as well: fields it has that mq does not know become headers, and its id
//! is derived from the entry id so redeliveries keep it.

use std::io::Write;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use mq_core::driver::clock::from_epoch_millis;
use mq_core::driver::{AckToken, RawDelivery};
use mq_core::{Headers, Message, MessageId};
use redis::{RedisWrite, Value};
use uuid::Uuid;

use crate::error::unexpected;

#[cfg(test)]
mod fuzz;

pub(crate) const F_ID: &str = "i";
pub(crate) const F_KEY: &str = "k";
pub(crate) const F_IDEMPOTENCY: &str = "x";
pub(crate) const F_PAYLOAD: &str = "p";
const HEADER_PREFIX: &str = "h:";

/// Writes the entry fields of `message`, as flat name/value pairs, straight
/// into a command (or a script's argument list): no intermediate buffers,
/// as this runs for every message sent.
pub(crate) fn write_fields(out: &mut impl RedisWrite, message: &Message, id: MessageId) {
    out.write_arg(F_ID.as_bytes());
    out.write_arg(
        id.as_uuid()
            .hyphenated()
            .encode_lower(&mut Uuid::encode_buffer())
            .as_bytes(),
    );
    if let Some(key) = message.key() {
        out.write_arg(F_KEY.as_bytes());
        out.write_arg(key.as_bytes());
    }
    if let Some(key) = message.idempotency_key() {
        out.write_arg(F_IDEMPOTENCY.as_bytes());
        out.write_arg(key.as_bytes());
    }
    for (name, value) in message.headers().iter() {
        {
            let mut field = out.writer_for_next_arg();
            // Writing into memory cannot fail.
            let _ = field.write_all(HEADER_PREFIX.as_bytes());
            let _ = field.write_all(name.as_bytes());
        }
        out.write_arg(value.as_bytes());
    }
    out.write_arg(F_PAYLOAD.as_bytes());
    out.write_arg(message.payload());
}

/// How many arguments, and about how many bytes, [`write_fields`] writes:
/// to size a command's buffers once.
pub(crate) fn fields_size(message: &Message) -> (usize, usize) {
    let headers = message.headers();
    let key = message.key().map(str::len);
    let idempotency = message.idempotency_key().map(str::len);
    let args =
        4 + 2 * (usize::from(key.is_some()) + usize::from(idempotency.is_some()) + headers.len());
    // One-letter names, the 36-character id, `h:` per header, and the values.
    let bytes = 4
        + 36
        + message.payload().len()
        + key.map_or(0, |k| 1 + k)
        + idempotency.map_or(0, |k| 1 + k)
        + headers.encoded_len()
        + 2 * headers.len();
    (args, bytes)
}

/// A stream entry id, `<ms>-<seq>`. Ack tokens carry its text, as Redis
/// sends it, as their handle: acks pass it back to `XACK` unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct EntryId {
    pub(crate) ms: u64,
    pub(crate) seq: u64,
}

impl EntryId {
    pub(crate) fn parse(text: &[u8]) -> Option<Self> {
        let dash = text.iter().position(|&b| b == b'-')?;
        Some(EntryId {
            ms: decimal(&text[..dash])?,
            seq: decimal(&text[dash + 1..])?,
        })
    }

    /// The entry a token of this driver names; `None` for a token without one.
    pub(crate) fn from_token(token: &AckToken) -> Option<Self> {
        token.handle.as_deref().and_then(EntryId::parse)
    }
}

impl redis::ToRedisArgs for EntryId {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        // Formatted in place: acks write one per message.
        out.write_arg_fmt(self);
    }
}

/// A cheap hasher for the sets of entries in flight, which see every
/// delivery and ack. Entry ids come from Redis, not from whoever might
/// craft collisions, so SipHash's protection is not needed there.
pub(crate) type FastHash = std::hash::BuildHasherDefault<FastHasher>;

/// The multiply-rotate hash of FxHash (rustc's), for a few integers.
#[derive(Default)]
pub(crate) struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A non-empty run of ASCII digits as a number, `None` on anything else or overflow.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
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

/// Bytes of a string-like reply, taken out of it without copying.
fn into_bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

/// Items of an array reply, taken out of it.
pub(crate) fn into_array(value: Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// Items of an array reply.
pub(crate) fn array_of(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// Name/value pairs of an `XINFO` record (flat array or map).
pub(crate) fn fields(v: &Value) -> Vec<(&[u8], &Value)> {
    match v {
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((bytes_of(k)?, v)))
            .collect(),
        other => array_of(other)
            .unwrap_or_default()
            .chunks_exact(2)
            .filter_map(|c| Some((bytes_of(&c[0])?, &c[1])))
            .collect(),
    }
}

/// Where a read entry came from.
pub(crate) struct Origin<'a> {
    pub(crate) topic: &'a Arc<str>,
    pub(crate) partition: u32,
}

/// Decodes one entry `[id, [field, value, ...], ...]` into a delivery. The
/// entry is taken by value so the payload moves into the message uncopied.
///
/// Returns `Ok(None)` for an entry that no longer exists (trimmed while
/// pending: Redis reports it with nil fields).
pub(crate) fn delivery(
    origin: &Origin<'_>,
    entry: Value,
    delivery_count: u32,
    first_seen: SystemTime,
) -> mq_core::Result<Option<RawDelivery>> {
    let mut items = into_array(entry)
        .filter(|items| items.len() >= 2)
        .ok_or_else(|| unexpected("a stream read (entry)"))?;
    let fields = items.swap_remove(1);
    let handle = into_bytes(items.swap_remove(0)).unwrap_or_default();
    let id = EntryId::parse(&handle).ok_or_else(|| unexpected("a stream read (entry id)"))?;
    let Some(fields) = into_array(fields) else {
        return Ok(None);
    };
    let message = decode(origin.topic, id, fields);
    // The offset is the entry's milliseconds: ordered within the partition,
    // though neither dense nor unique; the handle names the entry.
    let token = AckToken::new(origin.topic.clone(), origin.partition, id.ms).with_handle(handle);
    Ok(Some(
        RawDelivery::new(message, token, first_seen).with_delivery_count(delivery_count),
    ))
}

fn decode(topic: &Arc<str>, entry: EntryId, fields: Vec<Value>) -> Message {
    let mut id = None;
    let mut key = None;
    let mut idempotency = None;
    let mut payload = Bytes::new();
    let mut headers = Headers::new();
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let Some(name) = bytes_of(&name) else {
            continue;
        };
        let Some(value) = into_bytes(value) else {
            continue;
        };
        match name {
            b"i" => id = Uuid::try_parse_ascii(&value).ok().map(MessageId::from_uuid),
            b"k" => key = Some(shared_text(&value)),
            b"x" => idempotency = Some(shared_text(&value)),
            b"p" => payload = Bytes::from(value),
            other => {
                let name = String::from_utf8_lossy(
                    other
                        .strip_prefix(HEADER_PREFIX.as_bytes())
                        .unwrap_or(other),
                );
                headers.insert(name.into_owned(), into_text(value));
            }
        }
    }
    let id = id.unwrap_or_else(|| {
        // A foreign entry: a stable id from its position, so every
        // redelivery and every group sees the same one.
        MessageId::from_uuid(Uuid::from_u64_pair(entry.ms, entry.seq))
    });
    let mut message = Message::new(topic.clone(), payload)
        .with_id(id)
        .with_headers(headers)
        .with_published_at(from_epoch_millis(entry.ms));
    if let Some(key) = key {
        message = message.with_key(key);
    }
    if let Some(key) = idempotency {
        message = message.with_idempotency_key(key);
    }
    message
}

/// Text of a field value, as the message stores it (one allocation).
fn shared_text(value: &[u8]) -> Arc<str> {
    Arc::from(String::from_utf8_lossy(value).as_ref())
}

/// Text of a field value; invalid UTF-8 is replaced, as a foreign writer may send any bytes.
fn into_text(value: Vec<u8>) -> String {
    String::from_utf8(value).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use mq_core::driver::clock::epoch_millis;

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
        let mut f: Vec<Vec<u8>> = Vec::new();
        write_fields(&mut f, &m, id);
        let entry = Value::Array(vec![
            bulk(b"1700000000000-5"),
            Value::Array(f.iter().map(|b| bulk(b)).collect()),
        ]);
        let topic: Arc<str> = Arc::from("t");
        let origin = Origin {
            topic: &topic,
            partition: 2,
        };
        let d = delivery(&origin, entry, 3, SystemTime::now())
            .unwrap()
            .unwrap();
        assert_eq!(d.message.id(), Some(id));
        assert_eq!(d.message.key(), Some("k1"));
        assert_eq!(d.message.idempotency_key(), Some("idem"));
        assert_eq!(&d.message.payload()[..], &[0u8, 255]);
        let names: Vec<&str> = d.message.headers().iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["b", "a", "mq-retry-topic"]);
        assert_eq!(d.delivery_count, 3);
        assert_eq!((d.token.offset, d.token.partition), (1_700_000_000_000, 2));
        assert_eq!(d.token.handle.as_deref(), Some(&b"1700000000000-5"[..]));
        assert_eq!(
            EntryId::from_token(&d.token),
            Some(EntryId {
                ms: 1_700_000_000_000,
                seq: 5
            })
        );
        assert_eq!(
            epoch_millis(d.message.published_at().unwrap()),
            1_700_000_000_000
        );
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
        let a = delivery(&origin, foreign.clone(), 1, SystemTime::now())
            .unwrap()
            .unwrap();
        let b = delivery(&origin, foreign, 1, SystemTime::now())
            .unwrap()
            .unwrap();
        assert_eq!(a.message.id(), b.message.id());
        assert_eq!(a.message.headers().get("temp"), Some("21"));
        let deleted = Value::Array(vec![bulk(b"5-2"), Value::Nil]);
        assert!(delivery(&origin, deleted, 1, SystemTime::now())
            .unwrap()
            .is_none());
        assert!(delivery(&origin, Value::Int(3), 1, SystemTime::now()).is_err());
        assert_eq!(EntryId::parse(b"12-x"), None);
        assert_eq!(EntryId::parse(b"12-"), None);
        assert_eq!(EntryId::parse(b"-3"), None);
        assert_eq!(EntryId::parse(b"+1-3"), None);
        assert_eq!(EntryId::parse(b"18446744073709551616-0"), None);
        assert_eq!(
            EntryId::parse(b"18446744073709551615-7"),
            Some(EntryId {
                ms: u64::MAX,
                seq: 7
            })
        );
    }
}
