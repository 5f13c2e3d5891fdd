//! Mapping lapin errors to mq error kinds a caller can act on.
//!
//! lapin's messages never contain the URL (so never the password); the
//! broker's reply texts name the object at fault, and are kept.

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::ErrorKind;
use mq_core::Error;

pub(crate) const BACKEND: &str = "rabbitmq";

/// Maps a lapin error met while doing `context`.
pub(crate) fn map(error: lapin::Error, context: &str) -> Error {
    let text = match error.kind() {
        ErrorKind::ProtocolError(amqp) => amqp.get_message().as_str().to_owned(),
        _ => String::new(),
    };
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) if text.contains("Login") => {
                Error::Rejected(format!(
                    "{context}: ACCESS_REFUSED: the broker refused the user name or password"
                ))
            }
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                Error::Rejected(format!("{context}: {text}"))
            }
            AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) if text.contains("vhost") => {
                Error::Rejected(format!(
                    "{context}: the virtual host does not exist: {text}"
                ))
            }
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => match oversize(&text) {
                Some((size, limit)) => Error::TooLarge { size, limit },
                None => Error::Rejected(format!(
                    "{context}: {text} (an object of this name was declared earlier with other \
                         arguments; delete it or use the same settings)"
                )),
            },
            AMQPErrorKind::Soft(_) => Error::Rejected(format!("{context}: {text}")),
            AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED) => Error::Connection {
                message: format!("{context}: the broker closed the connection: {text}"),
                source: None,
            },
            // A crash in the broker closes the whole connection, whatever the
            // call was; RabbitMQ 3.10 crashes so when a consumer attaches to a
            // quorum queue another client declared a moment before and the
            // queue's process is not up yet. Done again, the call succeeds.
            AMQPErrorKind::Hard(AMQPHardError::INTERNALERROR) => Error::Connection {
                message: format!(
                    "{context}: the broker closed the connection after an internal error: {text}"
                ),
                source: None,
            },
            AMQPErrorKind::Hard(_) => Error::Backend {
                backend: BACKEND,
                message: format!("{context}: {text}"),
                source: None,
            },
        },
        ErrorKind::IOError(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::MissingHeartbeatError => Error::connection(context.to_owned(), error),
        _ => Error::backend(BACKEND, context.to_owned(), error),
    }
}

/// Whether `error` means the channel or connection is gone (so the call is
/// worth repeating on a new one), not that the broker refused the request.
pub(crate) fn is_transport(error: &lapin::Error) -> bool {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => matches!(amqp.kind(), AMQPErrorKind::Hard(_)),
        ErrorKind::IOError(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::MissingHeartbeatError => true,
        _ => false,
    }
}

/// The broker's soft error kind, if `error` is one.
pub(crate) fn soft_kind(error: &lapin::Error) -> Option<AMQPSoftError> {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(kind) => Some(kind.clone()),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    }
}

/// Reads RabbitMQ's "message size N is larger than configured max size M".
pub(crate) fn oversize(text: &str) -> Option<(usize, usize)> {
    let rest = text.split("message size ").nth(1)?;
    let size = rest.split_whitespace().next()?.parse().ok()?;
    let limit = rest
        .split("max size ")
        .nth(1)?
        .trim_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some((size, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_oversize_text() {
        assert_eq!(
            oversize("PRECONDITION_FAILED - message size 5242880 is larger than configured max size 4194304"),
            Some((5_242_880, 4_194_304))
        );
        assert_eq!(oversize("PRECONDITION_FAILED - inequivalent arg"), None);
    }

    fn closed_with(kind: AMQPHardError) -> lapin::Error {
        let amqp = lapin::protocol::AMQPError::new(AMQPErrorKind::Hard(kind), "closed".into());
        lapin::Error::from(ErrorKind::ProtocolError(amqp))
    }

    #[test]
    fn a_broker_crash_is_a_lost_connection() {
        let error = map(closed_with(AMQPHardError::INTERNALERROR), "declaring");
        assert!(matches!(error, Error::Connection { .. }), "{error:?}");
        assert!(error.to_string().contains("internal error"), "{error}");
        let error = map(closed_with(AMQPHardError::COMMANDINVALID), "declaring");
        assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    }
}
