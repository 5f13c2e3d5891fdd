//! Fuzzing the mapping of consumed Kafka records to messages: keys,
//! header names and values in any bytes (not UTF-8, empty, null), any
//! partition, offset and timestamp, as a foreign producer may write them.
//!
//! librdkafka parses the wire format; what reaches mq is the record's
//! fields, so an input is those fields packed as: `flags:u8` (1 key, 2
//! payload, 4 timestamp), `[len:u32 key]`, `[len:u32 payload]`,
//! `partition:i32 offset:i64 [timestamp_ms:i64]`, then per header
//! `name_len:u16 name value_len:u32 value` (little endian). A name is cut
//! at its first NUL, as librdkafka's C string is.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use mq_core::{Message, MessageId};
use mq_fuzz::proptest::collection::vec;
use mq_fuzz::proptest::prelude::*;
use mq_fuzz::{explore, Outcome, Target};
use rdkafka::message::{Headers, OwnedHeaders};

use super::{decode_fields, headers_of, timestamp_of, RecordFields};

const KEY: u8 = 1;
const PAYLOAD: u8 = 2;
const TIMESTAMP: u8 = 4;

/// The header bytes a producer of `message` sends.
fn header_bytes(headers: &OwnedHeaders) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..headers.count())
        .filter_map(|i| headers.try_get(i))
        .map(|h| {
            (
                h.key.as_bytes().to_vec(),
                h.value.unwrap_or_default().to_vec(),
            )
        })
        .collect()
}

fn pack(message: &Message, id: MessageId, partition: i32, offset: i64) -> Vec<u8> {
    let mut flags = PAYLOAD | TIMESTAMP;
    if message.key().is_some() {
        flags |= KEY;
    }
    let mut out = vec![flags];
    let put = |bytes: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    if let Some(key) = message.key() {
        put(key.as_bytes(), &mut out);
    }
    put(message.payload(), &mut out);
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&timestamp_of(message).to_le_bytes());
    for (name, value) in header_bytes(&headers_of(message, id)) {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&name);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(&value);
    }
    out
}

/// Takes `n` bytes, or what is left.
fn take<'a>(n: usize, bytes: &mut &'a [u8]) -> &'a [u8] {
    let (head, rest) = bytes.split_at(n.min(bytes.len()));
    *bytes = rest;
    head
}

fn int<const N: usize>(bytes: &mut &[u8]) -> [u8; N] {
    let mut raw = [0u8; N];
    let got = take(N, bytes);
    raw[..got.len()].copy_from_slice(got);
    raw
}

/// A `len:u32` prefixed field.
fn sized<'a>(bytes: &mut &'a [u8]) -> &'a [u8] {
    let n = u32::from_le_bytes(int(bytes)) as usize;
    take(n, bytes)
}

/// The fields packed in `bytes`; damage to the packing ends the headers early.
fn unpack(mut bytes: &[u8]) -> RecordFields<'_> {
    let flags = int::<1>(&mut bytes)[0];
    let key = (flags & KEY != 0).then(|| sized(&mut bytes));
    let payload = (flags & PAYLOAD != 0).then(|| sized(&mut bytes));
    let partition = i32::from_le_bytes(int(&mut bytes));
    let offset = i64::from_le_bytes(int(&mut bytes));
    let timestamp_ms = (flags & TIMESTAMP != 0).then(|| i64::from_le_bytes(int(&mut bytes)));
    let mut headers = Vec::new();
    while bytes.len() >= 2 {
        let n = u16::from_le_bytes(int(&mut bytes)) as usize;
        let name = take(n, &mut bytes);
        let name = name.split(|b| *b == 0).next().unwrap_or_default();
        let n = u32::from_le_bytes(int(&mut bytes)) as usize;
        headers.push((name, take(n, &mut bytes)));
    }
    RecordFields {
        key,
        payload,
        headers,
        partition,
        offset,
        timestamp_ms,
    }
}

fn decode_bytes(bytes: &[u8]) -> Result<Outcome, String> {
    let topic: Arc<str> = Arc::from("orders");
    let fields = unpack(bytes);
    let header_count = fields.headers.len();
    let message = decode_fields(&topic, fields);
    if message.id().is_none() || message.headers().len() > header_count {
        return Err(format!("decoded as {message:?}"));
    }
    // Foreign records are never refused.
    Ok(Outcome::Decoded)
}

#[test]
fn fuzz_records() {
    let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let id = MessageId::from_uuid(uuid::Uuid::from_u128(7));
    let full = Message::new("orders", vec![0u8, 255])
        .with_key("customer-7")
        .with_idempotency_key("pay-7")
        .with_header("tenant", "acme")
        .with_header("mq-attempt", "2")
        .with_published_at(at);
    let mut foreign = vec![KEY | PAYLOAD];
    foreign.extend_from_slice(&2u32.to_le_bytes());
    foreign.extend_from_slice(&[0xff, 0xfe]);
    foreign.extend_from_slice(&0u32.to_le_bytes());
    foreign.extend_from_slice(&3i32.to_le_bytes());
    foreign.extend_from_slice(&42i64.to_le_bytes());
    foreign.extend_from_slice(&2u16.to_le_bytes());
    foreign.extend_from_slice(&[0xc3, 0x28]);
    foreign.extend_from_slice(&1u32.to_le_bytes());
    foreign.push(0x80);
    Target::new("kafka-record")
        .seed("full", pack(&full, id, 1, 99))
        .seed(
            "bare",
            pack(&Message::new("orders", "").with_published_at(at), id, 0, 0),
        )
        .seed("foreign", foreign)
        .run(decode_bytes);
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

#[test]
fn fuzz_record_round_trip() {
    let message = (
        mq_fuzz::proptest::option::of(text()),
        mq_fuzz::proptest::option::of(text()),
        vec(("[^\\x00]{0,12}", text()), 0..4),
        vec(any::<u8>(), 0..48),
        any::<u128>(),
        0u64..i64::MAX as u64,
    );
    explore(
        "kafka-record-round-trip",
        message,
        |value| format!("{value:?}").into_bytes(),
        |(key, idem, headers, payload, id, ms)| {
            let mut m = Message::new("orders", payload)
                .with_published_at(UNIX_EPOCH + Duration::from_millis(ms));
            if let Some(key) = key {
                m = m.with_key(key);
            }
            if let Some(idem) = idem {
                m = m.with_idempotency_key(idem);
            }
            for (name, value) in headers {
                // Names mq keeps for itself are not user headers.
                if name != mq_core::message::reserved::ID
                    && name != mq_core::message::reserved::IDEMPOTENCY_KEY
                {
                    m = m.with_header(name, value);
                }
            }
            let id = MessageId::from_uuid(uuid::Uuid::from_u128(id));
            let back = decode_fields(&Arc::from("orders"), unpack(&pack(&m, id, 5, 7)));
            let want = m.with_id(id);
            if back != want {
                return Err(format!("{back:?} is not {want:?}"));
            }
            Ok(())
        },
    );
}
