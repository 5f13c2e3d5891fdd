//! A member of a consumer group: partition assignment, blocking reads,
//! acks, reclaiming, and leaving.
//!
//! # How a group shares a topic
//!
//! Each partition stream has a Redis consumer group of the mq group's name.
//! Members register in a sorted set per topic and group, scored by the
//! expiry of their lease (renewed every heartbeat). The live members,
//! sorted by name (names are time-ordered), split the partitions as the
//! memory driver does: partition `p` goes to `members[p % n]`.
//!
//! A member only reads new entries (`XREADGROUP ... >`) from a partition
//! whose lock it holds (a key with the member's name and the lease as
//! expiry). A member that loses a partition in a rebalance stops reading
//! it, and releases the lock once it has settled everything it read there;
//! only then can the new owner take the lock. Per-key order therefore holds
//! across members: a key's next message is never read while an earlier one
//! is pending with another member.
//!
//! On taking a lock the new owner reclaims, with `XAUTOCLAIM`, whatever is
//! still pending in the partition: messages a leaving member gave back, or
//! those of a member that died (its lock expired after `claim_idle`
//! without renewal: that is the idle time after which a dead consumer's
//! messages are reclaimed). Reclaimed messages come with their delivery
//! counter incremented, which gives the attempt number.
//!
//! Reads block in Redis (`BLOCK`, on a connection of the member's own), so
//! an idle subscription costs one command per `block` period. Members
//! joining or leaving wake the others' blocked reads with `CLIENT UNBLOCK`,
//! so rebalancing is immediate.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use mq_core::driver::{AckToken, DriverSubscription, RawDelivery, StartFrom, SubscribeSpec};
use mq_core::{Error, Result};
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{Pipeline, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::codec::{
    array_of, bytes_of, delivery, int_of, into_array, millis, text_of, EntryId, FastHash, Origin,
};
use crate::connection::Inner;
use crate::error::{map, unexpected};
use crate::topics::TopicInfo;

/// A partition of one of the subscription's topics: (topic index, partition).
type Slot = (usize, u32);

/// How often a member waiting for a handover wakes the others.
const POKE_INTERVAL: Duration = Duration::from_millis(200);

/// Most pending messages reclaimed from one partition in one step.
const CLAIM_BATCH: usize = 1024;

/// What a member knows about its partitions.
#[derive(Default)]
struct State {
    /// Partitions the current membership gives this member.
    assigned: HashSet<Slot>,
    /// Partitions whose lock this member holds.
    owned: HashSet<Slot>,
    /// Deliveries read and not yet settled, per partition (touched for
    /// every delivery and ack, hence the cheap hasher).
    in_flight: HashMap<Slot, HashSet<EntryId, FastHash>, FastHash>,
    /// Set when a read failed: its reply may have been lost after Redis
    /// delivered the entries, which then sit pending under this member
    /// unknown to it, and must be claimed again.
    orphans: bool,
    /// Records given back with `nack`, to be claimed again and redelivered.
    released: Vec<AckToken>,
    /// Live members last seen, per topic, to notice changes.
    members: Vec<Vec<String>>,
    /// Whether to look at the membership before the next read.
    refresh: bool,
}

impl State {
    fn settled(&mut self, slot: Slot, id: EntryId) -> bool {
        let held = self.in_flight.entry(slot).or_default();
        held.remove(&id);
        let idle = held.is_empty();
        if idle {
            self.in_flight.remove(&slot);
        }
        // A partition that moved away is released once nothing read from it is pending.
        idle && self.owned.contains(&slot) && !self.assigned.contains(&slot)
    }
}

/// The member's own connection for blocking reads, and its client id.
struct Reader {
    conn: MultiplexedConnection,
}

/// One member of a group, shared by the subscription, its reads and its heartbeat.
pub(crate) struct Member {
    inner: Arc<Inner>,
    group: String,
    name: String,
    topics: Vec<Arc<TopicInfo>>,
    state: Mutex<State>,
    reader: tokio::sync::Mutex<Option<Reader>>,
    /// The reader connection's client id (0 when not connected), for `CLIENT UNBLOCK`.
    reader_id: AtomicI64,
    left: AtomicBool,
    wake: Notify,
    /// When the other members were last woken while waiting for a handover.
    last_poke: Mutex<Option<Instant>>,
}

/// The subscription handed to the core.
pub(crate) struct RedisSubscription {
    member: Arc<Member>,
    fetch: tokio::sync::Mutex<Fetch>,
    heartbeat: Mutex<Option<JoinHandle<()>>>,
}

/// Deliveries read but not yet returned, and a read in progress. A fetch
/// dropped mid-read leaves the read running here; its result is kept for
/// the next fetch, so nothing is lost (cancel safety).
#[derive(Default)]
struct Fetch {
    buffer: VecDeque<RawDelivery>,
    reading: Option<JoinHandle<Result<Vec<RawDelivery>>>>,
}

impl RedisSubscription {
    /// Joins `spec.group` on every topic of `spec`.
    pub(crate) async fn join(inner: Arc<Inner>, spec: SubscribeSpec) -> Result<Self> {
        let mut topics = Vec::with_capacity(spec.topics.len());
        for t in &spec.topics {
            topics.push(inner.topic(t, None).await?);
        }
        let start = match spec.start {
            StartFrom::Earliest => "0",
            StartFrom::Latest => "$",
        };
        for t in &topics {
            for p in 0..t.partitions {
                create_group(&inner, &inner.keys.stream(&t.name, p), &spec.group, start).await?;
            }
        }
        let name = format!("m-{}", uuid::Uuid::now_v7().simple());
        let member = Arc::new(Member {
            state: Mutex::new(State {
                refresh: true,
                members: vec![Vec::new(); topics.len()],
                ..State::default()
            }),
            inner: inner.clone(),
            group: spec.group,
            name,
            topics,
            reader: tokio::sync::Mutex::new(None),
            reader_id: AtomicI64::new(0),
            left: AtomicBool::new(false),
            wake: Notify::new(),
            last_poke: Mutex::new(None),
        });
        member.register().await?;
        member.connect_reader().await?;
        member.wake_peers().await;
        inner.start_promoter();
        let heartbeat = tokio::spawn(heartbeat(Arc::downgrade(&member)));
        Ok(RedisSubscription {
            member,
            fetch: tokio::sync::Mutex::new(Fetch::default()),
            heartbeat: Mutex::new(Some(heartbeat)),
        })
    }

    fn stop_tasks(&self) {
        if let Some(h) = self.heartbeat.lock().take() {
            h.abort();
        }
        if let Ok(mut fetch) = self.fetch.try_lock() {
            if let Some(r) = fetch.reading.take() {
                r.abort();
            }
            fetch.buffer.clear();
        }
    }
}

/// `XGROUP CREATE ... MKSTREAM`; an existing group is kept as it is.
async fn create_group(inner: &Inner, stream: &str, group: &str, start: &str) -> Result<()> {
    let created: std::result::Result<(), Error> = inner
        .retrying("create consumer group", |mut c| async move {
            match redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(group)
                .arg(start)
                .arg("MKSTREAM")
                .query_async::<()>(&mut c)
                .await
            {
                Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                other => other,
            }
        })
        .await;
    created
}

impl Member {
    fn lease_ms(&self) -> u64 {
        self.inner.options.claim_idle.as_millis() as u64
    }

    fn stream(&self, slot: Slot) -> &str {
        &self.topics[slot.0].streams[slot.1 as usize]
    }

    fn topic_index(&self, topic: &str) -> Option<usize> {
        self.topics.iter().position(|t| &*t.name == topic)
    }

    fn check_open(&self) -> Result<()> {
        self.inner.check_open()?;
        if self.left.load(Ordering::Acquire) {
            return Err(Error::Closed("subscription"));
        }
        Ok(())
    }

    /// Adds (or renews) this member in every topic's member set.
    async fn register(&self) -> Result<()> {
        let until = millis(SystemTime::now()) + self.lease_ms();
        let keys: Vec<String> = self
            .topics
            .iter()
            .map(|t| self.inner.keys.members(&t.name, &self.group))
            .collect();
        self.inner
            .retrying("join consumer group", |mut c| {
                let mut pipe = Pipeline::new();
                for k in &keys {
                    pipe.cmd("ZADD").arg(k).arg(until).arg(&self.name).ignore();
                }
                async move { pipe.query_async::<()>(&mut c).await }
            })
            .await
    }

    /// Opens the blocking-read connection and publishes its client id.
    async fn connect_reader(&self) -> Result<()> {
        let mut reader = self.reader.lock().await;
        if reader.is_some() {
            return Ok(());
        }
        let mut conn = self.inner.blocking_connection().await?;
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .map_err(|e| map(e, "connect a reader"))?;
        self.reader_id.store(id, Ordering::Release);
        let mut pipe = Pipeline::new();
        for t in &self.topics {
            pipe.cmd("HSET")
                .arg(self.inner.keys.readers(&t.name, &self.group))
                .arg(&self.name)
                .arg(id)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.inner.conn())
            .await
            .map_err(|e| map(e, "connect a reader"))?;
        *reader = Some(Reader { conn });
        Ok(())
    }

    /// Wakes this member's blocked read, so it looks at its state again.
    async fn wake_self(&self) {
        self.wake.notify_one();
        let id = self.reader_id.load(Ordering::Acquire);
        if id > 0 {
            let _ = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(id)
                .query_async::<Value>(&mut self.inner.conn())
                .await;
        }
    }

    /// Wakes the other members' blocked reads after this one joined or left.
    async fn wake_peers(&self) {
        let mut conn = self.inner.conn();
        let mut pipe = Pipeline::new();
        for t in &self.topics {
            pipe.cmd("HGETALL")
                .arg(self.inner.keys.readers(&t.name, &self.group));
        }
        let Ok(replies) = pipe.query_async::<Vec<Value>>(&mut conn).await else {
            return;
        };
        let mut ids = HashSet::new();
        for reply in &replies {
            for pair in pairs(reply) {
                if text_of(pair.0).as_deref() != Some(self.name.as_str()) {
                    if let Some(id) = int_of(pair.1) {
                        ids.insert(id);
                    }
                }
            }
        }
        if ids.is_empty() {
            return;
        }
        let mut pipe = Pipeline::new();
        for id in ids {
            pipe.cmd("CLIENT").arg("UNBLOCK").arg(id).ignore();
        }
        let _ = pipe.query_async::<()>(&mut conn).await;
    }

    /// While waiting for partitions another member still holds, wakes the
    /// others now and then: a member that looked at the membership just
    /// before this one joined, then blocked, would otherwise notice only at
    /// its next heartbeat.
    async fn poke_holders(&self) {
        let due = {
            let mut last = self.last_poke.lock();
            let due = last.is_none_or(|at| at.elapsed() >= POKE_INTERVAL);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            self.wake_peers().await;
        }
    }

    /// The live members of every topic, sorted.
    async fn live_members(&self) -> Result<Vec<Vec<String>>> {
        let now = millis(SystemTime::now());
        let keys: Vec<String> = self
            .topics
            .iter()
            .map(|t| self.inner.keys.members(&t.name, &self.group))
            .collect();
        let replies: Vec<Value> = self
            .inner
            .retrying("read group members", |mut c| {
                let mut pipe = Pipeline::new();
                for k in &keys {
                    pipe.cmd("ZRANGEBYSCORE").arg(k).arg(now).arg("+inf");
                }
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        let mut out = Vec::with_capacity(replies.len());
        for reply in &replies {
            let mut names: Vec<String> = array_of(reply)
                .ok_or_else(|| unexpected("ZRANGEBYSCORE"))?
                .iter()
                .filter_map(text_of)
                .collect();
            names.sort();
            out.push(names);
        }
        Ok(out)
    }

    /// Recomputes the assignment, releases partitions that moved away and
    /// are settled, takes the locks of newly assigned ones, and returns what
    /// taking them reclaimed.
    async fn refresh(&self) -> Result<Vec<RawDelivery>> {
        let mut live = self.live_members().await?;
        if live.iter().any(|names| !names.contains(&self.name)) {
            // Our lease lapsed (a long pause, or Redis lost it): join again.
            self.register().await?;
            for names in &mut live {
                if !names.contains(&self.name) {
                    names.push(self.name.clone());
                    names.sort();
                }
            }
        }
        let mut assigned = HashSet::new();
        for (t, names) in live.iter().enumerate() {
            let n = names.len() as u32;
            let index = names.iter().position(|m| *m == self.name).unwrap_or(0) as u32;
            for p in 0..self.topics[t].partitions {
                if p % n.max(1) == index {
                    assigned.insert((t, p));
                }
            }
        }
        let (release, acquire) = {
            let mut state = self.state.lock();
            state.assigned = assigned.clone();
            state.members = live;
            let release: Vec<Slot> = state
                .owned
                .iter()
                .filter(|s| !assigned.contains(s) && !state.in_flight.contains_key(s))
                .copied()
                .collect();
            let acquire: Vec<Slot> = assigned
                .iter()
                .filter(|s| !state.owned.contains(s))
                .copied()
                .collect();
            (release, acquire)
        };
        for slot in release {
            self.unlock(slot).await?;
        }
        let mut out = Vec::new();
        for slot in acquire {
            if self.lock(slot).await? {
                out.extend(self.claim(slot, ClaimMode::All).await?);
            }
        }
        Ok(out)
    }

    /// Takes a partition's lock; true when newly taken (its pending
    /// messages are then reclaimed).
    async fn lock(&self, slot: Slot) -> Result<bool> {
        let key = self
            .inner
            .keys
            .lock(&self.topics[slot.0].name, &self.group, slot.1);
        let lease = self.lease_ms();
        let taken: i64 = self
            .inner
            .retrying("lock a partition", |mut c| {
                let mut inv = self.inner.scripts.lock.script.key(&key);
                inv.arg(&self.name).arg(lease);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        if taken > 0 {
            self.state.lock().owned.insert(slot);
        }
        Ok(taken == 2)
    }

    async fn unlock(&self, slot: Slot) -> Result<()> {
        let key = self
            .inner
            .keys
            .lock(&self.topics[slot.0].name, &self.group, slot.1);
        self.inner
            .retrying("unlock a partition", |mut c| {
                let mut inv = self.inner.scripts.unlock.script.key(&key);
                inv.arg(&self.name);
                async move { inv.invoke_async::<i64>(&mut c).await }
            })
            .await?;
        let mut state = self.state.lock();
        state.owned.remove(&slot);
        state
            .released
            .retain(|t| !(self.topic_index(&t.topic) == Some(slot.0) && t.partition == slot.1));
        Ok(())
    }

    /// Claims pending messages of a partition for this member.
    async fn claim(&self, slot: Slot, mode: ClaimMode<'_>) -> Result<Vec<RawDelivery>> {
        let stream = self.stream(slot);
        let mut args: Vec<String> = vec![self.group.clone(), self.name.clone()];
        match mode {
            ClaimMode::All => {
                args.extend(["auto".to_owned(), "0".to_owned(), CLAIM_BATCH.to_string()]);
            }
            ClaimMode::Ids(ids) => {
                args.push("ids".to_owned());
                args.extend(ids.iter().map(ToString::to_string));
            }
        }
        let reply: Value = self
            .inner
            .retrying("reclaim pending messages", |mut c| {
                let mut inv = self.inner.scripts.claim.script.key(stream);
                inv.arg(&args);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        let topic = &self.topics[slot.0].name;
        let origin = Origin {
            topic,
            partition: slot.1,
        };
        let now = SystemTime::now();
        let mut out = Vec::new();
        for item in into_array(reply).ok_or_else(|| unexpected("a claim"))? {
            // {entry id, fields, delivery count}
            let count = array_of(&item)
                .ok_or_else(|| unexpected("a claim"))?
                .get(2)
                .and_then(int_of)
                .unwrap_or(1)
                .clamp(1, i64::from(u32::MAX)) as u32;
            if let Some(d) = delivery(&origin, item, count, now)? {
                out.push(d);
            }
        }
        if !out.is_empty() {
            let mut state = self.state.lock();
            let held = state.in_flight.entry(slot).or_default();
            held.extend(out.iter().map(|d| EntryId::from_token(&d.token)));
        }
        Ok(out)
    }

    /// Claims again the records given back with `nack`.
    async fn reclaim_released(&self) -> Result<Vec<RawDelivery>> {
        let released = {
            let mut state = self.state.lock();
            let tokens = std::mem::take(&mut state.released);
            let mut by_slot: HashMap<Slot, Vec<EntryId>> = HashMap::new();
            for t in tokens {
                if let Some(i) = self.topic_index(&t.topic) {
                    let slot = (i, t.partition);
                    // A partition no longer held is reclaimed by its new owner.
                    if state.owned.contains(&slot) {
                        by_slot
                            .entry(slot)
                            .or_default()
                            .push(EntryId::from_token(&t));
                    }
                }
            }
            by_slot
        };
        let mut out = Vec::new();
        for (slot, ids) in released {
            out.extend(self.claim(slot, ClaimMode::Ids(&ids)).await?);
        }
        Ok(out)
    }

    /// Claims again the entries pending under this member that it does not
    /// know it holds (read by a request whose reply was lost).
    async fn reclaim_orphans(&self) -> Result<Vec<RawDelivery>> {
        let owned: Vec<Slot> = self.state.lock().owned.iter().copied().collect();
        let mut out = Vec::new();
        for slot in owned {
            let stream = self.stream(slot);
            let pending: Value = self
                .inner
                .retrying("look for lost deliveries", |mut c| {
                    let mut cmd = redis::cmd("XPENDING");
                    cmd.arg(stream)
                        .arg(&self.group)
                        .arg("-")
                        .arg("+")
                        .arg(CLAIM_BATCH)
                        .arg(&self.name);
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
            let orphans: Vec<EntryId> = {
                let state = self.state.lock();
                let held = state.in_flight.get(&slot);
                array_of(&pending)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| {
                        array_of(p)?
                            .first()
                            .and_then(bytes_of)
                            .and_then(EntryId::parse)
                    })
                    .filter(|id| !held.is_some_and(|h| h.contains(id)))
                    .collect()
            };
            if !orphans.is_empty() {
                tracing::debug!(
                    count = orphans.len(),
                    "claiming deliveries lost with a broken read"
                );
                out.extend(self.claim(slot, ClaimMode::Ids(&orphans)).await?);
            }
        }
        Ok(out)
    }

    /// One read: returns as soon as deliveries exist, blocking in Redis meanwhile.
    async fn read(self: Arc<Self>, max: usize) -> Result<Vec<RawDelivery>> {
        loop {
            self.check_open()?;
            let mut out = Vec::new();
            let refresh = std::mem::take(&mut self.state.lock().refresh);
            if refresh {
                out.extend(self.refresh().await?);
            }
            out.extend(self.reclaim_released().await?);
            let orphans = std::mem::take(&mut self.state.lock().orphans);
            if orphans {
                match self.reclaim_orphans().await {
                    Ok(found) => out.extend(found),
                    Err(e) => {
                        self.state.lock().orphans = true;
                        return Err(e);
                    }
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            let (slots, waiting) = {
                let state = self.state.lock();
                let mut slots: Vec<Slot> =
                    state.owned.intersection(&state.assigned).copied().collect();
                slots.sort_unstable();
                let waiting = state.assigned.iter().any(|s| !state.owned.contains(s));
                (slots, waiting)
            };
            if waiting {
                self.poke_holders().await;
            }
            // While a partition is being handed over, look again soon.
            let block = if waiting {
                Duration::from_millis(100)
            } else {
                self.inner.options.block
            };
            if slots.is_empty() {
                let pause = if waiting {
                    Duration::from_millis(50)
                } else {
                    self.inner.options.heartbeat()
                };
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(pause) => {}
                }
                self.state.lock().refresh = true;
                continue;
            }
            let got = self.read_new(&slots, max, block).await?;
            if got.is_empty() {
                self.state.lock().refresh = true;
                continue;
            }
            return Ok(got);
        }
    }

    /// `XREADGROUP ... BLOCK ... >` over the given partitions.
    async fn read_new(
        &self,
        slots: &[Slot],
        max: usize,
        block: Duration,
    ) -> Result<Vec<RawDelivery>> {
        self.connect_reader().await?;
        let streams: Vec<&str> = slots.iter().map(|s| self.stream(*s)).collect();
        // COUNT is per stream: split `max` so one read stays near it.
        let count = (max / slots.len()).max(1);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&streams);
        for _ in slots {
            cmd.arg(">");
        }
        let reply = {
            let mut reader = self.reader.lock().await;
            let Some(r) = reader.as_mut() else {
                return Err(Error::Closed("subscription"));
            };
            match cmd.query_async::<Value>(&mut r.conn).await {
                Ok(v) => v,
                Err(e) => {
                    // Reconnect on the next read, and look for entries
                    // whose delivery this failed read may have swallowed.
                    self.state.lock().orphans = true;
                    *reader = None;
                    self.reader_id.store(0, Ordering::Release);
                    return Err(map(e, "read"));
                }
            }
        };
        let now = SystemTime::now();
        let mut out = Vec::new();
        for (key, entries) in stream_replies(reply)? {
            let Some(i) = streams
                .iter()
                .position(|s| Some(s.as_bytes()) == bytes_of(&key))
            else {
                continue;
            };
            let slot = slots[i];
            let origin = Origin {
                topic: &self.topics[slot.0].name,
                partition: slot.1,
            };
            let before = out.len();
            for entry in entries {
                if let Some(d) = delivery(&origin, entry, 1, now)? {
                    out.push(d);
                }
            }
            if out.len() > before {
                let mut state = self.state.lock();
                let held = state.in_flight.entry(slot).or_default();
                held.extend(out[before..].iter().map(|d| EntryId::from_token(&d.token)));
            }
        }
        Ok(out)
    }

    /// Renews the lease and the locks; notices membership changes.
    async fn beat(&self) -> Result<()> {
        self.register().await?;
        let owned: Vec<Slot> = self.state.lock().owned.iter().copied().collect();
        let mut lost = Vec::new();
        for slot in owned {
            let key = self
                .inner
                .keys
                .lock(&self.topics[slot.0].name, &self.group, slot.1);
            let mut inv = self.inner.scripts.lock.script.key(&key);
            inv.arg(&self.name).arg(self.lease_ms());
            let held: i64 = inv
                .invoke_async(&mut self.inner.conn())
                .await
                .map_err(|e| map(e, "renew a partition lock"))?;
            if held == 0 {
                lost.push(slot);
            }
        }
        self.forget_dead().await;
        let live = self.live_members().await?;
        let changed = {
            let mut state = self.state.lock();
            for slot in &lost {
                tracing::warn!(group = %self.group, partition = slot.1, "lost a partition lock (lease expired); another member took it");
                state.owned.remove(slot);
            }
            state.members != live || !lost.is_empty()
        };
        if changed {
            self.state.lock().refresh = true;
            self.wake_self().await;
        }
        Ok(())
    }

    /// Removes members whose lease expired from the member sets.
    async fn forget_dead(&self) {
        let now = millis(SystemTime::now());
        let mut conn = self.inner.conn();
        for t in &self.topics {
            let members = self.inner.keys.members(&t.name, &self.group);
            let Ok(dead) = redis::cmd("ZRANGEBYSCORE")
                .arg(&members)
                .arg("-inf")
                .arg(format!("({now}"))
                .query_async::<Vec<String>>(&mut conn)
                .await
            else {
                continue;
            };
            if dead.is_empty() {
                continue;
            }
            let mut pipe = Pipeline::new();
            pipe.cmd("ZREM").arg(&members).arg(&dead).ignore();
            pipe.cmd("HDEL")
                .arg(self.inner.keys.readers(&t.name, &self.group))
                .arg(&dead)
                .ignore();
            let _ = pipe.query_async::<()>(&mut conn).await;
        }
    }

    /// Leaves the group: what this member holds goes back to the group
    /// (the next owner of each partition reclaims it).
    async fn leave(&self) {
        if self.left.swap(true, Ordering::AcqRel) {
            return;
        }
        let owned: Vec<Slot> = self.state.lock().owned.drain().collect();
        let mut pipe = Pipeline::new();
        for t in &self.topics {
            pipe.cmd("ZREM")
                .arg(self.inner.keys.members(&t.name, &self.group))
                .arg(&self.name)
                .ignore();
            pipe.cmd("HDEL")
                .arg(self.inner.keys.readers(&t.name, &self.group))
                .arg(&self.name)
                .ignore();
        }
        for slot in owned {
            let key = self
                .inner
                .keys
                .lock(&self.topics[slot.0].name, &self.group, slot.1);
            pipe.add_command(
                self.inner
                    .scripts
                    .unlock
                    .evalsha(&[&key], vec![self.name.clone().into_bytes()]),
            )
            .ignore();
        }
        let mut conn = self.inner.conn();
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) {
                self.inner.load_scripts().await;
                let _ = pipe.query_async::<()>(&mut conn).await;
            } else {
                tracing::warn!(error = %e, "leaving the group cleanly failed; the partitions move once the lease expires");
            }
        }
        // End our own blocked read, then let the others rebalance.
        let id = self.reader_id.swap(0, Ordering::AcqRel);
        if id > 0 {
            let _ = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(id)
                .query_async::<Value>(&mut conn)
                .await;
        }
        self.wake.notify_waiters();
        self.wake_peers().await;
    }
}

enum ClaimMode<'a> {
    /// Everything pending in the partition (on taking its lock).
    All,
    /// These records (given back with `nack`).
    Ids(&'a [EntryId]),
}

async fn heartbeat(member: std::sync::Weak<Member>) {
    loop {
        let pause = {
            let Some(member) = member.upgrade() else {
                return;
            };
            if member.left.load(Ordering::Acquire) {
                return;
            }
            if let Err(error) = member.beat().await {
                tracing::debug!(%error, "group heartbeat failed; retrying");
            }
            member.inner.options.heartbeat()
        };
        tokio::time::sleep(pause).await;
    }
}

/// Name/value pairs of a hash reply (flat array or map).
fn pairs(v: &Value) -> Vec<(&Value, &Value)> {
    match v {
        Value::Map(items) => items.iter().map(|(a, b)| (a, b)).collect(),
        other => array_of(other)
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| (&c[0], &c[1]))
            .collect(),
    }
}

/// The (stream key, entries) of an `XREADGROUP` reply; nil means none.
/// Taken by value, so the entries' payloads move on uncopied.
fn stream_replies(reply: Value) -> Result<Vec<(Value, Vec<Value>)>> {
    let bad = || unexpected("XREADGROUP");
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(streams) => streams,
        other => into_array(other)
            .ok_or_else(bad)?
            .into_iter()
            .map(|s| {
                let mut parts = into_array(s).filter(|p| p.len() >= 2).ok_or_else(bad)?;
                let entries = parts.swap_remove(1);
                Ok((parts.swap_remove(0), entries))
            })
            .collect::<Result<_>>()?,
    };
    streams
        .into_iter()
        .map(
            |(key, entries)| match (bytes_of(&key), into_array(entries)) {
                (Some(_), Some(entries)) => Ok((key, entries)),
                _ => Err(bad()),
            },
        )
        .collect()
}

#[async_trait]
impl DriverSubscription for RedisSubscription {
    async fn fetch(&self, max: usize) -> Result<Vec<RawDelivery>> {
        let max = max.max(1);
        let mut fetch = self.fetch.lock().await;
        loop {
            self.member.check_open()?;
            if !fetch.buffer.is_empty() {
                let n = max.min(fetch.buffer.len());
                return Ok(fetch.buffer.drain(..n).collect());
            }
            let reading = fetch
                .reading
                .get_or_insert_with(|| tokio::spawn(self.member.clone().read(max)));
            // Awaiting by reference: if this future is dropped, the read
            // stays in `fetch` and its result is picked up next time.
            let result = reading.await;
            fetch.reading = None;
            match result {
                Ok(Ok(batch)) => fetch.buffer.extend(batch),
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
        self.member.inner.check_open()?;
        if tokens.is_empty() {
            return Ok(());
        }
        let m = &self.member;
        // One XACK per stream (a batch spans a few), the entry ids written
        // straight into it.
        let mut acks: Vec<(&AckToken, redis::Cmd)> = Vec::new();
        for t in &tokens {
            let same_stream = |(first, _): &(&AckToken, _)| {
                first.partition == t.partition && first.topic == t.topic
            };
            let at = match acks.iter().position(same_stream) {
                Some(at) => at,
                None => {
                    let mut cmd = redis::cmd("XACK");
                    match m.topic_index(&t.topic) {
                        Some(i) if t.partition < m.topics[i].partitions => {
                            cmd.arg(&m.topics[i].streams[t.partition as usize])
                        }
                        _ => cmd.arg(m.inner.keys.stream(&t.topic, t.partition)),
                    };
                    cmd.arg(&m.group);
                    acks.push((t, cmd));
                    acks.len() - 1
                }
            };
            acks[at].1.arg(EntryId::from_token(t));
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
        let release = {
            let mut state = m.state.lock();
            let mut release = false;
            for t in &tokens {
                if let Some(i) = m.topic_index(&t.topic) {
                    release |= state.settled((i, t.partition), EntryId::from_token(t));
                }
            }
            if release {
                state.refresh = true;
            }
            release
        };
        if release {
            m.wake_self().await;
        }
        Ok(())
    }

    async fn nack(&self, token: AckToken, after: Duration) -> Result<()> {
        self.member.inner.check_open()?;
        let m = self.member.clone();
        if let Some(i) = m.topic_index(&token.topic) {
            m.state
                .lock()
                .settled((i, token.partition), EntryId::from_token(&token));
        }
        if after.is_zero() {
            m.state.lock().released.push(token);
            m.wake_self().await;
        } else {
            // Only reached if the core treats redelivery delay as native,
            // which this driver does not declare; kept correct regardless.
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                m.state.lock().released.push(token);
                m.wake_self().await;
            });
        }
        Ok(())
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
