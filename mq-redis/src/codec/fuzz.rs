//! Fuzzing the decoding of stream entries as Redis sends them: reply
//! bytes through redis-rs's RESP parser, then into deliveries (entries mq
//! wrote and foreign ones), entry ids and `XINFO` records.

use std::sync::Arc;
use std::time::SystemTime;

use mq_core::driver::clock::from_epoch_millis;
use mq_core::{Message, MessageId};
use mq_fuzz::proptest::collection::vec;
use mq_fuzz::proptest::prelude::*;
use mq_fuzz::{explore, Outcome, Target};
use redis::Value;

use super::{delivery, fields, int_of, write_fields, EntryId, Origin};

/// RESP2 bytes of a reply, as a server sends them.
fn resp(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Nil => out.extend_from_slice(b"*-1\r\n"),
        Value::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
        Value::SimpleString(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Value::BulkString(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for item in items {
                resp(item, out);
            }
        }
        other => unreachable!("replies here are RESP2: {other:?}"),
    }
}

fn bulk(b: &[u8]) -> Value {
    Value::BulkString(b.to_vec())
}

/// The entry `[id, [field, value, ...]]` of `message` as XREADGROUP returns it.
fn entry(id: &str, message: &Message, message_id: MessageId) -> Value {
    let mut f: Vec<Vec<u8>> = Vec::new();
    write_fields(&mut f, message, message_id);
    Value::Array(vec![
        bulk(id.as_bytes()),
        Value::Array(f.iter().map(|b| bulk(b)).collect()),
    ])
}

fn bytes_of_reply(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    resp(value, &mut out);
    out
}

fn origin_topic() -> Arc<str> {
    Arc::from("orders")
}

/// Decodes a reply as an entry, and as the other shapes the driver reads.
fn decode(bytes: &[u8]) -> Result<Outcome, String> {
    let Ok(value) = redis::parse_redis_value(bytes) else {
        return Ok(Outcome::Rejected);
    };
    // XINFO records and counts come in the same replies.
    let _ = fields(&value).len();
    let _ = int_of(&value);
    let topic = origin_topic();
    let origin = Origin {
        topic: &topic,
        partition: 1,
    };
    match delivery(&origin, value, 2, SystemTime::UNIX_EPOCH) {
        Ok(Some(d)) => {
            let id =
                EntryId::from_token(&d.token).ok_or("a delivery whose token names no entry")?;
            if d.token.offset != id.ms || d.message.published_at() != Some(from_epoch_millis(id.ms))
            {
                return Err(format!("entry {id} delivered as {:?}", d.token));
            }
            if d.message.id().is_none() {
                return Err("a delivery without an id".into());
            }
            Ok(Outcome::Decoded)
        }
        Ok(None) | Err(_) => Ok(Outcome::Rejected),
    }
}

#[test]
fn fuzz_stream_entries() {
    let full = Message::new("orders", vec![0u8, 255, 13, 10])
        .with_key("customer-7")
        .with_idempotency_key("pay-7")
        .with_header("tenant", "acme")
        .with_header("mq-attempt", "2");
    let id = MessageId::from_uuid(uuid::Uuid::from_u128(7));
    let foreign = Value::Array(vec![
        bulk(b"1700000000000-3"),
        Value::Array(vec![
            bulk(b"temp"),
            bulk(b"21"),
            bulk(b"h:x"),
            Value::Int(3),
        ]),
    ]);
    Target::new("redis-entry")
        .seed("full", bytes_of_reply(&entry("1700000000000-5", &full, id)))
        .seed(
            "bare",
            bytes_of_reply(&entry("0-1", &Message::new("orders", ""), id)),
        )
        .seed("foreign", bytes_of_reply(&foreign))
        .run(decode);
}

#[test]
fn fuzz_entry_ids() {
    explore(
        "redis-entry-id",
        (any::<u64>(), any::<u64>(), "[0-9-]{0,24}"),
        |value| format!("{value:?}").into_bytes(),
        |(ms, seq, text)| {
            let id = EntryId { ms, seq };
            if EntryId::parse(id.to_string().as_bytes()) != Some(id) {
                return Err(format!("{id} does not parse back"));
            }
            if let Some(parsed) = EntryId::parse(text.as_bytes()) {
                if EntryId::parse(parsed.to_string().as_bytes()) != Some(parsed) {
                    return Err(format!("{text:?} parsed as {parsed}, which does not"));
                }
            }
            Ok(())
        },
    );
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

#[test]
fn fuzz_entry_round_trip() {
    let message = (
        mq_fuzz::proptest::option::of(text()),
        mq_fuzz::proptest::option::of(text()),
        vec((text(), text()), 0..4),
        vec(any::<u8>(), 0..48),
        any::<u128>(),
        any::<(u64, u64)>(),
    );
    explore(
        "redis-entry-round-trip",
        message,
        |value| format!("{value:?}").into_bytes(),
        |(key, idem, headers, payload, id, (ms, seq))| {
            let mut m = Message::new("orders", payload);
            if let Some(key) = key {
                m = m.with_key(key);
            }
            if let Some(idem) = idem {
                m = m.with_idempotency_key(idem);
            }
            for (name, value) in headers {
                m = m.with_header(name, value);
            }
            let id = MessageId::from_uuid(uuid::Uuid::from_u128(id));
            let entry_id = EntryId { ms, seq }.to_string();
            let bytes = bytes_of_reply(&entry(&entry_id, &m, id));
            let value = redis::parse_redis_value(&bytes).map_err(|e| e.to_string())?;
            let topic = origin_topic();
            let origin = Origin {
                topic: &topic,
                partition: 0,
            };
            let d = delivery(&origin, value, 1, SystemTime::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .ok_or("an entry with fields read as deleted")?;
            let want = m.with_id(id).with_published_at(from_epoch_millis(ms));
            if d.message != want {
                return Err(format!("{:?} is not {want:?}", d.message));
            }
            Ok(())
        },
    );
}
