//! [`DedupLayer`]: skip messages the group already handled.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Claim, DedupStore};
use crate::message::Delivery;
use crate::runtime::{Handler, HandlerError, HandlerResult, Layer};

/// Middleware that runs the handler at most once per message per group,
/// keyed by the idempotency key, or the message id when there is none.
///
/// A repeat of a handled message is acked without running the handler; a
/// repeat arriving while the first copy is still being handled is retried
/// after a short pause.
///
/// ```
/// use std::sync::Arc;
/// use mq_core::idempotency::{DedupLayer, MemoryDedupStore};
/// let dedup = DedupLayer::new(Arc::new(MemoryDedupStore::new()));
/// # let _ = dedup;
/// ```
#[derive(Clone)]
pub struct DedupLayer {
    store: Arc<dyn DedupStore>,
    ttl: Duration,
    lease: Duration,
}

impl DedupLayer {
    /// Dedups through `store`, remembering handled messages for 24 hours.
    pub fn new(store: Arc<dyn DedupStore>) -> Self {
        DedupLayer {
            store,
            ttl: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(60),
        }
    }

    /// How long a handled message is remembered.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long a claim lasts while a handler runs; make it longer than your slowest handler.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
}

impl Layer for DedupLayer {
    fn layer(&self, inner: Arc<dyn Handler>) -> Arc<dyn Handler> {
        Arc::new(Dedup {
            inner,
            config: self.clone(),
        })
    }
}

struct Dedup {
    inner: Arc<dyn Handler>,
    config: DedupLayer,
}

/// The dedup key of a delivery: its idempotency key, else its id. Every
/// [`DedupStore`](super::DedupStore) user keys by it, so stores can be
/// shared (the SQL inbox and [`DedupLayer`] use one table).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mq_core::Result<()> {
/// # let client = mq_core::Client::new(mq_core::memory::MemoryDriver::new());
/// use mq_core::{idempotency::dedup_key, Message};
/// client.producer().send(Message::new("orders", "x").with_idempotency_key("o-1")).await?;
/// let mut orders = client.consumer("orders", "billing").subscribe().await?;
/// let delivery = futures::StreamExt::next(&mut orders).await.unwrap()?;
/// assert_eq!(dedup_key(&delivery), "k:o-1");
/// delivery.ack().await?;
/// # Ok(()) }
/// ```
pub fn dedup_key(delivery: &Delivery) -> String {
    match delivery.message().idempotency_key() {
        Some(key) => format!("k:{key}"),
        None => format!(
            "id:{}",
            delivery
                .message()
                .id()
                .map(|i| i.to_string())
                .unwrap_or_default()
        ),
    }
}

#[async_trait]
impl Handler for Dedup {
    async fn handle(&self, delivery: &Delivery) -> HandlerResult {
        let store = &self.config.store;
        let scope = delivery.group();
        let key = dedup_key(delivery);
        match store.claim(scope, &key, self.config.lease).await? {
            Claim::Done => {
                tracing::debug!(topic = delivery.topic(), key, "skipping a duplicate");
                Ok(())
            }
            Claim::InProgress => Err(HandlerError::retry_after(
                "a copy of this message is being handled",
                Duration::from_millis(100),
            )),
            Claim::Claimed => match self.inner.handle(delivery).await {
                Ok(()) => {
                    store.complete(scope, &key, self.config.ttl).await?;
                    Ok(())
                }
                Err(error) => {
                    if let Err(release) = store.release(scope, &key).await {
                        tracing::warn!(%release, "releasing a dedup claim failed; it expires with its lease");
                    }
                    Err(error)
                }
            },
        }
    }
}
