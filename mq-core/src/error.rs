//! The one error type of mq.
//!
//! Every fallible call in mq returns [`Error`]. Its variants are the kinds a
//! caller can act on: retry a [`Connection`](Error::Connection) or
//! [`Timeout`](Error::Timeout), fix the input of an [`Invalid`](Error::Invalid)
//! or [`TooLarge`](Error::TooLarge), pick another backend for an
//! [`Unsupported`](Error::Unsupported) feature. [`Error::is_retryable`] sums
//! that up for generic retry loops.

use std::time::Duration;

/// A boxed error kept as the source of a [`Error::Backend`] or
/// [`Error::Connection`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in mq.
///
/// ```
/// use mq_core::Error;
/// let err = Error::unsupported("transactions", "example");
/// assert!(!err.is_retryable());
/// assert_eq!(err.to_string(), "transactions is not supported by the example backend");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration or URL is wrong: unknown scheme or option, a bad value.
    #[error("configuration error: {0}")]
    Config(String),

    /// An argument is invalid: a topic or group name, a header, a duration.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// What was wrong (`topic`, `group`, `header name`, ...).
        field: &'static str,
        /// The offending value, shortened when long.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The message (or batch) is larger than the backend accepts.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the rejected message in bytes (payload plus headers and key).
        size: usize,
        /// The backend's limit in bytes.
        limit: usize,
    },

    /// The backend cannot do what was asked, natively or by emulation.
    #[error("{feature} is not supported by the {backend} backend")]
    Unsupported {
        /// The feature asked for.
        feature: &'static str,
        /// The backend that lacks it.
        backend: &'static str,
    },

    /// The broker could not be reached, or the connection broke.
    #[error("connection error: {message}")]
    Connection {
        /// What failed, without secrets.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// An operation did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// The broker refused the request (authorization, unknown topic, quota, ...).
    #[error("rejected by the broker: {0}")]
    Rejected(String),

    /// The client, producer, consumer or transaction was closed.
    #[error("closed: {0}")]
    Closed(&'static str),

    /// A payload or header could not be encoded or decoded. For JSON, where
    /// in the payload it went wrong (1-based, as serde reports it).
    #[error("codec error: {message}")]
    Codec {
        /// What was wrong.
        message: String,
        /// The line of a decoding error, where the format has lines.
        line: Option<usize>,
        /// The column of a decoding error, where the format has lines.
        column: Option<usize>,
        /// The codec's own error.
        #[source]
        source: Option<BoxError>,
    },

    /// Any other backend failure; the source is kept.
    #[error("{backend} backend error: {message}")]
    Backend {
        /// Which backend failed.
        backend: &'static str,
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// Builds an [`Error::Invalid`], shortening long values so errors stay readable.
    pub fn invalid(field: &'static str, value: impl AsRef<str>, reason: impl Into<String>) -> Self {
        let value = value.as_ref();
        let value = match value.char_indices().nth(64) {
            Some((cut, _)) => format!("{}…", &value[..cut]),
            None => value.to_owned(),
        };
        Error::Invalid {
            field,
            value,
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Codec`] without a position.
    pub fn codec(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Codec {
            message: message.into(),
            line: None,
            column: None,
            source: Some(source.into()),
        }
    }

    /// An [`Error::Codec`] from serde_json, keeping its line and column.
    ///
    /// ```
    /// use mq_core::{Error, Message};
    /// let bad = Message::new("orders", "{\n  \"id\": oops }");
    /// match bad.payload_json::<serde_json::Value>() {
    ///     Err(Error::Codec { line, column, .. }) => assert_eq!((line, column), (Some(2), Some(9))),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn json(error: serde_json::Error) -> Self {
        let position = (error.line() > 0).then(|| (error.line(), error.column()));
        Error::Codec {
            message: error.to_string(),
            line: position.map(|(line, _)| line),
            column: position.map(|(_, column)| column),
            source: Some(Box::new(error)),
        }
    }

    /// Builds an [`Error::Unsupported`].
    pub fn unsupported(feature: &'static str, backend: &'static str) -> Self {
        Error::Unsupported { feature, backend }
    }

    /// Builds an [`Error::Connection`] with a source.
    pub fn connection(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Connection {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Builds an [`Error::Backend`] with a source.
    pub fn backend(
        backend: &'static str,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            backend,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Whether trying the same call again later may succeed.
    ///
    /// True for connection failures, time-outs and backend failures; false
    /// for bad input, unsupported features, size limits, closed handles and
    /// explicit broker refusals.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Connection { .. } | Error::Timeout(_) | Error::Backend { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_shortens_long_values() {
        let long = "x".repeat(300);
        let Error::Invalid { value, .. } = Error::invalid("topic", &long, "too long") else {
            panic!("expected Invalid");
        };
        assert_eq!(value.chars().count(), 65);
        assert!(value.ends_with('…'));
    }

    #[test]
    fn retryable_kinds() {
        assert!(Error::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(Error::connection("refused", "io").is_retryable());
        assert!(!Error::Rejected("no".into()).is_retryable());
        assert!(!Error::Closed("producer").is_retryable());
        assert!(!Error::TooLarge { size: 2, limit: 1 }.is_retryable());
    }
}
