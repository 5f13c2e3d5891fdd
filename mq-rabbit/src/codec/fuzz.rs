//! Fuzzing the AMQP header codec: content-header property bytes as a
//! broker delivers them, through lapin's (amq-protocol's) parser, into
//! deliveries; messages from mq and from other AMQP clients.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use lapin::protocol::basic::{gen_properties, parse_properties};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use mq_core::message::reserved;
use mq_core::{Headers, Message, MessageId};
use mq_fuzz::proptest::collection::vec;
use mq_fuzz::proptest::prelude::*;
use mq_fuzz::{explore, Outcome, Target};

use super::{decode, encode, Origin};

fn origin() -> Origin {
    Origin {
        topic: Arc::from("orders"),
        shard: 2,
        epoch: 5,
    }
}

fn bytes_of(properties: &BasicProperties) -> Vec<u8> {
    cookie_factory::gen_simple(gen_properties(properties), Vec::new()).expect("encoding properties")
}

fn deliver(properties: BasicProperties, redelivered: bool) -> mq_core::driver::RawDelivery {
    let mut d = lapin::message::Delivery::mock(
        9,
        "mq/orders".into(),
        "0.0".into(),
        redelivered,
        b"payload".to_vec(),
    );
    d.properties = properties;
    decode(d, &origin())
}

/// Decodes property bytes into a delivery, as the consumer does.
fn decode_bytes(bytes: &[u8]) -> Result<Outcome, String> {
    let Ok((_, properties)) = parse_properties(bytes) else {
        return Ok(Outcome::Rejected);
    };
    let raw = deliver(properties, bytes.first().is_some_and(|b| b & 1 == 1));
    if raw.message.id().is_none() || raw.delivery_count == 0 {
        return Err(format!("delivered as {raw:?}"));
    }
    Ok(Outcome::Decoded)
}

#[test]
fn fuzz_properties() {
    let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let ours = Message::new("orders", "paid")
        .with_key("customer-7")
        .with_idempotency_key("pay-7")
        .with_header("tenant", "acme")
        .with_header("empty", "");
    let id = MessageId::from_uuid(uuid::Uuid::from_u128(7));
    let mut table = FieldTable::default();
    table.insert("x-delivery-count".into(), AMQPValue::LongLongInt(3));
    table.insert("tenant".into(), AMQPValue::LongString("acme".into()));
    table.insert("n".into(), AMQPValue::LongInt(-1));
    let foreign = BasicProperties::default()
        .with_message_id("not-a-uuid".into())
        .with_timestamp(1_700_000_000)
        .with_headers(table);
    Target::new("rabbit-properties")
        .seed("ours", bytes_of(&encode(&ours, id, now)))
        .seed(
            "bare",
            bytes_of(&encode(&Message::new("orders", ""), id, now)),
        )
        .seed("foreign", bytes_of(&foreign))
        .seed("none", bytes_of(&BasicProperties::default()))
        .run(decode_bytes);
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

#[test]
fn fuzz_properties_round_trip() {
    let message = (
        mq_fuzz::proptest::option::of(text()),
        mq_fuzz::proptest::option::of(text()),
        vec((text(), text()), 0..4),
        any::<u128>(),
        0u64..4_000_000_000_000,
    );
    explore(
        "rabbit-properties-round-trip",
        message,
        |value| format!("{value:?}").into_bytes(),
        |(key, idem, headers, id, now_ms)| {
            let mut m = Message::new("orders", "payload");
            if let Some(key) = &key {
                m = m.with_key(key.as_str());
            }
            if let Some(idem) = &idem {
                m = m.with_idempotency_key(idem.as_str());
            }
            for (name, value) in &headers {
                m = m.with_header(name.as_str(), value.as_str());
            }
            let id = MessageId::from_uuid(uuid::Uuid::from_u128(id));
            let now = UNIX_EPOCH + Duration::from_millis(now_ms);
            let bytes = bytes_of(&encode(&m, id, now));
            let (rest, properties) = parse_properties(&bytes[..]).map_err(|e| e.to_string())?;
            if !rest.is_empty() {
                return Err(format!("{} bytes left over", rest.len()));
            }
            let back = deliver(properties, false).message;
            // The idempotency key travels as a reserved header, which the
            // core's idempotency layer reads.
            let mut want_headers: Headers = m.headers().clone();
            if let Some(idem) = &idem {
                want_headers.insert(reserved::IDEMPOTENCY_KEY, idem.as_str());
            }
            let same = back.id() == Some(id)
                && back.key() == m.key()
                && back.headers() == &want_headers
                && back.published_at() == Some(now)
                && back.payload() == m.payload();
            if !same {
                return Err(format!("{back:?} is not {m:?}"));
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_property_values() {
    // Any value in any of the headers the decoder looks at.
    let value = prop_oneof![
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        any::<i32>().prop_map(AMQPValue::LongInt),
        any::<u32>().prop_map(AMQPValue::LongUInt),
        any::<u64>().prop_map(AMQPValue::Timestamp),
        vec(any::<u8>(), 0..16).prop_map(|b| AMQPValue::LongString(LongString::from(b))),
        any::<bool>().prop_map(AMQPValue::Boolean),
    ];
    let names = prop_oneof![
        Just("mq-key"),
        Just("mq-headers"),
        Just("mq-published-at"),
        Just("mq-idempotency-key"),
        Just("x-delivery-count"),
        Just("tenant"),
    ];
    explore(
        "rabbit-property-values",
        (
            vec((names, value), 0..6),
            any::<Option<u64>>(),
            any::<bool>(),
        ),
        |value| format!("{value:?}").into_bytes(),
        |(entries, timestamp, redelivered)| {
            let mut table = FieldTable::default();
            for (name, value) in entries {
                table.insert(name.into(), value);
            }
            let mut properties = BasicProperties::default().with_headers(table);
            if let Some(secs) = timestamp {
                properties = properties.with_timestamp(secs);
            }
            let raw = deliver(properties, redelivered);
            if raw.message.published_at().is_none() {
                return Err("a delivery without a publish time".into());
            }
            Ok(())
        },
    );
}
