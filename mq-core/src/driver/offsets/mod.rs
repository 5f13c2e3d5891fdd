//! Offset tracking: the one tracker drivers share, for brokers whose
//! consumers settle records by offset while the client keeps the group's
//! position (the native engine; any log where the client commits).
//!
//! Handlers finish out of order, but a log can only resume from one
//! offset. A [`Cursor`] (one per group and partition) turns acks in any
//! order into a contiguous **committed offset**: the lowest offset not
//! acked, which is what a driver persists or commits, so a restart
//! redelivers what was unacked and nothing acked below it. It also keeps
//! the records in flight per member, and records **given back** (nacked
//! with a pause, released by a member that left or lost the partition,
//! held until visible) to hand out again when due. [`DoneSet`] is the
//! bitmap of settled numbers underneath, also usable on its own (the
//! native engine's delivered delays).
//!
//! ```
//! use std::time::Instant;
//! use mq_core::driver::offsets::{Cursor, Taken};
//!
//! let mut cursor = Cursor::at(0);
//! let mut taken = Taken::default();
//! cursor.take(1, Instant::now(), 3, 10, &mut taken); // member 1 takes 0, 1, 2
//! cursor.ack(2);
//! assert_eq!(cursor.committed(), 0, "0 and 1 are still in flight");
//! cursor.ack_all([0, 1]);
//! assert_eq!(cursor.committed(), 3);
//! ```

mod cursor;
mod done_set;

pub use cursor::{Cursor, MemberId, Returned, Taken};
pub use done_set::DoneSet;
