//! The half store's records in the commit log.
//!
//! Layout (little endian, inside a batch; see [`crate::log::batch`]):
//!
//! ```text
//! kind 3 (half message):
//!   seq:u64 id:[16] flags:u8 prepared_us:u64
//!   [key_len:u32 key]            if flags & 1
//!   [idem_len:u32 idem]          if flags & 2
//!   [delay_us:u64]               if flags & 8  (relative: counts from the commit)
//!   [deliver_at_us:u64]          if flags & 16 (absolute due time)
//!   group_len:u32 group topic_len:u32 topic
//!   header_count:u32 (name_len:u32 name value_len:u32 value){header_count}
//!   payload_len:u32 payload
//! kind 4 (half resolved): seq:u64 outcome:u8 (1 commit, 2 rollback)
//! ```
//!
//! The destination is stored by name, not topic id: it is looked up (and
//! created where allowed) again at commit, so a topic deleted and created
//! again in between still gets the message.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mq_core::message::MessageParts;
use mq_core::{Headers, Message, MessageId};

use crate::log::batch::{put_bytes, utf8, DecodeError, Reader};

/// Record kind of a prepared message.
pub const KIND_HALF: u8 = 3;
/// Record kind of a resolution.
pub const KIND_HALF_DONE: u8 = 4;

const FLAG_KEY: u8 = 1;
const FLAG_IDEM: u8 = 2;
const FLAG_DELAY: u8 = 8;
const FLAG_DELIVER_AT: u8 = 16;
const KNOWN_FLAGS: u8 = FLAG_KEY | FLAG_IDEM | FLAG_DELAY | FLAG_DELIVER_AT;

/// What became of a half message, as its resolved record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Delivered to its topic, in the same batch as the record.
    Commit,
    /// Dropped.
    Rollback,
}

impl Resolution {
    fn code(self) -> u8 {
        match self {
            Resolution::Commit => 1,
            Resolution::Rollback => 2,
        }
    }
}

/// Exact encoded size of the half record of `message` for `group`.
pub fn half_record_len(group: &str, message: &Message) -> usize {
    let mut n = 4 + 1 + 8 + 16 + 1 + 8;
    if let Some(k) = message.key() {
        n += 4 + k.len();
    }
    if let Some(k) = message.idempotency_key() {
        n += 4 + k.len();
    }
    if message.delay().is_some() || message.deliver_at().is_some() {
        n += 8;
    }
    n += 4 + group.len() + 4 + message.topic().len() + 4;
    for (name, value) in message.headers().iter() {
        n += 8 + name.len() + value.len();
    }
    n + 4 + message.payload().len()
}

/// Exact encoded size of a resolved record.
pub const DONE_RECORD_LEN: usize = 4 + 1 + 8 + 1;

/// Writes the fields of the half record `seq` (after its kind byte).
pub fn encode_half(b: &mut Vec<u8>, seq: u64, group: &str, message: &Message, prepared_us: u64) {
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(message.id().unwrap_or_default().as_uuid().as_bytes());
    let mut flags = 0;
    if message.key().is_some() {
        flags |= FLAG_KEY;
    }
    if message.idempotency_key().is_some() {
        flags |= FLAG_IDEM;
    }
    // A relative delay stays relative: it counts from the commit.
    let wait = match (message.delay(), message.deliver_at()) {
        (Some(delay), _) => {
            flags |= FLAG_DELAY;
            Some(u64::try_from(delay.as_micros()).unwrap_or(u64::MAX))
        }
        (None, Some(at)) => {
            flags |= FLAG_DELIVER_AT;
            Some(mq_core::driver::clock::due_micros(at))
        }
        (None, None) => None,
    };
    b.push(flags);
    b.extend_from_slice(&prepared_us.to_le_bytes());
    if let Some(k) = message.key() {
        put_bytes(b, k.as_bytes());
    }
    if let Some(k) = message.idempotency_key() {
        put_bytes(b, k.as_bytes());
    }
    if let Some(wait) = wait {
        b.extend_from_slice(&wait.to_le_bytes());
    }
    put_bytes(b, group.as_bytes());
    put_bytes(b, message.topic().as_bytes());
    b.extend_from_slice(&(message.headers().len() as u32).to_le_bytes());
    for (name, value) in message.headers().iter() {
        put_bytes(b, name.as_bytes());
        put_bytes(b, value.as_bytes());
    }
    put_bytes(b, message.payload());
}

/// Writes the fields of a resolved record (after its kind byte).
pub fn encode_done(b: &mut Vec<u8>, seq: u64, outcome: Resolution) {
    b.extend_from_slice(&seq.to_le_bytes());
    b.push(outcome.code());
}

/// A half record; fields borrow the batch.
#[derive(Clone, Debug)]
pub struct HalfRecord<'a> {
    /// Sequence number in the half store.
    pub seq: u64,
    /// Message id bytes.
    pub id: [u8; 16],
    /// When it was prepared, µs since the epoch.
    pub prepared_us: u64,
    /// The producer group.
    pub group: &'a str,
    /// The destination topic's name.
    pub topic: &'a str,
    key: Option<&'a [u8]>,
    idempotency_key: Option<&'a [u8]>,
    delay_us: Option<u64>,
    deliver_at_us: Option<u64>,
    header_count: u32,
    headers: &'a [u8],
    payload: &'a [u8],
}

/// Parses the fields of a half record (after its kind byte).
pub(crate) fn parse_half<'a>(r: &mut Reader<'a>) -> Result<HalfRecord<'a>, DecodeError> {
    let seq = r.u64()?;
    let mut id = [0u8; 16];
    id.copy_from_slice(r.take(16)?);
    let flags = r.u8()?;
    if flags & !KNOWN_FLAGS != 0 || (flags & FLAG_DELAY != 0 && flags & FLAG_DELIVER_AT != 0) {
        return Err(DecodeError::Corrupt("unknown half record flags"));
    }
    let prepared_us = r.u64()?;
    let key = (flags & FLAG_KEY != 0).then(|| r.bytes()).transpose()?;
    let idempotency_key = (flags & FLAG_IDEM != 0).then(|| r.bytes()).transpose()?;
    let delay_us = (flags & FLAG_DELAY != 0).then(|| r.u64()).transpose()?;
    let deliver_at_us = (flags & FLAG_DELIVER_AT != 0)
        .then(|| r.u64())
        .transpose()?;
    let group = utf8(r.bytes()?)?;
    let topic = utf8(r.bytes()?)?;
    let header_count = r.u32()?;
    let headers_start = r.0;
    for _ in 0..header_count {
        r.bytes()?;
        r.bytes()?;
    }
    let headers = &headers_start[..headers_start.len() - r.0.len()];
    let payload = r.bytes()?;
    Ok(HalfRecord {
        seq,
        id,
        prepared_us,
        group,
        topic,
        key,
        idempotency_key,
        delay_us,
        deliver_at_us,
        header_count,
        headers,
        payload,
    })
}

/// Parses the fields of a resolved record (after its kind byte).
pub(crate) fn parse_done(r: &mut Reader<'_>) -> Result<(u64, Resolution), DecodeError> {
    let seq = r.u64()?;
    let outcome = match r.u8()? {
        1 => Resolution::Commit,
        2 => Resolution::Rollback,
        _ => return Err(DecodeError::Corrupt("unknown half outcome")),
    };
    Ok((seq, outcome))
}

impl HalfRecord<'_> {
    /// The message id.
    pub fn id(&self) -> MessageId {
        MessageId::from_uuid(uuid::Uuid::from_bytes(self.id))
    }

    /// The message as it was prepared (a relative delay still relative),
    /// its payload sharing `source` when the record borrows from it.
    pub fn to_message(&self, source: &Bytes) -> Result<Message, DecodeError> {
        let payload = if source.as_ptr_range().contains(&self.payload.as_ptr()) {
            source.slice_ref(self.payload)
        } else {
            Bytes::copy_from_slice(self.payload)
        };
        let text = |b: &[u8]| utf8(b).map(Arc::<str>::from);
        let mut headers = Headers::new();
        let mut r = Reader(self.headers);
        for _ in 0..self.header_count {
            let name = utf8(r.bytes()?)?;
            let value = utf8(r.bytes()?)?;
            headers.insert(name, value);
        }
        let message = Message::from_parts(MessageParts {
            topic: Arc::from(self.topic),
            key: self.key.map(text).transpose()?,
            payload,
            headers,
            id: Some(self.id()),
            idempotency_key: self.idempotency_key.map(text).transpose()?,
            deliver_at: self
                .deliver_at_us
                .map(|us| UNIX_EPOCH + Duration::from_micros(us)),
            published_at: None,
        });
        Ok(match self.delay_us {
            Some(us) => message.with_delay(Duration::from_micros(us)),
            None => message,
        })
    }

    /// The message to deliver when committed at `now`: a relative delay
    /// becomes a due time counted from the commit.
    pub fn to_committed(&self, source: &Bytes, now: SystemTime) -> Result<Message, DecodeError> {
        let message = self.to_message(source)?;
        Ok(match message.delay() {
            Some(delay) => {
                // A delay the clock cannot represent was refused at send.
                let due = now.checked_add(delay).unwrap_or(now);
                message.with_deliver_at(due)
            }
            None => message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{decode, BatchWriter, Record};

    fn sample(delay: bool) -> Message {
        let m = Message::new("orders", "paid ✓")
            .with_id(MessageId::new())
            .with_key("order-1")
            .with_idempotency_key("idem-1")
            .with_header("tenant", "acme")
            .with_header("empty", "");
        if delay {
            m.with_delay(Duration::from_secs(30))
        } else {
            m
        }
    }

    #[test]
    fn round_trip_with_exact_lengths() {
        let (m, delayed) = (sample(false), sample(true));
        let mut buf = Vec::new();
        let mut w = BatchWriter::begin(&mut buf, 7);
        w.record(&mut buf, KIND_HALF, |b| encode_half(b, 3, "shop", &m, 11));
        w.record(&mut buf, KIND_HALF, |b| {
            encode_half(b, 4, "shop", &delayed, 12)
        });
        w.record(&mut buf, KIND_HALF_DONE, |b| {
            encode_done(b, 3, Resolution::Rollback)
        });
        let len = w.finish(&mut buf);
        assert_eq!(
            len,
            crate::log::batch::HEADER_LEN
                + half_record_len("shop", &m)
                + half_record_len("shop", &delayed)
                + DONE_RECORD_LEN
        );
        let bytes = Bytes::from(buf);
        let (batch, _) = decode(&bytes).unwrap();
        let records: Vec<_> = batch.records().collect::<Result<_, _>>().unwrap();
        let Record::Half(first) = &records[0] else {
            panic!("not a half record: {:?}", records[0])
        };
        assert_eq!((first.seq, first.group, first.topic), (3, "shop", "orders"));
        assert_eq!(first.prepared_us, 11);
        assert_eq!(first.to_message(&bytes).unwrap(), m);
        let Record::Half(second) = &records[1] else {
            panic!("not a half record: {:?}", records[1])
        };
        assert_eq!(second.to_message(&bytes).unwrap(), delayed);
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let committed = second.to_committed(&bytes, now).unwrap();
        assert_eq!(committed.delay(), None);
        assert_eq!(
            committed.deliver_at(),
            Some(now + Duration::from_secs(30)),
            "the delay counts from the commit"
        );
        assert!(matches!(
            records[2],
            Record::HalfDone {
                seq: 3,
                outcome: Resolution::Rollback
            }
        ));
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let m = sample(true);
        let mut buf = Vec::new();
        let mut w = BatchWriter::begin(&mut buf, 7);
        w.record(&mut buf, KIND_HALF, |b| encode_half(b, 0, "g", &m, 1));
        w.finish(&mut buf);
        // Every truncation of the record's fields, and every flag byte.
        let fields = &buf[crate::log::batch::HEADER_LEN + 5..];
        for cut in 0..fields.len() {
            assert!(
                parse_half(&mut Reader(&fields[..cut])).is_err(),
                "cut {cut}"
            );
        }
        for flags in [0x40u8, FLAG_DELAY | FLAG_DELIVER_AT] {
            let mut bad = fields.to_vec();
            bad[24] = flags;
            assert!(parse_half(&mut Reader(&bad)).is_err(), "flags {flags:#x}");
        }
        assert!(parse_done(&mut Reader(&[0, 0, 0, 0, 0, 0, 0, 0, 9])).is_err());
    }
}
