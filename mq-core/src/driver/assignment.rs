//! Partition assignment among the members of a group, for drivers whose
//! broker leaves it to the clients (memory, native, Redis, RabbitMQ).
//!
//! Members are ordered by a stable id (time-ordered ids make it join
//! order); member `i` of `n` owns partition `p` when `p % n == i`. Every
//! member computes the same split from the same member list, so no
//! coordinator is needed. [`Assignment`] remembers what a member owns and
//! turns a new split into the partitions gained and lost, for
//! [`RebalanceQueue`]. [`Member`] puts the
//! two together for drivers whose members all live in one process.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Rebalance, RebalanceQueue, RevokeWait, TopicPartition};

/// The partitions (of `partitions`) that member `index` of `members` owns.
///
/// ```
/// use mq_core::driver::assignment::share;
/// assert_eq!(share(4, 2, 0).collect::<Vec<_>>(), [0, 2]);
/// assert_eq!(share(4, 2, 1).collect::<Vec<_>>(), [1, 3]);
/// assert_eq!(share(2, 3, 2).count(), 0);
/// ```
pub fn share(partitions: u32, members: usize, index: usize) -> impl Iterator<Item = u32> {
    let members = members.max(1) as u64;
    let index = index as u64;
    (0..partitions).filter(move |p| u64::from(*p) % members == index)
}

/// Whether member `index` of `members` owns `partition`.
pub fn owns(partition: u32, members: usize, index: usize) -> bool {
    u64::from(partition) % members.max(1) as u64 == index as u64
}

/// What one member owns, and how a new split changes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    owned: BTreeSet<TopicPartition>,
}

/// The partitions a new split gave and took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssignmentChange {
    /// Newly owned.
    pub gained: Vec<TopicPartition>,
    /// No longer owned.
    pub lost: Vec<TopicPartition>,
}

impl AssignmentChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.gained.is_empty() && self.lost.is_empty()
    }
}

impl Assignment {
    /// Owns nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `partition` is owned.
    pub fn contains(&self, partition: &TopicPartition) -> bool {
        self.owned.contains(partition)
    }

    /// The owned partitions, in order.
    pub fn iter(&self) -> impl Iterator<Item = &TopicPartition> {
        self.owned.iter()
    }

    /// Replaces what is owned with `now` and says what changed.
    ///
    /// ```
    /// use mq_core::driver::{assignment::Assignment, TopicPartition};
    /// let tp = |p| TopicPartition::new("t", p);
    /// let mut a = Assignment::new();
    /// assert_eq!(a.update([tp(0), tp(1)]).gained, [tp(0), tp(1)]);
    /// let change = a.update([tp(1), tp(2)]);
    /// assert_eq!((change.gained, change.lost), (vec![tp(2)], vec![tp(0)]));
    /// ```
    pub fn update(&mut self, now: impl IntoIterator<Item = TopicPartition>) -> AssignmentChange {
        let now: BTreeSet<TopicPartition> = now.into_iter().collect();
        let change = AssignmentChange {
            gained: now.difference(&self.owned).cloned().collect(),
            lost: self.owned.difference(&now).cloned().collect(),
        };
        self.owned = now;
        change
    }

    /// Replaces what is owned of `topic` with its partitions `now`, leaving
    /// other topics as they are, and says what changed.
    pub fn update_topic(
        &mut self,
        topic: &Arc<str>,
        now: impl IntoIterator<Item = u32>,
    ) -> AssignmentChange {
        let mut all: BTreeSet<TopicPartition> = self
            .owned
            .iter()
            .filter(|tp| tp.topic != *topic)
            .cloned()
            .collect();
        all.extend(
            now.into_iter()
                .map(|p| TopicPartition::new(topic.clone(), p)),
        );
        self.update(all)
    }

    /// Drops everything owned and returns it (the member is leaving).
    pub fn clear(&mut self) -> Vec<TopicPartition> {
        std::mem::take(&mut self.owned).into_iter().collect()
    }
}

/// One member of a group whose members all live in this process (the
/// memory broker, the native engine): its rebalance events and the
/// partitions it may read.
///
/// The driver calls [`apply`](Self::apply) with the member's share whenever
/// the group's membership changes. Gained partitions are reported at once;
/// lost ones are revoked, and the driver, once the returned [`RevokeWait`]
/// resolves, gives back what the member still holds of them, calls
/// [`revoked`](Self::revoked) and applies the share again (a partition
/// regained meanwhile is reported only then).
#[derive(Debug)]
pub struct Member {
    id: u64,
    queue: RebalanceQueue,
    state: Mutex<MemberState>,
}

#[derive(Debug, Default)]
struct MemberState {
    /// Reported assigned and not revoked since.
    readable: Assignment,
    /// Revoked, and not yet given back.
    revoking: HashSet<TopicPartition>,
}

impl Member {
    /// A member with id `id`, owning nothing yet.
    pub fn new(id: u64) -> Arc<Self> {
        Arc::new(Member {
            id,
            queue: RebalanceQueue::new(),
            state: Mutex::default(),
        })
    }

    /// The member's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the member may read `partition` now.
    pub fn may_read(&self, partition: &TopicPartition) -> bool {
        self.state.lock().readable.contains(partition)
    }

    /// Partitions of `topic` the member may read now.
    pub fn readable(&self, topic: &str) -> Vec<u32> {
        let state = self.state.lock();
        state
            .readable
            .iter()
            .filter(|tp| &*tp.topic == topic)
            .map(|tp| tp.partition)
            .collect()
    }

    /// Applies the member's share of `topic`. Returns the partitions it
    /// lost and the wait for their revocation, if it lost any.
    pub fn apply(
        &self,
        topic: &Arc<str>,
        share: impl IntoIterator<Item = u32>,
    ) -> Option<(Vec<TopicPartition>, RevokeWait)> {
        let mut state = self.state.lock();
        let MemberState { readable, revoking } = &mut *state;
        let target = share
            .into_iter()
            .filter(|p| !revoking.contains(&TopicPartition::new(topic.clone(), *p)));
        let change = readable.update_topic(topic, target);
        self.queue.assigned(change.gained);
        if change.lost.is_empty() {
            return None;
        }
        revoking.extend(change.lost.iter().cloned());
        let wait = self.queue.revoke(change.lost.clone());
        Some((change.lost, wait))
    }

    /// The member let go of `partitions` and their records were given back.
    pub fn revoked(&self, partitions: &[TopicPartition]) {
        let mut state = self.state.lock();
        for tp in partitions {
            state.revoking.remove(tp);
        }
    }

    /// The member is leaving: it may read nothing more.
    pub fn leave(&self) {
        let mut state = self.state.lock();
        state.readable.clear();
        state.revoking.clear();
    }

    /// The next rebalance event, for [`DriverSubscription::rebalance`](crate::driver::DriverSubscription::rebalance).
    pub async fn next_rebalance(&self) -> Option<Rebalance> {
        self.queue.next().await
    }
}

/// Longest a member's revoked partitions wait for its runtime to let go
/// of them before the driver hands them on anyway.
pub const REVOKE_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Partitions a member lost in a reshare, and the wait for its runtime.
pub type Lost = (Arc<Member>, Vec<TopicPartition>, RevokeWait);

/// Gives every member of a group (in join order) its share of `topic`'s
/// `partitions`, and returns what members lost. Call it under the lock
/// that guards the member list, so two reshares never interleave; then
/// pass the result to [`hand_on`] outside the lock.
pub fn reshare(topic: &Arc<str>, partitions: u32, members: &[Arc<Member>]) -> Vec<Lost> {
    members
        .iter()
        .enumerate()
        .filter_map(|(index, member)| {
            member
                .apply(topic, share(partitions, members.len(), index))
                .map(|(lost, wait)| (member.clone(), lost, wait))
        })
        .collect()
}

/// Runs `give_back(member, partitions)` for each loss once its revocation
/// completes (at most [`REVOKE_LIMIT`]), in the background; at once when
/// there is no async runtime, as then nobody can be handling them.
/// `give_back` should give back what the member holds of them, call
/// [`Member::revoked`] and reshare again.
pub fn hand_on<F>(lost: Vec<Lost>, give_back: F)
where
    F: Fn(&Arc<Member>, &[TopicPartition]) + Clone + Send + 'static,
{
    let runtime = tokio::runtime::Handle::try_current().ok();
    for (member, partitions, wait) in lost {
        let Some(runtime) = &runtime else {
            drop(wait);
            give_back(&member, &partitions);
            continue;
        };
        let give_back = give_back.clone();
        runtime.spawn(async move {
            wait.at_most(REVOKE_LIMIT).await;
            give_back(&member, &partitions);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_exactly_one_owner() {
        for partitions in 0..20u32 {
            for members in 1..8usize {
                let mut owners = vec![0; partitions as usize];
                for index in 0..members {
                    for p in share(partitions, members, index) {
                        assert!(owns(p, members, index));
                        owners[p as usize] += 1;
                    }
                }
                assert!(owners.iter().all(|&n| n == 1), "{partitions} {members}");
            }
        }
    }

    #[tokio::test]
    async fn a_member_reports_gains_and_defers_regains_until_given_back() {
        let topic: Arc<str> = Arc::from("t");
        let tp = |p| TopicPartition::new("t", p);
        let m = Member::new(1);
        assert!(m.apply(&topic, [0, 1]).is_none());
        assert!(
            matches!(m.next_rebalance().await, Some(Rebalance::Assigned(p)) if p == [tp(0), tp(1)])
        );
        let (lost, wait) = m.apply(&topic, [0]).expect("partition 1 is lost");
        assert_eq!(lost, [tp(1)]);
        assert!(!m.may_read(&tp(1)));
        // Regained before it was given back: not readable yet.
        assert!(m.apply(&topic, [0, 1]).is_none());
        assert!(!m.may_read(&tp(1)));
        let Some(Rebalance::Revoked(revocation)) = m.next_rebalance().await else {
            panic!("expected a revocation");
        };
        revocation.complete();
        wait.await;
        m.revoked(&lost);
        assert!(m.apply(&topic, [0, 1]).is_none());
        assert!(m.may_read(&tp(1)));
        assert!(matches!(m.next_rebalance().await, Some(Rebalance::Assigned(p)) if p == [tp(1)]));
    }
}
