//! Record batches: the unit of append, checksum and atomicity.
//!
//! Every append writes one or more batches to the commit log. A batch is
//! all-or-nothing on disk: its length prefix and CRC32C are checked before
//! any record in it is used, so a torn or corrupted batch is never served.
//! A transaction is one batch, which is what makes it atomic across topics
//! and partitions.
//!
//! Layout (all integers little endian):
//!
//! ```text
//! batch   := len:u32 crc:u32 body                 len = 4 + body.len(), crc = CRC32C(body)
//! body    := magic:u8(=1) flags:u8 reserved:u16 timestamp_us:u64 count:u32 record{count}
//! record  := rlen:u32 kind:u8 fields               rlen = 1 + fields.len()
//! kind 0 (message) and 1 (delayed message):
//!   topic:u32 partition:u32 offset:u64 id:[16] flags:u8
//!   [key_len:u32 key]            if flags & 1
//!   [idem_len:u32 idem]          if flags & 2
//!   [deliver_at_us:u64]          if kind == 1
//!   [visible_at_us:u64]          if flags & 4 (kind 0 only: a promoted delay,
//!                                hidden from consumers until then)
//!   header_count:u32 (name_len:u32 name value_len:u32 value){header_count}
//!   payload_len:u32 payload
//!   (for kind 1, `offset` is the sequence number in the delay store)
//! kind 2 (delay done): seq:u64
//! kind 3 (half message) and 4 (half resolved): see [`crate::half::record`]
//! ```

use std::fmt;
use std::time::SystemTime;

use super::keys::Keys;
use bytes::Bytes;
use mq_core::message::MessageParts;
use mq_core::{Headers, Message, MessageId};

/// Bytes before the first record.
pub const HEADER_LEN: usize = 24;
/// The largest batch the decoder accepts; a bigger length prefix is corruption.
pub const MAX_BATCH_LEN: usize = 1 << 30;
const MAGIC: u8 = 1;

const KIND_MESSAGE: u8 = 0;
const KIND_DELAYED: u8 = 1;
const KIND_DELAY_DONE: u8 = 2;
const FLAG_KEY: u8 = 1;
const FLAG_IDEM: u8 = 2;
const FLAG_VISIBLE_AT: u8 = 4;

/// Why bytes could not be decoded as a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ends before the batch does (a torn tail, or read more).
    Incomplete {
        /// Total bytes the batch needs, when the length prefix was readable.
        needed: Option<usize>,
    },
    /// The bytes are not a valid batch.
    Corrupt(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete { .. } => f.write_str("batch is incomplete"),
            DecodeError::Corrupt(why) => f.write_str(why),
        }
    }
}

/// Exact encoded size of a message record; `delayed` covers its one
/// optional time field (a due time, or a promoted delay's visibility time).
pub fn message_record_len(message: &Message, delayed: bool) -> usize {
    let mut n = 4 + 1 + 4 + 4 + 8 + 16 + 1;
    if let Some(k) = message.key() {
        n += 4 + k.len();
    }
    if let Some(k) = message.idempotency_key() {
        n += 4 + k.len();
    }
    if delayed {
        n += 8;
    }
    n += 4;
    for (name, value) in message.headers().iter() {
        n += 8 + name.len() + value.len();
    }
    n + 4 + message.payload().len()
}

/// Exact encoded size of a delay-done record.
pub const DELAY_DONE_RECORD_LEN: usize = 4 + 1 + 8;

/// Where a message record goes.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// Topic id.
    pub topic: u32,
    /// Partition.
    pub partition: u32,
    /// Partition offset, or delay sequence number for a delayed record.
    pub offset: u64,
    /// Due time for a delayed record (microseconds since the epoch).
    pub deliver_at_us: Option<u64>,
    /// For a message record (no `deliver_at_us`): consumers skip it until
    /// this time. Set on delays promoted ahead of their due time.
    pub visible_at_us: Option<u64>,
}

/// Builds one batch at the end of a buffer (the buffer is passed to each
/// call so several batches can be built into one buffer in turn).
pub struct BatchWriter {
    start: usize,
    count: u32,
}

impl BatchWriter {
    /// Starts a batch at the end of `buf`.
    pub fn begin(buf: &mut Vec<u8>, timestamp_us: u64) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&[0u8; 8]);
        buf.push(MAGIC);
        buf.push(0);
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&timestamp_us.to_le_bytes());
        buf.extend_from_slice(&[0u8; 4]);
        BatchWriter { start, count: 0 }
    }

    /// Bytes written so far for this batch.
    pub fn len(&self, buf: &[u8]) -> usize {
        buf.len() - self.start
    }

    /// Whether no record was added yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds a message record.
    pub fn message(&mut self, b: &mut Vec<u8>, at: Placement, message: &Message) {
        let rstart = b.len();
        b.extend_from_slice(&[0u8; 4]);
        b.push(if at.deliver_at_us.is_some() {
            KIND_DELAYED
        } else {
            KIND_MESSAGE
        });
        b.extend_from_slice(&at.topic.to_le_bytes());
        b.extend_from_slice(&at.partition.to_le_bytes());
        b.extend_from_slice(&at.offset.to_le_bytes());
        b.extend_from_slice(message.id().unwrap_or_default().as_uuid().as_bytes());
        let mut flags = 0;
        if message.key().is_some() {
            flags |= FLAG_KEY;
        }
        if message.idempotency_key().is_some() {
            flags |= FLAG_IDEM;
        }
        let visible_at = at.visible_at_us.filter(|_| at.deliver_at_us.is_none());
        if visible_at.is_some() {
            flags |= FLAG_VISIBLE_AT;
        }
        b.push(flags);
        if let Some(k) = message.key() {
            put_bytes(b, k.as_bytes());
        }
        if let Some(k) = message.idempotency_key() {
            put_bytes(b, k.as_bytes());
        }
        if let Some(due) = at.deliver_at_us.or(visible_at) {
            b.extend_from_slice(&due.to_le_bytes());
        }
        b.extend_from_slice(&(message.headers().len() as u32).to_le_bytes());
        for (name, value) in message.headers().iter() {
            put_bytes(b, name.as_bytes());
            put_bytes(b, value.as_bytes());
        }
        put_bytes(b, message.payload());
        let rlen = (b.len() - rstart - 4) as u32;
        b[rstart..rstart + 4].copy_from_slice(&rlen.to_le_bytes());
        self.count += 1;
    }

    /// Adds a record of `kind` whose fields `fields` writes (record kinds
    /// defined outside this module, such as half messages).
    pub fn record(&mut self, b: &mut Vec<u8>, kind: u8, fields: impl FnOnce(&mut Vec<u8>)) {
        let rstart = b.len();
        b.extend_from_slice(&[0u8; 4]);
        b.push(kind);
        fields(b);
        let rlen = (b.len() - rstart - 4) as u32;
        b[rstart..rstart + 4].copy_from_slice(&rlen.to_le_bytes());
        self.count += 1;
    }

    /// Adds a record saying delayed message `seq` was delivered.
    pub fn delay_done(&mut self, b: &mut Vec<u8>, seq: u64) {
        b.extend_from_slice(&9u32.to_le_bytes());
        b.push(KIND_DELAY_DONE);
        b.extend_from_slice(&seq.to_le_bytes());
        self.count += 1;
    }

    /// Writes length, count and checksum; returns the batch length in bytes.
    pub fn finish(self, b: &mut [u8]) -> usize {
        let s = self.start;
        let total = b.len() - s;
        b[s + 20..s + 24].copy_from_slice(&self.count.to_le_bytes());
        let crc = crc32c::crc32c(&b[s + 8..]);
        b[s..s + 4].copy_from_slice(&((total - 4) as u32).to_le_bytes());
        b[s + 4..s + 8].copy_from_slice(&crc.to_le_bytes());
        total
    }
}

pub(crate) fn put_bytes(b: &mut Vec<u8>, data: &[u8]) {
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(data);
}

/// The total length of the batch starting at `buf`, from its length prefix.
pub fn peek_len(buf: &[u8]) -> Result<usize, DecodeError> {
    if buf.len() < 4 {
        return Err(DecodeError::Incomplete { needed: None });
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(HEADER_LEN - 4..=MAX_BATCH_LEN).contains(&len) {
        return Err(DecodeError::Corrupt("batch length out of range"));
    }
    Ok(len + 4)
}

/// A checked batch: its length and CRC matched.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// Append time, microseconds since the epoch.
    pub timestamp_us: u64,
    /// Number of records.
    pub count: u32,
    records: &'a [u8],
}

/// Decodes the batch at the start of `buf`; returns it and its total length.
///
/// Never panics: any input is either a batch, incomplete or corrupt.
pub fn decode(buf: &[u8]) -> Result<(Batch<'_>, usize), DecodeError> {
    let total = peek_len(buf)?;
    if buf.len() < total {
        return Err(DecodeError::Incomplete {
            needed: Some(total),
        });
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let body = &buf[8..total];
    if crc32c::crc32c(body) != crc {
        return Err(DecodeError::Corrupt("batch checksum mismatch"));
    }
    if body[0] != MAGIC {
        return Err(DecodeError::Corrupt("unknown batch format"));
    }
    let mut r = Reader(&body[4..]);
    let timestamp_us = r.u64()?;
    let count = r.u32()?;
    Ok((
        Batch {
            timestamp_us,
            count,
            records: r.0,
        },
        total,
    ))
}

/// Parses a batch already checked by [`decode`] (skips the checksum).
pub fn parse_checked(buf: &[u8]) -> Result<Batch<'_>, DecodeError> {
    let total = peek_len(buf)?;
    if buf.len() < total {
        return Err(DecodeError::Incomplete {
            needed: Some(total),
        });
    }
    let mut r = Reader(&buf[12..total]);
    let timestamp_us = r.u64()?;
    let count = r.u32()?;
    Ok(Batch {
        timestamp_us,
        count,
        records: r.0,
    })
}

impl<'a> Batch<'a> {
    /// The records, each parsed on demand.
    pub fn records(&self) -> Records<'a> {
        Records {
            rest: self.records,
            left: self.count,
        }
    }

    /// The message records (not delayed) of one partition, skipping the
    /// others by their length prefix without parsing them.
    pub fn messages_of(
        &self,
        topic: u32,
        partition: u32,
    ) -> impl Iterator<Item = Result<MessageRecord<'a>, DecodeError>> + 'a {
        let mut rest = self.records;
        let mut left = self.count;
        std::iter::from_fn(move || {
            while left > 0 {
                left -= 1;
                let mut r = Reader(rest);
                let body = match r.u32().and_then(|len| r.take(len as usize)) {
                    Ok(body) => body,
                    Err(e) => {
                        left = 0;
                        return Some(Err(e));
                    }
                };
                rest = r.0;
                // kind:u8 topic:u32 partition:u32 at fixed places.
                if body.len() < 9 || body[0] != KIND_MESSAGE {
                    continue;
                }
                let t = u32::from_le_bytes([body[1], body[2], body[3], body[4]]);
                let p = u32::from_le_bytes([body[5], body[6], body[7], body[8]]);
                if t != topic || p != partition {
                    continue;
                }
                return Some(match parse_record(body) {
                    Ok(Record::Message(m)) => Ok(m),
                    Ok(_) => Err(DecodeError::Corrupt("record kind changed")),
                    Err(e) => Err(e),
                });
            }
            None
        })
    }

    /// Checks every record parses; used by recovery before trusting a batch.
    pub fn validate(&self) -> Result<(), DecodeError> {
        for record in self.records() {
            record?;
        }
        Ok(())
    }
}

/// Iterator over the records of a batch.
pub struct Records<'a> {
    rest: &'a [u8],
    left: u32,
}

/// One record of a batch.
#[derive(Clone, Debug)]
pub enum Record<'a> {
    /// A message, delivered now or (when `deliver_at_us` is set) later.
    Message(MessageRecord<'a>),
    /// Delayed message `seq` has been appended to its topic.
    DelayDone(u64),
    /// A prepared (half) message, delivered to nobody until committed.
    Half(crate::half::record::HalfRecord<'a>),
    /// Half message `seq` was committed or rolled back.
    HalfDone {
        /// Its sequence number in the half store.
        seq: u64,
        /// What became of it.
        outcome: crate::half::record::Resolution,
    },
}

/// A message record; fields borrow the batch.
#[derive(Clone, Debug)]
pub struct MessageRecord<'a> {
    /// Topic id.
    pub topic: u32,
    /// Partition.
    pub partition: u32,
    /// Partition offset (delay sequence number when delayed).
    pub offset: u64,
    /// Message id bytes.
    pub id: [u8; 16],
    /// Ordering key.
    pub key: Option<&'a [u8]>,
    /// Idempotency key.
    pub idempotency_key: Option<&'a [u8]>,
    /// Due time when this is a delayed record.
    pub deliver_at_us: Option<u64>,
    /// A promoted delay: not to be delivered before this time.
    pub visible_at_us: Option<u64>,
    header_count: u32,
    headers: &'a [u8],
    /// Payload bytes.
    pub payload: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return (!self.rest.is_empty())
                .then_some(Err(DecodeError::Corrupt("bytes after the last record")));
        }
        self.left -= 1;
        let mut outer = Reader(self.rest);
        let record = outer
            .u32()
            .and_then(|len| outer.take(len as usize))
            .and_then(parse_record);
        match record {
            Ok(r) => {
                self.rest = outer.0;
                Some(Ok(r))
            }
            Err(e) => {
                self.left = 0;
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

fn parse_record(bytes: &[u8]) -> Result<Record<'_>, DecodeError> {
    let mut r = Reader(bytes);
    let kind = r.u8()?;
    let record = match kind {
        KIND_DELAY_DONE => Record::DelayDone(r.u64()?),
        crate::half::record::KIND_HALF => Record::Half(crate::half::record::parse_half(&mut r)?),
        crate::half::record::KIND_HALF_DONE => {
            let (seq, outcome) = crate::half::record::parse_done(&mut r)?;
            Record::HalfDone { seq, outcome }
        }
        KIND_MESSAGE | KIND_DELAYED => {
            let topic = r.u32()?;
            let partition = r.u32()?;
            let offset = r.u64()?;
            let mut id = [0u8; 16];
            id.copy_from_slice(r.take(16)?);
            let flags = r.u8()?;
            if flags & !(FLAG_KEY | FLAG_IDEM | FLAG_VISIBLE_AT) != 0
                || (kind == KIND_DELAYED && flags & FLAG_VISIBLE_AT != 0)
            {
                return Err(DecodeError::Corrupt("unknown record flags"));
            }
            let key = if flags & FLAG_KEY != 0 {
                Some(r.bytes()?)
            } else {
                None
            };
            let idempotency_key = if flags & FLAG_IDEM != 0 {
                Some(r.bytes()?)
            } else {
                None
            };
            let deliver_at_us = if kind == KIND_DELAYED {
                Some(r.u64()?)
            } else {
                None
            };
            let visible_at_us = if flags & FLAG_VISIBLE_AT != 0 {
                Some(r.u64()?)
            } else {
                None
            };
            let header_count = r.u32()?;
            let headers_start = r.0;
            for _ in 0..header_count {
                r.bytes()?;
                r.bytes()?;
            }
            let headers = &headers_start[..headers_start.len() - r.0.len()];
            let payload = r.bytes()?;
            Record::Message(MessageRecord {
                topic,
                partition,
                offset,
                id,
                key,
                idempotency_key,
                deliver_at_us,
                visible_at_us,
                header_count,
                headers,
                payload,
            })
        }
        _ => return Err(DecodeError::Corrupt("unknown record kind")),
    };
    if !r.0.is_empty() {
        return Err(DecodeError::Corrupt("record length mismatch"));
    }
    Ok(record)
}

impl MessageRecord<'_> {
    /// Builds the message; `source` is the buffer the record borrows from,
    /// so the payload is shared rather than copied, and `keys` shares key
    /// strings between messages.
    pub fn to_message(
        &self,
        topic: std::sync::Arc<str>,
        source: &Bytes,
        keys: &mut Keys,
    ) -> Result<Message, DecodeError> {
        self.to_received(topic, source, None, keys)
    }

    /// [`to_message`](Self::to_message) for a consumer: also stamped with
    /// the time its batch was published.
    pub fn to_received(
        &self,
        topic: std::sync::Arc<str>,
        source: &Bytes,
        published_at: Option<SystemTime>,
        keys: &mut Keys,
    ) -> Result<Message, DecodeError> {
        let payload = if source.as_ptr_range().contains(&self.payload.as_ptr()) {
            source.slice_ref(self.payload)
        } else {
            Bytes::copy_from_slice(self.payload)
        };
        let key = self.key.map(|k| keys.get(k)).transpose()?;
        let idempotency_key = self
            .idempotency_key
            .map(|k| utf8(k).map(std::sync::Arc::from))
            .transpose()?;
        let mut headers = Headers::new();
        let mut r = Reader(self.headers);
        for _ in 0..self.header_count {
            let name = utf8(r.bytes()?)?;
            let value = utf8(r.bytes()?)?;
            headers.insert(name, value);
        }
        Ok(Message::from_parts(MessageParts {
            topic,
            key,
            payload,
            headers,
            id: Some(MessageId::from_uuid(uuid::Uuid::from_bytes(self.id))),
            idempotency_key,
            deliver_at: None,
            published_at,
        }))
    }
}

/// Checks UTF-8 of a stored string.
pub fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| DecodeError::Corrupt("string is not UTF-8"))
}

/// Reads the fields of a record, each length-checked.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Corrupt("record truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message::new("t", "payload ✓")
            .with_key("k-1")
            .with_header("a", "1")
            .with_header("mq-attempt", "2")
            .with_idempotency_key("idem")
            .with_id(MessageId::new())
    }

    #[test]
    fn round_trip_and_exact_length() {
        let m = sample();
        let mut buf = Vec::new();
        let mut w = BatchWriter::begin(&mut buf, 42);
        w.message(
            &mut buf,
            Placement {
                topic: 7,
                partition: 3,
                offset: 99,
                deliver_at_us: None,
                visible_at_us: None,
            },
            &m,
        );
        w.message(
            &mut buf,
            Placement {
                topic: 7,
                partition: 1,
                offset: 5,
                deliver_at_us: Some(1234),
                visible_at_us: None,
            },
            &m,
        );
        w.message(
            &mut buf,
            Placement {
                topic: 7,
                partition: 1,
                offset: 6,
                deliver_at_us: None,
                visible_at_us: Some(5678),
            },
            &m,
        );
        w.delay_done(&mut buf, 11);
        let len = w.finish(&mut buf);
        assert_eq!(len, buf.len());
        assert_eq!(
            len,
            HEADER_LEN
                + message_record_len(&m, false)
                + 2 * message_record_len(&m, true)
                + DELAY_DONE_RECORD_LEN
        );
        let bytes = Bytes::from(buf);
        let (batch, used) = decode(&bytes).unwrap();
        assert_eq!((used, batch.timestamp_us, batch.count), (len, 42, 4));
        let records: Vec<_> = batch.records().collect::<Result<_, _>>().unwrap();
        let Record::Message(first) = &records[0] else {
            panic!()
        };
        assert_eq!(
            (
                first.topic,
                first.partition,
                first.offset,
                first.deliver_at_us
            ),
            (7, 3, 99, None)
        );
        let back = first
            .to_message("t".into(), &bytes, &mut Keys::default())
            .unwrap();
        assert_eq!(back, m);
        let Record::Message(second) = &records[1] else {
            panic!()
        };
        assert_eq!(second.deliver_at_us, Some(1234));
        let Record::Message(third) = &records[2] else {
            panic!()
        };
        assert_eq!(
            (third.deliver_at_us, third.visible_at_us),
            (None, Some(5678))
        );
        assert_eq!(
            third
                .to_message("t".into(), &bytes, &mut Keys::default())
                .unwrap(),
            m
        );
        assert!(matches!(records[3], Record::DelayDone(11)));
    }

    #[test]
    fn torn_and_flipped_are_detected() {
        let mut buf = Vec::new();
        let mut w = BatchWriter::begin(&mut buf, 1);
        w.message(
            &mut buf,
            Placement {
                topic: 1,
                partition: 0,
                offset: 0,
                deliver_at_us: None,
                visible_at_us: None,
            },
            &sample(),
        );
        w.finish(&mut buf);
        for cut in 0..buf.len() {
            assert!(matches!(
                decode(&buf[..cut]),
                Err(DecodeError::Incomplete { .. }) | Err(DecodeError::Corrupt(_))
            ));
        }
        for i in 4..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flip at {i} not detected");
        }
    }
}
