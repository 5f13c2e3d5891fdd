//! Memory transactions: staged in the transaction, appended under the
//! commit gate so consumers see all of it or none.

use std::sync::Arc;

use async_trait::async_trait;

use std::sync::atomic::AtomicBool;

use super::broker::Broker;
use super::check_open;
use crate::driver::DriverTransaction;
use crate::error::Result;
use crate::message::{Message, Receipt};

pub(super) struct MemoryTransaction {
    broker: Arc<Broker>,
    closed: Arc<AtomicBool>,
    staged: Vec<(Message, Option<u32>)>,
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
        let mut receipts = Vec::with_capacity(batch.len());
        for message in batch {
            let topic = self.broker.topic_or_create(message.topic(), None);
            let partition = topic.partition_of(&message);
            receipts.push(Receipt::new(
                message.id().unwrap_or_default(),
                topic.name.clone(),
                partition,
                None,
            ));
            self.staged.push((message, Some(partition)));
        }
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
