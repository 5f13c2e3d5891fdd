//! Reading: reclaiming pending records, blocking reads of new entries, and
//! the buffer `fetch` takes from. Only readable partitions are read, and a
//! read step holds the reader throughout, so a partition being handed on
//! is never read once its lock is given back.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use mq_core::driver::RawDelivery;
use mq_core::{Error, Result};
use redis::aio::MultiplexedConnection;
use redis::{Pipeline, Value};

use super::{Member, Slot, CURSOR_START};
use crate::codec::{array_of, bytes_of, delivery, int_of, into_array, text_of, EntryId, Origin};
use crate::error::{map, unexpected};

/// Most pending messages reclaimed from one partition in one step.
const CLAIM_BATCH: usize = 1024;

enum Claim<'a> {
    /// What is pending in the partition, onwards from a cursor (on taking
    /// its lock), at most this many.
    From(&'a str, usize),
    /// These records (given back with `nack`, or lost with a read).
    Ids(&'a [EntryId]),
}

impl Member {
    /// Opens a blocking-read connection and publishes its client id, so
    /// that other members can wake it.
    pub(super) async fn open_reader(&self) -> Result<MultiplexedConnection> {
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
        Ok(conn)
    }

    /// Ends this member's blocked read, if there is one.
    pub(super) async fn unblock_reader(&self) {
        let id = self.reader_id.load(Ordering::Acquire);
        if id > 0 {
            let _ = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(id)
                .query_async::<Value>(&mut self.inner.conn())
                .await;
        }
    }

    /// Wakes this member's read, so it looks at its partitions again.
    pub(super) async fn wake_reader(&self) {
        self.wake.notify_one();
        self.unblock_reader().await;
    }

    /// Reads until the buffer holds deliveries: pending records of newly
    /// taken partitions and records given back first, then new entries,
    /// blocking in Redis meanwhile.
    pub(super) async fn read(self: Arc<Self>, max: usize) -> Result<()> {
        loop {
            self.check_open()?;
            let (more, idle) = {
                let mut reader = self.reader.lock().await;
                let more = self.reclaim(max).await?;
                let slots = self.new_entry_slots();
                if !slots.is_empty() && !more && self.state.lock().buffer.is_empty() {
                    self.read_new(&mut reader, &slots, max).await?;
                }
                (more, slots.is_empty())
            };
            if !self.state.lock().buffer.is_empty() {
                return Ok(());
            }
            if idle && !more {
                // Nothing to read: wait for partitions or records given back.
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.inner.options.heartbeat()) => {}
                }
            }
        }
    }

    /// Readable partitions whose pending records are all reclaimed, in order.
    fn new_entry_slots(&self) -> Vec<Slot> {
        let state = self.state.lock();
        let mut slots: Vec<Slot> = state
            .readable
            .iter()
            .filter(|s| !state.unclaimed.contains_key(s))
            .copied()
            .collect();
        slots.sort_unstable();
        slots
    }

    /// `XREADGROUP ... BLOCK ... >` over the given partitions, on the
    /// member's own connection (opened if needed).
    async fn read_new(
        &self,
        reader: &mut Option<MultiplexedConnection>,
        slots: &[Slot],
        max: usize,
    ) -> Result<()> {
        if reader.is_none() {
            *reader = Some(self.open_reader().await?);
        }
        let Some(conn) = reader.as_mut() else {
            return Err(Error::Closed("subscription"));
        };
        let (slots, count) = self.read_share(slots, max);
        let streams: Vec<&str> = slots.iter().map(|s| self.stream(*s)).collect();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(self.inner.options.block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&streams);
        for _ in &slots {
            cmd.arg(">");
        }
        let reply = match cmd.query_async::<Value>(conn).await {
            Ok(v) => v,
            Err(e) => {
                // Reconnect on the next read, and look for entries whose
                // delivery this failed read may have swallowed.
                self.state.lock().orphans = true;
                *reader = None;
                self.reader_id.store(0, Ordering::Release);
                return Err(map(e, "read"));
            }
        };
        let replies = stream_replies(reply)?;
        if replies.is_empty() {
            // Timed out, or woken: a member may have joined or left.
            self.changed.notify_one();
            return Ok(());
        }
        let now = SystemTime::now();
        for (key, entries) in replies {
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
            let mut got = Vec::with_capacity(entries.len());
            for entry in entries {
                if let Some(d) = delivery(&origin, entry, 1, now)? {
                    got.push(d);
                }
            }
            self.state.lock().accept(slot, got);
        }
        Ok(())
    }

    /// The partitions one read of at most `max` entries asks, and its
    /// `COUNT`. `COUNT` is per stream and every entry read is pending for
    /// this member until acked, so the read asks `max / n` of each of `n`
    /// partitions, or, when `max` is below `n`, one of each of `max`
    /// partitions, starting one further each time so that none starves:
    /// what the member holds never exceeds the prefetch bound.
    fn read_share(&self, slots: &[Slot], max: usize) -> (Vec<Slot>, usize) {
        let n = slots.len();
        if max >= n {
            return (slots.to_vec(), max / n);
        }
        let start = self.rotation.fetch_add(1, Ordering::Relaxed) % n;
        let picked = (0..max).map(|i| slots[(start + i) % n]).collect();
        (picked, 1)
    }

    /// Reclaims what the member must deliver before new entries, taking
    /// over at most `max` records pending elsewhere; returns whether some
    /// newly taken partition still has pending records to claim.
    async fn reclaim(&self, max: usize) -> Result<bool> {
        let unclaimed: Vec<(Slot, String)> = {
            let state = self.state.lock();
            state
                .unclaimed
                .iter()
                .map(|(s, c)| (*s, c.clone()))
                .collect()
        };
        let mut budget = max.min(CLAIM_BATCH);
        for (slot, cursor) in unclaimed {
            if budget == 0 {
                break;
            }
            let (next, got) = self.claim(slot, Claim::From(&cursor, budget)).await?;
            budget = budget.saturating_sub(got.len());
            let mut state = self.state.lock();
            if state.readable.contains(&slot) {
                if next == CURSOR_START {
                    state.unclaimed.remove(&slot);
                } else {
                    state.unclaimed.insert(slot, next);
                }
            }
            state.accept(slot, got);
        }
        self.reclaim_released().await?;
        if std::mem::take(&mut self.state.lock().orphans) {
            if let Err(e) = self.reclaim_orphans().await {
                self.state.lock().orphans = true;
                return Err(e);
            }
        }
        Ok(!self.state.lock().unclaimed.is_empty())
    }

    /// Claims again the records given back with `nack`.
    async fn reclaim_released(&self) -> Result<()> {
        let released: Vec<(Slot, Vec<EntryId>)> = {
            let mut state = self.state.lock();
            let mut by_slot: HashMap<Slot, Vec<EntryId>> = HashMap::new();
            for (slot, id) in std::mem::take(&mut state.released) {
                // A partition revoked since: its next owner reclaims it.
                if state.readable.contains(&slot) {
                    by_slot.entry(slot).or_default().push(id);
                }
            }
            by_slot.into_iter().collect()
        };
        for (done, (slot, ids)) in released.iter().enumerate() {
            match self.claim(*slot, Claim::Ids(ids)).await {
                Ok((_, got)) => self.state.lock().accept(*slot, got),
                Err(e) => {
                    let mut state = self.state.lock();
                    for (slot, ids) in &released[done..] {
                        state.released.extend(ids.iter().map(|id| (*slot, *id)));
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Claims again the entries pending under this member that it does not
    /// know it holds (read by a request whose reply was lost).
    async fn reclaim_orphans(&self) -> Result<()> {
        let slots: Vec<Slot> = {
            let state = self.state.lock();
            // Partitions still being reclaimed get these entries anyway.
            state
                .readable
                .iter()
                .filter(|s| !state.unclaimed.contains_key(s))
                .copied()
                .collect()
        };
        for slot in slots {
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
                let (_, got) = self.claim(slot, Claim::Ids(&orphans)).await?;
                self.state.lock().accept(slot, got);
            }
        }
        Ok(())
    }

    /// Claims pending records of a partition for this member; returns the
    /// cursor to go on from (`0-0` when done) and the deliveries.
    async fn claim(&self, slot: Slot, claim: Claim<'_>) -> Result<(String, Vec<RawDelivery>)> {
        let stream = self.stream(slot);
        let mut args: Vec<String> = vec![self.group.clone(), self.name.clone()];
        match claim {
            Claim::From(cursor, most) => {
                args.extend([
                    "auto".to_owned(),
                    "0".to_owned(),
                    most.to_string(),
                    cursor.to_owned(),
                ]);
            }
            Claim::Ids(ids) => {
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
        let bad = || unexpected("a claim");
        // {cursor, {{entry id, fields, delivery count}, ...}}
        let mut parts = into_array(reply).filter(|p| p.len() == 2).ok_or_else(bad)?;
        let items = into_array(parts.swap_remove(1)).ok_or_else(bad)?;
        let cursor = text_of(&parts[0]).ok_or_else(bad)?;
        let origin = Origin {
            topic: &self.topics[slot.0].name,
            partition: slot.1,
        };
        let now = SystemTime::now();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let count = array_of(&item)
                .ok_or_else(bad)?
                .get(2)
                .and_then(int_of)
                .unwrap_or(1)
                .clamp(1, i64::from(u32::MAX)) as u32;
            if let Some(d) = delivery(&origin, item, count, now)? {
                out.push(d);
            }
        }
        Ok((cursor, out))
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
