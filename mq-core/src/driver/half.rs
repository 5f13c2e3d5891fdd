//! The SPI of half messages, for brokers that keep prepared messages and
//! ask about the unresolved ones themselves (RocketMQ, the native engine).
//!
//! The core drives it: [`Driver::publish_half`](super::Driver::publish_half)
//! stores a prepared message, [`Driver::resolve_half`](super::Driver::resolve_half)
//! commits or rolls it back, and [`Driver::half_checks`](super::Driver::half_checks)
//! hands the core the prepared messages whose producer went quiet, which the
//! core puts to the application's checker and answers with `resolve_half`.
//! Data flows one way: the driver never calls the checker itself.

use async_trait::async_trait;
use bytes::Bytes;

use crate::message::{Message, MessageId};

/// What a half message became, or what a checker answered about one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HalfOutcome {
    /// Deliver it.
    Commit,
    /// Drop it; it is never delivered.
    Rollback,
    /// Not known yet (the local transaction may still be running): ask
    /// again later. Only a checker answers this.
    Unknown,
}

impl HalfOutcome {
    /// Its name in headers and logs: `commit`, `rollback` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            HalfOutcome::Commit => "commit",
            HalfOutcome::Rollback => "rollback",
            HalfOutcome::Unknown => "unknown",
        }
    }

    /// The outcome named `name` (as [`as_str`](Self::as_str) writes it).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "commit" => Some(HalfOutcome::Commit),
            "rollback" => Some(HalfOutcome::Rollback),
            "unknown" => Some(HalfOutcome::Unknown),
            _ => None,
        }
    }
}

/// A driver's handle on one prepared message: what it needs to resolve it
/// (RocketMQ's transaction id, commit-log offset and broker; the native
/// engine's half-store position). Opaque to the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HalfToken {
    /// The prepared message's id.
    pub id: MessageId,
    /// The driver's own bytes.
    pub handle: Bytes,
}

impl HalfToken {
    /// A token for the prepared message `id`.
    pub fn new(id: MessageId, handle: impl Into<Bytes>) -> Self {
        HalfToken {
            id,
            handle: handle.into(),
        }
    }
}

/// A prepared message the broker wants the application to decide on.
#[derive(Clone, Debug)]
pub struct HalfCheck {
    /// The prepared message as it was published (its destination topic,
    /// key, headers and payload).
    pub message: Message,
    /// Answer with [`Driver::resolve_half`](super::Driver::resolve_half)
    /// and this token.
    pub token: HalfToken,
    /// How many times it was checked before, 0 the first time.
    pub prior_checks: u32,
}

/// The check-back stream of one producer group, from
/// [`Driver::half_checks`](super::Driver::half_checks). Closing it (or
/// dropping it) stops the checks for this process; prepared messages stay
/// and are offered to the next stream of that group.
#[async_trait]
pub trait DriverHalfChecks: Send + Sync {
    /// The next prepared message to check; waits until there is one.
    /// `None` once the stream is closed. Must be cancel safe.
    async fn next(&self) -> Option<HalfCheck>;

    /// Stops the stream.
    async fn close(&self) -> crate::Result<()>;
}
