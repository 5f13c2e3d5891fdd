//! Atomic multi-message publish with AMQP transactions (`tx.select`,
//! `tx.commit`, `tx.rollback`) on a channel of its own.
//!
//! RabbitMQ holds the published messages until `tx.commit` and then routes
//! them all; `tx.rollback` (or closing the channel) drops them. A lost
//! connection before the commit drops them too, so a failed commit means
//! nothing was published. As outside transactions, a message to a topic
//! without groups is dropped (see [`crate::publisher`]).

use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use async_trait::async_trait;
use lapin::options::BasicPublishOptions;
use lapin::Channel;
use mq_core::driver::DriverTransaction;
use mq_core::{Error, Message, Receipt, Result};

use crate::connection::Connector;
use crate::error::map;
use crate::publisher::prepare;
use crate::topology::Topology;

pub(crate) struct RabbitTransaction {
    channel: Option<Channel>,
    topology: Arc<Topology>,
    round_robin: Arc<AtomicU32>,
}

impl RabbitTransaction {
    pub(crate) async fn begin(
        connector: &Connector,
        topology: Arc<Topology>,
        round_robin: Arc<AtomicU32>,
    ) -> Result<Self> {
        let (channel, _) = connector.channel(connector.deadline()).await?;
        channel
            .tx_select()
            .await
            .map_err(|e| map(e, "starting a transaction"))?;
        Ok(RabbitTransaction {
            channel: Some(channel),
            topology,
            round_robin,
        })
    }

    fn channel(&self) -> Result<&Channel> {
        self.channel.as_ref().ok_or(Error::Closed("transaction"))
    }
}

#[async_trait]
impl DriverTransaction for RabbitTransaction {
    async fn publish(&mut self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        let (outgoing, receipts) = prepare(&self.topology, &self.round_robin, batch).await?;
        let channel = self.channel()?;
        for m in &outgoing {
            channel
                .basic_publish(
                    m.exchange.clone(),
                    m.routing_key.clone(),
                    BasicPublishOptions::default(),
                    &m.payload,
                    m.properties.clone(),
                )
                .await
                .map_err(|e| map(e, &format!("publishing to {} in a transaction", m.topic)))?;
        }
        Ok(receipts)
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let channel = self.channel.take().ok_or(Error::Closed("transaction"))?;
        let committed = channel.tx_commit().await;
        let _ = channel.close(200, "committed".into()).await;
        committed.map_err(|e| map(e, "committing a transaction"))
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        let channel = self.channel.take().ok_or(Error::Closed("transaction"))?;
        let rolled_back = channel.tx_rollback().await;
        let _ = channel.close(200, "aborted".into()).await;
        rolled_back.map_err(|e| map(e, "aborting a transaction"))
    }
}

impl Drop for RabbitTransaction {
    fn drop(&mut self) {
        // Dropped without commit: closing the channel discards what it staged.
        if let Some(channel) = self.channel.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = channel.close(200, "dropped".into()).await;
                });
            }
        }
    }
}
