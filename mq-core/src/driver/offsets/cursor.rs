//! A consumer group's position in one partition: the committed offset
//! (lowest unacked), acks above it, records in flight and records given back.
//!
//! Bookkeeping is per run of offsets, not per record: a fetch hands out a
//! contiguous run, acks set bits in a bitmap, and only records given back
//! (nacked, released, not yet visible) are tracked one by one. That keeps
//! a fetch and its acks to a few operations per run plus one bit per record.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use super::DoneSet;

/// Identifies one group member: its [`Member::id`](crate::driver::local_group::Member::id).
pub type MemberId = u64;

/// Offsets `start..end` handed to a member together. Offsets in it are in
/// flight unless acked; records given back are split out of it.
#[derive(Clone, Copy, Debug)]
struct Run {
    end: u64,
    /// The member holding it.
    owner: MemberId,
    /// Deliveries so far, this one included.
    count: u32,
    /// When the group first received its records.
    first_seen: SystemTime,
    /// Offsets in it neither acked nor given back; the run is dropped at 0.
    open: u64,
}

/// A record given back to the group, deliverable again at `due`.
#[derive(Clone, Copy, Debug)]
pub struct Returned {
    /// When it may be delivered again.
    pub due: Instant,
    /// Deliveries so far.
    pub count: u32,
    /// When the group first received it.
    pub first_seen: SystemTime,
}

/// Records handed out by [`Cursor::take`]: `(offset, delivery count, first seen)`.
#[derive(Debug, Default)]
pub struct Taken {
    /// Records given back earlier and due again, in any order.
    pub again: Vec<(u64, u32, SystemTime)>,
    /// Records never delivered in this process, in offset order.
    pub fresh: Vec<(u64, u32, SystemTime)>,
}

impl Taken {
    /// How many records were taken.
    pub fn len(&self) -> usize {
        self.again.len() + self.fresh.len()
    }

    /// Whether nothing was taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A group's position in one partition.
#[derive(Debug)]
pub struct Cursor {
    /// The next offset never delivered to the group (in this process).
    next: u64,
    /// Offsets below this that are not acked were delivered before the
    /// last restart: their next delivery counts as a second one.
    delivered_before: u64,
    /// Records held by members, as runs by first offset (disjoint).
    runs: BTreeMap<u64, Run>,
    /// Records given back, by offset (never inside a run).
    returned: BTreeMap<u64, Returned>,
    /// Acked offsets; its lowest unsettled number is the committed offset.
    acked: DoneSet,
}

impl Cursor {
    /// A cursor at `offset` with nothing delivered.
    pub fn at(offset: u64) -> Self {
        Cursor {
            next: offset,
            delivered_before: offset,
            runs: BTreeMap::new(),
            returned: BTreeMap::new(),
            acked: DoneSet::from_words(offset, Vec::new()),
        }
    }

    /// A cursor restored from a checkpoint: delivery restarts at the
    /// committed offset, skipping what was acked.
    pub fn restored(committed: u64, delivered: u64, acked: impl IntoIterator<Item = u64>) -> Self {
        let mut c = Cursor::at(committed);
        c.delivered_before = delivered.max(committed);
        for offset in acked {
            c.acked.insert(offset);
        }
        c
    }

    /// Every offset below is acked; this is what is checkpointed.
    pub fn committed(&self) -> u64 {
        self.acked.committed()
    }

    /// How far delivery went, for the checkpoint.
    pub fn delivered(&self) -> u64 {
        self.next.max(self.delivered_before)
    }

    /// Acked offsets above the committed one, for the checkpoint.
    pub fn acked_above(&self) -> Vec<u64> {
        self.acked.iter_from(self.committed()).collect()
    }

    /// Hands `member` up to `room` records: given-back ones due by `now`,
    /// then fresh ones below `visible`.
    pub fn take(
        &mut self,
        member: MemberId,
        now: Instant,
        visible: u64,
        room: usize,
        out: &mut Taken,
    ) {
        let due: Vec<u64> = self
            .returned
            .iter()
            .filter(|(_, r)| r.due <= now)
            .map(|(o, _)| *o)
            .take(room)
            .collect();
        for offset in due {
            if let Some(r) = self.returned.remove(&offset) {
                let count = r.count.saturating_add(1);
                self.add_run(offset, offset + 1, member, count, r.first_seen, 1);
                out.again.push((offset, count, r.first_seen));
            }
        }
        let wall = SystemTime::now();
        let fresh = visible.saturating_sub(self.next);
        out.fresh.reserve(
            room.saturating_sub(out.len())
                .min(fresh.try_into().unwrap_or(usize::MAX)),
        );
        while out.len() < room && self.next < visible {
            // One run per delivery count: records delivered before a
            // restart count twice.
            let count = if self.next < self.delivered_before {
                2
            } else {
                1
            };
            let limit = if count == 2 {
                self.delivered_before.min(visible)
            } else {
                visible
            };
            let start = self.next;
            let mut open = 0;
            while out.len() < room && self.next < limit {
                let offset = self.next;
                self.next += 1;
                if !self.acked.contains(offset) {
                    out.fresh.push((offset, count, wall));
                    open += 1;
                }
            }
            self.add_run(start, self.next, member, count, wall, open);
        }
    }

    fn add_run(
        &mut self,
        start: u64,
        end: u64,
        owner: MemberId,
        count: u32,
        first_seen: SystemTime,
        open: u64,
    ) {
        if open > 0 {
            let run = Run {
                end,
                owner,
                count,
                first_seen,
                open,
            };
            self.runs.insert(start, run);
        }
    }

    /// The run holding `offset` in flight (covering it, and not acked).
    // Inline, as `DoneSet::contains`: `ack_all` is instantiated by drivers.
    #[inline]
    fn run_of(&self, offset: u64) -> Option<(u64, Run)> {
        let (&start, run) = self.runs.range(..=offset).next_back()?;
        (offset < run.end && !self.acked.contains(offset)).then_some((start, *run))
    }

    /// Acks `offset` if it is in flight; the committed offset moves over
    /// every acked prefix.
    pub fn ack(&mut self, offset: u64) {
        self.ack_all([offset]);
    }

    /// Acks every offset of `offsets` that is in flight, as [`ack`](Self::ack)
    /// one at a time would. Offsets from one fetch come in runs: each run
    /// is looked up once, and its open count updated once.
    pub fn ack_all(&mut self, offsets: impl IntoIterator<Item = u64>) {
        // The run being acked: its start, its end, and offsets acked in it so far.
        let mut current: Option<(u64, u64, u64)> = None;
        for offset in offsets {
            if !current.is_some_and(|(start, end, _)| (start..end).contains(&offset)) {
                if let Some((start, _, acked)) = current.take() {
                    self.settle_many(start, acked);
                }
                current = self.run_of(offset).map(|(start, run)| (start, run.end, 0));
            }
            if let Some((_, _, acked)) = current.as_mut() {
                if !self.acked.contains(offset) {
                    self.acked.insert(offset);
                    *acked += 1;
                }
            }
        }
        if let Some((start, _, acked)) = current {
            self.settle_many(start, acked);
        }
    }

    /// `n` offsets of the run at `start` are settled.
    #[inline]
    fn settle_many(&mut self, start: u64, n: u64) {
        if let Some(run) = self.runs.get_mut(&start) {
            if run.open <= n {
                self.runs.remove(&start);
            } else {
                run.open -= n;
            }
        }
    }

    /// One offset of the run at `start` is settled.
    fn settle(&mut self, start: u64, run: Run) {
        if run.open <= 1 {
            self.runs.remove(&start);
        } else if let Some(r) = self.runs.get_mut(&start) {
            r.open -= 1;
        }
    }

    /// Records `offset` as done without a delivery (a record that no longer exists).
    pub fn mark_acked(&mut self, offset: u64) {
        if let Some((start, run)) = self.run_of(offset) {
            self.settle(start, run);
        }
        self.returned.remove(&offset);
        self.acked.insert(offset);
    }

    /// Gives an in-flight record back for redelivery at `due`.
    pub fn give_back(&mut self, offset: u64, due: Instant) -> bool {
        self.take_back(offset, due, 0)
    }

    /// Takes back an in-flight record not deliverable yet (a promoted delay
    /// before its due time): it is offered again at `due`, and the take that
    /// found it does not count as a delivery.
    pub fn hold(&mut self, offset: u64, due: Instant) {
        self.take_back(offset, due, 1);
    }

    /// Moves `offset` from its run to `returned`, splitting the run.
    fn take_back(&mut self, offset: u64, due: Instant, uncount: u32) -> bool {
        let Some((start, run)) = self.run_of(offset) else {
            return false;
        };
        self.runs.remove(&start);
        let left_open = (offset - start) - self.acked.count(start, offset);
        let right_open = run.open - 1 - left_open;
        let (owner, count, seen) = (run.owner, run.count, run.first_seen);
        self.add_run(start, offset, owner, count, seen, left_open);
        self.add_run(offset + 1, run.end, owner, count, seen, right_open);
        self.returned.insert(
            offset,
            Returned {
                due,
                count: run.count.saturating_sub(uncount),
                first_seen: run.first_seen,
            },
        );
        true
    }

    /// Gives back everything `member` holds; true if anything moved.
    pub fn release_member(&mut self, member: MemberId, now: Instant) -> bool {
        let held: Vec<(u64, Run)> = self
            .runs
            .iter()
            .filter(|(_, r)| r.owner == member)
            .map(|(s, r)| (*s, *r))
            .collect();
        for (start, run) in &held {
            self.runs.remove(start);
            for offset in *start..run.end {
                if !self.acked.contains(offset) {
                    let back = Returned {
                        due: now,
                        count: run.count,
                        first_seen: run.first_seen,
                    };
                    self.returned.insert(offset, back);
                }
            }
        }
        !held.is_empty()
    }

    /// Whether a member other than `member` still holds records here.
    pub fn held_by_other(&self, member: MemberId) -> bool {
        self.runs.values().any(|r| r.owner != member)
    }

    /// The earliest time a returned record becomes deliverable.
    pub fn next_due(&self) -> Option<Instant> {
        self.returned.values().map(|r| r.due).min()
    }

    /// Moves past offsets that retention deleted.
    pub fn skip_to(&mut self, start: u64) {
        if self.committed() >= start {
            return;
        }
        self.acked.insert_below(start);
        self.next = self.next.max(start);
        self.returned = self.returned.split_off(&start);
        // Runs keep only what is still in flight at or above `start`.
        let runs = std::mem::take(&mut self.runs);
        for (from, run) in runs {
            let from = from.max(start);
            if from < run.end {
                let open = (run.end - from) - self.acked.count(from, run.end);
                self.add_run(from, run.end, run.owner, run.count, run.first_seen, open);
            }
        }
    }

    /// Messages below `end` the group has not acked.
    pub fn lag(&self, end: u64) -> u64 {
        let committed = self.committed();
        end.saturating_sub(committed)
            .saturating_sub(self.acked.count(committed, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_is_lowest_unacked() {
        let mut c = Cursor::at(0);
        let mut taken = Taken::default();
        c.take(1, Instant::now(), 4, 10, &mut taken);
        assert_eq!(taken.fresh.len(), 4);
        c.ack(1);
        c.ack(2);
        assert_eq!(c.committed(), 0);
        assert_eq!(c.lag(4), 2);
        c.ack(0);
        assert_eq!(c.committed(), 3);
        assert!(c.held_by_other(2));
        assert!(c.release_member(1, Instant::now()));
        assert!(!c.held_by_other(2));
        assert!(c.returned.contains_key(&3));
        c.skip_to(10);
        assert_eq!((c.committed(), c.next), (10, 10));
        assert!(c.returned.is_empty());
    }

    #[test]
    fn give_back_splits_a_run_and_redelivers_once() {
        let now = Instant::now();
        let mut c = Cursor::at(0);
        let mut taken = Taken::default();
        c.take(1, now, 6, 10, &mut taken);
        c.ack(0);
        assert!(c.give_back(2, now));
        assert!(!c.give_back(2, now), "no longer in flight");
        c.ack(2);
        assert_eq!(c.committed(), 1, "an ack of a given-back record is ignored");
        c.hold(4, now);
        let mut again = Taken::default();
        c.take(1, now, 6, 10, &mut again);
        let mut offsets: Vec<_> = again.again.iter().map(|(o, n, _)| (*o, *n)).collect();
        offsets.sort_unstable();
        assert_eq!(offsets, vec![(2, 2), (4, 1)], "a hold is not a delivery");
        for o in 0..6 {
            c.ack(o);
        }
        assert_eq!(c.committed(), 6);
        assert!(c.runs.is_empty());
    }

    #[test]
    fn restored_cursor_skips_acked_and_counts_redeliveries() {
        let mut c = Cursor::restored(2, 5, [3]);
        let mut taken = Taken::default();
        c.take(1, Instant::now(), 8, 10, &mut taken);
        let got: Vec<_> = taken.fresh.iter().map(|(o, n, _)| (*o, *n)).collect();
        assert_eq!(got, vec![(2, 2), (4, 2), (5, 1), (6, 1), (7, 1)]);
        assert_eq!(c.acked_above(), vec![3]);
        for (o, _) in got {
            c.ack(o);
        }
        assert_eq!((c.committed(), c.lag(8)), (8, 0));
    }

    /// One record's state in a per-record model of the cursor.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum State {
        New,
        Held(MemberId, u32),
        Back(u32),
        Acked,
    }

    #[derive(Clone, Debug)]
    enum Op {
        Take(MemberId, usize),
        Ack(u64),
        AckAll(Vec<u64>),
        GiveBack(u64),
        Hold(u64),
        MarkAcked(u64),
        Release(MemberId),
    }

    const N: u64 = 48;

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (1..3u64, 1..20usize).prop_map(|(m, r)| Op::Take(m, r)),
            (0..N).prop_map(Op::Ack),
            // Runs of offsets, as a fetch's acks come, with strays and repeats.
            proptest::collection::vec((0..N, 1..6u64), 1..6).prop_map(|runs| {
                Op::AckAll(
                    runs.into_iter()
                        .flat_map(|(from, len)| from..(from + len).min(N))
                        .collect(),
                )
            }),
            (0..N).prop_map(Op::GiveBack),
            (0..N).prop_map(Op::Hold),
            (0..N).prop_map(Op::MarkAcked),
            (1..3u64).prop_map(Op::Release),
        ]
    }

    proptest::proptest! {
        /// The run-based cursor behaves exactly like per-record bookkeeping.
        #[test]
        fn matches_a_per_record_model(ops in proptest::collection::vec(op(), 1..200)) {
            let now = Instant::now();
            let mut c = Cursor::at(0);
            let mut model = vec![State::New; N as usize];
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Take(m, room) => {
                        let mut taken = Taken::default();
                        c.take(m, now, N, room, &mut taken);
                        let mut want_again = Vec::new();
                        for (o, s) in model.iter_mut().enumerate() {
                            if let State::Back(n) = *s {
                                if want_again.len() < room {
                                    *s = State::Held(m, n + 1);
                                    want_again.push((o as u64, n + 1));
                                }
                            }
                        }
                        let mut want_fresh = Vec::new();
                        while want_again.len() + want_fresh.len() < room && next < N {
                            if model[next as usize] == State::New {
                                model[next as usize] = State::Held(m, 1);
                                want_fresh.push((next, 1));
                            }
                            next += 1;
                        }
                        let got = |v: &[(u64, u32, SystemTime)]| {
                            v.iter().map(|(o, n, _)| (*o, *n)).collect::<Vec<_>>()
                        };
                        proptest::prop_assert_eq!(got(&taken.again), want_again);
                        proptest::prop_assert_eq!(got(&taken.fresh), want_fresh);
                    }
                    Op::Ack(o) => {
                        c.ack(o);
                        if let State::Held(..) = model[o as usize] {
                            model[o as usize] = State::Acked;
                        }
                    }
                    Op::AckAll(offsets) => {
                        c.ack_all(offsets.iter().copied());
                        for o in offsets {
                            if let State::Held(..) = model[o as usize] {
                                model[o as usize] = State::Acked;
                            }
                        }
                    }
                    Op::GiveBack(o) => {
                        let moved = c.give_back(o, now);
                        let held = matches!(model[o as usize], State::Held(..));
                        proptest::prop_assert_eq!(moved, held);
                        if let State::Held(_, n) = model[o as usize] {
                            model[o as usize] = State::Back(n);
                        }
                    }
                    Op::Hold(o) => {
                        c.hold(o, now);
                        if let State::Held(_, n) = model[o as usize] {
                            model[o as usize] = State::Back(n - 1);
                        }
                    }
                    Op::MarkAcked(o) => {
                        c.mark_acked(o);
                        model[o as usize] = State::Acked;
                    }
                    Op::Release(m) => {
                        let mut any = false;
                        for s in model.iter_mut() {
                            if let State::Held(owner, n) = *s {
                                if owner == m {
                                    *s = State::Back(n);
                                    any = true;
                                }
                            }
                        }
                        proptest::prop_assert_eq!(c.release_member(m, now), any);
                    }
                }
                let committed = model.iter().position(|s| *s != State::Acked).unwrap_or(N as usize);
                proptest::prop_assert_eq!(c.committed(), committed as u64);
                let unacked = model.iter().filter(|s| **s != State::Acked).count() as u64;
                proptest::prop_assert_eq!(c.lag(N), unacked);
                for m in 1..3 {
                    let other = model.iter().any(|s| matches!(s, State::Held(o, _) if *o != m));
                    proptest::prop_assert_eq!(c.held_by_other(m), other);
                }
            }
        }
    }
}
