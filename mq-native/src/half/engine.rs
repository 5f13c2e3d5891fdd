//! Reading prepared messages back from the log.

use std::path::Path;
use std::time::SystemTime;

use mq_core::{Message, Result};

use crate::engine::Engine;
use crate::error::corrupt;
use crate::log::batch::{self, Record};
use crate::log::LogReader;

/// Which form of a prepared message to read.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Form {
    /// As it was prepared, for a checker.
    Prepared,
    /// As committing it at this time delivers it.
    CommittedAt(SystemTime),
}

impl Engine {
    /// Unresolved prepared (half) messages, every producer group's.
    pub fn half_pending(&self) -> usize {
        self.half.lock().len()
    }

    /// Half message `seq`, whose record is in the batch at `position`.
    /// Blocks on a read of the log.
    pub(crate) fn read_half(
        &self,
        seq: u64,
        position: u64,
        form: Form,
        reader: &mut LogReader,
    ) -> Result<Message> {
        let bytes = reader.batch_at(&self.log, position)?;
        let at = |e| corrupt(Path::new("log"), position, e);
        let parsed = batch::parse_checked(&bytes).map_err(at)?;
        for record in parsed.records() {
            if let Record::Half(h) = record.map_err(at)? {
                if h.seq == seq {
                    return match form {
                        Form::Prepared => h.to_message(&bytes),
                        Form::CommittedAt(now) => h.to_committed(&bytes, now),
                    }
                    .map_err(at);
                }
            }
        }
        Err(corrupt(
            Path::new("log"),
            position,
            format!("half message {seq} is not in its batch"),
        ))
    }
}
