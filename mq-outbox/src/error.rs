//! Mapping sqlx errors onto [`mq_core::Error`], so callers act on one error type.

use mq_core::Error;

/// The backend name errors from the database carry.
pub(crate) const BACKEND: &str = "outbox";

/// Wraps a database error, naming what was being done.
///
/// Connection-level failures become [`Error::Connection`] (retryable),
/// everything else [`Error::Backend`] with the source kept.
pub(crate) fn db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |error| match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => {
            Error::connection(format!("{doing}: database unreachable"), error)
        }
        other => Error::backend(BACKEND, doing.to_owned(), other),
    }
}
