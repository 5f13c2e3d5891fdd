//! Message keys shared between decoded records.
//!
//! A consumer sees the same few keys over and over; handing out one shared
//! string per key instead of a new one per message saves an allocation and
//! a free per message. A small direct-mapped table keeps memory bounded
//! whatever the number of distinct keys (a collision just allocates).

use std::sync::Arc;

const SLOTS: usize = 256;

/// Recently seen keys.
#[derive(Debug, Default)]
pub struct Keys {
    slots: Vec<Option<Arc<str>>>,
}

impl Keys {
    /// The shared string equal to `key`.
    pub fn get(&mut self, key: &str) -> Arc<str> {
        if self.slots.is_empty() {
            self.slots = vec![None; SLOTS];
        }
        let slot = &mut self.slots[fnv1a(key.as_bytes()) % SLOTS];
        match slot {
            Some(shared) if **shared == *key => shared.clone(),
            _ => {
                let shared: Arc<str> = Arc::from(key);
                *slot = Some(shared.clone());
                shared
            }
        }
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
        let a = keys.get("order-1");
        let b = keys.get("order-1");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*keys.get("order-2"), "order-2");
    }
}
