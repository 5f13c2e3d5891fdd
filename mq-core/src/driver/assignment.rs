//! Partition assignment among the members of a group, for drivers whose
//! broker leaves it to the clients (memory, native, Redis, RabbitMQ).
//!
//! Members are ordered by a stable id (time-ordered ids make it join
//! order); member `i` of `n` owns partition `p` when `p % n == i`. Every
//! member computes the same split from the same member list, so no
//! coordinator is needed. [`Assignment`] remembers what a member owns and
//! turns a new split into the partitions gained and lost, for
//! [`RebalanceQueue`](super::RebalanceQueue). [`local_group`](super::local_group)
//! puts the two together for drivers whose members all live in one process.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::TopicPartition;

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
}
