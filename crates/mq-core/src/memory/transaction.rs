//! Memory transactions: staged in the transaction, appended under the
//! commit gate so consumers see all of it or none.

use std::sync::Arc;

use async_trait::async_trait;

use std::sync::atomic::AtomicBool;

use super::broker::Broker;
use super::check_open;
use crate::driver::{partition_for_key, DriverTransaction};
use crate::error::Result;
use crate::message::{Message, Receipt};

pub(super) struct MemoryTransaction {
    broker: Arc<Broker>,
    closed: Arc<AtomicBool>,
    staged: Vec<Message>,
}

impl MemoryTransaction {
    pub(super) fn new(broker: Arc<Broker>, closed: Arc<AtomicBool>) -> Self {
        MemoryTransaction {
            broker,
            closed,
            staged: Vec::new(),
        }
    }
}

#[async_trait]
impl DriverTransaction for MemoryTransaction {
    async fn publish(&mut self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        check_open(&self.closed)?;
        let receipts = batch
            .iter()
            .map(|m| {
                let topic = self.broker.topic_or_create(m.topic(), None);
                let partition = m
                    .key()
                    .map_or(0, |k| partition_for_key(k, topic.partitions.len() as u32));
                Receipt::new(m.id().unwrap_or_default(), topic.name.clone(), partition, None)
            })
            .collect();
        self.staged.extend(batch);
        Ok(receipts)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        check_open(&self.closed)?;
        self.broker.publish(self.staged, true);
        Ok(())
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
