//! The runtime's side of rebalances: which partitions it may still work
//! on, how many of their deliveries it holds, and how it lets go of
//! revoked partitions before the driver hands them on.
//!
//! Events are taken by whoever fetches (the fetch loop, the stream), in
//! the same task and order as fetched records, so every record fetched
//! before a revocation is counted when the revocation is served, and every
//! record fetched after it belongs to the member's next assignment. A
//! revocation is served in four steps: the partitions are marked revoked
//! (their buffered deliveries are dropped, not handled, and redelivered to
//! the next owner); the runtime waits until no delivery of them is held
//! (in-flight handlers finish), at most the revoke deadline; buffered acks
//! are flushed; the mark is lifted and the revocation completes. The driver
//! assigns the partitions again only after that, so the lifted mark never
//! drops a record of a later assignment.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::driver::{AckToken, Rebalance, TopicPartition};
use crate::runtime::settle::Settler;

/// Deliveries held per partition, and the partitions revoked.
#[derive(Default)]
pub(crate) struct Partitions {
    state: Mutex<State>,
    /// Whether any partition is revoked: the per-delivery check is one load
    /// while none is.
    any_revoked: AtomicBool,
    released: Notify,
}

#[derive(Default)]
struct State {
    held: HashMap<TopicPartition, usize>,
    revoked: HashSet<TopicPartition>,
}

impl Partitions {
    /// Counts deliveries handed to the runtime; keeps only those whose
    /// partition is not revoked and returns how many it dropped.
    pub(crate) fn hand_out<T>(&self, items: &mut Vec<T>, token: impl Fn(&T) -> &AckToken) -> usize {
        let mut state = self.state.lock();
        let before = items.len();
        if self.any_revoked.load(Ordering::Acquire) {
            let revoked = &state.revoked;
            items.retain(|item| !revoked.iter().any(|tp| token(item).is_in(tp)));
        }
        let mut run: Option<(TopicPartition, usize)> = None;
        for item in items.iter() {
            let t = token(item);
            match &mut run {
                Some((tp, n)) if t.is_in(tp) => *n += 1,
                _ => {
                    if let Some((tp, n)) = run.take() {
                        *state.held.entry(tp).or_default() += n;
                    }
                    run = Some((t.topic_partition(), 1));
                }
            }
        }
        if let Some((tp, n)) = run {
            *state.held.entry(tp).or_default() += n;
        }
        before - items.len()
    }

    /// Whether the delivery's partition was revoked since it was handed out.
    pub(crate) fn is_revoked(&self, token: &AckToken) -> bool {
        self.any_revoked.load(Ordering::Acquire)
            && self.state.lock().revoked.iter().any(|tp| token.is_in(tp))
    }

    /// A delivery handed out is settled or dropped.
    pub(crate) fn settled(&self, token: &AckToken) {
        let mut state = self.state.lock();
        let tp = token.topic_partition();
        let Some(held) = state.held.get_mut(&tp) else {
            return;
        };
        *held -= 1;
        if *held == 0 {
            state.held.remove(&tp);
            if self.any_revoked.load(Ordering::Acquire) {
                drop(state);
                self.released.notify_waiters();
            }
        }
    }

    fn revoke(&self, partitions: &[TopicPartition]) {
        let mut state = self.state.lock();
        state.revoked.extend(partitions.iter().cloned());
        self.any_revoked.store(true, Ordering::Release);
    }

    fn lift(&self, partitions: &[TopicPartition]) {
        let mut state = self.state.lock();
        for tp in partitions {
            state.revoked.remove(tp);
        }
        self.any_revoked
            .store(!state.revoked.is_empty(), Ordering::Release);
    }

    /// Waits until no delivery of `partitions` is held, at most `deadline`;
    /// false when the deadline passed first.
    async fn drained(&self, partitions: &[TopicPartition], deadline: Duration) -> bool {
        let wait = async {
            loop {
                let released = self.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                if !partitions
                    .iter()
                    .any(|tp| self.state.lock().held.contains_key(tp))
                {
                    return;
                }
                released.await;
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok()
    }
}

/// Serves a rebalance event taken by the fetcher of `settler`'s
/// subscription. A revocation is marked at once (`drop_buffered` takes the
/// revoked partitions' deliveries out of the fetcher's buffer); waiting for
/// their handlers and completing runs in the background.
pub(crate) fn serve_rebalance(
    settler: &Arc<Settler>,
    event: Rebalance,
    deadline: Duration,
    drop_buffered: impl FnOnce(&[TopicPartition]),
) {
    match event {
        Rebalance::Assigned(partitions) => {
            tracing::debug!(?partitions, group = &*settler.group, "partitions assigned");
        }
        Rebalance::Revoked(revocation) => {
            let partitions = revocation.partitions().to_vec();
            tracing::debug!(?partitions, group = &*settler.group, "partitions revoked");
            settler.partitions.revoke(&partitions);
            drop_buffered(&partitions);
            let settler = settler.clone();
            tokio::spawn(async move {
                if !settler.partitions.drained(&partitions, deadline).await {
                    tracing::warn!(
                        ?partitions,
                        ?deadline,
                        "handlers of revoked partitions did not finish in time; their messages may be handled twice"
                    );
                }
                if let Err(error) = settler.flush().await {
                    tracing::warn!(%error, "acknowledging before a revocation failed; the messages will be redelivered");
                }
                settler.partitions.lift(&partitions);
                revocation.complete();
            });
        }
    }
}
