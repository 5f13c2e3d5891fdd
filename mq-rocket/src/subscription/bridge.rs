//! Where the push consumer's threads meet the runtime's fetches.
//!
//! The client calls the orderly listener on a blocking thread, one call per
//! queue at a time, with up to [`BATCH`] consecutive messages of the queue.
//! The listener puts them into the [`Bridge`]'s buffer and blocks until the
//! runtime has acked every one, then returns `Success` (the client then
//! commits past the batch). A message given back (a dropped delivery, a
//! failed settle) is offered again by the call itself, ahead of the
//! batch's messages not fetched yet, and the call goes on: only that
//! message comes again, never one acked already (the client would hand the
//! whole batch again after `SuspendCurrentQueueAMoment`). So a queue's
//! offset only moves past acked messages, and its messages reach the
//! runtime in order.
//!
//! **Handing a queue on** (revoked past [`DRAIN`], or closed) ends the
//! call with its batch partly acked: it commits the offset of the first
//! message not acked and leaves the offsets of the acked ones after it to
//! the next owner ([`handover`](super::handover)), before it returns
//! `SuspendCurrentQueueAMoment` and the client lets the queue go. The next
//! owner starts at that message and skips the ones recorded, so what is
//! redelivered is what was not acked.
//!
//! **Revocation** ([`Bridge::reassign`], called from the allocation
//! strategy before the client drops the queue): no new call of the queue
//! is taken, the calls in progress are left to finish (the runtime keeps
//! fetching and acking them, bounded by [`DRAIN`]), the rest is handed
//! on, and only then is the revocation reported.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mq_core::driver::{AckToken, RawDelivery, RebalanceQueue, TopicPartition};
use parking_lot::Mutex;
use rocketmq_client_rust::{ConsumeOrderlyContext, ConsumeOrderlyStatus, MessageListenerOrderly};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;
use tokio::sync::Notify;

use super::counts::Counts;
use super::handover::{Handovers, Record};
use crate::codec;

/// Most messages per listener call.
pub(crate) const BATCH: u32 = 32;
/// Longest wait for a revoked queue's calls to finish before they are handed on.
const DRAIN: Duration = Duration::from_secs(10);
/// Longest wait for calls to hand their queues on (commit, record).
const HAND_ON: Duration = Duration::from_secs(10);
/// Time for the client to commit a finished batch before the queue is dropped.
const COMMIT_GRACE: Duration = Duration::from_millis(50);

/// How the runtime settled one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Acked.
    Ack,
    /// Given back: to be offered again.
    Again,
}

/// A queue as the bridge keys it: mq topic, broker, queue id.
pub(crate) type QueueKey = (Arc<str>, String, i32);

/// What the bridge tells a waiting listener call.
enum Event {
    /// Offer the message at this index of the call again.
    Again(usize),
    /// The call is over: every message acked (`None`), or handed on with
    /// each message's offset and whether it was acked.
    End(Option<Vec<(u64, bool)>>),
}

/// One listener call waiting for its messages.
struct Batch {
    queue: QueueKey,
    /// Its messages in offset order, and whether each is acked.
    entries: Vec<(AckToken, bool)>,
    /// Messages not acked yet.
    left: usize,
    events: Sender<Event>,
}

/// A delivery waiting to be fetched: message `index` of `batch`.
struct Pending {
    delivery: RawDelivery,
    batch: u64,
    index: usize,
}

#[derive(Default)]
struct State {
    buffer: VecDeque<Pending>,
    /// Handle of a delivery out with the runtime or buffered → its batch and index.
    waiting: HashMap<u64, (u64, usize)>,
    batches: HashMap<u64, Batch>,
    /// Listener calls in progress per queue.
    active: HashMap<QueueKey, usize>,
    /// Queues this member holds.
    assigned: HashSet<QueueKey>,
    /// Queues being revoked: no new call is taken.
    leaving: HashSet<QueueKey>,
    /// Queues gained whose hand-over record is not read yet.
    fresh: HashSet<QueueKey>,
    /// Offsets a previous owner acked past its commit, still ahead, per queue.
    inherited: HashMap<QueueKey, BTreeSet<u64>>,
    /// Each topic's queues in partition order.
    partitions: HashMap<Arc<str>, Vec<(String, i32)>>,
}

impl State {
    /// Records the ack of message `index` of `batch`; ends the batch when
    /// it was the last one left.
    fn ack(&mut self, batch: u64, index: usize, counts: &Counts, group: &str) {
        let Some(b) = self.batches.get_mut(&batch) else {
            return;
        };
        if let Some((_, acked)) = b.entries.get_mut(index) {
            if !*acked {
                *acked = true;
                b.left = b.left.saturating_sub(1);
            }
        }
        if b.left == 0 {
            if let Some(b) = self.batches.remove(&batch) {
                counts.committed(group, b.entries.iter().map(|(t, _)| t));
                let _ = b.events.send(Event::End(None));
            }
        }
    }

    /// Ends `batch` unfinished: takes its deliveries back from the buffer
    /// and forgets those out with the runtime (an ack of one of them now
    /// is ignored, and the message goes to the next owner).
    fn hand_on(&mut self, batch: u64) {
        let Some(b) = self.batches.remove(&batch) else {
            return;
        };
        self.buffer.retain(|p| p.batch != batch);
        self.waiting.retain(|_, (of, _)| *of != batch);
        let entries = b.entries.iter().map(|(t, a)| (t.offset, *a)).collect();
        let _ = b.events.send(Event::End(Some(entries)));
    }

    fn partition(&self, topic: &Arc<str>, broker: &str, queue_id: i32) -> u32 {
        self.partitions
            .get(topic)
            .and_then(|qs| qs.iter().position(|(b, q)| b == broker && *q == queue_id))
            .map_or(queue_id.max(0) as u32, |p| p as u32)
    }

    fn busy(&self, queues: &[QueueKey]) -> bool {
        queues
            .iter()
            .any(|q| self.active.get(q).copied().unwrap_or(0) > 0)
    }
}

/// What the listener threads, the allocation hook and the subscription share.
pub(crate) struct Bridge {
    /// (broker name, mq name) of each subscribed topic.
    topics: Vec<(String, Arc<str>)>,
    group: String,
    state: Mutex<State>,
    counts: Arc<Counts>,
    pub(crate) handovers: Handovers,
    pub(crate) ready: Notify,
    pub(crate) rebalances: RebalanceQueue,
    pub(crate) closing: AtomicBool,
    next: AtomicU64,
}

impl Bridge {
    pub(crate) fn new(
        topics: &[String],
        group: &str,
        counts: Arc<Counts>,
        handovers: Handovers,
    ) -> Arc<Bridge> {
        Arc::new(Bridge {
            topics: topics
                .iter()
                .map(|t| (crate::names::to_broker(t), Arc::from(t.as_str())))
                .collect(),
            group: group.to_owned(),
            state: Mutex::default(),
            counts,
            handovers,
            ready: Notify::new(),
            rebalances: RebalanceQueue::new(),
            closing: AtomicBool::new(false),
            next: AtomicU64::new(1),
        })
    }

    /// The subscribed topic whose broker name is `broker_topic`.
    pub(crate) fn topic(&self, broker_topic: &str) -> Option<Arc<str>> {
        self.topics
            .iter()
            .find(|(b, _)| b == broker_topic)
            .map(|(_, t)| t.clone())
    }

    /// Whether every subscribed topic has seen a rebalance.
    pub(crate) fn balanced(&self) -> bool {
        self.state.lock().partitions.len() >= self.topics.len()
    }

    /// Up to `max` deliveries, if any are waiting, with their delivery
    /// counts (counted here: what was never fetched was never delivered).
    pub(crate) fn take(&self, max: usize) -> Vec<RawDelivery> {
        let mut state = self.state.lock();
        let n = max.min(state.buffer.len());
        state
            .buffer
            .drain(..n)
            .map(|p| {
                let mut d = p.delivery;
                d.delivery_count = d
                    .delivery_count
                    .max(self.counts.seen(&self.group, &d.token));
                d
            })
            .collect()
    }

    /// Settles the delivery of `token`; unknown tokens are ignored.
    pub(crate) fn settle(&self, token: &AckToken, how: Settle) {
        let Some(id) = handle_id(token) else { return };
        let mut state = self.state.lock();
        let Some((batch, index)) = state.waiting.remove(&id) else {
            return;
        };
        match how {
            Settle::Ack => {
                self.counts.acked(&self.group, token);
                state.ack(batch, index, &self.counts, &self.group);
            }
            Settle::Again => {
                if let Some(b) = state.batches.get(&batch) {
                    let _ = b.events.send(Event::Again(index));
                }
            }
        }
    }

    /// Hands every call's queue on (on close).
    pub(crate) fn release_all(&self) {
        self.closing.store(true, Ordering::Release);
        let mut state = self.state.lock();
        let batches: Vec<u64> = state.batches.keys().copied().collect();
        for batch in batches {
            state.hand_on(batch);
        }
        drop(state);
        self.ready.notify_waiters();
    }

    /// Waits until no listener call is in progress, at most [`HAND_ON`]:
    /// after [`release_all`](Self::release_all), the calls have handed
    /// their queues on, before the client persists its offsets.
    pub(crate) async fn calls_ended(&self) {
        let start = Instant::now();
        while self.state.lock().active.values().any(|n| *n > 0) && start.elapsed() < HAND_ON {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The listener's side: offers a batch and waits until all is acked
    /// (true) or the queue is handed on (false).
    fn offer(&self, msgs: &[&MessageExt], mq: &MessageQueue) -> bool {
        let Some(first) = msgs.first() else {
            return true;
        };
        if self.closing.load(Ordering::Acquire) {
            return false;
        }
        let Some(topic) = self.topic(first.message.topic().as_str()) else {
            // A topic the runtime did not ask for (the client's own retry
            // topic): nothing to hand on, so nothing is held back.
            return true;
        };
        let queue: QueueKey = (topic.clone(), first.broker_name.to_string(), first.queue_id);
        let start = first.queue_offset.max(0) as u64;
        let fresh = {
            let mut state = self.state.lock();
            if !state.assigned.contains(&queue) || state.leaving.contains(&queue) {
                return false;
            }
            state.fresh.remove(&queue)
        };
        if fresh {
            self.take_over(&queue, mq, start);
        }
        let batch = self.next.fetch_add(1, Ordering::Relaxed);
        let (events, calls) = channel();
        let first_seen = SystemTime::now();
        let passed_record = {
            let mut state = self.state.lock();
            // Closing is checked under the lock `release_all` takes: a
            // batch registered after it would never be handed on.
            if !state.assigned.contains(&queue)
                || state.leaving.contains(&queue)
                || self.closing.load(Ordering::Acquire)
            {
                return false;
            }
            let partition = state.partition(&topic, &queue.1, queue.2);
            let mut inherited = state.inherited.remove(&queue);
            if let Some(offsets) = &mut inherited {
                offsets.retain(|o| *o >= start);
            }
            let had_record = inherited.is_some();
            let mut entries = Vec::with_capacity(msgs.len());
            let mut left = 0;
            for (index, ext) in msgs.iter().enumerate() {
                let (token, id) = self.token(&topic, partition, ext);
                let skipped = inherited
                    .as_mut()
                    .is_some_and(|offsets| offsets.remove(&token.offset))
                    || self.counts.was_acked(&self.group, &token);
                if !skipped {
                    left += 1;
                    state.waiting.insert(id, (batch, index));
                    state.buffer.push_back(Pending {
                        delivery: delivery(&topic, ext, token.clone(), first_seen),
                        batch,
                        index,
                    });
                }
                entries.push((token, skipped));
            }
            let passed_record = had_record && inherited.as_ref().is_none_or(BTreeSet::is_empty);
            if let Some(offsets) = inherited.filter(|o| !o.is_empty()) {
                state.inherited.insert(queue.clone(), offsets);
            }
            if left == 0 {
                // Every message was acked before: the batch only needs committing.
                self.counts
                    .committed(&self.group, entries.iter().map(|(t, _)| t));
                drop(state);
                if passed_record {
                    self.handovers.forget(mq);
                }
                return true;
            }
            *state.active.entry(queue.clone()).or_default() += 1;
            state.batches.insert(
                batch,
                Batch {
                    queue: queue.clone(),
                    entries,
                    left,
                    events,
                },
            );
            passed_record
        };
        self.ready.notify_one();
        let ended = loop {
            match calls.recv() {
                Ok(Event::Again(index)) => self.offer_again(batch, index, msgs, first_seen),
                Ok(Event::End(ended)) => break ended,
                // The bridge is gone: nothing is left to settle or record.
                Err(_) => break Some(Vec::new()),
            }
        };
        match &ended {
            None if passed_record => self.handovers.forget(mq),
            None => {}
            Some(entries) => self.hand_on(&queue, mq, entries),
        }
        let mut state = self.state.lock();
        if let Some(n) = state.active.get_mut(&queue) {
            *n = n.saturating_sub(1);
        }
        ended.is_none()
    }

    /// A token for `ext` with a fresh handle, and the handle.
    fn token(&self, topic: &Arc<str>, partition: u32, ext: &MessageExt) -> (AckToken, u64) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let offset = ext.queue_offset.max(0) as u64;
        let token =
            AckToken::new(topic.clone(), partition, offset).with_handle(id.to_be_bytes().to_vec());
        (token, id)
    }

    /// Reads what the queue's previous owner left (see
    /// [`handover`](super::handover)): the offsets it acked past its
    /// commit, when this member starts where it committed.
    fn take_over(&self, queue: &QueueKey, mq: &MessageQueue, start: u64) {
        let Some(record) = self.handovers.read(mq) else {
            return;
        };
        if record.committed != start {
            self.handovers.forget(mq);
            return;
        }
        if !record.acked.is_empty() {
            self.state
                .lock()
                .inherited
                .insert(queue.clone(), record.acked.into_iter().collect());
        }
    }

    /// Offers message `index` of `batch` again, ahead of the batch's
    /// messages not fetched yet, unless the batch ended meanwhile.
    fn offer_again(&self, batch: u64, index: usize, msgs: &[&MessageExt], first_seen: SystemTime) {
        let Some(ext) = msgs.get(index) else { return };
        let mut state = self.state.lock();
        let Some(b) = state.batches.get(&batch) else {
            return;
        };
        let (old, _) = &b.entries[index];
        let (topic, partition) = (old.topic.clone(), old.partition);
        let (token, id) = self.token(&topic, partition, ext);
        let at = state
            .buffer
            .iter()
            .position(|p| p.batch == batch && p.index > index)
            .unwrap_or(state.buffer.len());
        state.waiting.insert(id, (batch, index));
        state.buffer.insert(
            at,
            Pending {
                delivery: delivery(&topic, ext, token, first_seen),
                batch,
                index,
            },
        );
        drop(state);
        self.ready.notify_one();
    }

    /// Commits `queue` at its first message not acked and records the
    /// acked ones after it, those a previous owner acked included.
    fn hand_on(&self, queue: &QueueKey, mq: &MessageQueue, entries: &[(u64, bool)]) {
        let inherited = self.state.lock().inherited.remove(queue);
        let Some(first) = entries.first().map(|(o, _)| *o) else {
            return;
        };
        let Some(committed) = entries.iter().find(|(_, acked)| !acked).map(|(o, _)| *o) else {
            return;
        };
        let mut acked: Vec<u64> = entries
            .iter()
            .filter(|(o, a)| *a && *o > committed)
            .map(|(o, _)| *o)
            .collect();
        acked.extend(inherited.into_iter().flatten());
        if committed > first || !acked.is_empty() {
            self.handovers.hand_on(mq, &Record { committed, acked });
        }
    }

    /// Reports a new assignment of `topic`'s queues (from the allocation
    /// hook, before the client drops or adds process queues); waits for the
    /// revoked queues' calls to finish first (see the module docs).
    pub(crate) fn reassign(&self, topic: &Arc<str>, all: &[MessageQueue], mine: &[MessageQueue]) {
        let now: HashSet<QueueKey> = mine
            .iter()
            .map(|q| (topic.clone(), q.broker_name().to_string(), q.queue_id()))
            .collect();
        let (gained, lost) = {
            let mut state = self.state.lock();
            let mut order: Vec<(String, i32)> = all
                .iter()
                .map(|q| (q.broker_name().to_string(), q.queue_id()))
                .collect();
            order.sort();
            state.partitions.insert(topic.clone(), order);
            let lost: Vec<QueueKey> = state
                .assigned
                .iter()
                .filter(|k| k.0 == *topic && !now.contains(*k))
                .cloned()
                .collect();
            let gained: Vec<QueueKey> = now.difference(&state.assigned).cloned().collect();
            state.leaving.extend(lost.iter().cloned());
            state.assigned.extend(gained.iter().cloned());
            state.fresh.extend(gained.iter().cloned());
            (gained, lost)
        };
        let partitions = |keys: &[QueueKey]| -> Vec<TopicPartition> {
            let state = self.state.lock();
            keys.iter()
                .map(|k| TopicPartition::new(k.0.clone(), state.partition(&k.0, &k.1, k.2)))
                .collect()
        };
        if !lost.is_empty() {
            block(|| self.drain(&lost));
            let parts = partitions(&lost);
            {
                let mut state = self.state.lock();
                for k in &lost {
                    state.assigned.remove(k);
                    state.leaving.remove(k);
                    state.fresh.remove(k);
                    state.inherited.remove(k);
                }
            }
            // Nothing of these queues is in flight any more.
            let _wait = self.rebalances.revoke(parts);
        }
        self.rebalances.assigned(partitions(&gained));
    }

    /// Waits until no call of `queues` is in progress: first for the
    /// runtime to ack their messages, then (past [`DRAIN`]) for the calls
    /// to hand the queues on.
    fn drain(&self, queues: &[QueueKey]) {
        let start = Instant::now();
        while self.state.lock().busy(queues)
            && start.elapsed() < DRAIN
            && !self.closing.load(Ordering::Acquire)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut state = self.state.lock();
        if !state.busy(queues) {
            drop(state);
            std::thread::sleep(COMMIT_GRACE);
            return;
        }
        let batches: Vec<u64> = state
            .batches
            .iter()
            .filter(|(_, b)| queues.contains(&b.queue))
            .map(|(id, _)| *id)
            .collect();
        for batch in batches {
            state.hand_on(batch);
        }
        drop(state);
        let start = Instant::now();
        while self.state.lock().busy(queues) && start.elapsed() < HAND_ON {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The delivery of `ext` under `token`.
fn delivery(
    topic: &Arc<str>,
    ext: &MessageExt,
    token: AckToken,
    first_seen: SystemTime,
) -> RawDelivery {
    let offset = token.offset;
    RawDelivery::new(codec::decode(topic, ext), token, first_seen)
        .with_offset(offset)
        .with_delivery_count((ext.reconsume_times.max(0) as u32).saturating_add(1))
}

/// Runs `f`, which blocks, without stalling the Tokio worker it is called
/// on (the client calls the allocation strategy from its own runtime).
fn block(f: impl FnOnce()) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn handle_id(token: &AckToken) -> Option<u64> {
    let bytes: [u8; 8] = token.handle.as_deref()?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The orderly listener registered with the push consumer.
pub(crate) struct Listener(pub(crate) Arc<Bridge>);

impl MessageListenerOrderly for Listener {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        context: &mut ConsumeOrderlyContext,
    ) -> rocketmq_client_rust::ClientResult<ConsumeOrderlyStatus> {
        if self.0.offer(msgs, context.get_message_queue()) {
            return Ok(ConsumeOrderlyStatus::Success);
        }
        // Handed on, or the queue is leaving this member: the client keeps
        // the batch for its next call, if the queue is still its own then
        // (the next owner reads from the broker's offset).
        let pause = if self.0.closing.load(Ordering::Acquire) {
            1000
        } else {
            20
        };
        context.set_suspend_current_queue_time_millis(pause);
        Ok(ConsumeOrderlyStatus::SuspendCurrentQueueAMoment)
    }
}
