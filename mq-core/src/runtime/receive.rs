//! Turning what a driver delivered into the [`Delivery`] handlers see:
//! undoing the runtime's own retry and dedup bookkeeping headers, and
//! reusing the message allocations of deliveries already handled.

use std::sync::Arc;

use bytes::Bytes;

use crate::driver::RawDelivery;
use crate::message::{reserved, Delivery, Message};
use crate::runtime::settle::{from_millis, Settler};

pub(crate) fn delivery_from_raw(
    raw: RawDelivery,
    group: &Arc<str>,
    settler: Option<Arc<Settler>>,
) -> Delivery {
    build(raw, group, settler, None)
}

/// As [`delivery_from_raw`] without a settler, the message written into
/// `shell`, the emptied message of a delivery handled before, if any.
pub(crate) fn delivery_in(
    raw: RawDelivery,
    group: &Arc<str>,
    shell: Option<Arc<Message>>,
) -> Delivery {
    build(raw, group, None, shell)
}

fn build(
    raw: RawDelivery,
    group: &Arc<str>,
    settler: Option<Arc<Settler>>,
    shell: Option<Arc<Message>>,
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
    let message = match shell {
        Some(mut shell) => match Arc::get_mut(&mut shell) {
            Some(slot) => {
                *slot = message;
                shell
            }
            None => Arc::new(message),
        },
        None => Arc::new(message),
    };
    Delivery {
        message,
        group: group.clone(),
        partition,
        offset,
        attempt: prior_attempts.saturating_add(delivery_count.max(1)),
        first_seen,
        token,
        settler,
    }
}

/// Keeps the message allocations of finished deliveries for the fetch loop
/// to fill with new ones (see [`delivery_in`]). The fetch loop allocates
/// each delivery's message and a worker, on another thread, frees it: that
/// costs the allocator more than the rest of a delivery's way through the
/// runtime, reuse costs it nothing. A message a handler kept a copy of is
/// left to it.
///
/// Only the payload is let go of here, as it may pin a large read buffer.
/// The rest (topic, key, headers) goes when the fetch loop overwrites the
/// message, on the thread whose driver made it: the reference counts of
/// topic and key names, which every message shares, are then changed from
/// one thread, not bounced between threads once per message.
pub(crate) struct Recycler {
    /// Stands in for the message taken out of a delivery, so that
    /// `Delivery` stays whole; its names are this recycler's own.
    empty: Arc<Message>,
    /// Emptied messages not handed back yet.
    pub(crate) shells: Vec<Arc<Message>>,
}

impl Recycler {
    pub(crate) fn new() -> Self {
        Recycler {
            empty: Arc::new(Message::new("", Bytes::new())),
            shells: Vec::new(),
        }
    }

    /// Takes the message out of a finished delivery and drops its payload.
    pub(crate) fn recycle(&mut self, delivery: &mut Delivery) {
        let mut message = std::mem::replace(&mut delivery.message, self.empty.clone());
        if let Some(slot) = Arc::get_mut(&mut message) {
            let full = std::mem::replace(slot, Message::clone(&self.empty));
            *slot = full.with_payload(Bytes::new());
            self.shells.push(message);
        }
    }
}
