//! Turning what a driver delivered into the [`Delivery`] handlers see:
//! undoing the runtime's own retry and dedup bookkeeping headers.

use std::sync::Arc;

use crate::driver::RawDelivery;
use crate::message::{reserved, Delivery};
use crate::runtime::settle::{from_millis, Settler};

pub(crate) fn delivery_from_raw(
    raw: RawDelivery,
    group: &Arc<str>,
    settler: Option<Arc<Settler>>,
) -> Delivery {
    let RawDelivery {
        mut message,
        partition,
        offset,
        delivery_count,
        mut first_seen,
        token,
    } = raw;
    let mut prior_attempts = 0u32;
    if !message.headers().is_empty() {
        let headers = message.headers_mut();
        if let Some(prior) = headers.remove(reserved::PRIOR_ATTEMPTS) {
            prior_attempts = prior.parse().unwrap_or(0);
        }
        if let Some(ms) = headers
            .remove(reserved::FIRST_SEEN)
            .and_then(|v| v.parse().ok())
        {
            first_seen = from_millis(ms);
        }
        let original_topic = headers.remove(reserved::RETRY_TOPIC);
        let idempotency_key = headers.remove(reserved::IDEMPOTENCY_KEY);
        if let Some(topic) = original_topic {
            message = message.with_topic(topic);
        }
        if let Some(key) = idempotency_key {
            if message.idempotency_key().is_none() {
                message = message.with_idempotency_key(key);
            }
        }
    }
    Delivery {
        message: Arc::new(message),
        group: group.clone(),
        partition,
        offset,
        attempt: prior_attempts.saturating_add(delivery_count.max(1)),
        first_seen,
        token,
        settler,
    }
}
