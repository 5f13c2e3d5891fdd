//! Membership: the member's lease, the split of partitions among the live
//! members, the partition locks, and the rebalance events they make.
//!
//! One background task per member renews the lease and the locks and
//! follows the group, whether or not anyone fetches; revocations hand their
//! partitions on from tasks of their own, once the runtime has let go.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use mq_core::driver::assignment::share;
use mq_core::driver::clock::epoch_millis;
use mq_core::Result;
use redis::{Pipeline, Value};
use tokio::sync::Notify;

use super::{Member, Slot, CURSOR_START, REVOKE_LIMIT};
use crate::codec::{array_of, int_of, text_of};
use crate::error::{map, unexpected};

/// How often a member waiting for partitions another member still holds
/// looks at the group and tries their locks.
const HANDOVER_POLL: Duration = Duration::from_millis(100);

/// How often a member waiting for a handover wakes the others.
const POKE_INTERVAL: Duration = Duration::from_millis(200);

/// Keeps the member in its group until it leaves or is dropped: renews its
/// lease and locks every heartbeat, and follows the group every heartbeat,
/// when woken, and often while a handover is pending.
pub(super) async fn run(member: Weak<Member>, changed: Arc<Notify>) {
    let mut renewed: Option<Instant> = None;
    loop {
        let pause = {
            let Some(member) = member.upgrade() else {
                return;
            };
            if member.left.load(Ordering::Acquire) {
                return;
            }
            let heartbeat = member.inner.options.heartbeat();
            if renewed.is_none_or(|at| at.elapsed() >= heartbeat) {
                match member.renew().await {
                    Ok(()) => renewed = Some(Instant::now()),
                    Err(error) => {
                        tracing::debug!(%error, "renewing the group lease failed; retrying")
                    }
                }
            }
            match member.follow_group().await {
                Ok(true) => {
                    member.poke_holders().await;
                    HANDOVER_POLL
                }
                Ok(false) => heartbeat,
                Err(error) => {
                    tracing::debug!(%error, "looking at the group failed; retrying");
                    heartbeat
                }
            }
        };
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

impl Member {
    fn lease_ms(&self) -> u64 {
        self.inner.options.claim_idle.as_millis() as u64
    }

    fn lock_key(&self, slot: Slot) -> String {
        self.inner
            .keys
            .lock(&self.topics[slot.0].name, &self.group, slot.1)
    }

    /// Adds (or renews) this member in every topic's member set.
    pub(super) async fn register(&self) -> Result<()> {
        let until = epoch_millis(SystemTime::now()) + self.lease_ms();
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

    /// Wakes the other members' blocked reads after this one joined or left.
    pub(super) async fn wake_peers(&self) {
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
        let now = epoch_millis(SystemTime::now());
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

    /// Splits the partitions among the live members: revokes those that
    /// moved away, takes the locks of those that came to this member.
    /// Returns whether some of its share is still held by another member.
    async fn follow_group(self: &Arc<Self>) -> Result<bool> {
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
        let mut target = HashSet::new();
        for (t, names) in live.iter().enumerate() {
            let index = names.iter().position(|m| *m == self.name).unwrap_or(0);
            let partitions = share(self.topics[t].partitions, names.len(), index);
            target.extend(partitions.map(|p| (t, p)));
        }
        let (moved, wanted) = {
            let state = self.state.lock();
            let moved: Vec<Slot> = state.readable.difference(&target).copied().collect();
            // A partition regained while still being handed on is taken once given back.
            let wanted: Vec<Slot> = target
                .iter()
                .filter(|s| !state.holds(**s))
                .copied()
                .collect();
            (moved, wanted)
        };
        if !moved.is_empty() {
            self.revoke(moved).await;
        }
        let mut gained = Vec::new();
        let mut failed = None;
        for &slot in &wanted {
            match self.lock(slot).await {
                Ok(true) => gained.push(slot),
                Ok(false) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if !gained.is_empty() {
            {
                let mut state = self.state.lock();
                for &slot in &gained {
                    state.readable.insert(slot);
                    state.unclaimed.insert(slot, CURSOR_START.to_owned());
                }
            }
            self.rebalances.assigned(self.partitions(&gained));
            self.wake_reader().await;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(gained.len() < wanted.len()),
        }
    }

    /// Stops reading `slots`, reports their revocation, and hands them on
    /// once the runtime has let go of them.
    async fn revoke(self: &Arc<Self>, slots: Vec<Slot>) {
        {
            let mut state = self.state.lock();
            state.stop_reading(&slots);
            state.revoking.extend(slots.iter().copied());
        }
        // A blocked read may include the partitions: it would take records
        // only for their next owner to reclaim, one delivery later.
        self.unblock_reader().await;
        let wait = self.rebalances.revoke(self.partitions(&slots));
        let member = Arc::downgrade(self);
        tokio::spawn(async move {
            if !wait.at_most(REVOKE_LIMIT).await {
                tracing::warn!(limit = ?REVOKE_LIMIT, "a revocation was not completed in time; handing the partitions on anyway");
            }
            if let Some(member) = member.upgrade() {
                member.give_back(slots).await;
            }
        });
    }

    /// Releases the locks of revoked partitions, with whatever is still
    /// pending there: their next owner reclaims it.
    async fn give_back(&self, slots: Vec<Slot>) {
        let reader = self.quiet_reader().await;
        if self.left.load(Ordering::Acquire) {
            return;
        }
        let released: Vec<Slot> = {
            let mut state = self.state.lock();
            let released: Vec<Slot> = slots
                .into_iter()
                .filter(|s| state.revoking.remove(s))
                .collect();
            for &slot in &released {
                state.forget(slot);
            }
            released
        };
        // No later read touches them: the state says they are not ours.
        drop(reader);
        for &slot in &released {
            if let Err(error) = self.unlock(slot).await {
                tracing::warn!(%error, partition = slot.1, "releasing a partition lock failed; the partition moves once its lease expires");
            }
        }
        self.changed.notify_one();
        self.wake_peers().await;
    }

    /// The reader, once no read step is in progress (waking a blocked one).
    async fn quiet_reader(
        &self,
    ) -> tokio::sync::MutexGuard<'_, Option<redis::aio::MultiplexedConnection>> {
        loop {
            if let Ok(reader) = self.reader.try_lock() {
                return reader;
            }
            self.unblock_reader().await;
            if let Ok(reader) = tokio::time::timeout(POKE_INTERVAL, self.reader.lock()).await {
                return reader;
            }
        }
    }

    /// Takes a partition's lock; true when this member holds it now.
    async fn lock(&self, slot: Slot) -> Result<bool> {
        let key = self.lock_key(slot);
        let lease = self.lease_ms();
        let taken: i64 = self
            .inner
            .retrying("lock a partition", |mut c| {
                let mut inv = self.inner.scripts.lock.script.key(&key);
                inv.arg(&self.name).arg(lease);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        Ok(taken > 0)
    }

    async fn unlock(&self, slot: Slot) -> Result<()> {
        let key = self.lock_key(slot);
        self.inner
            .retrying("unlock a partition", |mut c| {
                let mut inv = self.inner.scripts.unlock.script.key(&key);
                inv.arg(&self.name);
                async move { inv.invoke_async::<i64>(&mut c).await }
            })
            .await?;
        Ok(())
    }

    /// Renews the lease and the locks, and forgets members whose lease expired.
    async fn renew(&self) -> Result<()> {
        self.register().await?;
        let held: Vec<Slot> = {
            let state = self.state.lock();
            state.readable.union(&state.revoking).copied().collect()
        };
        let mut lost = Vec::new();
        for slot in held {
            let mut inv = self.inner.scripts.lock.script.key(self.lock_key(slot));
            inv.arg(&self.name).arg(self.lease_ms());
            let held: i64 = inv
                .invoke_async(&mut self.inner.conn())
                .await
                .map_err(|e| map(e, "renew a partition lock"))?;
            if held == 0 {
                lost.push(slot);
            }
        }
        if !lost.is_empty() {
            let revoked: Vec<Slot> = {
                let mut state = self.state.lock();
                let revoked = lost
                    .iter()
                    .filter(|s| state.readable.contains(s))
                    .copied()
                    .collect();
                // A revoking one stays so until its pending hand-over, which
                // then finds nothing to release.
                for &slot in &lost {
                    state.forget(slot);
                }
                revoked
            };
            for slot in &lost {
                tracing::warn!(group = %self.group, partition = slot.1, "lost a partition lock (lease expired); another member took it");
            }
            if !revoked.is_empty() {
                // Already another member's: there is nothing to hand on.
                drop(self.rebalances.revoke(self.partitions(&revoked)));
            }
            self.changed.notify_one();
        }
        self.forget_dead().await;
        Ok(())
    }

    /// Removes members whose lease expired from the member sets.
    async fn forget_dead(&self) {
        let now = epoch_millis(SystemTime::now());
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
    pub(super) async fn leave(&self) {
        if self.left.swap(true, Ordering::AcqRel) {
            return;
        }
        let held: Vec<Slot> = {
            let mut state = self.state.lock();
            let held: Vec<Slot> = state.readable.union(&state.revoking).copied().collect();
            *state = Default::default();
            held
        };
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
        for slot in held {
            let key = self.lock_key(slot);
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
        self.unblock_reader().await;
        self.reader_id.store(0, Ordering::Release);
        self.wake.notify_waiters();
        self.wake_peers().await;
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
