//! Fuzzing the dedup journal's records (`dedup-<generation>.journal`),
//! read back at every open.

use std::sync::Arc;

use mq_core::MessageId;
use mq_fuzz::proptest::prelude::*;
use mq_fuzz::{explore, Outcome, Target};

use super::{decode_record, encode_record, DedupEntry};

fn entry(topic: &str, offset: Option<u64>, n: u128) -> DedupEntry {
    DedupEntry {
        id: MessageId::from_uuid(uuid::Uuid::from_u128(n)),
        topic: Arc::from(topic),
        partition: 3,
        offset,
        at_ms: 1_700_000_000_000,
        position: 4096,
    }
}

/// A journal as checkpoints write it: records back to back.
fn journal() -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(&mut out, "pay-1", &entry("orders", Some(7), 1));
    encode_record(&mut out, "", &entry("t", None, 2));
    encode_record(&mut out, "ключ ✓", &entry("audit.log", Some(0), 3));
    out
}

/// Each record's CRC made right again, so mutations reach the fields
/// behind it; stops where the framing itself is broken.
fn with_crcs_fixed(bytes: &[u8]) -> Vec<u8> {
    let mut fixed = bytes.to_vec();
    let mut at = 0;
    while let Some(raw) = fixed.get(at..at + 4) {
        let len = u32::from_le_bytes(raw.try_into().expect("4 bytes")) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|end| *end <= fixed.len()) else {
            break;
        };
        let crc = crc32c::crc32c(&fixed[at + 8..end]);
        fixed[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
    fixed
}

/// Reads records as loading does, checking each claims only bytes it has.
fn read_all(bytes: &[u8]) -> Result<Outcome, String> {
    let mut at = 0;
    let mut read = 0;
    while let Some((_, _, used)) = decode_record(&bytes[at..]) {
        if used == 0 || used > bytes.len() - at {
            return Err(format!(
                "a record of {used} bytes at {at} of {}",
                bytes.len()
            ));
        }
        at += used;
        read += 1;
    }
    Ok(if read > 0 && at == bytes.len() {
        Outcome::Decoded
    } else {
        Outcome::Rejected
    })
}

#[test]
fn fuzz_dedup_journal() {
    Target::new("native-dedup")
        .seed("journal", journal())
        .run(|bytes| {
            read_all(&with_crcs_fixed(bytes))?;
            read_all(bytes)
        });
}

#[test]
fn fuzz_dedup_round_trip() {
    let fields = (
        "[a-z0-9._-]{1,40}",
        "\\PC{0,24}",
        any::<u128>(),
        any::<u32>(),
        any::<Option<u64>>().prop_filter("u64::MAX means none", |o| *o != Some(u64::MAX)),
        any::<u64>(),
        any::<u64>(),
    );
    explore(
        "native-dedup-round-trip",
        fields,
        |value| format!("{value:?}").into_bytes(),
        |(topic, key, id, partition, offset, at_ms, position)| {
            let want = DedupEntry {
                id: MessageId::from_uuid(uuid::Uuid::from_u128(id)),
                topic: Arc::from(topic.as_str()),
                partition,
                offset,
                at_ms,
                position,
            };
            let mut bytes = Vec::new();
            encode_record(&mut bytes, &key, &want);
            let (back_key, back, used) =
                decode_record(&bytes).ok_or("an encoded record does not decode")?;
            let same = (back.id, &*back.topic, back.partition, back.offset)
                == (want.id, &*want.topic, want.partition, want.offset)
                && (back.at_ms, back.position) == (want.at_ms, want.position);
            if !same || *back_key != *key || used != bytes.len() {
                return Err(format!(
                    "{back_key:?} {back:?} ({used} bytes) is not {key:?} {want:?}"
                ));
            }
            Ok(())
        },
    );
}
