//! The state of one in-memory broker and its operations.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use super::log::{record_at, PartitionLog};
use super::MemoryOptions;
use crate::driver::clock::deadline_after;
use crate::driver::local_group::{self, GroupMembers, LocalTopic, Member};
use crate::driver::offsets::{MemberId, Taken};
use crate::driver::{partition_for_key, AckToken, PartitionLag, RawDelivery, StartFrom};
use crate::message::{Message, Receipt};

pub(super) struct Topic {
    pub(super) name: Arc<str>,
    pub(super) partitions: Vec<Mutex<PartitionLog>>,
    /// Members per group, sharing the partitions.
    pub(super) members: GroupMembers,
    /// Woken when records arrive or come back.
    pub(super) changed: Notify,
    round_robin: AtomicU32,
}

impl Topic {
    fn new(name: Arc<str>, partitions: u32) -> Self {
        Topic {
            name,
            partitions: (0..partitions.max(1))
                .map(|_| Mutex::new(PartitionLog::new()))
                .collect(),
            members: GroupMembers::default(),
            changed: Notify::new(),
            round_robin: AtomicU32::new(0),
        }
    }

    pub(super) fn partition_of(&self, message: &Message) -> u32 {
        let n = self.partitions.len() as u32;
        match message.key() {
            Some(key) => partition_for_key(key, n),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % n,
        }
    }
}

impl LocalTopic for Topic {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    fn members(&self) -> &GroupMembers {
        &self.members
    }

    fn give_back(&self, group: &str, member: u64, partitions: Option<&[u32]>) {
        let now = Instant::now();
        for (p, log) in self.partitions.iter().enumerate() {
            if partitions.is_some_and(|ps| !ps.contains(&(p as u32))) {
                continue;
            }
            if let Some(cursor) = log.lock().cursors.get_mut(group) {
                cursor.release_member(member, now);
            }
        }
    }

    fn wake(&self) {
        self.changed.notify_waiters();
    }
}

/// A delayed message waiting for its due time.
struct Scheduled {
    message: Message,
    topic: Arc<Topic>,
    partition: u32,
}

pub(super) struct Broker {
    pub(super) options: MemoryOptions,
    pub(super) topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    /// Fetches read under the shared side; a transaction commits under the
    /// exclusive side, so no fetch sees part of a commit.
    pub(super) commit_gate: RwLock<()>,
    dedup: Mutex<HashMap<Arc<str>, (Receipt, Instant)>>,
    scheduled: Mutex<BTreeMap<(SystemTime, u64), Scheduled>>,
    scheduler_wake: Notify,
    scheduler_started: AtomicBool,
    sequence: AtomicU64,
}

impl Broker {
    pub(super) fn new(options: MemoryOptions) -> Arc<Self> {
        Arc::new(Broker {
            options,
            topics: RwLock::new(HashMap::new()),
            commit_gate: RwLock::new(()),
            dedup: Mutex::new(HashMap::new()),
            scheduled: Mutex::new(BTreeMap::new()),
            scheduler_wake: Notify::new(),
            scheduler_started: AtomicBool::new(false),
            sequence: AtomicU64::new(0),
        })
    }

    pub(super) fn next_id(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    /// The topic, created with `partitions` (or the default) when missing.
    pub(super) fn topic_or_create(&self, name: &str, partitions: Option<u32>) -> Arc<Topic> {
        if let Some(topic) = self.topic(name) {
            return topic;
        }
        let mut topics = self.topics.write();
        topics
            .entry(Arc::from(name))
            .or_insert_with(|| {
                Arc::new(Topic::new(
                    Arc::from(name),
                    partitions.unwrap_or(self.options.partitions),
                ))
            })
            .clone()
    }

    pub(super) fn delete_topic(&self, name: &str) {
        self.topics.write().remove(name);
    }

    /// Publishes a batch; a message with a partition goes there, others by
    /// key or round robin. `all_or_nothing` holds the commit gate for the
    /// whole batch (transactions).
    pub(super) fn publish(
        self: &Arc<Self>,
        batch: impl IntoIterator<Item = (Message, Option<u32>)>,
        all_or_nothing: bool,
    ) -> Vec<Receipt> {
        let _gate = all_or_nothing.then(|| self.commit_gate.write());
        let now = SystemTime::now();
        let batch = batch.into_iter();
        let mut receipts = Vec::with_capacity(batch.size_hint().0);
        let mut touched: Vec<Arc<Topic>> = Vec::new();
        let mut last_topic: Option<Arc<Topic>> = None;
        for (message, partition) in batch {
            let topic = match &last_topic {
                Some(t) if *t.name == *message.topic() => t.clone(),
                _ => {
                    let t = self.topic_or_create(message.topic(), None);
                    last_topic = Some(t.clone());
                    t
                }
            };
            let receipt = match message.idempotency_key().map(Arc::<str>::from) {
                None => self.append_or_schedule(&topic, message, partition, now),
                Some(key) => {
                    let mut dedup = self.dedup.lock();
                    match dedup.get(&key) {
                        Some((first, at)) if at.elapsed() < self.options.dedup_window => {
                            let mut again = first.clone();
                            again.duplicate = true;
                            again
                        }
                        _ => {
                            let receipt = self.append_or_schedule(&topic, message, partition, now);
                            dedup.insert(key, (receipt.clone(), Instant::now()));
                            receipt
                        }
                    }
                }
            };
            if !receipt.duplicate && !touched.iter().any(|t| Arc::ptr_eq(t, &topic)) {
                touched.push(topic);
            }
            receipts.push(receipt);
        }
        for topic in touched {
            topic.changed.notify_waiters();
        }
        receipts
    }

    fn append_or_schedule(
        self: &Arc<Self>,
        topic: &Arc<Topic>,
        message: Message,
        partition: Option<u32>,
        now: SystemTime,
    ) -> Receipt {
        let id = message.id().unwrap_or_default();
        let partition = partition
            .filter(|p| (*p as usize) < topic.partitions.len())
            .unwrap_or_else(|| topic.partition_of(&message));
        match message.deliver_at() {
            Some(due) if due > now => {
                let seq = self.next_id();
                self.scheduled.lock().insert(
                    (due, seq),
                    Scheduled {
                        message,
                        topic: topic.clone(),
                        partition,
                    },
                );
                self.start_scheduler();
                self.scheduler_wake.notify_one();
                Receipt::new(id, topic.name.clone(), partition, None)
            }
            _ => {
                let offset = topic.partitions[partition as usize]
                    .lock()
                    .append(message.with_published_at(now));
                Receipt::new(id, topic.name.clone(), partition, Some(offset))
            }
        }
    }

    fn start_scheduler(self: &Arc<Self>) {
        if self.scheduler_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(run_scheduler(weak));
    }

    /// Moves due delayed messages into their partitions; returns when the next is due.
    fn promote_due(&self) -> Option<SystemTime> {
        let now = SystemTime::now();
        let mut due = Vec::new();
        let next = {
            let mut scheduled = self.scheduled.lock();
            while let Some(entry) = scheduled.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            scheduled.keys().next().map(|(at, _)| *at)
        };
        let mut touched: Vec<Arc<Topic>> = Vec::new();
        for s in due {
            let message = s.message.with_published_at(now);
            s.topic.partitions[s.partition as usize]
                .lock()
                .append(message);
            if !touched.iter().any(|t| Arc::ptr_eq(t, &s.topic)) {
                touched.push(s.topic);
            }
        }
        for topic in touched {
            topic.changed.notify_waiters();
        }
        next
    }

    /// Creates `group`'s cursors on `topic` where missing.
    pub(super) fn ensure_group(&self, topic: &Topic, group: &Arc<str>, start: StartFrom) {
        for partition in &topic.partitions {
            partition.lock().cursor(group, start == StartFrom::Latest);
        }
    }

    pub(super) fn join(
        &self,
        topic: &Arc<Topic>,
        group: &Arc<str>,
        member: &Arc<Member>,
        start: StartFrom,
    ) {
        self.ensure_group(topic, group, start);
        local_group::join(topic, group, member);
    }

    pub(super) fn leave(&self, topic: &Arc<Topic>, group: &Arc<str>, member: &Member) {
        local_group::leave(topic, group, member);
    }

    /// Takes up to `max` deliverable records of `topic` for `member`;
    /// returns also when the earliest returned record becomes due.
    pub(super) fn take(
        &self,
        topic: &Topic,
        group: &Arc<str>,
        member: &Member,
        max: usize,
        out: &mut Vec<RawDelivery>,
    ) -> Option<Instant> {
        let now = Instant::now();
        let mut next_due: Option<Instant> = None;
        let assigned = member.readable(&topic.name);
        let member: MemberId = member.id();
        if assigned.is_empty() {
            return None;
        }
        let rotate = (self.next_id() as usize) % assigned.len();
        for &p in assigned[rotate..].iter().chain(&assigned[..rotate]) {
            if out.len() >= max {
                break;
            }
            let p = p as usize;
            let mut log = topic.partitions[p].lock();
            let end = log.end();
            let log = &mut *log;
            let (records, base) = (&log.records, log.base);
            let Some(cursor) = log.cursors.get_mut(group) else {
                continue;
            };
            // A partition moved to this member waits until the previous
            // owner has settled what it holds, so keys stay in order.
            if cursor.held_by_other(member) {
                continue;
            }
            let mut taken = Taken::default();
            cursor.take(member, now, end, max - out.len(), &mut taken);
            for (offset, count, first_seen) in taken.again.into_iter().chain(taken.fresh) {
                if let Some(record) = record_at(records, base, offset) {
                    out.push(raw(
                        &topic.name,
                        p as u32,
                        offset,
                        record,
                        count,
                        first_seen,
                    ));
                }
            }
            if let Some(due) = cursor.next_due() {
                next_due = Some(next_due.map_or(due, |d: Instant| d.min(due)));
            }
        }
        next_due
    }

    pub(super) fn ack(&self, group: &Arc<str>, tokens: Vec<AckToken>) {
        let mut last: Option<Arc<Topic>> = None;
        for token in tokens {
            let topic = match &last {
                Some(t) if t.name == token.topic => t.clone(),
                _ => match self.topic(&token.topic) {
                    Some(t) => {
                        last = Some(t.clone());
                        t
                    }
                    None => continue,
                },
            };
            if let Some(partition) = topic.partitions.get(token.partition as usize) {
                if let Some(cursor) = partition.lock().cursors.get_mut(group) {
                    cursor.ack(token.offset);
                }
            }
        }
    }

    pub(super) fn nack(&self, group: &Arc<str>, token: &AckToken, after: Duration) {
        let Some(topic) = self.topic(&token.topic) else {
            return;
        };
        let moved = topic
            .partitions
            .get(token.partition as usize)
            .and_then(|p| {
                p.lock()
                    .cursors
                    .get_mut(group)
                    .map(|c| c.give_back(token.offset, deadline_after(after)))
            })
            .unwrap_or(false);
        if moved {
            topic.changed.notify_waiters();
        }
    }

    pub(super) fn lag(&self, topic: &str, group: &str) -> Vec<PartitionLag> {
        let Some(topic) = self.topic(topic) else {
            return Vec::new();
        };
        topic
            .partitions
            .iter()
            .enumerate()
            .map(|(p, log)| {
                let log = log.lock();
                PartitionLag::new(p as u32, log.lag(group))
                    .with_offsets(log.end(), log.committed(group))
            })
            .collect()
    }
}

fn raw(
    topic: &Arc<str>,
    partition: u32,
    offset: u64,
    record: &super::log::Record,
    count: u32,
    first_seen: SystemTime,
) -> RawDelivery {
    RawDelivery::new(
        record.message.clone(),
        AckToken::new(topic.clone(), partition, offset),
        first_seen,
    )
    .with_offset(offset)
    .with_delivery_count(count)
}

async fn run_scheduler(broker: Weak<Broker>) {
    // Holds the broker only while awake, and never sleeps long, so a dropped
    // broker stops its scheduler.
    const IDLE: Duration = Duration::from_millis(250);
    loop {
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let next = broker.promote_due();
        let pause = next
            .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default())
            .unwrap_or(IDLE)
            .min(IDLE);
        tokio::select! {
            _ = broker.scheduler_wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
