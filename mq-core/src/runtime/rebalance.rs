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

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::driver::{AckToken, Rebalance, TopicPartition};
use crate::runtime::settle::Settler;

/// Deliveries the runtime holds per partition. Kept under the settler's
/// ack lock, which every settled delivery takes anyway.
#[derive(Default)]
pub(crate) struct Held {
    /// A subscription reads few partitions, and a token is matched by
    /// pointer first: a scan beats hashing the topic name per message.
    counts: Vec<(TopicPartition, usize)>,
}

impl Held {
    /// Counts deliveries handed out, a run of one partition at a time.
    pub(crate) fn add_all<'a>(&mut self, tokens: impl IntoIterator<Item = &'a AckToken>) {
        let mut run: Option<(&AckToken, usize)> = None;
        for token in tokens {
            match &mut run {
                Some((first, n))
                    if token.partition == first.partition && token.topic == first.topic =>
                {
                    *n += 1
                }
                _ => {
                    if let Some((first, n)) = run.replace((token, 1)) {
                        self.add(first, n);
                    }
                }
            }
        }
        if let Some((first, n)) = run {
            self.add(first, n);
        }
    }

    fn add(&mut self, token: &AckToken, n: usize) {
        match self.counts.iter_mut().find(|(tp, _)| token.is_in(tp)) {
            Some((_, held)) => *held += n,
            None => self.counts.push((token.topic_partition(), n)),
        }
    }

    /// One delivery is settled or dropped; true when it was its
    /// partition's last.
    pub(crate) fn remove(&mut self, token: &AckToken) -> bool {
        match self.counts.iter_mut().find(|(tp, _)| token.is_in(tp)) {
            Some((_, held)) if *held > 0 => {
                *held -= 1;
                *held == 0
            }
            _ => false,
        }
    }

    /// Whether a delivery of `partition` is held.
    pub(crate) fn holds(&self, partition: &TopicPartition) -> bool {
        self.counts.iter().any(|(tp, n)| *n > 0 && tp == partition)
    }
}

/// The partitions revoked and not yet let go of.
#[derive(Default)]
pub(crate) struct Revoked {
    partitions: Mutex<HashSet<TopicPartition>>,
    /// Whether any partition is revoked: the per-delivery check is one load
    /// while none is.
    any: AtomicBool,
    /// Woken when a partition's last held delivery is settled.
    pub(crate) released: Notify,
}

impl Revoked {
    /// Keeps only the items whose partition is not revoked; returns how
    /// many it dropped.
    pub(crate) fn retain<T>(&self, items: &mut Vec<T>, token: impl Fn(&T) -> &AckToken) -> usize {
        if !self.any.load(Ordering::Acquire) {
            return 0;
        }
        let before = items.len();
        let revoked = self.partitions.lock();
        items.retain(|item| !revoked.iter().any(|tp| token(item).is_in(tp)));
        before - items.len()
    }

    /// Whether the delivery's partition was revoked since it was handed out.
    pub(crate) fn contains(&self, token: &AckToken) -> bool {
        self.any.load(Ordering::Acquire) && self.partitions.lock().iter().any(|tp| token.is_in(tp))
    }

    /// Whether a revocation is being served.
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    fn add(&self, partitions: &[TopicPartition]) {
        let mut revoked = self.partitions.lock();
        revoked.extend(partitions.iter().cloned());
        self.any.store(true, Ordering::Release);
    }

    fn lift(&self, partitions: &[TopicPartition]) {
        let mut revoked = self.partitions.lock();
        for tp in partitions {
            revoked.remove(tp);
        }
        self.any.store(!revoked.is_empty(), Ordering::Release);
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
            settler.revoked.add(&partitions);
            drop_buffered(&partitions);
            let settler = settler.clone();
            tokio::spawn(async move {
                if !settler.drained(&partitions, deadline).await {
                    tracing::warn!(
                        ?partitions,
                        ?deadline,
                        "handlers of revoked partitions did not finish in time; their messages may be handled twice"
                    );
                }
                if let Err(error) = settler.flush().await {
                    tracing::warn!(%error, "acknowledging before a revocation failed; the messages will be redelivered");
                }
                settler.revoked.lift(&partitions);
                revocation.complete();
            });
        }
    }
}
