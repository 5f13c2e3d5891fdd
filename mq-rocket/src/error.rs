//! Client errors as `mq_core::Error`s a caller can act on.
//!
//! The client's `Display` is redacted to a public message; what happened is
//! in the error's descriptor (a stable code such as
//! `transport.connection.failed`), the broker's response code and the
//! source chain, which the messages here are built from.

use std::time::Duration;

use mq_core::Error;
use rocketmq_client_rust::ClientError;
use rocketmq_error::{ComponentId, ErrorClass};

/// The backend name in errors and telemetry.
pub(crate) const BACKEND: &str = "rocketmq";

/// Broker response codes the driver tells apart (RocketMQ's `ResponseCode`).
pub(crate) mod code {
    /// The topic does not exist.
    pub(crate) const TOPIC_NOT_EXIST: i32 = 17;
    /// The consumer group has no offset for the queue.
    pub(crate) const QUERY_NOT_FOUND: i32 = 22;
    /// The group's subscription does not exist.
    pub(crate) const SUBSCRIPTION_GROUP_NOT_EXIST: i32 = 26;
    /// The message is larger than the broker takes.
    pub(crate) const MESSAGE_ILLEGAL: i32 = 13;
    /// The broker failed internally.
    pub(crate) const SYSTEM_ERROR: i32 = 1;
    /// The broker's flow control refused the request (its page cache or
    /// send queue is full).
    pub(crate) const SYSTEM_BUSY: i32 = 2;
    /// The broker cannot serve the request right now.
    pub(crate) const SERVICE_NOT_AVAILABLE: i32 = 14;
}

/// Whether the broker refused a request only for now (busy, not
/// available), so sending it again later may work.
pub(crate) fn is_busy(error: &ClientError) -> bool {
    matches!(
        error.broker_response_code(),
        Some(code::SYSTEM_ERROR | code::SYSTEM_BUSY | code::SERVICE_NOT_AVAILABLE)
    )
}

/// What a client error says, in full: code, broker code and sources.
pub(crate) fn describe(error: &ClientError) -> String {
    let mut text = format!("{} ({})", error, error.descriptor().code().as_str());
    if let Some(code) = error.broker_response_code() {
        text.push_str(&format!(", broker code {code}"));
    }
    if let Some(addr) = error.broker_addr() {
        text.push_str(&format!(", broker {addr}"));
    }
    let mut source = std::error::Error::source(error);
    let mut depth = 0;
    while let Some(s) = source {
        if depth == 4 {
            break;
        }
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
        depth += 1;
    }
    text
}

/// Maps a client error met while doing `what`.
pub(crate) fn map(error: ClientError, what: &str) -> Error {
    let descriptor = error.descriptor();
    let detail = describe(&error);
    if let Some(code) = error.broker_response_code() {
        return match code {
            code::MESSAGE_ILLEGAL => Error::Rejected(format!(
                "{what}: the broker refused the message (too large or malformed): {detail}"
            )),
            // Retryable: the runtime and callers may send again.
            code::SYSTEM_ERROR | code::SYSTEM_BUSY | code::SERVICE_NOT_AVAILABLE => {
                Error::connection(format!("{what}: the broker is busy: {detail}"), error)
            }
            _ => Error::Rejected(format!("{what}: {detail}")),
        };
    }
    if descriptor.class() == ErrorClass::TIMEOUT {
        return Error::Timeout(TIMEOUT_HINT);
    }
    if descriptor.class() == ErrorClass::UNAVAILABLE
        || descriptor.component() == ComponentId::TRANSPORT
    {
        return Error::connection(format!("{what}: {detail}"), error);
    }
    Error::backend(BACKEND, format!("{what}: {detail}"), error)
}

/// What [`Error::Timeout`] reports when the client timed out on its own schedule.
const TIMEOUT_HINT: Duration = Duration::from_secs(10);

/// Whether the broker answered that the topic or group is unknown.
pub(crate) fn is_missing(error: &ClientError) -> bool {
    matches!(
        error.broker_response_code(),
        Some(code::TOPIC_NOT_EXIST | code::QUERY_NOT_FOUND | code::SUBSCRIPTION_GROUP_NOT_EXIST)
    ) || error.descriptor().code().as_str().contains("not_found")
        || error.descriptor().code().as_str().contains("not_exist")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let e = map(ClientError::timeout("send", 10), "publish");
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        let e = map(
            ClientError::broker_operation_failed("SEND", 16, "no"),
            "publish",
        );
        assert!(
            matches!(e, Error::Rejected(ref m) if m.contains("16")),
            "{e}"
        );
    }
}
