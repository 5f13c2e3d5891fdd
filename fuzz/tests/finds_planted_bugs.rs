//! The harness finds what it is for: a decoder that trusts a length field
//! (the classic out-of-bounds slice) panics on a mutation of a valid seed,
//! and the failure names the target.

use mq_fuzz::{Outcome, Target};

/// `len:u16 data`: the bug is slicing by `len` without checking it.
fn trusting_decoder(bytes: &[u8]) -> Result<Outcome, String> {
    let Some(raw) = bytes.get(..2) else {
        return Ok(Outcome::Rejected);
    };
    let len = u16::from_le_bytes([raw[0], raw[1]]) as usize;
    let data = &bytes[2..2 + len];
    Ok(if data.is_empty() {
        Outcome::Rejected
    } else {
        Outcome::Decoded
    })
}

#[test]
#[should_panic(expected = "fuzz selftest")]
fn a_length_trusted_blindly_is_found() {
    Target::new("selftest")
        .seed("record", [4u8, 0, b'd', b'a', b't', b'a'])
        .run(trusting_decoder);
}
