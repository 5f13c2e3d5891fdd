//! The allocation strategy of a member: RocketMQ's averaging strategy,
//! watched. The push consumer calls it on every rebalance, before it drops
//! or adds process queues, so the bridge learns of a revocation while the
//! client still holds the queue: it withdraws what the runtime has not
//! fetched, so the listener calls of the queue return and the client can
//! take the queue's consume lock and hand it on without waiting for the
//! next rebalance round.

use std::sync::Arc;

use cheetah_string::CheetahString;
use rocketmq_model::allocation::{AllocateMessageQueueAveragely, AllocateMessageQueueStrategy};
use rocketmq_model::common::message::message_queue::MessageQueue;

use super::bridge::Bridge;

/// Averaging allocation that reports each result to the bridge.
pub(crate) struct Watched {
    pub(crate) bridge: Arc<Bridge>,
}

impl AllocateMessageQueueStrategy for Watched {
    fn allocate(
        &self,
        consumer_group: &CheetahString,
        current_cid: &CheetahString,
        mq_all: &[MessageQueue],
        cid_all: &[CheetahString],
    ) -> rocketmq_error::Result<Vec<MessageQueue>> {
        let mine =
            AllocateMessageQueueAveragely.allocate(consumer_group, current_cid, mq_all, cid_all)?;
        if let Some(topic) = mq_all
            .first()
            .and_then(|q| self.bridge.topic(q.topic().as_str()))
        {
            self.bridge.reassign(&topic, mq_all, &mine);
        }
        Ok(mine)
    }

    fn get_name(&self) -> &'static str {
        "AVG"
    }
}
