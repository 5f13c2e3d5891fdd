//! What a relay needs from a database: claim a batch of pending rows for
//! one relay alone, settle it, wait for news, clean up.

use std::time::Duration;

use async_trait::async_trait;
use mq_core::Result;

use crate::record::Pending;

/// Rows a relay claimed, in id order, with whatever keeps other relays off
/// their keys (a transaction holding shard locks, a lease) until
/// [`finish`](Claimed::finish).
pub(crate) struct Batch {
    pub rows: Vec<Pending>,
    /// Whether the claim returned as many rows as asked: more may be waiting.
    pub full: bool,
    pub claim: Box<dyn Claimed>,
}

/// How a published batch ends.
#[derive(Default)]
pub(crate) struct Outcome {
    /// Published rows: deleted, or marked sent when sent rows are kept.
    pub sent: Vec<i64>,
    /// Rows the backend refused for good, with the reason; kept, never retried.
    pub failed: Vec<(i64, String)>,
    /// Mark sent rows instead of deleting them.
    pub keep_sent: bool,
}

/// The hold on a claimed batch.
#[async_trait]
pub(crate) trait Claimed: Send {
    /// Records the outcome and lets go of the claim, in one transaction.
    async fn finish(self: Box<Self>, outcome: &Outcome) -> Result<()>;
}

/// One database's side of the relay.
#[async_trait]
pub(crate) trait RelayStore: Send + Sync + 'static {
    /// Claims up to `limit` pending rows; `None` when another relay holds
    /// every shard (or the lease).
    async fn claim(&self, limit: usize) -> Result<Option<Batch>>;

    /// Waits until new rows may have been committed, or `timeout`.
    async fn wait(&self, timeout: Duration);

    /// Deletes up to `limit` rows sent at or before `before_ms` (Unix ms), so
    /// a retention of zero deletes what was just sent; how many.
    async fn cleanup(&self, before_ms: i64, limit: i64) -> Result<u64>;
}
