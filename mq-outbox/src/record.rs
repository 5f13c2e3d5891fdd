//! A message as the outbox tables store it, and back.
//!
//! Checks that can fail at the relay (topic and header names) run at
//! enqueue instead, so a bad message fails the application's transaction
//! rather than turning into a row the relay can never publish.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mq_core::message::{validate_header_name, validate_topic, MessageParts};
use mq_core::{Error, Headers, Message, MessageId, Result};

/// Rows are spread over this many shards by ordering key; a relay works on
/// a shard at a time, so all rows of one key go through one relay in order.
/// Fixed forever: changing it would move keys between shards.
pub(crate) const SHARDS: i32 = 64;

/// The columns of one outbox row, as the application enqueued it.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub shard: i32,
    pub topic: String,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    /// Headers as a JSON array of `[name, value]` pairs (order kept); `None` when empty.
    pub headers: Option<String>,
    pub message_id: String,
    pub idempotency_key: Option<String>,
    /// Absolute due time in Unix milliseconds; a relative delay is fixed at enqueue.
    pub deliver_at_ms: Option<i64>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// A pending row read back by a relay.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub id: i64,
    /// Whether no transaction that could still commit rows ordered before
    /// this one is running (always true on SQLite, see the PostgreSQL relay).
    pub settled: bool,
    pub stored: Stored,
}

/// Milliseconds since the Unix epoch, saturating.
pub(crate) fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

/// `now + window` in Unix milliseconds, saturating.
pub(crate) fn ms_after(window: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(window.as_millis()).unwrap_or(i64::MAX))
}

/// FNV-1a: a stable hash, the same in every process and version.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

impl Stored {
    /// Checks `message` and turns it into columns: gives it an id, fixes a
    /// relative delay to a due time and captures the current trace context.
    pub(crate) fn from_message(message: Message) -> Result<Stored> {
        validate_topic(message.topic())?;
        for (name, _) in message.headers().iter() {
            validate_header_name(name)?;
        }
        let now = SystemTime::now();
        let due = message.due_at(now);
        let id = message.id().unwrap_or_default();
        let key = message.key().map(str::to_owned);
        // Unkeyed messages need no order: spread them by id.
        let shard_source = key.clone().unwrap_or_else(|| id.to_string());
        let headers = (!message.headers().is_empty())
            .then(|| {
                let pairs: Vec<(&str, &str)> = message.headers().iter().collect();
                serde_json::to_string(&pairs).map_err(Error::json)
            })
            .transpose()?;
        let (traceparent, tracestate) = crate::trace::capture();
        Ok(Stored {
            shard: (fnv1a(shard_source.as_bytes()) % SHARDS as u32) as i32,
            topic: message.topic().to_owned(),
            key,
            payload: message.payload().to_vec(),
            headers,
            message_id: id.to_string(),
            idempotency_key: message.idempotency_key().map(str::to_owned),
            deliver_at_ms: due.map(unix_ms),
            traceparent,
            tracestate,
        })
    }

    /// The message to publish.
    pub(crate) fn to_message(&self) -> Result<Message> {
        let mut headers = Headers::new();
        if let Some(json) = &self.headers {
            let pairs: Vec<(String, String)> = serde_json::from_str(json).map_err(Error::json)?;
            for (name, value) in pairs {
                headers.insert(name, value);
            }
        }
        let deliver_at = self
            .deliver_at_ms
            .map(|ms| UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        Ok(Message::from_parts(MessageParts {
            key: self.key.as_deref().map(Arc::from),
            headers,
            id: Some(MessageId::parse(&self.message_id)?),
            idempotency_key: self.idempotency_key.as_deref().map(Arc::from),
            deliver_at,
            ..MessageParts::new(self.topic.as_str(), self.payload.clone())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_survives_the_round_trip() {
        let message = Message::new("orders", "created")
            .with_key("order-7")
            .with_header("content-type", "text/plain")
            .with_header("x-b", "2")
            .with_idempotency_key("order-7-created")
            .with_delay(Duration::from_secs(60));
        let stored = Stored::from_message(message.clone()).unwrap();
        let back = stored.to_message().unwrap();
        assert_eq!(back.key(), Some("order-7"));
        assert_eq!(
            back.headers().iter().collect::<Vec<_>>(),
            vec![("content-type", "text/plain"), ("x-b", "2")]
        );
        assert_eq!(back.idempotency_key(), Some("order-7-created"));
        let due = back.deliver_at().unwrap();
        assert!(due > SystemTime::now() + Duration::from_secs(58));
        assert_eq!(
            back.id(),
            Some(MessageId::parse(&stored.message_id).unwrap())
        );
    }

    #[test]
    fn one_key_one_shard() {
        let a = Stored::from_message(Message::new("t", "1").with_key("k")).unwrap();
        let b = Stored::from_message(Message::new("u", "2").with_key("k")).unwrap();
        assert_eq!(a.shard, b.shard);
        assert!((0..SHARDS).contains(&a.shard));
    }

    #[test]
    fn bad_input_is_refused_at_enqueue() {
        let err = Stored::from_message(Message::new("bad topic!", "x")).unwrap_err();
        assert!(err.to_string().contains("bad topic!"), "{err}");
        let err = Stored::from_message(Message::new("t", "x").with_header("traceparent", "x"))
            .unwrap_err();
        assert!(err.to_string().contains("traceparent"), "{err}");
    }
}
