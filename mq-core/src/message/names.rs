//! Validation of the names users choose: topics, consumer groups, headers.
//!
//! Checked once in the client so every backend sees only names it can map.

use std::sync::Arc;

use crate::error::{Error, Result};

/// Longest topic name accepted.
pub const MAX_TOPIC_LEN: usize = 200;
/// Longest consumer group name accepted.
pub const MAX_GROUP_LEN: usize = 100;
/// Longest header name accepted, in bytes.
pub const MAX_HEADER_NAME_LEN: usize = 255;
/// Prefix of topic and group names reserved for mq's own use.
pub const RESERVED_PREFIX: &str = "__mq";

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn check_name(field: &'static str, name: &str, max: usize) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(field, name, "must not be empty"));
    }
    if name.len() > max {
        return Err(Error::invalid(
            field,
            name,
            format!("is {} characters long, the maximum is {max}", name.len()),
        ));
    }
    if let Some(bad) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(Error::invalid(
            field,
            name,
            format!("contains {bad:?}; only A-Z a-z 0-9 . _ - are allowed"),
        ));
    }
    Ok(())
}

/// Checks a user topic name: `[A-Za-z0-9._-]{1,200}`, not starting with `__mq`.
///
/// ```
/// use mq_core::message::validate_topic;
/// assert!(validate_topic("orders.created").is_ok());
/// assert!(validate_topic("orders/created").is_err());
/// assert!(validate_topic("__mq.delay").is_err());
/// ```
pub fn validate_topic(topic: &str) -> Result<()> {
    check_name("topic", topic, MAX_TOPIC_LEN)?;
    if topic.starts_with(RESERVED_PREFIX) {
        return Err(Error::invalid(
            "topic",
            topic,
            format!("names starting with {RESERVED_PREFIX} are reserved for mq"),
        ));
    }
    Ok(())
}

/// Checks a topic name the runtime derives from user names: internal
/// topics (`__mq.retry.<group>.<topic>`) and dead-letter topics
/// (`<topic>.dlq`) may be longer than a user topic.
pub(crate) fn validate_any_topic(topic: &str) -> Result<()> {
    check_name("topic", topic, MAX_TOPIC_LEN + MAX_GROUP_LEN + 32)
}

/// Checks a group name the runtime uses for itself (`__mq.dlq`, ...).
pub(crate) fn validate_any_group(group: &str) -> Result<()> {
    check_name("group", group, MAX_GROUP_LEN)
}

/// Checks a consumer group name: `[A-Za-z0-9._-]{1,100}`, not starting with `__mq`.
pub fn validate_group(group: &str) -> Result<()> {
    check_name("group", group, MAX_GROUP_LEN)?;
    if group.starts_with(RESERVED_PREFIX) {
        return Err(Error::invalid(
            "group",
            group,
            format!("names starting with {RESERVED_PREFIX} are reserved for mq"),
        ));
    }
    Ok(())
}

/// Whether a header name is reserved for the SDK (`mq-*`, `traceparent`, `tracestate`).
pub fn is_reserved_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("mq-") || lower == "traceparent" || lower == "tracestate"
}

/// Checks a user header name: 1-255 bytes, no control characters, not reserved.
pub fn validate_header_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("header name", name, "must not be empty"));
    }
    if name.len() > MAX_HEADER_NAME_LEN {
        return Err(Error::invalid(
            "header name",
            name,
            format!(
                "is {} bytes long, the maximum is {MAX_HEADER_NAME_LEN}",
                name.len()
            ),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "header name",
            name,
            "contains a control character",
        ));
    }
    if is_reserved_header(name) {
        return Err(Error::invalid(
            "header name",
            name,
            "mq-*, traceparent and tracestate are reserved for the SDK",
        ));
    }
    Ok(())
}

/// The forms a topic or group name is accepted in, the same everywhere
/// ([`Message::new`](crate::Message::new), [`Client::consumer`](crate::Client::consumer),
/// ...): `&str`, `String`, `&String`, `Arc<str>`, `&Arc<str>`, `Box<str>`
/// and `Cow<str>`. An `Arc<str>` is taken without copying.
///
/// ```
/// use std::sync::Arc;
/// use mq_core::Message;
/// let owned = String::from("orders");
/// let shared: Arc<str> = Arc::from("orders");
/// for message in [
///     Message::new("orders", "x"),
///     Message::new(&owned, "x"),
///     Message::new(owned.clone(), "x"),
///     Message::new(&shared, "x"),
/// ] {
///     assert_eq!(message.topic(), "orders");
/// }
/// ```
pub trait IntoName {
    /// The name as the shared string messages hold.
    fn into_name(self) -> Arc<str>;
}

impl IntoName for &str {
    fn into_name(self) -> Arc<str> {
        Arc::from(self)
    }
}

impl IntoName for String {
    fn into_name(self) -> Arc<str> {
        Arc::from(self)
    }
}

impl IntoName for &String {
    fn into_name(self) -> Arc<str> {
        Arc::from(self.as_str())
    }
}

impl IntoName for Arc<str> {
    fn into_name(self) -> Arc<str> {
        self
    }
}

impl IntoName for &Arc<str> {
    fn into_name(self) -> Arc<str> {
        self.clone()
    }
}

impl IntoName for Box<str> {
    fn into_name(self) -> Arc<str> {
        Arc::from(self)
    }
}

impl IntoName for std::borrow::Cow<'_, str> {
    fn into_name(self) -> Arc<str> {
        Arc::from(self.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert!(validate_topic("a").is_ok());
        assert!(validate_topic(&"a".repeat(200)).is_ok());
        assert!(validate_topic(&"a".repeat(201)).is_err());
        assert!(validate_topic("").is_err());
        assert!(validate_topic("café").is_err());
        assert!(validate_topic("a b").is_err());
        assert!(validate_topic("__mqx").is_err());
        assert!(validate_any_topic("__mq.delay.1000").is_ok());
    }

    #[test]
    fn groups() {
        assert!(validate_group("billing-v2").is_ok());
        assert!(validate_group(&"g".repeat(101)).is_err());
        assert!(validate_group("__mq.delay").is_err());
    }

    #[test]
    fn headers() {
        assert!(validate_header_name("content-type").is_ok());
        assert!(validate_header_name("名前").is_ok());
        assert!(validate_header_name("MQ-attempt").is_err());
        assert!(validate_header_name("traceparent").is_err());
        assert!(validate_header_name("a\nb").is_err());
        assert!(validate_header_name("").is_err());
    }
}
