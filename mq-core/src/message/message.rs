//! The message users publish and consumers receive.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use uuid::Uuid;

use super::names::IntoName;
use super::Headers;

/// A message id: a UUIDv7 assigned at publish unless the producer set one.
///
/// The id survives retries, delay hops, dead-lettering and bridging, so it
/// identifies the message end to end and is the default dedup key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A new time-ordered id (UUIDv7).
    pub fn new() -> Self {
        MessageId::sequence(1).next_id()
    }

    /// `n` new ids, in increasing order, for a batch: one clock read and
    /// one step of the shared counter for all of them, where each
    /// [`new`](Self::new) would take one of each.
    pub(crate) fn sequence(n: usize) -> IdSequence {
        let (ms, counter) = IdClock::reserve(n as u64);
        IdSequence {
            ms,
            counter,
            left: n as u64,
        }
    }

    /// Wraps an existing UUID.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        MessageId(uuid)
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// Parses the hyphenated form written by `Display`.
    pub fn parse(text: &str) -> crate::Result<Self> {
        Uuid::parse_str(text)
            .map(MessageId)
            .map_err(|e| crate::Error::invalid("message id", text, e.to_string()))
    }
}

/// Bits of the per-millisecond counter: the 12 of `rand_a` and the top 30
/// of `rand_b` (RFC 9562 section 6.2, method 1); the other 32 bits of
/// `rand_b` are random.
const COUNTER_BITS: u32 = 42;

/// The process-wide state of id generation: the millisecond of the last id
/// and the next counter value in it. Ids from one process are unique by
/// the counter and increase; the random start of each millisecond's
/// counter and the random low bits keep processes apart.
struct IdClock {
    ms: u64,
    counter: u64,
}

static ID_CLOCK: parking_lot::Mutex<IdClock> =
    parking_lot::const_mutex(IdClock { ms: 0, counter: 0 });

impl IdClock {
    /// Reserves `n` counter values; returns the millisecond and the first.
    fn reserve(n: u64) -> (u64, u64) {
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut clock = ID_CLOCK.lock();
        // A clock that went back keeps counting in the last millisecond; a
        // counter that would run out borrows the next millisecond.
        if now > clock.ms || clock.counter + n > 1 << COUNTER_BITS {
            clock.ms = now.max(clock.ms + 1);
            // The top bit starts clear, leaving at least 2^41 to count up.
            clock.counter = rand::random::<u64>() >> (64 - COUNTER_BITS + 1);
        }
        let first = clock.counter;
        clock.counter += n;
        (clock.ms, first)
    }
}

/// Ids reserved by [`MessageId::sequence`].
pub(crate) struct IdSequence {
    ms: u64,
    counter: u64,
    left: u64,
}

impl IdSequence {
    /// The next id; past the reserved ones, each takes a reservation of its own.
    pub(crate) fn next_id(&mut self) -> MessageId {
        if self.left == 0 {
            (self.ms, self.counter) = IdClock::reserve(1);
            self.left = 1;
        }
        let counter = self.counter;
        self.counter += 1;
        self.left -= 1;
        // unix_ts_ms:48 ver:4 rand_a:12 | var:2 rand_b:62, the counter's
        // top 12 bits in rand_a and the rest atop rand_b.
        let high = ((self.ms & 0xFFFF_FFFF_FFFF) << 16) | (0x7 << 12) | ((counter >> 30) & 0xFFF);
        let low = (0b10 << 62) | ((counter & 0x3FFF_FFFF) << 32) | u64::from(rand::random::<u32>());
        MessageId(Uuid::from_u64_pair(high, low))
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0.hyphenated())
    }
}

/// A message: topic, optional ordering key, payload, headers and delivery options.
///
/// Built with chained setters; validated when sent, so building never fails.
///
/// ```
/// use std::time::Duration;
/// use mq_core::Message;
///
/// let msg = Message::new("orders", "order 42 created")
///     .with_key("customer-7")
///     .with_header("content-type", "text/plain")
///     .with_idempotency_key("order-42-created")
///     .with_delay(Duration::from_secs(30));
/// assert_eq!(msg.topic(), "orders");
/// assert_eq!(msg.key(), Some("customer-7"));
/// assert_eq!(&msg.payload()[..], b"order 42 created");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    topic: Arc<str>,
    key: Option<Arc<str>>,
    payload: Bytes,
    headers: Headers,
    id: Option<MessageId>,
    idempotency_key: Option<Arc<str>>,
    deliver_at: Option<SystemTime>,
    delay: Option<Duration>,
    published_at: Option<SystemTime>,
}

impl Message {
    /// A message for `topic` carrying `payload`.
    pub fn new(topic: impl IntoName, payload: impl Into<Bytes>) -> Self {
        Message {
            topic: topic.into_name(),
            key: None,
            payload: payload.into(),
            headers: Headers::new(),
            id: None,
            idempotency_key: None,
            deliver_at: None,
            delay: None,
            published_at: None,
        }
    }

    /// A message from all its fields at once, for drivers turning a stored
    /// or received record into a message: one construction instead of a
    /// chain of `with_*` calls, each of which moves the whole message (a
    /// measurable share of consume CPU when a driver decodes millions of
    /// records per second).
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use mq_core::message::MessageParts;
    /// use mq_core::{Message, MessageId};
    ///
    /// let id = MessageId::new();
    /// let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let msg = Message::from_parts(MessageParts {
    ///     key: Some("customer-7".into()),
    ///     id: Some(id),
    ///     published_at: Some(at),
    ///     ..MessageParts::new("orders", "order 42 created")
    /// });
    /// assert_eq!(
    ///     msg,
    ///     Message::new("orders", "order 42 created")
    ///         .with_key("customer-7")
    ///         .with_id(id)
    ///         .with_published_at(at)
    /// );
    /// ```
    pub fn from_parts(parts: MessageParts) -> Self {
        Message {
            topic: parts.topic,
            key: parts.key,
            payload: parts.payload,
            headers: parts.headers,
            id: parts.id,
            idempotency_key: parts.idempotency_key,
            deliver_at: parts.deliver_at,
            delay: None,
            published_at: parts.published_at,
        }
    }

    /// A message whose payload is `value` serialised as JSON.
    ///
    /// ```
    /// # use mq_core::Message;
    /// #[derive(serde::Serialize)]
    /// struct Created { order: u64 }
    /// let msg = Message::json("orders", &Created { order: 42 }).unwrap();
    /// assert_eq!(&msg.payload()[..], br#"{"order":42}"#);
    /// assert_eq!(msg.headers().get("content-type"), Some("application/json"));
    /// ```
    pub fn json<T: serde::Serialize + ?Sized>(
        topic: impl IntoName,
        value: &T,
    ) -> crate::Result<Self> {
        let payload = serde_json::to_vec(value).map_err(crate::Error::json)?;
        Ok(Message::new(topic, payload).with_header("content-type", "application/json"))
    }

    /// Sets the ordering key: messages with one key are handled in publish order.
    pub fn with_key(mut self, key: impl Into<Arc<str>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets a header (user names may not start with `mq-` nor be `traceparent`/`tracestate`).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Replaces all headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the message id instead of letting the producer assign one.
    pub fn with_id(mut self, id: MessageId) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the idempotency key: a second send with the same key inside the
    /// dedup window returns the first receipt with `duplicate = true`.
    pub fn with_idempotency_key(mut self, key: impl Into<Arc<str>>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Not delivered before `delay` has passed from the moment of sending.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self.deliver_at = None;
        self
    }

    /// Not delivered before `at`.
    pub fn with_deliver_at(mut self, at: SystemTime) -> Self {
        self.deliver_at = Some(at);
        self.delay = None;
        self
    }

    /// Replaces the payload.
    pub fn with_payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = payload.into();
        self
    }

    /// Moves the message to another topic, keeping everything else.
    pub fn with_topic(mut self, topic: impl IntoName) -> Self {
        self.topic = topic.into_name();
        self
    }

    /// Sets the publish time; drivers set it on received messages.
    pub fn with_published_at(mut self, at: SystemTime) -> Self {
        self.published_at = Some(at);
        self
    }

    /// The destination topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic as a shared string, cheap to clone.
    pub fn topic_arc(&self) -> &Arc<str> {
        &self.topic
    }

    /// The ordering key, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The ordering key as a shared string, cheap to clone.
    pub fn key_arc(&self) -> Option<&Arc<str>> {
        self.key.as_ref()
    }

    /// The payload bytes.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The payload decoded from JSON.
    pub fn payload_json<T: serde::de::DeserializeOwned>(&self) -> crate::Result<T> {
        serde_json::from_slice(&self.payload).map_err(crate::Error::json)
    }

    /// The payload as UTF-8 text.
    pub fn payload_str(&self) -> crate::Result<&str> {
        std::str::from_utf8(&self.payload)
            .map_err(|e| crate::Error::codec("the payload is not UTF-8", e))
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, mutable.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The id: set by the producer at send, or by the caller beforehand.
    pub fn id(&self) -> Option<MessageId> {
        self.id
    }

    /// The idempotency key, if any.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// The absolute due time, if one was set with [`with_deliver_at`](Self::with_deliver_at).
    pub fn deliver_at(&self) -> Option<SystemTime> {
        self.deliver_at
    }

    /// The relative delay, if one was set with [`with_delay`](Self::with_delay).
    pub fn delay(&self) -> Option<Duration> {
        self.delay
    }

    /// The due time the message had, resolving a relative delay against
    /// `now`; `None` without one, or when `now + delay` is beyond what
    /// the system clock represents (sending refuses such a delay).
    pub fn due_at(&self, now: SystemTime) -> Option<SystemTime> {
        self.deliver_at
            .or_else(|| self.delay.and_then(|d| now.checked_add(d)))
    }

    /// When the message was published, on received messages.
    pub fn published_at(&self) -> Option<SystemTime> {
        self.published_at
    }

    /// Size counted against the backend's message size limit: payload, key and headers.
    pub fn encoded_len(&self) -> usize {
        self.payload.len()
            + self.key.as_deref().map_or(0, str::len)
            + self.headers.encoded_len()
            + self.idempotency_key.as_deref().map_or(0, str::len)
    }

    pub(crate) fn clear_delay(&mut self) {
        self.deliver_at = None;
        self.delay = None;
    }

    pub(crate) fn set_id_if_absent(&mut self, ids: &mut IdSequence) -> MessageId {
        *self.id.get_or_insert_with(|| ids.next_id())
    }

    pub(crate) fn clear_idempotency_key(&mut self) {
        self.idempotency_key = None;
    }
}

/// The fields of a received [`Message`], for [`Message::from_parts`].
///
/// A relative delay is not among them: a message read back from a broker
/// carries an absolute due time, if any.
#[derive(Clone, Debug)]
pub struct MessageParts {
    /// The topic.
    pub topic: Arc<str>,
    /// The ordering key.
    pub key: Option<Arc<str>>,
    /// The payload.
    pub payload: Bytes,
    /// The headers.
    pub headers: Headers,
    /// The id.
    pub id: Option<MessageId>,
    /// The idempotency key.
    pub idempotency_key: Option<Arc<str>>,
    /// The absolute due time.
    pub deliver_at: Option<SystemTime>,
    /// When the broker accepted it.
    pub published_at: Option<SystemTime>,
}

impl MessageParts {
    /// Parts with a topic and a payload and nothing else, to fill in with
    /// struct update syntax.
    pub fn new(topic: impl Into<Arc<str>>, payload: impl Into<Bytes>) -> Self {
        MessageParts {
            topic: topic.into(),
            key: None,
            payload: payload.into(),
            headers: Headers::new(),
            id: None,
            idempotency_key: None,
            deliver_at: None,
            published_at: None,
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("key", &self.key)
            .field("id", &self.id)
            .field("payload_len", &self.payload.len())
            .field("headers", &self.headers)
            .field("idempotency_key", &self.idempotency_key)
            .field("deliver_at", &self.deliver_at)
            .field("delay", &self.delay)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_unique_and_increasing() {
        let mut ids: Vec<MessageId> = (0..1000).map(|_| MessageId::new()).collect();
        let mut batch = MessageId::sequence(1000);
        ids.extend((0..1500).map(|_| batch.next_id()));
        ids.push(MessageId::new());
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
        }
        for id in &ids {
            assert_eq!(id.as_uuid().get_version_num(), 7);
            assert_eq!(id.as_uuid().get_variant(), uuid::Variant::RFC4122);
        }
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let (secs, nanos) = ids[0].as_uuid().get_timestamp().unwrap().to_unix();
        let ms = secs * 1000 + u64::from(nanos) / 1_000_000;
        assert!(now.abs_diff(ms) < 10_000, "id time {ms}, now {now}");
    }
}
