//! Consumer-side idempotency: a [`DedupStore`] remembers what each group
//! handled and the [`DedupLayer`] skips repeats.
//!
//! Producer-side idempotency (a duplicate send returning the first receipt)
//! is the backend's job, declared as `idempotent_publish` in its
//! capabilities.

mod layer;
mod store;

pub use layer::{dedup_key, DedupLayer};
pub use store::{Claim, DedupStore, MemoryDedupStore};
