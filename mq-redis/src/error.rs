//! Turning redis-rs errors into `mq_core::Error` kinds a caller can act on.
//!
//! Messages name the operation and the error category, never the URL (it
//! may hold the password); the redis-rs error is kept as the source only
//! where its text comes from the server or the socket, which do not echo
//! credentials.

use mq_core::Error;
use redis::{ErrorKind, RedisError, ServerErrorKind};

pub(crate) const BACKEND: &str = "redis";

/// Whether the error is an authentication refusal (`NOAUTH`, `WRONGPASS`, ...).
pub(crate) fn is_auth(e: &RedisError) -> bool {
    if e.kind() == ErrorKind::AuthenticationFailed {
        return true;
    }
    matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
}

/// Whether retrying after a reconnect may succeed: the connection broke,
/// timed out, or the server is loading its data set after a restart.
pub(crate) fn is_transient(e: &RedisError) -> bool {
    if is_auth(e) {
        return false;
    }
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::NoScript
                    | ServerErrorKind::MasterDown
            )
        )
        || matches!(e.code(), Some("LOADING"))
}

/// Maps an error of operation `what` (e.g. "publish") to an mq error.
pub(crate) fn map(e: RedisError, what: &str) -> Error {
    if is_auth(&e) {
        return Error::Rejected(format!(
            "{what}: authentication failed ({}); check the user and password of the redis URL",
            e.code().unwrap_or("AUTH")
        ));
    }
    if matches!(e.kind(), ErrorKind::Server(ServerErrorKind::NoPerm)) || e.code() == Some("NOPERM")
    {
        return Error::Rejected(format!(
            "{what}: the redis user lacks a permission ({})",
            detail(&e)
        ));
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        let why = if e.is_connection_refusal() {
            "connection refused"
        } else if e.is_timeout() {
            "timed out"
        } else {
            "connection broken"
        };
        return Error::connection(format!("{what}: redis {why}"), e);
    }
    if e.kind() == ErrorKind::InvalidClientConfig {
        // redis-rs describes the URL problem without echoing the URL.
        return Error::Config(format!(
            "{what}: invalid redis URL or client setting: {}",
            detail(&e)
        ));
    }
    if e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) {
        return Error::Rejected(format!(
            "{what}: the redis server is read-only (a replica?)"
        ));
    }
    if let Some(code) = e.code() {
        if code == "OOM" {
            return Error::Rejected(format!("{what}: redis is out of memory (maxmemory)"));
        }
    }
    Error::backend(BACKEND, format!("{what} failed: {}", e.category()), e)
}

fn detail(e: &RedisError) -> String {
    e.detail().unwrap_or_else(|| e.category()).to_owned()
}

/// A reply that does not have the shape the driver expects.
pub(crate) fn unexpected(what: &str) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!("unexpected reply from redis to {what}"),
        source: None,
    }
}
