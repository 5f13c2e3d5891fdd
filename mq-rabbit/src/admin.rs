//! The admin operations AMQP 0-9-1 allows without the management plugin.
//!
//! - **Resetting a group to the end** purges its shard queues
//!   (`queue.purge`): what the group had not consumed is skipped, and it
//!   goes on with what is published next. It is refused while any shard
//!   queue has a consumer (`queue.declare` passive reports them, waiting
//!   ones of single active consumer included); a member starting during
//!   the purge is not stopped. A group that does not exist is created,
//!   which puts it at the end, as memory and Redis create a group they
//!   reset.
//! - **Resetting to the earliest message or a time** is
//!   [`Error::Unsupported`]: a queue deletes what its group acked, so there
//!   is nothing to go back to.
//! - **Listing topics and groups** is unsupported. AMQP has no way to
//!   enumerate exchanges or queues, and what the broker keeps durably per
//!   topic (its exchange, its shard record queue, its groups' shard
//!   queues) can only be looked up by a name one already knows. The
//!   topics and groups this client declared are known, but only to this
//!   process: listing them would miss every other client's.
//! - **Browsing** is unsupported. Reading a quorum queue without consuming
//!   means `basic.get` and requeueing, which moves the messages behind
//!   those the group has not read yet (breaking per-key order for its
//!   consumers), counts a delivery towards the queue's `x-delivery-limit`
//!   each time (browsing could dead-letter a message), and would take them
//!   from under a consumer that is running.

use lapin::options::QueuePurgeOptions;
use mq_core::driver::ResetTo;
use mq_core::{Error, Result};

use crate::error::{map, BACKEND};
use crate::names;
use crate::topology::Topology;

impl Topology {
    /// Moves `group` on `topic` to the end; see the module docs.
    pub(crate) async fn reset_group(&self, topic: &str, group: &str, to: ResetTo) -> Result<()> {
        if to != ResetTo::Latest {
            return Err(Error::unsupported(
                "resetting a group to an earlier message (a queue keeps none it delivered)",
                BACKEND,
            ));
        }
        let Some(shards) = self.read_shards(topic).await? else {
            return Err(Error::invalid("topic", topic, "no such topic"));
        };
        let mut queues = Vec::with_capacity(shards as usize);
        for shard in 0..shards {
            let queue = names::shard_queue(topic, group, shard);
            let context = format!("reading the consumers of {queue}");
            match self.queue_stat(&queue, &context).await? {
                Some(stat) if stat.consumers > 0 => {
                    return Err(Error::invalid(
                        "group",
                        group,
                        "the group has active members; stop its consumers first",
                    ))
                }
                Some(_) => queues.push(queue),
                None => {}
            }
        }
        if queues.is_empty() {
            // A new group starts at the end.
            return self.ensure_group(topic, group).await;
        }
        let channel = self.control().await?;
        for queue in queues {
            channel
                .queue_purge(names::short(&queue), QueuePurgeOptions::default())
                .await
                .map_err(|e| map(e, &format!("purging queue {queue}")))?;
        }
        Ok(())
    }
}
