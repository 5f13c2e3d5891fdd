//! The runtime's in-flight bound, held at the broker.
//!
//! RabbitMQ's prefetch is per consumer (quorum queues have no channel-wide
//! one), and a member consumes each of its queues on a consumer of its
//! own, so the bound is split over them and what the broker hands the
//! member unacked adds up to the bound at most.
//!
//! The subscription's first topic is the one the application consumes;
//! the others are the core's retry topics (one queue each), which carry
//! only messages that failed, so each gets half an even share, taken out
//! of the bound. With a bound below twice the number of queues that half
//! share would be 0 (which AMQP reads as "unlimited"): a retry queue then
//! gets 1 on top of the bound, so the topic's own queues still have all of
//! it. Every queue gets at least 1, so a bound below the number of the
//! topic's queues is exceeded by the difference.

/// The prefetch of each queue of a subscription, given its topics' queue
/// counts (the consumed topic first, then the retry topics), in the same
/// order.
pub(super) fn split_prefetch(bound: usize, queues: &[u32]) -> Vec<Vec<u16>> {
    let Some((&first, rest)) = queues.split_first() else {
        return Vec::new();
    };
    let retry_queues: usize = rest.iter().map(|&n| n as usize).sum();
    let total = first as usize + retry_queues;
    let retry_share = bound / (2 * total).max(1);
    let own = bound - retry_share * retry_queues;
    let mut parts = vec![even(own, first as usize)];
    parts.extend(rest.iter().map(|&n| vec![clamp(retry_share); n as usize]));
    parts
}

/// `bound` over `queues` consumers: the parts add up to the bound, the
/// first ones taking the remainder.
fn even(bound: usize, queues: usize) -> Vec<u16> {
    let queues = queues.max(1);
    (0..queues)
        .map(|i| clamp(bound / queues + usize::from(i < bound % queues)))
        .collect()
}

/// At least 1 (0 would mean "unlimited" to the broker), at most what AMQP can say.
fn clamp(part: usize) -> u16 {
    part.clamp(1, usize::from(u16::MAX)) as u16
}

#[cfg(test)]
mod tests {
    use super::split_prefetch;

    fn sum(parts: &[Vec<u16>]) -> usize {
        parts.iter().flatten().map(|p| usize::from(*p)).sum()
    }

    #[test]
    fn the_parts_add_up_to_the_bound() {
        assert_eq!(split_prefetch(10, &[4, 1]), [vec![3, 2, 2, 2], vec![1]]);
        assert_eq!(split_prefetch(40, &[4, 1]), [vec![9; 4], vec![4]]);
        assert_eq!(sum(&split_prefetch(512, &[4, 1])), 512);
        assert_eq!(sum(&split_prefetch(1000, &[16, 1])), 1000);
        // The forwarder of a delay level: one queue, the whole bound.
        assert_eq!(split_prefetch(1024, &[1]), [vec![1024]]);
        assert_eq!(split_prefetch(1_000_000, &[1]), [vec![u16::MAX]]);
    }

    #[test]
    fn small_bounds_keep_every_queue_consuming() {
        // The topic's queues have all of it; the retry queue 1 on top.
        assert_eq!(split_prefetch(5, &[4, 1]), [vec![2, 1, 1, 1], vec![1]]);
        // Below one per queue, each still gets one.
        assert_eq!(split_prefetch(3, &[4, 1]), [vec![1; 4], vec![1]]);
        assert!(split_prefetch(3, &[]).is_empty());
    }
}
