//! Fuzzing the record batch decoder, the bytes of every log segment:
//! batches of every record kind (messages, delayed messages, delay-done
//! marks, half messages and their resolutions), decoded down to messages.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use mq_core::{Message, MessageId};
use mq_fuzz::proptest::collection::vec;
use mq_fuzz::proptest::prelude::*;
use mq_fuzz::{explore, Outcome, Target};

use super::batch::{self, BatchWriter, DecodeError, Placement, Record, HEADER_LEN};
use super::keys::Keys;
use crate::half::record::{encode_done, encode_half, Resolution, KIND_HALF, KIND_HALF_DONE};

fn message(n: u128) -> Message {
    Message::new("orders", format!("payload {n} ✓"))
        .with_id(MessageId::from_uuid(uuid::Uuid::from_u128(n)))
        .with_key(format!("order-{n}"))
        .with_idempotency_key(format!("idem-{n}"))
        .with_header("tenant", "acme")
        .with_header("empty", "")
}

fn at(topic: u32, partition: u32, offset: u64) -> Placement {
    Placement {
        topic,
        partition,
        offset,
        deliver_at_us: None,
        visible_at_us: None,
    }
}

/// One batch with a record of every kind, as the engine writes them.
fn every_kind() -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = BatchWriter::begin(&mut buf, 1_700_000_000_000_000);
    w.message(&mut buf, at(1, 0, 0), &message(1));
    w.message(&mut buf, at(1, 1, 7), &Message::new("orders", ""));
    w.message(
        &mut buf,
        Placement {
            deliver_at_us: Some(1_700_000_030_000_000),
            ..at(1, 0, 0)
        },
        &message(2),
    );
    w.message(
        &mut buf,
        Placement {
            visible_at_us: Some(1_700_000_030_000_000),
            ..at(2, 0, 3)
        },
        &message(3),
    );
    w.delay_done(&mut buf, 0);
    let delayed = message(4).with_delay(Duration::from_secs(30));
    w.record(&mut buf, KIND_HALF, |b| {
        encode_half(b, 5, "shop", &delayed, 1_700_000_000_000_001)
    });
    let due = message(5).with_deliver_at(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    w.record(&mut buf, KIND_HALF, |b| encode_half(b, 6, "shop", &due, 2));
    w.record(&mut buf, KIND_HALF_DONE, |b| {
        encode_done(b, 5, Resolution::Commit)
    });
    w.record(&mut buf, KIND_HALF_DONE, |b| {
        encode_done(b, 6, Resolution::Rollback)
    });
    w.finish(&mut buf);
    buf
}

fn empty() -> Vec<u8> {
    let mut buf = Vec::new();
    BatchWriter::begin(&mut buf, 0).finish(&mut buf);
    buf
}

/// Two batches back to back, as a segment holds them.
fn two() -> Vec<u8> {
    let mut buf = Vec::new();
    for offset in 0..2 {
        let mut w = BatchWriter::begin(&mut buf, offset);
        w.message(&mut buf, at(1, 0, offset), &message(u128::from(offset)));
        w.finish(&mut buf);
    }
    buf
}

/// The bytes with the length prefix's CRC made right again, so mutations
/// of the body reach the record parser instead of the checksum.
fn with_crc_fixed(bytes: &[u8]) -> Option<Vec<u8>> {
    let total = batch::peek_len(bytes).ok()?;
    if bytes.len() < total {
        return None;
    }
    let mut fixed = bytes.to_vec();
    let crc = crc32c::crc32c(&fixed[8..total]);
    fixed[4..8].copy_from_slice(&crc.to_le_bytes());
    Some(fixed)
}

/// Decodes every batch at the start of `bytes` down to messages, as a
/// consumer and recovery would; checks the decoder's own promises.
fn decode_all(bytes: &[u8]) -> Result<Outcome, String> {
    let source = Bytes::copy_from_slice(bytes);
    let mut rest = &source[..];
    let mut outcome = Outcome::Rejected;
    while !rest.is_empty() {
        let (batch, len) = match batch::decode(rest) {
            Ok(found) => found,
            Err(DecodeError::Incomplete { needed: Some(n) }) if n <= rest.len() => {
                return Err(format!("incomplete, needing {n} of {} bytes", rest.len()))
            }
            Err(_) => return Ok(outcome),
        };
        if len < HEADER_LEN || len > rest.len() {
            return Err(format!("batch of {len} in {} bytes", rest.len()));
        }
        let checked = batch::parse_checked(rest).map_err(|e| format!("checked batch: {e}"))?;
        if (checked.count, checked.timestamp_us) != (batch.count, batch.timestamp_us) {
            return Err("parse_checked disagrees with decode".into());
        }
        if batch.validate().is_err() {
            return Ok(Outcome::Rejected);
        }
        let mut keys = Keys::default();
        let mut parts = Vec::new();
        for record in batch.records() {
            match record.map_err(|e| format!("validated batch: {e}"))? {
                Record::Message(m) => {
                    parts.push((m.topic, m.partition));
                    if m.to_message("t".into(), &source, &mut keys).is_err() {
                        return Ok(Outcome::Rejected);
                    }
                }
                Record::Half(h) => {
                    if h.to_committed(&source, UNIX_EPOCH).is_err() {
                        return Ok(Outcome::Rejected);
                    }
                }
                Record::DelayDone(_) | Record::HalfDone { .. } => {}
            }
        }
        for (topic, partition) in parts {
            for m in batch.messages_of(topic, partition) {
                let m = m.map_err(|e| format!("messages_of a validated batch: {e}"))?;
                if (m.topic, m.partition) != (topic, partition) {
                    return Err("messages_of gave another partition".into());
                }
            }
        }
        rest = &rest[len..];
        outcome = Outcome::Decoded;
    }
    Ok(outcome)
}

#[test]
fn fuzz_batches() {
    Target::new("native-batch")
        .seed("every-kind", every_kind())
        .seed("empty", empty())
        .seed("two", two())
        .run(|bytes| {
            if let Some(fixed) = with_crc_fixed(bytes) {
                decode_all(&fixed)?;
            }
            decode_all(bytes)
        });
}

fn text() -> impl Strategy<Value = String> {
    "[a-z0-9 ✓-]{0,12}"
}

prop_compose! {
    fn any_message()(
        id in any::<u128>(),
        key in mq_fuzz::proptest::option::of(text()),
        idem in mq_fuzz::proptest::option::of(text()),
        headers in vec((text(), text()), 0..4),
        payload in vec(any::<u8>(), 0..64),
    ) -> Message {
        let mut m = Message::new("t", payload).with_id(MessageId::from_uuid(uuid::Uuid::from_u128(id)));
        if let Some(key) = key {
            m = m.with_key(key);
        }
        if let Some(idem) = idem {
            m = m.with_idempotency_key(idem);
        }
        for (name, value) in headers {
            m = m.with_header(name, value);
        }
        m
    }
}

#[test]
fn fuzz_batch_round_trip() {
    let records = vec(
        (
            any_message(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            mq_fuzz::proptest::option::of(any::<u64>()),
        ),
        0..6,
    );
    explore(
        "native-batch-round-trip",
        (records, any::<u64>()),
        |value| format!("{value:?}").into_bytes(),
        |(records, timestamp_us)| {
            let mut buf = Vec::new();
            let mut w = BatchWriter::begin(&mut buf, timestamp_us);
            let mut want_len = HEADER_LEN;
            for (m, topic, partition, offset, deliver_at_us) in &records {
                let placement = Placement {
                    deliver_at_us: *deliver_at_us,
                    ..at(*topic, *partition, *offset)
                };
                w.message(&mut buf, placement, m);
                want_len += batch::message_record_len(m, deliver_at_us.is_some());
            }
            let len = w.finish(&mut buf);
            if len != want_len || len != buf.len() {
                return Err(format!("encoded {len} bytes, sized {want_len}"));
            }
            let source = Bytes::from(buf);
            let (batch, used) = batch::decode(&source).map_err(|e| e.to_string())?;
            if (used, batch.timestamp_us, batch.count as usize)
                != (len, timestamp_us, records.len())
            {
                return Err("batch header changed".into());
            }
            let mut keys = Keys::default();
            for (record, (m, topic, partition, offset, deliver_at_us)) in
                batch.records().zip(&records)
            {
                let Ok(Record::Message(r)) = record else {
                    return Err(format!("not a message: {record:?}"));
                };
                if (r.topic, r.partition, r.offset, r.deliver_at_us)
                    != (*topic, *partition, *offset, *deliver_at_us)
                {
                    return Err(format!("placement changed: {r:?}"));
                }
                let back = r
                    .to_message("t".into(), &source, &mut keys)
                    .map_err(|e| e.to_string())?;
                if &back != m {
                    return Err(format!("{back:?} is not {m:?}"));
                }
            }
            Ok(())
        },
    );
}
