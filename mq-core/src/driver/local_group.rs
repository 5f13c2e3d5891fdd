//! Consumer groups whose members all live in this process (the memory
//! broker, the native engine): who is in each group, each member's share,
//! and the rebalance that follows a join or a leave.
//!
//! A driver keeps a [`GroupMembers`] per topic and implements
//! [`LocalTopic`] (how to give back what a member holds); [`join`] and
//! [`leave`] do the rest: members share the partitions as
//! [`share`] says, gains are reported at once, and a lost partition is
//! handed on only when the member's runtime has let go of it (or after
//! [`REVOKE_LIMIT`]). While a member still holds records of a partition
//! that moved, the driver keeps its next owner from reading it (a cursor's
//! `held_by_other`), so per-key order holds across the hand-over.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::assignment::{share, Assignment};
use super::{Rebalance, RebalanceQueue, RevokeWait, TopicPartition, REVOKE_LIMIT};

/// The members of each group of one topic, in join order.
#[derive(Debug, Default)]
pub struct GroupMembers {
    groups: Mutex<HashMap<Arc<str>, Vec<Arc<Member>>>>,
}

impl GroupMembers {
    /// Whether `group` has a member now (admin operations that move a
    /// group's position refuse an active group).
    pub fn has_members(&self, group: &str) -> bool {
        self.groups.lock().get(group).is_some_and(|m| !m.is_empty())
    }
}

/// A topic whose groups' members all live in this process.
pub trait LocalTopic: Send + Sync + Sized + 'static {
    /// The topic's name, as assignments name it.
    fn name(&self) -> &Arc<str>;
    /// How many partitions it has.
    fn partition_count(&self) -> u32;
    /// Its groups' members.
    fn members(&self) -> &GroupMembers;
    /// Gives back to `group` what member `member` holds of `partitions`
    /// (of every partition when `None`), for redelivery to the group.
    fn give_back(&self, group: &str, member: u64, partitions: Option<&[u32]>);
    /// Wakes the topic's fetchers: an assignment changed.
    fn wake(&self);
}

/// Adds `member` to `group` on `topic` and rebalances the group.
pub fn join<T: LocalTopic>(topic: &Arc<T>, group: &Arc<str>, member: &Arc<Member>) {
    topic
        .members()
        .groups
        .lock()
        .entry(group.clone())
        .or_default()
        .push(member.clone());
    rebalance(topic, group);
}

/// Removes `member` from `group` on `topic`: what it held goes back to the
/// group and the others share its partitions.
pub fn leave<T: LocalTopic>(topic: &Arc<T>, group: &Arc<str>, member: &Member) {
    if let Some(members) = topic.members().groups.lock().get_mut(group) {
        members.retain(|m| m.id() != member.id());
    }
    member.leave();
    topic.give_back(group, member.id(), None);
    rebalance(topic, group);
}

/// Gives every member of `group` its share of `topic`; what a member lost
/// is given back once its runtime has let go of it.
fn rebalance<T: LocalTopic>(topic: &Arc<T>, group: &Arc<str>) {
    let lost: Vec<(Arc<Member>, Vec<TopicPartition>, RevokeWait)> = {
        // Applied under the lock, so of two rebalances at once the one with
        // the older member list cannot land last.
        let groups = topic.members().groups.lock();
        let members = groups.get(group).map_or(&[][..], Vec::as_slice);
        members
            .iter()
            .enumerate()
            .filter_map(|(index, member)| {
                let mine = share(topic.partition_count(), members.len(), index);
                member
                    .apply(topic.name(), mine)
                    .map(|(lost, wait)| (member.clone(), lost, wait))
            })
            .collect()
    };
    // Without a runtime nobody can be handling the partitions.
    let runtime = tokio::runtime::Handle::try_current().ok();
    for (member, partitions, wait) in lost {
        let Some(runtime) = &runtime else {
            drop(wait);
            hand_on(topic, group, &member, &partitions);
            continue;
        };
        // Weak: a revocation nobody completes must not keep a deleted topic
        // (or a closed engine) alive for the whole limit.
        let (weak, group) = (Arc::downgrade(topic), group.clone());
        runtime.spawn(async move {
            wait.at_most(REVOKE_LIMIT).await;
            if let Some(topic) = Weak::upgrade(&weak) {
                hand_on(&topic, &group, &member, &partitions);
            }
        });
    }
    topic.wake();
}

/// Gives back what `member` holds of its revoked `partitions`, so their
/// next owner may read them, and rebalances again: a partition the member
/// regained meanwhile is only reported now.
fn hand_on<T: LocalTopic>(
    topic: &Arc<T>,
    group: &Arc<str>,
    member: &Member,
    partitions: &[TopicPartition],
) {
    let indexes: Vec<u32> = partitions.iter().map(|tp| tp.partition).collect();
    topic.give_back(group, member.id(), Some(&indexes));
    member.revoked(partitions);
    rebalance(topic, group);
}

/// One member of a group whose members all live in this process (the
/// memory broker, the native engine): its rebalance events and the
/// partitions it may read.
///
/// [`join`] and [`leave`] apply each member's share whenever the group's
/// membership changes. Gained partitions are reported at once; lost ones
/// are revoked, and once the revocation completes the topic gives back what
/// the member still holds of them and the share is applied again (a
/// partition regained meanwhile is reported only then).
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
    fn apply(
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
    fn revoked(&self, partitions: &[TopicPartition]) {
        let mut state = self.state.lock();
        for tp in partitions {
            state.revoking.remove(tp);
        }
    }

    /// The member is leaving: it may read nothing more.
    fn leave(&self) {
        let mut state = self.state.lock();
        state.readable.clear();
        state.revoking.clear();
    }

    /// The next rebalance event, for [`DriverSubscription::rebalance`](crate::driver::DriverSubscription::rebalance).
    pub async fn next_rebalance(&self) -> Option<Rebalance> {
        self.queue.next().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
