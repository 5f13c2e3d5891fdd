//! Memory transactions: staged in the transaction, appended under the
//! commit gate so consumers see all of it or none.

use std::sync::Arc;

use async_trait::async_trait;

use std::sync::atomic::AtomicBool;

use super::broker::Broker;
use super::check_open;
use crate::driver::{AckToken, DriverTransaction};
use crate::error::{Error, Result};
use crate::message::{Message, Receipt};

pub(super) struct MemoryTransaction {
    broker: Arc<Broker>,
    closed: Arc<AtomicBool>,
    staged: Vec<(Message, Option<u32>)>,
    /// For a transaction begun on a subscription: its group, and the
    /// records to ack at commit.
    acks: Option<(Arc<str>, Vec<AckToken>)>,
}

impl MemoryTransaction {
    pub(super) fn new(broker: Arc<Broker>, closed: Arc<AtomicBool>) -> Self {
        MemoryTransaction {
            broker,
            closed,
            staged: Vec::new(),
            acks: None,
        }
    }

    /// A transaction whose commit also acks records of `group`.
    pub(super) fn acking(broker: Arc<Broker>, closed: Arc<AtomicBool>, group: Arc<str>) -> Self {
        MemoryTransaction {
            acks: Some((group, Vec::new())),
            ..MemoryTransaction::new(broker, closed)
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

    async fn ack(&mut self, tokens: Vec<AckToken>) -> Result<()> {
        match &mut self.acks {
            Some((_, acks)) => {
                acks.extend(tokens);
                Ok(())
            }
            None => Err(Error::invalid(
                "transaction",
                "begun on the client",
                "only a transaction begun on a subscription can ack its records",
            )),
        }
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        check_open(&self.closed)?;
        // Under the commit gate, consumers see the outputs and the acks
        // together: no fetch in between hands out an acked record again.
        let _gate = self.broker.commit_gate.write();
        self.broker.publish(self.staged, false);
        if let Some((group, tokens)) = self.acks {
            self.broker.ack(&group, tokens);
        }
        Ok(())
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
