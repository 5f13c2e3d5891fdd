//! Rebalance events: how a subscription tells the runtime that partitions
//! were assigned to or revoked from its member.
//!
//! The protocol, for a driver:
//! 1. When partitions become this member's, report
//!    [`Rebalance::Assigned`]; fetches may return their records from then on.
//! 2. When partitions are to leave this member, stop returning their
//!    records from `fetch` and report [`Rebalance::Revoked`] with a
//!    [`Revocation`]. Keep the partitions until the revocation completes:
//!    the runtime first stops handing out their buffered messages, lets
//!    their in-flight handlers finish (bounded by a deadline) and flushes
//!    their acks, then calls [`Revocation::complete`].
//! 3. Then give back to the group every record of those partitions this
//!    member still holds unacked, and let the next owner have them.
//!
//! [`RebalanceQueue`] is the driver's side of this: it queues events for
//! [`DriverSubscription::rebalance`](crate::driver::DriverSubscription::rebalance)
//! and gives the driver a [`RevokeWait`] to await before step 3.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use mq_core::driver::{Rebalance, RebalanceQueue, TopicPartition};
//!
//! let queue = RebalanceQueue::new();
//! queue.assigned(vec![TopicPartition::new("orders", 0)]);
//! let wait = queue.revoke(vec![TopicPartition::new("orders", 0)]);
//!
//! // The runtime's side.
//! assert!(matches!(queue.next().await, Some(Rebalance::Assigned(p)) if p.len() == 1));
//! let Some(Rebalance::Revoked(revocation)) = queue.next().await else { unreachable!() };
//! revocation.complete();
//!
//! wait.await; // now give the partition's unacked records back
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};

use super::TopicPartition;

/// A change of a member's assignment.
#[derive(Debug)]
#[non_exhaustive]
pub enum Rebalance {
    /// These partitions are now this member's.
    Assigned(Vec<TopicPartition>),
    /// These partitions are leaving this member; complete the revocation
    /// once nothing of them is in flight.
    Revoked(Revocation),
}

/// Partitions leaving a member. Completing it (or dropping it) tells the
/// driver that the runtime has let go of them.
#[derive(Debug)]
pub struct Revocation {
    partitions: Vec<TopicPartition>,
    done: oneshot::Sender<()>,
}

impl Revocation {
    /// A revocation of `partitions`, and the wait the driver holds for it.
    pub fn new(partitions: Vec<TopicPartition>) -> (Revocation, RevokeWait) {
        let (done, wait) = oneshot::channel();
        (Revocation { partitions, done }, RevokeWait(wait))
    }

    /// The partitions being revoked.
    pub fn partitions(&self) -> &[TopicPartition] {
        &self.partitions
    }

    /// Lets the driver hand the partitions on.
    pub fn complete(self) {
        let _ = self.done.send(());
    }
}

/// The bound drivers give [`RevokeWait::at_most`]: how long a member's
/// revoked partitions wait for its runtime to let go of them before they
/// are handed on anyway (a stuck or absent runtime must not keep them from
/// the group for ever). The runtime's own revoke deadline, the consumer's
/// shutdown timeout (30 s by default), is shorter.
pub const REVOKE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Resolves when its [`Revocation`] is completed or dropped.
#[derive(Debug)]
#[must_use = "the partitions may only be handed on once the wait resolves"]
pub struct RevokeWait(oneshot::Receiver<()>);

impl RevokeWait {
    /// Waits for the revocation, but no longer than `limit` (a member whose
    /// runtime is stuck or absent must not hold its partitions for ever);
    /// true when it completed in time.
    pub async fn at_most(self, limit: std::time::Duration) -> bool {
        tokio::time::timeout(limit, self).await.is_ok()
    }
}

impl Future for RevokeWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A driver's queue of rebalance events for one subscription.
#[derive(Debug)]
pub struct RebalanceQueue {
    sender: mpsc::UnboundedSender<Rebalance>,
    receiver: tokio::sync::Mutex<mpsc::UnboundedReceiver<Rebalance>>,
}

impl Default for RebalanceQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl RebalanceQueue {
    /// An empty queue.
    pub fn new() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        RebalanceQueue {
            sender,
            receiver: tokio::sync::Mutex::new(receiver),
        }
    }

    /// Reports partitions newly assigned (nothing when `partitions` is empty).
    pub fn assigned(&self, partitions: Vec<TopicPartition>) {
        if !partitions.is_empty() {
            let _ = self.sender.send(Rebalance::Assigned(partitions));
        }
    }

    /// Reports partitions being revoked; the wait resolves when the runtime
    /// has let go of them.
    pub fn revoke(&self, partitions: Vec<TopicPartition>) -> RevokeWait {
        let (revocation, wait) = Revocation::new(partitions);
        // A receiver that is gone drops the revocation, which resolves the wait.
        let _ = self.sender.send(Rebalance::Revoked(revocation));
        wait
    }

    /// The next event; what [`DriverSubscription::rebalance`](crate::driver::DriverSubscription::rebalance)
    /// returns. Cancel safe.
    pub async fn next(&self) -> Option<Rebalance> {
        self.receiver.lock().await.recv().await
    }
}
