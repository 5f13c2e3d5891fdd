//! Native transactions: staged in memory, committed as one batch, so the
//! messages become visible together (or, after a crash, not at all).

use async_trait::async_trait;
use mq_core::driver::DriverTransaction;
use mq_core::{Message, Receipt, Result};

use super::{durable, NativeDriver};
use crate::engine::Item;

pub(super) struct NativeTransaction {
    driver: NativeDriver,
    staged: Vec<Item>,
}

impl NativeTransaction {
    pub(super) fn new(driver: NativeDriver) -> Self {
        NativeTransaction {
            driver,
            staged: Vec::new(),
        }
    }
}

#[async_trait]
impl DriverTransaction for NativeTransaction {
    async fn publish(&mut self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        self.driver.check_open()?;
        let items = self.driver.items(batch).await?;
        let receipts = items
            .iter()
            .filter_map(|i| match i {
                Item::Message {
                    topic,
                    partition,
                    message,
                    ..
                } => Some(Receipt::new(
                    message.id().unwrap_or_default(),
                    topic.name.clone(),
                    *partition,
                    None,
                )),
                _ => None,
            })
            .collect();
        self.staged.extend(items);
        Ok(receipts)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.driver.check_open()?;
        if self.staged.is_empty() {
            return Ok(());
        }
        durable(self.driver.engine().append(self.staged, true)?).await?;
        Ok(())
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
