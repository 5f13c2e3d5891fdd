//! What the workload was told: the oracle the recovered engine is checked
//! against. Only what the engine acknowledged is owed; the operation the
//! power loss interrupted is in doubt (all or nothing, at most once).

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use mq_core::driver::HalfToken;
use mq_core::MessageId;

/// What became of a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Acknowledged: owed (within the durability mode's promise).
    Acked,
    /// Interrupted by the power loss: at most once, all or nothing.
    InDoubt,
    /// Never to be visible (an aborted transaction, a rolled-back half).
    Gone,
}

/// One message the workload sent.
#[derive(Clone, Debug)]
pub struct Sent {
    /// Its id.
    pub id: MessageId,
    /// Its topic.
    pub topic: String,
    /// The topic's incarnation it was sent to (a deleted topic's messages go with it).
    pub incarnation: u32,
    /// What became of it.
    pub fate: Fate,
    /// Partition and offset from the receipt (offset `None` when delayed
    /// or in a transaction).
    pub placed: Option<(u32, Option<u64>)>,
    /// Due time of a delayed message.
    pub due: Option<SystemTime>,
    /// Idempotency key.
    pub key: Option<String>,
    /// The transaction (or half message) it belongs to.
    pub group: Option<usize>,
    /// The operation that acknowledged it.
    pub op: u64,
    /// When it was acknowledged.
    pub at: Instant,
}

/// A consumer ack.
#[derive(Clone, Debug)]
pub struct Ack {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The acked message (after a power loss under `interval`, the
    /// offset may hold a newer one).
    pub id: MessageId,
    /// The operation that made it.
    pub op: u64,
}

/// A prepared (half) message.
#[derive(Clone, Debug)]
pub struct Half {
    /// The message's index in [`Model::sent`].
    pub sent: usize,
    /// Its token.
    pub token: HalfToken,
    /// Resolved: `Some(true)` committed, `Some(false)` rolled back.
    pub resolved: Option<bool>,
    /// The prepare or the resolution was interrupted.
    pub in_doubt: bool,
    /// The operation that acknowledged the prepare, and when.
    pub prepared: (u64, Instant),
    /// The operation that acknowledged the resolution, and when.
    pub resolved_at: Option<(u64, Instant)>,
}

/// A topic the workload creates and deletes.
#[derive(Clone, Debug, Default)]
pub struct Ephemeral {
    /// Current incarnation.
    pub incarnation: u32,
    /// Whether it exists (acknowledged).
    pub exists: bool,
    /// Whether the last change to it was interrupted.
    pub in_doubt: bool,
}

/// Everything acknowledged, in order.
#[derive(Debug, Default)]
pub struct Model {
    /// Every message sent.
    pub sent: Vec<Sent>,
    /// Consumer acks.
    pub acks: Vec<Ack>,
    /// Prepared messages.
    pub halves: Vec<Half>,
    /// Ephemeral topics by name.
    pub ephemeral: HashMap<String, Ephemeral>,
    /// The last operation after which offsets were saved (`save_offsets`
    /// or a checkpoint returned `Ok`).
    pub saved_op: u64,
    /// The last operation after which a checkpoint returned `Ok`.
    pub checkpoint_op: u64,
    /// The last operation after which retention ran.
    pub retention_op: u64,
    /// The operation counter.
    pub op: u64,
    /// Prepares interrupted by the power loss (their tokens never came back).
    pub halves_lost: usize,
    /// Transactions and half messages, numbered.
    pub groups: usize,
}

impl Model {
    /// The incarnation of `topic` messages go to now.
    pub fn incarnation(&self, topic: &str) -> u32 {
        self.ephemeral.get(topic).map_or(0, |e| e.incarnation)
    }

    /// Whether `topic`'s current incarnation is still there.
    pub fn is_live(&self, topic: &str, incarnation: u32) -> bool {
        match self.ephemeral.get(topic) {
            None => true,
            Some(e) => e.incarnation == incarnation && e.exists,
        }
    }
}
