//! The batch decoder never panics on arbitrary bytes, and finds every
//! single-byte change of a valid batch.

use mq_core::{Message, MessageId};
use mq_native::log::batch::{decode, BatchWriter, Placement, Record};
use mq_native::log::keys::Keys;
use proptest::prelude::*;

fn encode(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = BatchWriter::begin(&mut buf, 7);
    for (i, p) in payloads.iter().enumerate() {
        let m = Message::new("t", p.clone())
            .with_key(format!("k{i}"))
            .with_header("h", "v")
            .with_id(MessageId::new());
        w.message(
            &mut buf,
            Placement {
                topic: 1,
                partition: 0,
                offset: i as u64,
                deliver_at_us: None,
                visible_at_us: None,
            },
            &m,
        );
    }
    w.finish(&mut buf);
    buf
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        if let Ok((batch, len)) = decode(&bytes) {
            prop_assert!(len <= bytes.len());
            for record in batch.records() {
                if let Ok(Record::Message(m)) = record {
                    let _ = m.to_message(
                        "t".into(),
                        &bytes::Bytes::copy_from_slice(&bytes),
                        &mut Keys::default(),
                    );
                }
            }
        }
    }

    #[test]
    fn valid_prefix_with_garbage_never_panics(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8),
        garbage in proptest::collection::vec(any::<u8>(), 0..256),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut buf = encode(&payloads);
        let cut = cut.index(buf.len() + 1);
        buf.truncate(cut);
        buf.extend_from_slice(&garbage);
        if let Ok((batch, _)) = decode(&buf) {
            for record in batch.records() {
                let _ = record;
            }
        }
    }

    #[test]
    fn any_flipped_byte_is_detected(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut buf = encode(&payloads);
        let (batch, _) = decode(&buf).expect("valid");
        prop_assert_eq!(batch.records().filter(|r| r.is_ok()).count(), payloads.len());
        let at = at.index(buf.len());
        buf[at] ^= 1 << bit;
        prop_assert!(decode(&buf).is_err(), "flip at {} went unnoticed", at);
    }
}
