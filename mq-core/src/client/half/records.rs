//! The durable records of emulated half messages.
//!
//! A producer group's half topic holds two kinds of record, both keyed by
//! the half message's id so a message and its resolutions share a
//! partition and stay in publish order: the prepared message itself (its
//! destination, key, idempotency key and delay moved into headers, so no
//! consumer of the destination can see it), and resolution records saying
//! `commit` or `rollback`. In log order, the first resolution after a
//! prepared message is its outcome; any later one changes nothing.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::driver::{HalfOutcome, NameRules};
use crate::message::{reserved, Message, MessageId};
use crate::runtime::{from_millis, millis};

/// The half topic of producer group `group`.
pub(crate) fn half_topic(names: &NameRules, group: &str) -> String {
    names.internal("half", &[group])
}

/// The consumer group of the resolvers of producer group `group`.
pub(crate) fn resolver_group(names: &NameRules, group: &str) -> String {
    names.internal("half-resolver", &[group])
}

/// Who wrote a resolution record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecidedBy {
    Producer,
    Checker,
}

impl DecidedBy {
    fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Producer => "producer",
            DecidedBy::Checker => "checker",
        }
    }
}

/// A record read back from a half topic.
#[derive(Debug, PartialEq)]
pub(crate) enum Record {
    /// A prepared message: `message` is what commit delivers.
    Prepared {
        message: Message,
        prepared_at: SystemTime,
    },
    /// The outcome of the prepared message `of`.
    Resolution { of: MessageId, outcome: HalfOutcome },
    /// Not a half record (written by something else): dropped.
    Foreign,
}

/// The prepared record of `message` (validated, with its id) in `topic`.
pub(crate) fn prepared(topic: &str, message: Message, now: SystemTime) -> Message {
    let id = message.id().unwrap_or_default();
    let mut headers = message.headers().clone();
    headers.insert(reserved::HALF_DESTINATION, message.topic());
    headers.insert(reserved::HALF_PREPARED_AT, millis(now).to_string());
    if let Some(key) = message.key() {
        headers.insert(reserved::HALF_KEY, key);
    }
    if let Some(key) = message.idempotency_key() {
        headers.insert(reserved::HALF_IDEMPOTENCY_KEY, key);
    }
    if let Some(delay) = message.delay() {
        headers.insert(reserved::HALF_DELAY, delay.as_millis().to_string());
    } else if let Some(at) = message.deliver_at() {
        headers.insert(reserved::HALF_DELIVER_AT, millis(at).to_string());
    }
    Message::new(topic, message.payload().clone())
        .with_id(id)
        .with_key(id.to_string())
        .with_headers(headers)
}

/// The record saying that the prepared message `of` ends as `outcome`.
pub(crate) fn resolution(
    topic: &str,
    of: MessageId,
    outcome: HalfOutcome,
    by: DecidedBy,
) -> Message {
    Message::new(topic, Bytes::new())
        .with_key(of.to_string())
        .with_header(reserved::HALF_OF, of.to_string())
        .with_header(reserved::HALF_OUTCOME, outcome.as_str())
        .with_header(reserved::HALF_DECIDED_BY, by.as_str())
}

fn millis_header(message: &Message, name: &str) -> Option<u64> {
    message.headers().get(name)?.parse().ok()
}

/// Reads a record back.
pub(crate) fn read(record: &Message) -> Record {
    let headers = record.headers();
    if let (Some(of), Some(outcome)) = (
        headers.get(reserved::HALF_OF),
        headers.get(reserved::HALF_OUTCOME),
    ) {
        return match (MessageId::parse(of), HalfOutcome::parse(outcome)) {
            (Ok(of), Some(outcome)) if outcome != HalfOutcome::Unknown => {
                Record::Resolution { of, outcome }
            }
            _ => Record::Foreign,
        };
    }
    let (Some(destination), Some(id)) = (headers.get(reserved::HALF_DESTINATION), record.id())
    else {
        return Record::Foreign;
    };
    let prepared_at = millis_header(record, reserved::HALF_PREPARED_AT)
        .map_or(SystemTime::UNIX_EPOCH, from_millis);
    let mut user_headers = headers.clone();
    user_headers.retain(|name, _| !name.starts_with("mq-half-"));
    let mut message = Message::new(destination, record.payload().clone())
        .with_id(id)
        .with_headers(user_headers);
    if let Some(key) = headers.get(reserved::HALF_KEY) {
        message = message.with_key(key);
    }
    if let Some(key) = headers.get(reserved::HALF_IDEMPOTENCY_KEY) {
        message = message.with_idempotency_key(key);
    }
    if let Some(ms) = millis_header(record, reserved::HALF_DELAY) {
        message = message.with_delay(Duration::from_millis(ms));
    } else if let Some(ms) = millis_header(record, reserved::HALF_DELIVER_AT) {
        message = message.with_deliver_at(from_millis(ms));
    }
    Record::Prepared {
        message,
        prepared_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prepared_record_gives_back_the_message() {
        let id = MessageId::new();
        let original = Message::new("orders", "order 42")
            .with_id(id)
            .with_key("customer-7")
            .with_header("tenant", "acme")
            .with_idempotency_key("o-42")
            .with_delay(Duration::from_secs(30));
        let now = SystemTime::now();
        let record = prepared("__mq.half.shop", original.clone(), now);
        assert_eq!(record.topic(), "__mq.half.shop");
        assert_eq!(record.key(), Some(id.to_string().as_str()));
        assert_eq!(record.idempotency_key(), None);
        assert_eq!(record.delay(), None);
        let Record::Prepared {
            message,
            prepared_at,
        } = read(&record)
        else {
            panic!("not read back as prepared");
        };
        assert_eq!(millis(prepared_at), millis(now));
        assert_eq!(message.topic(), "orders");
        assert_eq!(message.id(), Some(id));
        assert_eq!(message.key(), Some("customer-7"));
        assert_eq!(message.idempotency_key(), Some("o-42"));
        assert_eq!(message.delay(), Some(Duration::from_secs(30)));
        assert_eq!(message.headers().get("tenant"), Some("acme"));
        assert_eq!(message.headers().len(), 1);
        assert_eq!(message.payload(), original.payload());
    }

    #[test]
    fn resolutions_and_foreign_records() {
        let id = MessageId::new();
        let commit = resolution(
            "__mq.half.shop",
            id,
            HalfOutcome::Commit,
            DecidedBy::Checker,
        );
        assert_eq!(commit.key(), Some(id.to_string().as_str()));
        assert_eq!(
            read(&commit),
            Record::Resolution {
                of: id,
                outcome: HalfOutcome::Commit
            }
        );
        let unknown = resolution(
            "__mq.half.shop",
            id,
            HalfOutcome::Unknown,
            DecidedBy::Checker,
        );
        assert_eq!(read(&unknown), Record::Foreign);
        assert_eq!(
            read(&Message::new("__mq.half.shop", "junk")),
            Record::Foreign
        );
    }
}
