//! Messages as Kafka records, both ways.
//!
//! | mq | Kafka record |
//! |---|---|
//! | ordering key | record key (UTF-8 bytes) |
//! | payload | value |
//! | headers, in order | headers, in order |
//! | id | header `mq-id` (hyphenated UUID) |
//! | idempotency key | header `mq-idempotency-key` |
//! | publish time | record timestamp (CreateTime, milliseconds) |
//!
//! **Foreign records** (written by other clients) are read as well, never
//! refused and never a panic:
//! - a key or header value that is not UTF-8 is decoded lossily (each
//!   invalid sequence becomes U+FFFD). Keys only order handling, so two
//!   keys that decode alike are merely handled one after the other;
//! - a header name that is not UTF-8 is decoded the same way, a header
//!   without a value (null) reads as the empty string;
//! - a record without a valid `mq-id` gets an id derived from its topic,
//!   partition and offset, so every redelivery and every group sees the
//!   same one; a null value reads as an empty payload.

use std::ffi::CStr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use mq_core::driver::clock::{epoch_millis, from_epoch_millis};
use mq_core::driver::murmur2;
use mq_core::message::reserved::{ID, IDEMPOTENCY_KEY};
use mq_core::message::MessageParts;
use mq_core::{Headers, Message, MessageId};
use rdkafka::bindings as rdsys;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::Message as _;
use uuid::Uuid;

#[cfg(test)]
mod fuzz;

/// The headers of the record for `message` with id `id`.
pub(crate) fn headers_of(message: &Message, id: MessageId) -> OwnedHeaders {
    let extra = 1 + usize::from(message.idempotency_key().is_some());
    let mut buf = Uuid::encode_buffer();
    let id_text: &str = id.as_uuid().hyphenated().encode_lower(&mut buf);
    let mut out = OwnedHeaders::new_with_capacity(message.headers().len() + extra).insert(Header {
        key: ID,
        value: Some(id_text),
    });
    if let Some(key) = message.idempotency_key() {
        out = out.insert(Header {
            key: IDEMPOTENCY_KEY,
            value: Some(key),
        });
    }
    for (name, value) in message.headers().iter() {
        out = out.insert(Header {
            key: name,
            value: Some(value),
        });
    }
    out
}

/// The record timestamp for `message`: its publish time, or now.
pub(crate) fn timestamp_of(message: &Message) -> i64 {
    let at = message.published_at().unwrap_or_else(SystemTime::now);
    i64::try_from(epoch_millis(at)).unwrap_or(i64::MAX)
}

/// The message a consumed record carries; see the module docs for records
/// mq did not write.
pub(crate) fn decode(topic: &Arc<str>, record: &BorrowedMessage<'_>) -> Message {
    decode_fields(
        topic,
        RecordFields {
            key: record.key(),
            payload: record.payload(),
            headers: raw_headers(record),
            partition: record.partition(),
            offset: record.offset(),
            timestamp_ms: record.timestamp().to_millis(),
        },
    )
}

/// A consumed record's fields as librdkafka hands them over: bytes a
/// foreign producer chose, kept apart from the FFI so they can be fuzzed.
struct RecordFields<'a> {
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    /// Header names (without their NUL) and values.
    headers: Vec<(&'a [u8], &'a [u8])>,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
}

fn decode_fields(topic: &Arc<str>, record: RecordFields<'_>) -> Message {
    let mut id = None;
    let mut idempotency_key = None;
    let mut headers = Headers::new();
    for (name, value) in record.headers {
        let name = text(name);
        match name.as_str() {
            ID => id = Uuid::try_parse_ascii(value).ok().map(MessageId::from_uuid),
            IDEMPOTENCY_KEY => idempotency_key = Some(Arc::from(text(value).as_str())),
            _ => headers.insert(name, text(value)),
        }
    }
    let offset = record.offset.max(0) as u64;
    let partition = record.partition.max(0) as u64;
    let id = id.unwrap_or_else(|| foreign_id(topic, partition, offset));
    let published_at = record
        .timestamp_ms
        .and_then(|ms| u64::try_from(ms).ok())
        .map(from_epoch_millis);
    Message::from_parts(MessageParts {
        key: record
            .key
            .map(|k| Arc::from(String::from_utf8_lossy(k).as_ref())),
        headers,
        id: Some(id),
        idempotency_key,
        published_at,
        ..MessageParts::new(
            topic.clone(),
            record
                .payload
                .map(Bytes::copy_from_slice)
                .unwrap_or_default(),
        )
    })
}

/// A stable id for a record without one: its topic, partition and offset.
fn foreign_id(topic: &str, partition: u64, offset: u64) -> MessageId {
    let high = (u64::from(murmur2(topic.as_bytes()) as u32) << 32) | (partition & 0xffff_ffff);
    MessageId::from_uuid(Uuid::from_u64_pair(high, offset))
}

/// Text of a header value or key, lossily when it is not UTF-8.
fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

/// The record's headers as (name, value) bytes, read through librdkafka's
/// C API: rdkafka's own accessor panics on a header name that is not UTF-8,
/// which a foreign producer may write.
fn raw_headers<'a>(record: &'a BorrowedMessage<'_>) -> Vec<(&'a [u8], &'a [u8])> {
    let mut out = Vec::new();
    let mut hdrs: *mut rdsys::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `record.ptr()` is a live message owned by `record`; the
    // headers it returns are owned by the message and read only while the
    // borrow of `record` lasts.
    let err = unsafe { rdsys::rd_kafka_message_headers(record.ptr(), &mut hdrs) };
    if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
        return out;
    }
    // SAFETY: as above; `hdrs` is non-null.
    let count = unsafe { rdsys::rd_kafka_header_cnt(hdrs) };
    out.reserve(count);
    for idx in 0..count {
        let mut name: *const std::os::raw::c_char = std::ptr::null();
        let mut value: *const std::os::raw::c_void = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: `idx` is below the count; the out-pointers are valid.
        let err =
            unsafe { rdsys::rd_kafka_header_get_all(hdrs, idx, &mut name, &mut value, &mut size) };
        if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            continue;
        }
        // SAFETY: librdkafka gives a NUL-terminated name and `size` bytes
        // of value (or a null value), both alive as long as the message.
        let (name, value) = unsafe {
            let name: &'a [u8] = CStr::from_ptr(name).to_bytes();
            let value: &'a [u8] = if value.is_null() {
                &[]
            } else {
                std::slice::from_raw_parts(value.cast::<u8>(), size)
            };
            (name, value)
        };
        out.push((name, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_ids_are_stable_and_distinct() {
        assert_eq!(foreign_id("t", 1, 7), foreign_id("t", 1, 7));
        assert_ne!(foreign_id("t", 1, 7), foreign_id("t", 2, 7));
        assert_ne!(foreign_id("t", 1, 7), foreign_id("u", 1, 7));
    }

    #[test]
    fn lossy_text() {
        assert_eq!(text(b"ok"), "ok");
        assert_eq!(text(&[0x66, 0xff]), "f\u{fffd}");
    }
}
