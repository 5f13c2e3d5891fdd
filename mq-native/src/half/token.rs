//! The driver's handle on a prepared message: its sequence number in the
//! half store, checksummed with the message id and producer group so a
//! garbage or foreign token is refused by name, never misread.
//!
//! Layout: `magic:u8(='h') version:u8(=1) seq:u64 crc32c:u32`, the CRC
//! over `seq id group`.

use mq_core::driver::HalfToken;
use mq_core::{Error, MessageId, Result};

const MAGIC: u8 = b'h';
const VERSION: u8 = 1;
const LEN: usize = 2 + 8 + 4;

fn crc(seq: u64, id: MessageId, group: &str) -> u32 {
    let c = crc32c::crc32c(&seq.to_le_bytes());
    let c = crc32c::crc32c_append(c, id.as_uuid().as_bytes());
    crc32c::crc32c_append(c, group.as_bytes())
}

/// The token of half message `seq`, id `id`, of producer group `group`.
pub(crate) fn encode(seq: u64, id: MessageId, group: &str) -> HalfToken {
    let mut handle = Vec::with_capacity(LEN);
    handle.extend_from_slice(&[MAGIC, VERSION]);
    handle.extend_from_slice(&seq.to_le_bytes());
    handle.extend_from_slice(&crc(seq, id, group).to_le_bytes());
    HalfToken::new(id, handle)
}

/// The sequence number `token` holds, if it is a native token of a half
/// message of `group`.
pub(crate) fn decode(token: &HalfToken, group: &str) -> Result<u64> {
    let bad = |why: &str| {
        let hex: String = token.handle.iter().map(|b| format!("{b:02x}")).collect();
        Error::invalid("half token", hex, why)
    };
    let h = &token.handle[..];
    if h.len() != LEN || h[0] != MAGIC {
        return Err(bad("not a half-message token of the native engine"));
    }
    if h[1] != VERSION {
        return Err(bad("a half-message token of an unknown version"));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[2..10]);
    let seq = u64::from_le_bytes(seq);
    let mut sum = [0u8; 4];
    sum.copy_from_slice(&h[10..14]);
    if u32::from_le_bytes(sum) != crc(seq, token.id, group) {
        return Err(bad(&format!(
            "not the token of half message {} of producer group {group:?}",
            token.id
        )));
    }
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let id = MessageId::new();
        let token = encode(42, id, "shop");
        assert_eq!(decode(&token, "shop").unwrap(), 42);
        let refused = |t: &HalfToken, group: &str| match decode(t, group) {
            Err(Error::Invalid { field, .. }) => field == "half token",
            _ => false,
        };
        assert!(refused(&token, "other-group"));
        assert!(refused(
            &HalfToken::new(MessageId::new(), token.handle.clone()),
            "shop"
        ));
        assert!(refused(&HalfToken::new(id, &b""[..]), "shop"));
        assert!(refused(
            &HalfToken::new(id, &b"garbage garbage"[..]),
            "shop"
        ));
        for i in 0..LEN {
            let mut bad = token.handle.to_vec();
            bad[i] ^= 0x01;
            assert!(refused(&HalfToken::new(id, bad), "shop"), "flip at {i}");
        }
    }
}
