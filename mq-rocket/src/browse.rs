//! Browsing a queue without consuming it, and moving a group's position.
//!
//! - **Browse** pulls straight from the queue's broker under a group of
//!   its own ([`BROWSER`]) that never commits: no group's position moves.
//! - **Reset** writes the group's offset on every queue (the oldest
//!   retained message, the end, or the first message stored at or after a
//!   time), refused while the group has members: a member would overwrite
//!   it with its own offsets, as Kafka refuses it for an active group. It
//!   deletes the group's hand-over records too.

use std::time::{Duration, UNIX_EPOCH};

use cheetah_string::CheetahString;
use mq_core::driver::{BrowseFrom, BrowseSpec, BrowsedMessage, ResetTo};
use mq_core::{Error, Result};
use rocketmq_model::common::boundary_type::BoundaryType;
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_model::common::sys_flag::pull_sys_flag::PullSysFlag;
use rocketmq_model::result::PullStatus;
use rocketmq_protocol::protocol::header::pull_message_request_header::PullMessageRequestHeader;

use crate::cluster::{Cluster, Route};
use crate::codec;
use crate::error::map;

/// The group browsing pulls under; it never commits an offset.
const BROWSER: &str = "mq_browser";
/// Most messages asked of the broker per pull.
const PULL: i32 = 32;

/// Up to `spec.max` messages of one partition of `topic`, oldest first.
pub(crate) async fn browse(
    cluster: &Cluster,
    topic: &str,
    spec: &BrowseSpec,
) -> Result<Vec<BrowsedMessage>> {
    let route = cluster
        .route(topic)
        .await?
        .ok_or_else(|| Error::invalid("topic", topic, "does not exist"))?;
    let queue = route
        .queues
        .get(spec.partition as usize)
        .ok_or_else(|| {
            Error::invalid(
                "partition",
                spec.partition.to_string(),
                format!("{topic} has {} partitions", route.queues.len()),
            )
        })?
        .clone();
    let (min, max) = (
        cluster.min_offset(&route, &queue).await?,
        cluster.max_offset(&route, &queue).await?,
    );
    let mut at = match spec.from {
        BrowseFrom::Offset(o) => (o.min(i64::MAX as u64) as i64).clamp(min, max),
        BrowseFrom::Last(n) => max.saturating_sub(n.min(i64::MAX as u64) as i64).max(min),
        BrowseFrom::Time(t) => offset_at(cluster, &route, &queue, t).await?.clamp(min, max),
        _ => {
            return Err(Error::unsupported(
                "this browse start",
                crate::error::BACKEND,
            ))
        }
    };
    let topic_arc: std::sync::Arc<str> = std::sync::Arc::from(topic);
    let mut out = Vec::new();
    let addr = route.master_of(&queue)?.clone();
    while out.len() < spec.max && at < max {
        let header = PullMessageRequestHeader {
            consumer_group: CheetahString::from_static_str(BROWSER),
            topic: queue.topic().clone(),
            queue_id: queue.queue_id(),
            queue_offset: at,
            max_msg_nums: PULL.min((spec.max - out.len()) as i32),
            sys_flag: PullSysFlag::build_sys_flag(false, false, true, false) as i32,
            subscription: Some(CheetahString::from_static_str("*")),
            expression_type: Some(CheetahString::from_static_str("TAG")),
            ..Default::default()
        };
        let pulled = cluster
            .handle()
            .pull_outcome_from_broker(&addr, header, cluster.timeout())
            .await
            .map_err(|e| {
                map(
                    e,
                    &format!("browsing partition {} of {topic}", spec.partition),
                )
            })?;
        let next = pulled.next_begin_offset() as i64;
        let found = pulled.pull_status() == PullStatus::Found;
        for ext in pulled.into_messages().unwrap_or_default() {
            if out.len() == spec.max {
                break;
            }
            let offset = ext.queue_offset.max(0) as u64;
            out.push(BrowsedMessage::new(
                spec.partition,
                Some(offset),
                codec::decode(&topic_arc, &ext),
            ));
        }
        if !found || next <= at {
            break;
        }
        at = next;
    }
    Ok(out)
}

/// The first offset of `queue` stored at or after `t`.
async fn offset_at(
    cluster: &Cluster,
    route: &Route,
    queue: &MessageQueue,
    t: std::time::SystemTime,
) -> Result<i64> {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64;
    cluster
        .handle()
        .search_offset(
            route.master_of(queue)?,
            queue,
            ms,
            BoundaryType::Lower,
            cluster.timeout(),
        )
        .await
        .map_err(|e| map(e, &format!("finding the offset of {queue} at {ms} ms")))
}

/// Moves `group` on every queue of `topic` to `to`; refused while it has members.
pub(crate) async fn reset(
    cluster: &Cluster,
    topic: &str,
    group: &str,
    to: ResetTo,
    members: usize,
) -> Result<()> {
    if members > 0 {
        return Err(Error::invalid(
            "group",
            group,
            format!("has {members} members online: stop them before resetting it"),
        ));
    }
    let route = cluster
        .route(topic)
        .await?
        .ok_or_else(|| Error::invalid("topic", topic, "does not exist"))?;
    for queue in &route.queues {
        let (min, max) = (
            cluster.min_offset(&route, queue).await?,
            cluster.max_offset(&route, queue).await?,
        );
        let at = match to {
            ResetTo::Earliest => min,
            ResetTo::Latest => max,
            ResetTo::Time(t) => offset_at(cluster, &route, queue, t).await?.clamp(min, max),
            _ => {
                return Err(Error::unsupported(
                    "this reset target",
                    crate::error::BACKEND,
                ))
            }
        };
        cluster.reposition(&route, queue, group, at).await?;
    }
    // What members handing queues on recorded was acked past the old
    // offsets; it says nothing about the new ones.
    crate::subscription::handover::forget_group(cluster, group, &route.queues).await
}
