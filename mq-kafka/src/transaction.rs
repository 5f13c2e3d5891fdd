//! Kafka transactions: a pool of transactional producers (a
//! `transactional.id` each, unique to this driver instance), one per open
//! transaction, returned to the pool after commit or abort.
//!
//! A transaction begun on a subscription also commits the offsets of the
//! records given to [`ack`](DriverTransaction::ack) with
//! `send_offsets_to_transaction` and the member's group generation, so a
//! handler's output and its input offsets commit together (exactly once);
//! a member that lost the partitions meanwhile is fenced by the broker.
//!
//! Whether the broker has transactions is learnt from its answers: an
//! `init_transactions` refused with `TRANSACTIONAL_ID_AUTHORIZATION_FAILED`,
//! `UNSUPPORTED_FEATURE` or "not supported by broker" is
//! `Error::Unsupported`, never a send outside a transaction. A fenced
//! producer (another instance took over) is `Error::Rejected` saying so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use mq_core::driver::{AckToken, DriverTransaction};
use mq_core::{Error, Message, Receipt, Result};
use parking_lot::Mutex;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;

use crate::config::config_error;
use crate::driver::Inner;
use crate::error::map;
use crate::publish::{self, Deliveries, KafkaProducer};
use crate::subscription::Shared;
use crate::topics::blocking;

/// Idle transactional producers, and how to name new ones.
pub(crate) struct TransactionPool {
    idle: Mutex<Vec<Arc<KafkaProducer>>>,
    /// `mq-<uuid>`: this driver instance's prefix of transactional ids.
    prefix: String,
    next: AtomicU64,
}

impl TransactionPool {
    pub(crate) fn new() -> Self {
        TransactionPool {
            idle: Mutex::default(),
            prefix: format!("mq-{}", uuid::Uuid::now_v7().simple()),
            next: AtomicU64::new(0),
        }
    }

    /// An idle producer, or a new one with transactions initialised.
    async fn take(&self, inner: &Inner) -> Result<Arc<KafkaProducer>> {
        if let Some(p) = self.idle.lock().pop() {
            return Ok(p);
        }
        let id = format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let producer: KafkaProducer = inner
            .options
            .transactional(&id)
            .create_with_context(Deliveries)
            .map_err(config_error)?;
        let producer = Arc::new(producer);
        let timeout = inner.options.request_timeout;
        let p = producer.clone();
        blocking(move || p.init_transactions(timeout))
            .await?
            .map_err(|e| map(e, "init transactions"))?;
        Ok(producer)
    }

    fn put_back(&self, producer: Arc<KafkaProducer>) {
        self.idle.lock().push(producer);
    }

    /// Drops the idle producers (on close).
    pub(crate) fn close(&self) {
        self.idle.lock().clear();
    }
}

/// An open Kafka transaction.
pub(crate) struct KafkaTransaction {
    inner: Arc<Inner>,
    /// `None` once committed or aborted.
    producer: Option<Arc<KafkaProducer>>,
    /// The subscription it was begun on, for consume-transform-produce.
    member: Option<Arc<Shared>>,
    acks: Vec<AckToken>,
}

impl KafkaTransaction {
    /// Begins a transaction, bound to `member` when given.
    pub(crate) async fn begin(inner: Arc<Inner>, member: Option<Arc<Shared>>) -> Result<Self> {
        let producer = inner.transactions.take(&inner).await?;
        if let Err(e) = producer.begin_transaction() {
            return Err(map(e, "begin transaction"));
        }
        Ok(KafkaTransaction {
            inner,
            producer: Some(producer),
            member,
            acks: Vec::new(),
        })
    }

    fn producer(&self) -> Result<&Arc<KafkaProducer>> {
        self.producer.as_ref().ok_or(Error::Closed("transaction"))
    }

    /// Ends the transaction with `commit` (or an abort), giving the
    /// producer back unless its error was fatal.
    async fn finish(mut self: Box<Self>, commit: bool) -> Result<()> {
        let producer = self.producer.take().ok_or(Error::Closed("transaction"))?;
        let inner = self.inner.clone();
        let timeout = inner.options.request_timeout;
        let offsets = match (&self.member, commit && !self.acks.is_empty()) {
            (Some(member), true) => Some(member.transaction_offsets(&self.acks)?),
            _ => None,
        };
        let p = producer.clone();
        let outcome = blocking(move || -> std::result::Result<(), KafkaError> {
            if !commit {
                return p.abort_transaction(timeout);
            }
            let result = offsets
                .map_or(Ok(()), |(tpl, metadata)| {
                    p.send_offsets_to_transaction(&tpl, &metadata, timeout)
                })
                .and_then(|()| p.commit_transaction(timeout));
            if let Err(KafkaError::Transaction(e)) = &result {
                if e.txn_requires_abort() {
                    let _ = p.abort_transaction(timeout);
                }
            }
            result
        })
        .await?;
        let fatal = matches!(&outcome, Err(KafkaError::Transaction(e)) if e.is_fatal());
        if !fatal {
            inner.transactions.put_back(producer);
        }
        outcome.map_err(|e| {
            map(
                e,
                if commit {
                    "commit transaction"
                } else {
                    "abort transaction"
                },
            )
        })?;
        if let Some(member) = &self.member {
            member.committed_in_transaction(&self.acks);
        }
        Ok(())
    }
}

#[async_trait]
impl DriverTransaction for KafkaTransaction {
    async fn publish(&mut self, batch: Vec<Message>) -> Result<Vec<Receipt>> {
        self.inner.check_open()?;
        let producer = self.producer()?.clone();
        publish::send(&producer, &self.inner.topics, batch).await
    }

    async fn ack(&mut self, tokens: Vec<AckToken>) -> Result<()> {
        if self.member.is_none() {
            return Err(Error::unsupported(
                "acks in a transaction not begun on a subscription",
                crate::error::BACKEND,
            ));
        }
        self.acks.extend(tokens);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.finish(true).await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.finish(false).await
    }
}

impl Drop for KafkaTransaction {
    /// A transaction dropped open is aborted in the background, on a
    /// thread of its own rather than the runtime's blocking pool: the drop
    /// may come from a runtime shutting down (its tasks dropped wherever
    /// they were), whose pool no longer starts anything, and a transaction
    /// left open holds back every read_committed reader of its partitions
    /// until the broker's transaction timeout.
    fn drop(&mut self) {
        let Some(producer) = self.producer.take() else {
            return;
        };
        let inner = self.inner.clone();
        let timeout = inner.options.request_timeout;
        let abort = move || {
            if producer.abort_transaction(timeout).is_ok() {
                inner.transactions.put_back(producer);
            }
        };
        let spawned = std::thread::Builder::new()
            .name("mq-kafka-abort".into())
            .spawn(abort);
        if let Err(error) = spawned {
            tracing::warn!(%error, "no thread to abort a dropped transaction; it stays open until the broker's transaction timeout");
        }
    }
}
