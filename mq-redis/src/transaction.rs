//! Transactions: messages are staged in the client and written at commit
//! in one `MULTI`/`EXEC`, so consumers see all of them or none; abort (or
//! drop) writes nothing.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use mq_core::driver::DriverTransaction;
use mq_core::{Message, Receipt, Result};
use redis::{Pipeline, Value};

use crate::connection::{Inner, Retries};
use crate::error::map;
use crate::publish::Planned;

pub(crate) struct RedisTransaction {
    inner: Arc<Inner>,
    staged: Vec<Planned>,
}

impl RedisTransaction {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        RedisTransaction {
            inner,
            staged: Vec::new(),
        }
    }
}

#[async_trait]
impl DriverTransaction for RedisTransaction {
    async fn publish(&mut self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        self.inner.check_open()?;
        let planned = self.inner.plan(batch).await?;
        let receipts = planned
            .iter()
            .map(|p| Receipt::new(p.id, p.topic.name.clone(), p.partition, None))
            .collect();
        self.staged.extend(planned);
        Ok(receipts)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let inner = self.inner;
        inner.check_open()?;
        if self.staged.is_empty() {
            return Ok(());
        }
        if self.staged.iter().any(|p| p.due.is_some()) {
            inner.start_promoter();
        }
        let sent_at = SystemTime::now();
        let mut retries = Retries::new(&inner.options);
        loop {
            let mut pipe = Pipeline::with_capacity(self.staged.len());
            pipe.atomic();
            let now = SystemTime::now();
            for p in &self.staged {
                // EVAL, not EVALSHA: a NOSCRIPT inside EXEC would not undo the rest.
                pipe.add_command(inner.write_command(p, now, true)).ignore();
            }
            let e = match pipe.query_async::<Value>(&mut inner.conn()).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let Some(pause) = retries.pause(&e) else {
                return Err(map(e, "commit"));
            };
            tokio::time::sleep(pause).await;
            // EXEC is all or nothing: if any plain message of the
            // transaction is in its stream, all of it was written.
            let mut todo: Vec<usize> = (0..self.staged.len()).collect();
            let mut receipts = vec![None; self.staged.len()];
            inner
                .recover(&self.staged, &mut todo, &mut receipts, sent_at)
                .await?;
            if todo.len() < self.staged.len() {
                return Ok(());
            }
        }
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
