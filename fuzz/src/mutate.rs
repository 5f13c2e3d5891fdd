//! Inputs for byte decoders: corpus files and valid encodings changed by a
//! few mutations (what finds bugs past the first length check), plus some
//! purely random bytes. Mutations are values, so proptest shrinks a failing
//! input to the fewest and smallest changes of its seed.

use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// Integers that sit on the edges decoders get wrong.
const EDGES: [u64; 16] = [
    0,
    1,
    2,
    7,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    u64::MAX,
];

/// Numbers written as text (JSON, RESP, URLs), including ones no integer
/// type holds.
const NUMBERS: [&str; 12] = [
    "0",
    "1",
    "-1",
    "65536",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "1e999",
    "0.5",
];

/// What to write into an integer field.
#[derive(Clone, Debug)]
enum Value {
    Edge(u64),
    /// The field's value plus a small delta (an off-by-one length).
    Delta(i8),
    /// The bytes left after the field (a length that almost fits).
    Rest,
}

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        at: Index,
        bit: u8,
    },
    SetByte {
        at: Index,
        value: u8,
    },
    Truncate {
        at: Index,
    },
    Remove {
        at: Index,
        len: u8,
    },
    Insert {
        at: Index,
        bytes: Vec<u8>,
    },
    /// Copies a run of the input elsewhere in it (repeated fields).
    Duplicate {
        from: Index,
        len: u8,
        to: Index,
    },
    /// The head of this input joined to the tail of another.
    Splice {
        other: Index,
        at: Index,
        from: Index,
    },
    /// Overwrites an integer of `width` bytes.
    Int {
        at: Index,
        width: usize,
        big_endian: bool,
        value: Value,
    },
    /// Replaces a run of ASCII digits.
    Number {
        which: Index,
        text: &'static str,
    },
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        select(&EDGES[..]).prop_map(Value::Edge),
        any::<i8>().prop_map(Value::Delta),
        Just(Value::Rest),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        2 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        1 => (any::<Index>(), 1u8..32).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => (any::<Index>(), vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<Index>(), 1u8..64, any::<Index>())
            .prop_map(|(from, len, to)| Mutation::Duplicate { from, len, to }),
        1 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(other, at, from)| Mutation::Splice { other, at, from }),
        4 => (any::<Index>(), select(&[1usize, 2, 4, 8][..]), any::<bool>(), value()).prop_map(
            |(at, width, big_endian, value)| Mutation::Int { at, width, big_endian, value }
        ),
        2 => (any::<Index>(), select(&NUMBERS[..]))
            .prop_map(|(which, text)| Mutation::Number { which, text }),
    ]
}

/// Inputs made from `pool` (corpus files and valid seeds).
pub(crate) fn inputs(pool: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let pool = Arc::new(pool);
    let seeded = (any::<Index>(), vec(mutation(), 0..6)).prop_map(move |(pick, mutations)| {
        if pool.is_empty() {
            return Vec::new();
        }
        let mut bytes = pool[pick.index(pool.len())].clone();
        for m in &mutations {
            apply(&mut bytes, m, &pool);
        }
        bytes
    });
    prop_oneof![8 => seeded, 1 => vec(any::<u8>(), 0..512)]
}

/// A position in `0..len`, or none in an empty input.
fn pos(at: &Index, len: usize) -> Option<usize> {
    (len > 0).then(|| at.index(len))
}

fn apply(b: &mut Vec<u8>, m: &Mutation, pool: &[Vec<u8>]) {
    let len = b.len();
    match m {
        Mutation::FlipBit { at, bit } => {
            if let Some(i) = pos(at, len) {
                b[i] ^= 1 << bit;
            }
        }
        Mutation::SetByte { at, value } => {
            if let Some(i) = pos(at, len) {
                b[i] = *value;
            }
        }
        Mutation::Truncate { at } => b.truncate(at.index(len + 1)),
        Mutation::Remove { at, len: n } => {
            if let Some(i) = pos(at, len) {
                b.drain(i..(i + usize::from(*n)).min(len));
            }
        }
        Mutation::Insert { at, bytes } => {
            let i = at.index(len + 1);
            b.splice(i..i, bytes.iter().copied());
        }
        Mutation::Duplicate { from, len: n, to } => {
            if let Some(i) = pos(from, len) {
                let run = b[i..(i + usize::from(*n)).min(len)].to_vec();
                let j = to.index(len + 1);
                b.splice(j..j, run);
            }
        }
        Mutation::Splice { other, at, from } => {
            let other = &pool[other.index(pool.len())];
            b.truncate(at.index(len + 1));
            b.extend_from_slice(&other[from.index(other.len() + 1)..]);
        }
        Mutation::Int {
            at,
            width,
            big_endian,
            value,
        } => {
            if len < *width {
                return;
            }
            let i = at.index(len - width + 1);
            let field = &mut b[i..i + width];
            let mut raw = [0u8; 8];
            if *big_endian {
                raw[8 - width..].copy_from_slice(field);
            }
            let old = if *big_endian {
                u64::from_be_bytes(raw)
            } else {
                raw[..*width].copy_from_slice(field);
                u64::from_le_bytes(raw)
            };
            let new = match value {
                Value::Edge(v) => *v,
                Value::Delta(d) => old.wrapping_add(*d as i64 as u64),
                Value::Rest => (len - i - width) as u64,
            };
            if *big_endian {
                field.copy_from_slice(&new.to_be_bytes()[8 - width..]);
            } else {
                field.copy_from_slice(&new.to_le_bytes()[..*width]);
            }
        }
        Mutation::Number { which, text } => {
            let runs = digit_runs(b);
            if let Some(k) = pos(which, runs.len()) {
                let (start, end) = runs[k];
                b.splice(start..end, text.bytes());
            }
        }
    }
}

/// Where the runs of ASCII digits are, as `(start, end)`.
fn digit_runs(b: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, c) in b.iter().enumerate() {
        match (c.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, b.len()));
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;

    /// An `Index` that picks `want` in a collection of `len`.
    fn index(want: usize, len: usize) -> Index {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        loop {
            let i = any::<Index>().new_tree(&mut runner).unwrap().current();
            if i.index(len) == want {
                return i;
            }
        }
    }

    #[test]
    fn integers_are_rewritten_in_place_both_ways() {
        let mut b = vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let at = index(0, 7);
        let int = |width, big_endian, value| Mutation::Int {
            at,
            width,
            big_endian,
            value,
        };
        apply(&mut b, &int(4, false, Value::Delta(-2)), &[]);
        assert_eq!(b, [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0]);
        let mut b = vec![0u8; 10];
        apply(&mut b, &int(2, true, Value::Rest), &[]);
        assert_eq!(b[..2], [0, 8], "the 8 bytes after the field, big endian");
    }

    #[test]
    fn numbers_in_text_are_replaced() {
        assert_eq!(digit_runs(b"a1b22"), [(1, 2), (3, 5)]);
        let mut b = b"{\"a\":12,\"b\":3}".to_vec();
        let which = index(1, 2);
        apply(
            &mut b,
            &Mutation::Number {
                which,
                text: "4294967296",
            },
            &[],
        );
        assert_eq!(b, b"{\"a\":12,\"b\":4294967296}");
    }
}
