//! [`DedupStore`]: where consumers remember what they already handled.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::error::Result;

/// The answer to [`DedupStore::claim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// First time: the caller handles it and then calls `complete` or `release`.
    Claimed,
    /// Already handled: skip it.
    Done,
    /// Another worker holds the claim right now: try again later.
    InProgress,
}

/// Remembers which messages a consumer group has handled.
///
/// Keys are scoped (by consumer group) so two groups each handle a message
/// once. A claim is held for a lease while the handler runs; if the process
/// dies the lease runs out and a redelivery may claim again.
#[async_trait]
pub trait DedupStore: Send + Sync + 'static {
    /// Claims `key` in `scope` for `lease`, unless it is done or claimed.
    async fn claim(&self, scope: &str, key: &str, lease: Duration) -> Result<Claim>;

    /// Marks `key` done for `ttl`; claims within that time answer [`Claim::Done`].
    async fn complete(&self, scope: &str, key: &str, ttl: Duration) -> Result<()>;

    /// Drops a claim after a failed attempt so a retry can claim again.
    async fn release(&self, scope: &str, key: &str) -> Result<()>;
}

#[derive(Clone, Copy)]
enum Entry {
    Claimed(Instant),
    Done(Instant),
}

/// A [`DedupStore`] in process memory: for tests and single-process services.
/// Expired entries are purged as new ones arrive.
#[derive(Default)]
pub struct MemoryDedupStore {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<(String, String), Entry>,
    inserts_since_purge: usize,
}

impl MemoryDedupStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries held (claimed or done, expired ones not yet purged included).
    pub fn len(&self) -> usize {
        self.entries.lock().map.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Entries {
    fn purge_now_and_then(&mut self, now: Instant) {
        self.inserts_since_purge += 1;
        if self.inserts_since_purge >= 1024.max(self.map.len() / 2) {
            self.inserts_since_purge = 0;
            self.map.retain(|_, entry| match *entry {
                Entry::Claimed(until) | Entry::Done(until) => until > now,
            });
        }
    }
}

#[async_trait]
impl DedupStore for MemoryDedupStore {
    async fn claim(&self, scope: &str, key: &str, lease: Duration) -> Result<Claim> {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        let id = (scope.to_owned(), key.to_owned());
        match entries.map.get(&id) {
            Some(Entry::Done(until)) if *until > now => return Ok(Claim::Done),
            Some(Entry::Claimed(until)) if *until > now => return Ok(Claim::InProgress),
            _ => {}
        }
        entries.map.insert(id, Entry::Claimed(now + lease));
        entries.purge_now_and_then(now);
        Ok(Claim::Claimed)
    }

    async fn complete(&self, scope: &str, key: &str, ttl: Duration) -> Result<()> {
        let mut entries = self.entries.lock();
        entries.map.insert(
            (scope.to_owned(), key.to_owned()),
            Entry::Done(crate::driver::clock::deadline_after(ttl)),
        );
        Ok(())
    }

    async fn release(&self, scope: &str, key: &str) -> Result<()> {
        let mut entries = self.entries.lock();
        let id = (scope.to_owned(), key.to_owned());
        if matches!(entries.map.get(&id), Some(Entry::Claimed(_))) {
            entries.map.remove(&id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn claim_complete_release() {
        let store = MemoryDedupStore::new();
        let lease = Duration::from_secs(60);
        assert_eq!(store.claim("g", "k", lease).await.unwrap(), Claim::Claimed);
        assert_eq!(
            store.claim("g", "k", lease).await.unwrap(),
            Claim::InProgress
        );
        assert_eq!(
            store.claim("other", "k", lease).await.unwrap(),
            Claim::Claimed
        );
        store.release("g", "k").await.unwrap();
        assert_eq!(store.claim("g", "k", lease).await.unwrap(), Claim::Claimed);
        store.complete("g", "k", lease).await.unwrap();
        assert_eq!(store.claim("g", "k", lease).await.unwrap(), Claim::Done);
        store.release("g", "k").await.unwrap();
        assert_eq!(store.claim("g", "k", lease).await.unwrap(), Claim::Done);
    }

    #[tokio::test]
    async fn expired_entries_can_be_claimed_again() {
        let store = MemoryDedupStore::new();
        assert_eq!(
            store.claim("g", "k", Duration::ZERO).await.unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            store.claim("g", "k", Duration::from_secs(1)).await.unwrap(),
            Claim::Claimed
        );
        store.complete("g", "k", Duration::ZERO).await.unwrap();
        assert_eq!(
            store.claim("g", "k", Duration::from_secs(1)).await.unwrap(),
            Claim::Claimed
        );
    }
}
