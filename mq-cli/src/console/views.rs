//! Messages and dead letters as JSON for the page.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

/// Payload text kept per message in a listing: a window of thousands of
/// large messages would otherwise make a response of gigabytes.
pub(crate) const PAYLOAD_SHOWN: usize = 4 * 1024;

/// One message.
#[derive(Serialize)]
pub(crate) struct MessageView {
    pub(crate) partition: u32,
    pub(crate) offset: Option<u64>,
    pub(crate) id: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) headers: BTreeMap<String, String>,
    /// The payload as text, invalid UTF-8 replaced, cut at
    /// [`PAYLOAD_SHOWN`] bytes.
    pub(crate) payload: String,
    pub(crate) payload_bytes: usize,
    pub(crate) payload_utf8: bool,
    pub(crate) payload_cut: bool,
    pub(crate) published_at: Option<String>,
}

impl MessageView {
    pub(crate) fn new(partition: u32, offset: Option<u64>, message: &mq::Message) -> Self {
        let bytes = message.payload();
        let shown = &bytes[..bytes.len().min(PAYLOAD_SHOWN)];
        MessageView {
            partition,
            offset,
            id: message.id().map(|id| id.to_string()),
            key: message.key().map(str::to_owned),
            headers: message
                .headers()
                .iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            payload: String::from_utf8_lossy(shown).into_owned(),
            payload_bytes: bytes.len(),
            payload_utf8: std::str::from_utf8(bytes).is_ok(),
            payload_cut: shown.len() < bytes.len(),
            published_at: message.published_at().map(time_text),
        }
    }
}

/// A dead letter: the message with why it is there.
#[derive(Serialize)]
pub(crate) struct LetterView {
    #[serde(flatten)]
    pub(crate) message: MessageView,
    pub(crate) from_topic: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) attempts: Option<u32>,
    pub(crate) error: Option<String>,
    pub(crate) dead_lettered_at: Option<String>,
    pub(crate) replays: u32,
}

impl LetterView {
    pub(crate) fn new(letter: &mq::client::DeadLetterView) -> Self {
        let info = letter.info.as_ref();
        let at = info.and_then(|i| i.partition).unwrap_or(0);
        LetterView {
            message: MessageView::new(at, info.and_then(|i| i.offset), &letter.message),
            from_topic: info.map(|i| i.topic.clone()),
            group: info.and_then(|i| i.group.clone()),
            attempts: info.and_then(|i| i.attempts),
            error: info.map(|i| i.error.clone()),
            dead_lettered_at: info.and_then(|i| i.dead_lettered_at).map(time_text),
            replays: letter.replays,
        }
    }
}

/// RFC 3339 in UTC, to the millisecond.
pub(crate) fn time_text(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Whether `message` matches the browser's search `text` in `field`
/// (`key`, `header`, `payload` or, for anything else, any of them).
/// A header search `name=value` matches that header exactly; plain text
/// matches any header name or value containing it.
pub(crate) fn matches(message: &mq::Message, field: &str, text: &str) -> bool {
    if text.is_empty() {
        return true;
    }
    let key = || message.key().is_some_and(|k| k.contains(text));
    let header = || match text.split_once('=') {
        Some((name, value)) => message.headers().get(name) == Some(value),
        None => message
            .headers()
            .iter()
            .any(|(n, v)| n.contains(text) || v.contains(text)),
    };
    let payload = || String::from_utf8_lossy(message.payload()).contains(text);
    match field {
        "key" => key(),
        "header" => header(),
        "payload" => payload(),
        _ => key() || header() || payload(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_looks_where_asked() {
        let message = mq::Message::new("orders", "order 42 paid")
            .with_key("customer-7")
            .with_header("region", "eu");
        assert!(matches(&message, "key", "customer"));
        assert!(!matches(&message, "key", "42"));
        assert!(matches(&message, "payload", "42"));
        assert!(matches(&message, "header", "region=eu"));
        assert!(!matches(&message, "header", "region=us"));
        assert!(matches(&message, "header", "eu"));
        assert!(matches(&message, "any", "paid"));
        assert!(!matches(&message, "any", "refund"));
    }

    #[test]
    fn long_payloads_are_cut() {
        let message = mq::Message::new("t", vec![b'x'; PAYLOAD_SHOWN + 10]);
        let view = MessageView::new(0, Some(1), &message);
        assert!(view.payload_cut);
        assert_eq!(view.payload.len(), PAYLOAD_SHOWN);
        assert_eq!(view.payload_bytes, PAYLOAD_SHOWN + 10);
    }
}
