//! The one publish path: validation, ids, size limits, capability checks and
//! delay routing, shared by producers, transactions and the runtime's own
//! republishing (retries, dead letters, delay hops).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::client::coalesce::{Coalescer, Coalescing};
use crate::delay::DelayEmulator;
use crate::driver::{Capabilities, Driver, DriverTransaction, Support};
use crate::error::{Error, Result};
use crate::message::{
    reserved, validate_any_topic, validate_header_name, validate_topic, IdSequence, Message,
    MessageId, Receipt,
};

/// Who is publishing: users may not touch reserved topics and headers; the
/// runtime's republishing must; a relay copies user messages with the
/// SDK's headers they already carry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    User,
    Relay,
    Internal,
}

/// The checks and the telemetry every message passes on its way to the
/// driver, delay hops of the emulation included: validation, ids, size
/// limits, capability checks, the publish span.
pub(crate) struct Outlet {
    driver: Arc<dyn Driver>,
    capabilities: Capabilities,
    /// Where single sends go, when coalescing is on.
    coalescer: Option<Coalescer>,
    #[cfg(feature = "otel")]
    telemetry: Arc<crate::telemetry::Telemetry>,
}

/// The outlet plus delay routing: what producers, transactions and the
/// runtime's republishing (retries, dead letters) send through.
pub(crate) struct Publisher {
    outlet: Arc<Outlet>,
    capabilities: Capabilities,
    delay: Option<DelayEmulator>,
}

/// A message ready for the driver, and the destination to report in its
/// receipt when it was parked in a delay topic.
struct Prepared {
    message: Message,
    delayed_destination: Option<Arc<str>>,
}

/// What the messages of one batch share while they are prepared.
struct BatchState {
    origin: Origin,
    now: SystemTime,
    /// The last topic name that passed validation.
    valid_topic: Option<Arc<str>>,
    /// Ids for the messages that come without one.
    ids: IdSequence,
}

impl Outlet {
    pub(crate) fn new(
        driver: Arc<dyn Driver>,
        capabilities: Capabilities,
        coalescing: Coalescing,
        #[cfg(feature = "otel")] telemetry: Arc<crate::telemetry::Telemetry>,
    ) -> Self {
        Outlet {
            coalescer: Coalescer::new(driver.clone(), coalescing),
            driver,
            capabilities,
            #[cfg(feature = "otel")]
            telemetry,
        }
    }

    pub(crate) fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    fn batch_state(batch: &[Message], origin: Origin) -> BatchState {
        BatchState {
            origin,
            now: SystemTime::now(),
            valid_topic: None,
            ids: MessageId::sequence(batch.iter().filter(|m| m.id().is_none()).count()),
        }
    }

    /// Validates one message and gives it an id if it has none.
    fn check(&self, message: &mut Message, batch: &mut BatchState) -> Result<()> {
        // A batch usually goes to one or a few topics: a name equal to the
        // last one that passed needs no second check.
        if batch.valid_topic.as_deref() != Some(message.topic()) {
            match batch.origin {
                Origin::User | Origin::Relay => validate_topic(message.topic())?,
                Origin::Internal => validate_any_topic(message.topic())?,
            }
            batch.valid_topic = Some(message.topic_arc().clone());
        }
        if batch.origin == Origin::User {
            for (name, _) in message.headers().iter() {
                validate_header_name(name)?;
            }
        }
        let size = message.encoded_len();
        if size > self.capabilities.max_message_bytes {
            return Err(Error::TooLarge {
                size,
                limit: self.capabilities.max_message_bytes,
            });
        }
        message.set_id_if_absent(&mut batch.ids);
        if message.idempotency_key().is_some()
            && self.capabilities.idempotent_publish != Support::Native
        {
            return Err(Error::unsupported(
                "idempotent publish",
                self.driver.backend(),
            ));
        }
        Ok(())
    }

    /// Checks a batch of messages without delays and publishes it: what
    /// the delay forwarder sends its hops through.
    pub(crate) async fn publish(&self, mut batch: Vec<Message>) -> Result<Vec<Receipt>> {
        let mut state = Self::batch_state(&batch, Origin::Internal);
        for message in &mut batch {
            self.check(message, &mut state)?;
        }
        self.send(None, batch).await
    }

    /// Hands one checked message to the driver, traced: with the next
    /// batch of its coalescing lane, or alone when coalescing is off.
    async fn send_one(
        &self,
        #[cfg_attr(not(feature = "otel"), allow(unused_mut))] mut message: Message,
    ) -> Result<Receipt> {
        let Some(coalescer) = &self.coalescer else {
            let mut receipts = self.send(None, vec![message]).await?;
            return receipts
                .pop()
                .ok_or_else(|| Error::Rejected("the backend returned no receipt".into()));
        };
        #[cfg(feature = "otel")]
        let traced = crate::telemetry::PublishScope::start(
            &self.telemetry,
            self.driver.backend(),
            std::slice::from_mut(&mut message),
        );
        let result = coalescer.send(message).await;
        #[cfg(feature = "otel")]
        traced.finish_one(&result);
        result
    }

    /// Hands checked messages to the driver, or to a transaction, traced.
    async fn send(
        &self,
        tx: Option<&mut dyn DriverTransaction>,
        #[cfg_attr(not(feature = "otel"), allow(unused_mut))] mut messages: Vec<Message>,
    ) -> Result<Vec<Receipt>> {
        #[cfg(feature = "otel")]
        let traced = crate::telemetry::PublishScope::start(
            &self.telemetry,
            self.driver.backend(),
            &mut messages,
        );
        let result = match tx {
            Some(tx) => tx.publish(messages).await,
            None => self.driver.publish(messages).await,
        };
        #[cfg(feature = "otel")]
        traced.finish(&result);
        result
    }
}

impl Publisher {
    pub(crate) fn new(
        outlet: Arc<Outlet>,
        capabilities: Capabilities,
        delay: Option<DelayEmulator>,
    ) -> Self {
        Publisher {
            outlet,
            capabilities,
            delay,
        }
    }

    /// The checks and telemetry underneath, without delay routing.
    pub(crate) fn outlet(&self) -> &Arc<Outlet> {
        &self.outlet
    }

    /// Checks a user's message as a send would (name, headers, size,
    /// capabilities, delay bounds) and gives it an id, without sending it:
    /// for half messages, which are stored prepared before they are sent.
    pub(crate) fn check_user_message(&self, mut message: Message) -> Result<Message> {
        let mut state = Outlet::batch_state(std::slice::from_ref(&message), Origin::User);
        self.outlet.check(&mut message, &mut state)?;
        self.wait_of(&message, state.now)?;
        Ok(message)
    }

    pub(crate) fn delay_emulator(&self) -> Option<&DelayEmulator> {
        self.delay.as_ref()
    }

    pub(crate) async fn shutdown(&self) {
        if let Some(delay) = &self.delay {
            delay.shutdown().await;
        }
    }

    /// How long `message` waits before delivery, and when it is due, or
    /// `None` when it is due now; a delay the backend cannot hold is an
    /// error naming it.
    fn wait_of(
        &self,
        message: &Message,
        now: SystemTime,
    ) -> Result<Option<(Duration, SystemTime)>> {
        let wait = match (message.delay(), message.deliver_at()) {
            (Some(delay), _) => delay,
            (None, Some(at)) => at.duration_since(now).unwrap_or_default(),
            (None, None) => Duration::ZERO,
        };
        if wait.is_zero() {
            return Ok(None);
        }
        let too_long = || {
            Error::invalid(
                "delay",
                format!("{wait:?}"),
                format!(
                    "the {} backend accepts delays up to {:?}",
                    self.outlet.driver.backend(),
                    self.capabilities.max_delay
                ),
            )
        };
        if wait > self.capabilities.max_delay {
            return Err(too_long());
        }
        let due = now.checked_add(wait).ok_or_else(too_long)?;
        Ok(Some((wait, due)))
    }

    fn prepare(&self, mut message: Message, batch: &mut BatchState) -> Result<Prepared> {
        let now = batch.now;
        self.outlet.check(&mut message, batch)?;
        let Some((wait, due)) = self.wait_of(&message, now)? else {
            message.clear_delay();
            return Ok(Prepared {
                message,
                delayed_destination: None,
            });
        };
        let native = self.capabilities.delay == Support::Native
            && self
                .capabilities
                .delay_model
                .fits(wait, self.capabilities.delay_precision);
        match &self.delay {
            Some(emulator) if !native => {
                let destination = message.topic_arc().clone();
                Ok(Prepared {
                    message: emulator.park(message, due, now),
                    delayed_destination: Some(destination),
                })
            }
            _ => Ok(Prepared {
                message: message.with_deliver_at(due),
                delayed_destination: None,
            }),
        }
    }

    async fn prepare_batch(
        &self,
        batch: Vec<Message>,
        origin: Origin,
    ) -> Result<(Vec<Message>, Vec<Option<Arc<str>>>)> {
        let mut state = Outlet::batch_state(&batch, origin);
        let mut messages = Vec::with_capacity(batch.len());
        let mut destinations = Vec::with_capacity(batch.len());
        for message in batch {
            let prepared = self.prepare(message, &mut state)?;
            messages.push(prepared.message);
            destinations.push(prepared.delayed_destination);
        }
        if destinations.iter().any(Option::is_some) {
            if let Some(delay) = &self.delay {
                delay.create_topics().await?;
                delay.stamp_existing(&mut messages, &destinations).await?;
                delay.ensure_running();
            }
        }
        Ok((messages, destinations))
    }

    pub(crate) async fn publish(
        &self,
        batch: Vec<Message>,
        origin: Origin,
    ) -> Result<Vec<Receipt>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (messages, destinations) = self.prepare_batch(batch, origin).await?;
        let receipts = self.outlet.send(None, messages).await?;
        Ok(fix_receipts(receipts, destinations))
    }

    /// Publishes one message of a user's `send`: coalesced with other
    /// sends where coalescing is on.
    pub(crate) async fn publish_one(&self, message: Message) -> Result<Receipt> {
        let (mut messages, destinations) = self.prepare_batch(vec![message], Origin::User).await?;
        let message = messages
            .pop()
            .ok_or_else(|| Error::Rejected("nothing to send".into()))?;
        let mut receipt = self.outlet.send_one(message).await?;
        if let Some(Some(topic)) = destinations.into_iter().next() {
            reported_at_destination(&mut receipt, topic);
        }
        Ok(receipt)
    }

    pub(crate) async fn publish_in(
        &self,
        tx: &mut dyn DriverTransaction,
        batch: Vec<Message>,
    ) -> Result<Vec<Receipt>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (messages, destinations) = self.prepare_batch(batch, Origin::User).await?;
        let receipts = self.outlet.send(Some(tx), messages).await?;
        Ok(fix_receipts(receipts, destinations))
    }
}

fn fix_receipts(mut receipts: Vec<Receipt>, destinations: Vec<Option<Arc<str>>>) -> Vec<Receipt> {
    for (receipt, destination) in receipts.iter_mut().zip(destinations) {
        if let Some(topic) = destination {
            reported_at_destination(receipt, topic);
        }
    }
    receipts
}

/// A parked message's receipt names its destination, and no offset (it has
/// none there yet).
fn reported_at_destination(receipt: &mut Receipt, topic: Arc<str>) {
    receipt.topic = topic;
    receipt.offset = None;
}

/// Prepares a received message for republishing by the runtime: the
/// idempotency key moves to a header (so the copy is not taken for a
/// duplicate of the original, while consumer-side dedup still sees it) and
/// delays are cleared.
pub(crate) fn republishable(message: Message) -> Message {
    let mut message = key_to_header(message);
    message.clear_delay();
    message
}

/// `message` with its idempotency key moved into the header that
/// consumer-side dedup reads.
pub(crate) fn key_to_header(mut message: Message) -> Message {
    if let Some(key) = message.idempotency_key().map(str::to_owned) {
        message.headers_mut().insert(reserved::IDEMPOTENCY_KEY, key);
        message.clear_idempotency_key();
    }
    message
}
