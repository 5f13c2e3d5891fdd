//! Mapping engine failures onto `mq_core::Error`.

use std::fmt::Display;
use std::path::Path;

use mq_core::Error;

/// The backend name used in errors.
pub const BACKEND: &str = "native";

/// An I/O failure while doing `what`.
pub fn io_error(what: impl Into<String>, source: std::io::Error) -> Error {
    Error::backend(BACKEND, what, source)
}

/// Corrupt data at byte `offset` of `file`.
pub fn corrupt(file: &Path, offset: u64, why: impl Display) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!("corrupt data in {} at byte {offset}: {why}", file.display()),
        source: None,
    }
}

/// An engine failure without an underlying error.
pub fn backend(message: impl Into<String>) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: message.into(),
        source: None,
    }
}
