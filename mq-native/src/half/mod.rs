//! The durable half store: prepared ("half") messages with check-back,
//! RocketMQ's transactional messages, kept by the engine itself.
//!
//! Built like the delay store. A prepared message is appended to the
//! commit log as a *half record* (its producer group, destination name,
//! id, key, headers, payload; a relative delay kept relative) and gets a
//! sequence number; it is in no partition, so no consumer sees it. It is
//! acknowledged like a send (after the fsync under `fsync=always`).
//!
//! Resolving appends a *resolved record* for that number. A commit appends
//! the message to its topic **in the same batch** as that record (one
//! atomic append, as a transaction is), so after any crash it was
//! committed once or not at all, and the log says which. A second
//! resolution finds the first one under the writer lock and writes
//! nothing: the first outcome stands.
//!
//! Unresolved messages are held in memory ([`store::HalfStore`]), listed
//! in the checkpoint, and rebuilt at open from the checkpoint plus the
//! records replayed past it. Resolved ones leave no state behind: their
//! records go with their log segments under retention, which never deletes
//! a segment holding an unresolved one.
//!
//! Checks: a message unresolved `half_check_after` after it was prepared
//! is offered to one check stream of its group, leased to it for
//! `half_check_interval`, then offered again (to any stream of the group)
//! while it stays unresolved; an unknown answer restarts the interval, and
//! a closed stream's leases are offered again at once. The schedule is not
//! durable: after a restart every unresolved message is due
//! `half_check_after` after its preparation, so one whose producer was
//! killed is checked by the next process to open the directory.

pub(crate) mod checks;
pub(crate) mod driver;
mod engine;
pub mod record;
pub mod store;
mod token;

use crate::options::Options;
use store::Timing;

/// The check timing of `options`, in microseconds.
pub(crate) fn timing(options: &Options) -> Timing {
    let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    Timing {
        after_us: micros(options.half_check_after),
        interval_us: micros(options.half_check_interval).max(1),
    }
}
