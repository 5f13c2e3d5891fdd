//! The half store's in-memory state: the unresolved prepared messages, and
//! when each is next offered to a checker of its group.
//!
//! It changes with appends, under the writer lock (a prepared record gets
//! its sequence number, a resolution removes the entry), so the checkpoint
//! cut taken under that lock is consistent with the log; offering checks
//! changes only the schedule, which is not durable (after a restart every
//! unresolved message is due again `check_after` after it was prepared).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use mq_core::MessageId;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// When checks are offered, in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// From preparation to the first check.
    pub after_us: u64,
    /// From one check (or an unknown answer) to the next.
    pub interval_us: u64,
}

/// An unresolved prepared message.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Its producer group.
    pub group: Arc<str>,
    /// Its message id.
    pub id: MessageId,
    /// Log position of the batch holding its record.
    pub position: u64,
    /// When it was prepared, µs since the epoch.
    pub prepared_us: u64,
    check_at_us: u64,
    checks: u32,
    /// The check stream it is offered to, until its interval passes.
    leased_to: Option<u64>,
    /// Its record is written: it may be offered. A message is offered only
    /// once its prepare is acknowledged.
    scheduled: bool,
}

/// What a sequence number names.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// An unresolved prepared message.
    Unresolved(Prepared),
    /// Resolved by a record at `position` that is not written yet.
    Resolving {
        /// The resolution's batch.
        position: u64,
    },
    /// Resolved before.
    Resolved,
    /// No half message was ever given this number.
    Unknown,
}

/// A check handed to a stream.
#[derive(Clone, Debug)]
pub struct Offer {
    /// The message's sequence number.
    pub seq: u64,
    /// Log position of its record.
    pub position: u64,
    /// How many times it was offered before.
    pub prior_checks: u32,
}

/// What a stream should do next.
#[derive(Clone, Debug)]
pub enum Claim {
    /// Check this one.
    Ready(Offer),
    /// Nothing is due before this time (µs since the epoch).
    Wait(u64),
    /// The group has nothing unresolved.
    Idle,
}

/// The half store's durable state, in the checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HalfCheckpoint {
    /// The next sequence number.
    pub next_seq: u64,
    /// Unresolved prepared messages as of the checkpoint.
    pub unresolved: Vec<SavedHalf>,
}

/// One unresolved prepared message in the checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedHalf {
    /// Sequence number.
    pub seq: u64,
    /// Log position of its batch.
    pub position: u64,
    /// Producer group.
    pub group: String,
    /// Message id.
    pub id: String,
    /// When it was prepared, µs since the epoch.
    pub prepared_us: u64,
}

/// The unresolved prepared messages and their check schedule.
#[derive(Debug)]
pub struct HalfStore {
    timing: Timing,
    next_seq: u64,
    /// By sequence number, which is log order: the first pins the log.
    entries: BTreeMap<u64, Prepared>,
    /// Per group, scheduled checks as `(check_at_us, seq)`.
    queues: HashMap<Arc<str>, BTreeSet<(u64, u64)>>,
    /// Resolutions not yet written `(position, seq, entry)`, to undo if
    /// their write fails.
    unwritten_done: VecDeque<(u64, u64, Prepared)>,
    next_stream: u64,
    /// Woken when a check may have become due earlier than streams wait.
    pub notify: Arc<Notify>,
}

impl HalfStore {
    /// An empty store.
    pub fn new(timing: Timing) -> Self {
        HalfStore {
            timing,
            next_seq: 0,
            entries: BTreeMap::new(),
            queues: HashMap::new(),
            unwritten_done: VecDeque::new(),
            next_stream: 1,
            notify: Arc::new(Notify::new()),
        }
    }

    /// The store as of `saved`; a bad entry is named in the error.
    pub fn restore(saved: &HalfCheckpoint, timing: Timing) -> Result<Self, String> {
        let mut store = HalfStore::new(timing);
        store.next_seq = saved.next_seq;
        for s in &saved.unresolved {
            let id = MessageId::parse(&s.id)
                .map_err(|e| format!("half message {} has a bad id {:?}: {e}", s.seq, s.id))?;
            store.insert(
                s.seq,
                Arc::from(s.group.as_str()),
                id,
                s.position,
                s.prepared_us,
            );
        }
        Ok(store)
    }

    /// Adds a durable prepared message (restored or replayed), due for a
    /// check `check_after` after it was prepared.
    fn insert(&mut self, seq: u64, group: Arc<str>, id: MessageId, position: u64, at_us: u64) {
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        self.entries.insert(
            seq,
            Prepared {
                group,
                id,
                position,
                prepared_us: at_us,
                check_at_us: at_us.saturating_add(self.timing.after_us),
                checks: 0,
                leased_to: None,
                scheduled: true,
            },
        );
        self.queue(seq);
    }

    /// Recovery found the half record `seq` past the checkpoint.
    pub fn replay_half(&mut self, seq: u64, group: &str, id: MessageId, position: u64, at_us: u64) {
        if seq >= self.next_seq {
            self.insert(seq, Arc::from(group), id, position, at_us);
        }
    }

    /// Recovery found the resolution of `seq` past the checkpoint.
    pub fn replay_done(&mut self, seq: u64) {
        self.remove(seq);
    }

    /// Numbers a prepared message being appended at `position`; it is
    /// offered for checks once [`schedule`](Self::schedule)d.
    pub fn prepare(&mut self, position: u64, group: Arc<str>, id: MessageId, now_us: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            seq,
            Prepared {
                group,
                id,
                position,
                prepared_us: now_us,
                check_at_us: now_us.saturating_add(self.timing.after_us),
                checks: 0,
                leased_to: None,
                scheduled: false,
            },
        );
        seq
    }

    /// The record of `seq` is written: checks may be offered.
    pub fn schedule(&mut self, seq: u64) {
        if let Some(e) = self.entries.get_mut(&seq) {
            if !e.scheduled {
                e.scheduled = true;
                self.queue(seq);
                self.notify.notify_waiters();
            }
        }
    }

    /// What `seq` names.
    pub fn lookup(&self, seq: u64) -> Lookup {
        if let Some(e) = self.entries.get(&seq) {
            return Lookup::Unresolved(e.clone());
        }
        if let Some((position, ..)) = self.unwritten_done.iter().find(|(_, s, _)| *s == seq) {
            return Lookup::Resolving {
                position: *position,
            };
        }
        if seq < self.next_seq {
            Lookup::Resolved
        } else {
            Lookup::Unknown
        }
    }

    /// `seq` is resolved by the batch at `position`.
    pub fn resolve(&mut self, seq: u64, position: u64) {
        if let Some(e) = self.remove(seq) {
            self.unwritten_done.push_back((position, seq, e));
        }
    }

    /// Forgets undo state of resolutions written before `written`.
    pub fn written_to(&mut self, written: u64) {
        while self
            .unwritten_done
            .front()
            .is_some_and(|(p, ..)| *p < written)
        {
            self.unwritten_done.pop_front();
        }
    }

    /// Undoes everything appended at or after `position` (a failed write):
    /// resolutions there never happened, preparations there never did.
    pub fn rollback(&mut self, position: u64) {
        while let Some((p, ..)) = self.unwritten_done.back() {
            if *p < position {
                break;
            }
            if let Some((_, seq, entry)) = self.unwritten_done.pop_back() {
                let scheduled = entry.scheduled;
                self.entries.insert(seq, entry);
                if scheduled {
                    self.queue(seq);
                }
            }
        }
        let gone: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.position >= position)
            .map(|(seq, _)| *seq)
            .collect();
        if let Some(first) = gone.first() {
            // Sequence numbers follow log order: the failed ones were last.
            self.next_seq = *first;
        }
        for seq in gone {
            self.remove(seq);
        }
    }

    /// The checker did not know: offer `seq` again an interval from now.
    pub fn unknown(&mut self, seq: u64, now_us: u64) {
        self.reschedule(seq, now_us.saturating_add(self.timing.interval_us), None);
    }

    /// A number for a new check stream.
    pub fn new_stream(&mut self) -> u64 {
        self.next_stream += 1;
        self.next_stream
    }

    /// The next check due for `group` at `now_us`, leased to `stream` for
    /// an interval: no other stream gets it meanwhile.
    pub fn claim(&mut self, group: &str, stream: u64, now_us: u64) -> Claim {
        let Some(&(at, seq)) = self.queues.get(group).and_then(|q| q.first()) else {
            return Claim::Idle;
        };
        if at > now_us {
            return Claim::Wait(at);
        }
        let next = now_us.saturating_add(self.timing.interval_us);
        self.reschedule(seq, next, Some(stream));
        match self.entries.get_mut(&seq) {
            Some(e) => {
                let prior_checks = e.checks;
                e.checks = e.checks.saturating_add(1);
                Claim::Ready(Offer {
                    seq,
                    position: e.position,
                    prior_checks,
                })
            }
            None => {
                // Entries leave their queue with them; should one ever be
                // left behind, it is dropped rather than offered.
                self.unqueue_key(group, (at, seq));
                Claim::Wait(now_us)
            }
        }
    }

    /// Stream `stream` closed: what it was offered is due again now, for
    /// the group's other streams.
    pub fn release(&mut self, stream: u64, now_us: u64) {
        let held: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.leased_to == Some(stream))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in &held {
            self.reschedule(*seq, now_us, None);
        }
        if !held.is_empty() {
            self.notify.notify_waiters();
        }
    }

    /// The log position of the oldest prepared message that may still be
    /// needed (unresolved, or resolved by a record not written yet).
    pub fn pinned(&self) -> Option<u64> {
        let first = self.entries.values().next().map(|e| e.position);
        let resolving = self.unwritten_done.iter().map(|(_, _, e)| e.position).min();
        first.into_iter().chain(resolving).min()
    }

    /// Unresolved prepared messages.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is unresolved.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The durable state to checkpoint (taken under the writer lock).
    pub fn checkpoint(&self) -> HalfCheckpoint {
        HalfCheckpoint {
            next_seq: self.next_seq,
            unresolved: self
                .entries
                .iter()
                .map(|(seq, e)| SavedHalf {
                    seq: *seq,
                    position: e.position,
                    group: e.group.to_string(),
                    id: e.id.to_string(),
                    prepared_us: e.prepared_us,
                })
                .collect(),
        }
    }

    fn reschedule(&mut self, seq: u64, at_us: u64, lease: Option<u64>) {
        let Some(e) = self.entries.get_mut(&seq) else {
            return;
        };
        let (group, old, scheduled) = (e.group.clone(), (e.check_at_us, seq), e.scheduled);
        e.check_at_us = at_us;
        e.leased_to = lease;
        if scheduled {
            self.unqueue_key(&group, old);
            self.queue(seq);
        }
    }

    fn queue(&mut self, seq: u64) {
        if let Some(e) = self.entries.get(&seq) {
            self.queues
                .entry(e.group.clone())
                .or_default()
                .insert((e.check_at_us, seq));
        }
    }

    fn unqueue_key(&mut self, group: &str, key: (u64, u64)) {
        if let Some(q) = self.queues.get_mut(group) {
            q.remove(&key);
            if q.is_empty() {
                self.queues.remove(group);
            }
        }
    }

    fn remove(&mut self, seq: u64) -> Option<Prepared> {
        let e = self.entries.remove(&seq)?;
        self.unqueue_key(&e.group.clone(), (e.check_at_us, seq));
        Some(e)
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
