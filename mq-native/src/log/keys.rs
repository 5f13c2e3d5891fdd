//! Message keys shared between decoded records.
//!
//! A consumer sees the same few keys over and over; handing out one shared
//! string per key instead of a new one per message saves an allocation and
//! a free per message. A small direct-mapped table keeps memory bounded
//! whatever the number of distinct keys (a collision just allocates).

use std::sync::Arc;

use super::batch::{utf8, DecodeError};

/// Slots in the table: two per set, so two keys that hash alike do not
/// evict each other on every message.
const SLOTS: usize = 1024;

/// Recently seen keys.
#[derive(Debug, Default)]
pub struct Keys {
    slots: Vec<Option<Arc<str>>>,
}

impl Keys {
    /// The shared string equal to the stored key `key`. Only a key not
    /// already shared is checked for UTF-8: one in a slot was checked when
    /// it went in, and equal bytes are equally valid.
    pub fn get(&mut self, key: &[u8]) -> Result<Arc<str>, DecodeError> {
        if self.slots.is_empty() {
            self.slots = vec![None; SLOTS];
        }
        let first = (fnv1a(key) % SLOTS) & !1;
        for slot in &self.slots[first..first + 2] {
            if let Some(shared) = slot.as_ref().filter(|s| s.as_bytes() == key) {
                return Ok(shared.clone());
            }
        }
        let shared: Arc<str> = Arc::from(utf8(key)?);
        let set = &mut self.slots[first..first + 2];
        if set[1].is_none() && set[0].is_some() {
            set[1] = Some(shared.clone());
        } else {
            // The key in the first slot is the newer one: it moves over the
            // older, whose place the new key takes.
            set.swap(0, 1);
            set[0] = Some(shared.clone());
        }
        Ok(shared)
    }
}

/// FNV-1a: fast for the short strings keys usually are.
fn fnv1a(bytes: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_share_one_string() {
        let mut keys = Keys::default();
        let a = keys.get(b"order-1").unwrap();
        let b = keys.get(b"order-1").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*keys.get(b"order-2").unwrap(), "order-2");
        assert!(keys.get(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn two_keys_of_one_set_stay_shared() {
        let mut keys = Keys::default();
        let mut first_of = std::collections::HashMap::new();
        let (a, b) = (0..10_000)
            .map(|i| format!("k{i}"))
            .find_map(|k| {
                let set = (fnv1a(k.as_bytes()) % SLOTS) & !1;
                first_of.insert(set, k.clone()).map(|other| (other, k))
            })
            .expect("two keys of one set");
        let a1 = keys.get(a.as_bytes()).unwrap();
        let b1 = keys.get(b.as_bytes()).unwrap();
        assert!(Arc::ptr_eq(&a1, &keys.get(a.as_bytes()).unwrap()));
        assert!(Arc::ptr_eq(&b1, &keys.get(b.as_bytes()).unwrap()));
    }
}
