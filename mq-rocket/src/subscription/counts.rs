//! What the broker does not keep about unsettled messages, for one driver.
//!
//! - **Delivery counts**: a message handed to a member that closed without
//!   acking it is read again from the committed offset, with RocketMQ's
//!   `reconsume_times` back at 0; the driver counts each (group, queue,
//!   offset) it handed out until it is acked, so a redelivery in this
//!   process reports its attempt.
//! - **Acks past the commit**: RocketMQ commits a listener call's batch
//!   whole or not at all, so a batch handed on partly acked (a revocation,
//!   a close) is read again by the next owner. The driver remembers those
//!   acks until the batch is committed, and a member of this process
//!   taking the queue skips them, also when the hand-over record
//!   ([`handover`](super::handover)) could not be written or read.

use std::collections::{HashMap, HashSet};

use mq_core::driver::AckToken;
use parking_lot::Mutex;

/// Entries kept at most per table; past it the table starts over (then a
/// redelivery may report a lower attempt, or an acked message come twice:
/// at-least-once, never a lost message).
const LIMIT: usize = 100_000;

type Key = (String, String, u32, u64);

/// Delivery counts and acks not yet committed.
#[derive(Default)]
pub(crate) struct Counts {
    seen: Mutex<HashMap<Key, u32>>,
    acked: Mutex<HashSet<Key>>,
}

fn key(group: &str, token: &AckToken) -> Key {
    (
        group.to_owned(),
        token.topic.to_string(),
        token.partition,
        token.offset,
    )
}

impl Counts {
    /// Counts one more delivery of `token`'s message to `group`; how many so far.
    pub(crate) fn seen(&self, group: &str, token: &AckToken) -> u32 {
        let mut seen = self.seen.lock();
        if seen.len() >= LIMIT {
            seen.clear();
        }
        let n = seen.entry(key(group, token)).or_default();
        *n += 1;
        *n
    }

    /// Records an ack that the broker has not committed yet.
    pub(crate) fn acked(&self, group: &str, token: &AckToken) {
        let k = key(group, token);
        self.seen.lock().remove(&k);
        let mut acked = self.acked.lock();
        if acked.len() >= LIMIT {
            acked.clear();
        }
        acked.insert(k);
    }

    /// Whether `token`'s message was acked and its batch not committed yet
    /// (the caller skips it).
    pub(crate) fn was_acked(&self, group: &str, token: &AckToken) -> bool {
        self.acked.lock().contains(&key(group, token))
    }

    /// Forgets acks the broker now has (their batch was committed).
    pub(crate) fn committed<'a>(&self, group: &str, tokens: impl Iterator<Item = &'a AckToken>) {
        let mut acked = self.acked.lock();
        for token in tokens {
            acked.remove(&key(group, token));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_until_acked() {
        let counts = Counts::default();
        let token = AckToken::new("t", 1, 7);
        assert_eq!(counts.seen("g", &token), 1);
        assert_eq!(counts.seen("g", &token), 2);
        assert_eq!(counts.seen("h", &token), 1);
        counts.acked("g", &token);
        assert_eq!(counts.seen("g", &token), 1);
    }

    #[test]
    fn acks_are_skipped_until_committed() {
        let counts = Counts::default();
        let (a, b) = (AckToken::new("t", 0, 1), AckToken::new("t", 0, 2));
        counts.acked("g", &a);
        counts.acked("g", &b);
        counts.committed("g", [&b].into_iter());
        assert!(counts.was_acked("g", &a));
        assert!(!counts.was_acked("g", &b));
    }
}
