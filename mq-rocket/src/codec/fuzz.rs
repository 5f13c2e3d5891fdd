//! Fuzzing the mapping of RocketMQ messages: message bytes as a broker
//! returns them to a pull, through rocketmq-rust's decoder, into
//! messages; mq's own (`mq-id`, `mq-headers` JSON) and foreign ones.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use cheetah_string::CheetahString;
use mq_core::{Message, MessageId};
use mq_fuzz::proptest::collection::vec;
use mq_fuzz::proptest::prelude::*;
use mq_fuzz::{explore, Outcome, Target};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::MessageTrait;
use rocketmq_protocol::common::message::message_decoder;

use super::{decode, encode};

const STORED_MS: i64 = 1_700_000_000_123;

fn stored(message: rocketmq_model::common::message::message_single::Message) -> MessageExt {
    MessageExt {
        message,
        store_timestamp: STORED_MS,
        born_timestamp: STORED_MS - 5,
        ..Default::default()
    }
}

/// The bytes a pull returns for `ext`.
fn wire(ext: &MessageExt) -> Vec<u8> {
    message_decoder::encode(ext, false)
        .expect("encoding a message")
        .to_vec()
}

/// Decodes pulled bytes as the consumer does, then each message as mq reads it.
fn decode_bytes(bytes: &[u8]) -> Result<Outcome, String> {
    let topic: Arc<str> = Arc::from("orders");
    let mut buffer = Bytes::copy_from_slice(bytes);
    let found = message_decoder::decodes_batch(&mut buffer, true, true);
    for ext in &found {
        let message = decode(&topic, ext);
        if message.id().is_none() {
            return Err(format!("decoded {ext:?} without an id"));
        }
    }
    Ok(if found.is_empty() {
        Outcome::Rejected
    } else {
        Outcome::Decoded
    })
}

#[test]
fn fuzz_pulled_messages() {
    let id = MessageId::from_uuid(uuid::Uuid::from_u128(7));
    let ours = Message::new("orders", "paid")
        .with_id(id)
        .with_key("customer-7")
        .with_idempotency_key("pay-7")
        .with_header("tenant", "a\u{1}b\u{2}c")
        .with_header("empty", "");
    let empty = Message::new("orders", "").with_id(id);
    let mut foreign = rocketmq_model::common::message::message_single::Message::builder()
        .topic("orders")
        .body(Bytes::from_static(b"{}"))
        .build_unchecked();
    foreign.put_property(
        CheetahString::from_static_str("tenant"),
        CheetahString::from_static_str("acme"),
    );
    foreign.put_property(
        CheetahString::from_static_str("UNIQ_KEY"),
        CheetahString::from_static_str("7F0000010001"),
    );
    foreign.put_property(
        CheetahString::from_static_str("mq-headers"),
        CheetahString::from_static_str("[[\"a\""),
    );
    let ours = wire(&stored(encode(&ours).expect("encode")));
    let two = [ours.clone(), wire(&stored(encode(&empty).expect("encode")))].concat();
    Target::new("rocket-message")
        .seed("ours", ours)
        .seed("two", two)
        .seed("foreign", wire(&stored(foreign)))
        .run(decode_bytes);
}

/// Text with RocketMQ's property separators (`\u{1}`, `\u{2}`) in it.
fn text() -> impl Strategy<Value = String> {
    "[a-z0-9 \u{1}\u{2}✓=;:\"-]{0,12}"
}

#[test]
fn fuzz_message_round_trip() {
    let message = (
        mq_fuzz::proptest::option::of(text()),
        mq_fuzz::proptest::option::of(text()),
        vec((text(), text()), 0..4),
        vec(any::<u8>(), 0..48),
        any::<u128>(),
    );
    explore(
        "rocket-message-round-trip",
        message,
        |value| format!("{value:?}").into_bytes(),
        |(key, idem, headers, payload, id)| {
            let mut m = Message::new("orders", payload)
                .with_id(MessageId::from_uuid(uuid::Uuid::from_u128(id)));
            if let Some(key) = key {
                m = m.with_key(key);
            }
            if let Some(idem) = idem {
                m = m.with_idempotency_key(idem);
            }
            for (name, value) in headers {
                m = m.with_header(name, value);
            }
            let bytes = wire(&stored(encode(&m).map_err(|e| e.to_string())?));
            let mut buffer = Bytes::from(bytes);
            let found = message_decoder::decodes_batch(&mut buffer, true, true);
            let [ext] = &found[..] else {
                return Err(format!("{} messages came back", found.len()));
            };
            let back = decode(&Arc::from("orders"), ext);
            let want = m.with_published_at(UNIX_EPOCH + Duration::from_millis(STORED_MS as u64));
            if back != want {
                return Err(format!("{back:?} is not {want:?}"));
            }
            Ok(())
        },
    );
}
