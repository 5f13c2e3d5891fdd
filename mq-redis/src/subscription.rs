//! A member of a consumer group: its membership and partition locks
//! ([`membership`]), its reads and claims ([`read`]), and the subscription
//! the core drives (fetch, ack, nack, rebalance events, close).
//!
//! # How a group shares a topic
//!
//! Each partition stream has a Redis consumer group of the mq group's name.
//! Members register in a sorted set per topic and group, scored by the
//! expiry of their lease, which a background task renews every heartbeat,
//! whether or not anyone fetches. The live members, sorted by name (names
//! are time-ordered), split the partitions with the core's `share`:
//! partition `p` goes to the `p % n`-th.
//!
//! A member reads a partition only while it holds the partition's lock (a
//! key with the member's name and the lease as expiry); taking the lock is
//! what it reports as an assignment. It then first reclaims, with
//! `XAUTOCLAIM`, whatever is still pending in the partition: records a
//! previous owner gave back, or those of a member that died (its lock
//! expired after `claim_idle` without renewal: that is the idle time after
//! which a dead consumer's messages are reclaimed). Only then does it read
//! new entries (`XREADGROUP ... >`), so a key's older records come first.
//! Reclaimed records come with their delivery counter incremented, which
//! gives the attempt number.
//!
//! When the membership moves a partition away, the member stops reading
//! it, drops what it read there and has not handed out, and reports the
//! revocation. It keeps the lock until the runtime has let go of the
//! partition (handlers finished, acks flushed), or [`REVOKE_LIMIT`] at
//! most, then gives the lock back, even with records still pending there:
//! the runtime drops undelivered records of a revoked partition, and the
//! next owner reclaims them before reading anything newer. Per-key order
//! therefore holds across members, and acks of a partition given back are
//! ignored (its next owner redelivers those records).
//!
//! Reads block in Redis (`BLOCK`, on a connection of the member's own), so
//! an idle subscription costs one command per `block` period. Members
//! joining or leaving wake the others' blocked reads with `CLIENT UNBLOCK`,
//! and an interrupted read makes the member look at the group, so
//! rebalancing is prompt.

mod membership;
mod read;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mq_core::driver::{
    AckToken, DriverSubscription, RawDelivery, Rebalance, RebalanceQueue, SubscribeSpec,
    TopicPartition, REVOKE_LIMIT,
};
use mq_core::{Error, Result};
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::Pipeline;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::codec::{EntryId, FastHash};
use crate::connection::Inner;
use crate::topics::TopicInfo;

/// A partition of one of the subscription's topics: (topic index, partition).
type Slot = (usize, u32);

/// The `XAUTOCLAIM` cursor of a pending list's start, and of its end.
const CURSOR_START: &str = "0-0";

/// What a member knows about its partitions.
#[derive(Default)]
struct State {
    /// Partitions whose lock this member holds and that it reads: reported
    /// assigned and not revoked since.
    readable: HashSet<Slot>,
    /// Partitions reported revoked whose lock is kept until the runtime has
    /// let go of them.
    revoking: HashSet<Slot>,
    /// Readable partitions whose pending records are still being
    /// reclaimed, with the `XAUTOCLAIM` cursor to go on from; their new
    /// entries are read only after.
    unclaimed: HashMap<Slot, String>,
    /// Deliveries handed out and not yet settled, per partition (touched
    /// for every delivery and ack, hence the cheap hasher).
    in_flight: HashMap<Slot, HashSet<EntryId, FastHash>, FastHash>,
    /// Set when a read failed: its reply may have been lost after Redis
    /// delivered the entries, which then sit pending under this member
    /// unknown to it, and must be claimed again.
    orphans: bool,
    /// Records given back with `nack`, to be claimed again and redelivered.
    released: Vec<(Slot, EntryId)>,
    /// Deliveries read and not yet returned by `fetch`.
    buffer: VecDeque<(Slot, RawDelivery)>,
}

impl State {
    /// Whether the partition's lock is this member's (readable or revoking).
    fn holds(&self, slot: Slot) -> bool {
        self.readable.contains(&slot) || self.revoking.contains(&slot)
    }

    /// Keeps the deliveries of a read or claim, unless their partition was
    /// revoked meanwhile: those stay pending for its next owner to reclaim.
    fn accept(&mut self, slot: Slot, deliveries: Vec<RawDelivery>) {
        if deliveries.is_empty() || !self.readable.contains(&slot) {
            return;
        }
        let held = self.in_flight.entry(slot).or_default();
        held.extend(
            deliveries
                .iter()
                .filter_map(|d| EntryId::from_token(&d.token)),
        );
        self.buffer
            .extend(deliveries.into_iter().map(|d| (slot, d)));
    }

    /// Stops reading the partitions and drops what was read there and not
    /// handed out.
    fn stop_reading(&mut self, slots: &[Slot]) {
        for slot in slots {
            self.readable.remove(slot);
            self.unclaimed.remove(slot);
        }
        self.buffer.retain(|(slot, _)| !slots.contains(slot));
    }

    /// Forgets everything about a partition this member no longer holds.
    fn forget(&mut self, slot: Slot) {
        self.stop_reading(&[slot]);
        self.in_flight.remove(&slot);
        self.released.retain(|(s, _)| *s != slot);
    }
}

/// One member of a group, shared by the subscription, its reads, its
/// membership task and its revocations.
pub(crate) struct Member {
    inner: Arc<Inner>,
    group: String,
    name: String,
    topics: Vec<Arc<TopicInfo>>,
    state: Mutex<State>,
    /// The blocking-read connection. A read step (claims included) holds
    /// it throughout, so holding it means no read touches any partition.
    reader: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// The reader connection's client id (0 when not connected), for `CLIENT UNBLOCK`.
    reader_id: AtomicI64,
    left: AtomicBool,
    /// Wakes a read waiting for partitions or for records given back.
    wake: Notify,
    /// Wakes the membership task: the group may have changed.
    changed: Arc<Notify>,
    rebalances: RebalanceQueue,
    /// When the other members were last woken while waiting for a handover.
    last_poke: Mutex<Option<Instant>>,
    /// Turns the partitions a read smaller than their number starts from.
    rotation: AtomicUsize,
}

/// The subscription handed to the core.
pub(crate) struct RedisSubscription {
    member: Arc<Member>,
    /// A read in progress. A fetch dropped mid-read leaves it running; it
    /// fills the member's buffer, which the next fetch takes from, so
    /// nothing is lost (cancel safety).
    reading: tokio::sync::Mutex<Option<JoinHandle<Result<()>>>>,
    membership: Mutex<Option<JoinHandle<()>>>,
}

impl RedisSubscription {
    /// Joins `spec.group` on every topic of `spec`.
    pub(crate) async fn join(inner: Arc<Inner>, spec: SubscribeSpec) -> Result<Self> {
        let mut topics = Vec::with_capacity(spec.topics.len());
        for t in &spec.topics {
            let topic = inner.topic(t, None).await?;
            inner.ensure_group(&topic, &spec.group, spec.start).await?;
            topics.push(topic);
        }
        let name = format!("m-{}", uuid::Uuid::now_v7().simple());
        let member = Arc::new(Member {
            state: Mutex::default(),
            inner: inner.clone(),
            group: spec.group,
            name,
            topics,
            reader: tokio::sync::Mutex::new(None),
            reader_id: AtomicI64::new(0),
            left: AtomicBool::new(false),
            wake: Notify::new(),
            changed: Arc::new(Notify::new()),
            rebalances: RebalanceQueue::new(),
            last_poke: Mutex::new(None),
            rotation: AtomicUsize::new(0),
        });
        member.register().await?;
        // Connected before the others are woken, so they can wake it in turn.
        let reader = member.open_reader().await?;
        *member.reader.lock().await = Some(reader);
        member.wake_peers().await;
        inner.start_promoter();
        let membership = tokio::spawn(membership::run(
            Arc::downgrade(&member),
            member.changed.clone(),
        ));
        Ok(RedisSubscription {
            member,
            reading: tokio::sync::Mutex::new(None),
            membership: Mutex::new(Some(membership)),
        })
    }

    fn stop_tasks(&self) {
        if let Some(h) = self.membership.lock().take() {
            h.abort();
        }
        if let Ok(mut reading) = self.reading.try_lock() {
            if let Some(r) = reading.take() {
                r.abort();
            }
        }
        self.member.state.lock().buffer.clear();
    }
}

impl Member {
    fn stream(&self, slot: Slot) -> &str {
        &self.topics[slot.0].streams[slot.1 as usize]
    }

    /// The partition a token names, if it is one of this subscription's.
    fn slot_of(&self, token: &AckToken) -> Option<Slot> {
        let index = self.topics.iter().position(|t| *t.name == *token.topic)?;
        (token.partition < self.topics[index].partitions).then_some((index, token.partition))
    }

    fn partitions(&self, slots: &[Slot]) -> Vec<TopicPartition> {
        slots
            .iter()
            .map(|&(t, p)| TopicPartition::new(self.topics[t].name.clone(), p))
            .collect()
    }

    fn check_open(&self) -> Result<()> {
        self.inner.check_open()?;
        if self.left.load(Ordering::Acquire) {
            return Err(Error::Closed("subscription"));
        }
        Ok(())
    }

    /// Up to `max` buffered deliveries, if there are any.
    fn take(&self, max: usize) -> Option<Vec<RawDelivery>> {
        let mut state = self.state.lock();
        if state.buffer.is_empty() {
            return None;
        }
        let n = max.min(state.buffer.len());
        Some(state.buffer.drain(..n).map(|(_, d)| d).collect())
    }
}

#[async_trait]
impl DriverSubscription for RedisSubscription {
    async fn fetch(&self, max: usize) -> Result<Vec<RawDelivery>> {
        let max = max.max(1);
        let mut reading = self.reading.lock().await;
        loop {
            self.member.check_open()?;
            if let Some(batch) = self.member.take(max) {
                return Ok(batch);
            }
            let task = reading.get_or_insert_with(|| tokio::spawn(self.member.clone().read(max)));
            // Awaiting by reference: if this future is dropped, the read
            // stays in `reading` and fills the buffer all the same.
            let result = task.await;
            *reading = None;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(join) if join.is_cancelled() => return Err(Error::Closed("subscription")),
                Err(join) => {
                    return Err(Error::Backend {
                        backend: crate::error::BACKEND,
                        message: format!("the read task failed: {join}"),
                        source: None,
                    })
                }
            }
        }
    }

    async fn ack(&self, tokens: Vec<AckToken>) -> Result<()> {
        let m = &self.member;
        m.inner.check_open()?;
        // One XACK per stream (a batch spans a few), the entry ids written
        // straight into it.
        let mut acks: Vec<(Slot, redis::Cmd)> = Vec::new();
        let mut settled: Vec<(Slot, EntryId)> = Vec::with_capacity(tokens.len());
        {
            let state = m.state.lock();
            for t in &tokens {
                let (Some(slot), Some(id), Some(handle)) =
                    (m.slot_of(t), EntryId::from_token(t), t.handle.as_deref())
                else {
                    continue;
                };
                // Given back: its next owner redelivers it.
                if !state.holds(slot) {
                    continue;
                }
                let at = match acks.iter().position(|(s, _)| *s == slot) {
                    Some(at) => at,
                    None => {
                        let mut cmd = redis::cmd("XACK");
                        cmd.arg(m.stream(slot)).arg(&m.group);
                        acks.push((slot, cmd));
                        acks.len() - 1
                    }
                };
                acks[at].1.arg(handle);
                settled.push((slot, id));
            }
        }
        if acks.is_empty() {
            return Ok(());
        }
        let mut pipe = Pipeline::with_capacity(acks.len());
        for (_, cmd) in acks {
            pipe.add_command(cmd).ignore();
        }
        // XACK is idempotent, so it is simply repeated through a reconnect.
        let pipe = &pipe;
        m.inner
            .retrying("ack", |mut c| async move {
                pipe.query_async::<()>(&mut c).await
            })
            .await?;
        let mut state = m.state.lock();
        for (slot, id) in settled {
            if let Some(held) = state.in_flight.get_mut(&slot) {
                held.remove(&id);
                if held.is_empty() {
                    state.in_flight.remove(&slot);
                }
            }
        }
        Ok(())
    }

    /// `after` is always zero: redelivery delay is not native here, so the
    /// core sends retries after a pause through its retry topic.
    async fn nack(&self, token: AckToken, _after: Duration) -> Result<()> {
        let m = &self.member;
        m.inner.check_open()?;
        let (Some(slot), Some(id)) = (m.slot_of(&token), EntryId::from_token(&token)) else {
            return Ok(());
        };
        {
            let mut state = m.state.lock();
            // Of a partition revoked: it stays pending for the next owner.
            if !state.readable.contains(&slot) {
                return Ok(());
            }
            if let Some(held) = state.in_flight.get_mut(&slot) {
                held.remove(&id);
            }
            state.released.push((slot, id));
        }
        m.wake_reader().await;
        Ok(())
    }

    async fn rebalance(&self) -> Option<Rebalance> {
        self.member.rebalances.next().await
    }

    async fn close(&self) -> Result<()> {
        self.stop_tasks();
        self.member.leave().await;
        *self.member.reader.lock().await = None;
        Ok(())
    }
}

impl Drop for RedisSubscription {
    fn drop(&mut self) {
        self.stop_tasks();
        if !self.member.left.load(Ordering::Acquire) {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let member = self.member.clone();
                handle.spawn(async move { member.leave().await });
            }
        }
    }
}
