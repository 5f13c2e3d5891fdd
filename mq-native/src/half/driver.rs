//! The half-message SPI of the native driver.

use std::sync::Arc;
use std::time::SystemTime;

use mq_core::driver::clock::epoch_micros;
use mq_core::driver::{DriverHalfChecks, HalfOutcome, HalfToken};
use mq_core::message::validate_group;
use mq_core::{Error, Message, MessageId, Receipt, Result};

use super::checks::NativeHalfChecks;
use super::engine::Form;
use super::record::{Resolution, DONE_RECORD_LEN};
use super::store::Lookup;
use super::token;
use crate::driver::{durable, NativeDriver};
use crate::engine::Item;
use crate::log::batch;
use crate::log::LogReader;

impl NativeDriver {
    /// Stores `message` prepared for producer group `group`.
    pub(crate) async fn prepare_half(
        &self,
        group: &str,
        mut message: Message,
    ) -> Result<(Receipt, HalfToken)> {
        self.check_open()?;
        validate_group(group)?;
        if message.id().is_none() {
            message = message.with_id(MessageId::new());
        }
        // Refused now if its commit could not be written, before the
        // caller runs a local transaction on the strength of it.
        let commit_size =
            batch::HEADER_LEN + batch::message_record_len(&message, true) + DONE_RECORD_LEN;
        let limit = (self.engine().options.segment_bytes as usize).min(batch::MAX_BATCH_LEN);
        if commit_size > limit {
            return Err(Error::TooLarge {
                size: commit_size,
                limit,
            });
        }
        // The destination is created (or refused, with auto_create off)
        // at prepare time, as a send would: not first found missing at
        // commit, after the local transaction committed.
        let Some(Item::Message {
            partition, message, ..
        }) = self.items(vec![message]).await?.pop()
        else {
            return Err(crate::error::backend(
                "preparing a half message made no item",
            ));
        };
        let id = message.id().unwrap_or_default();
        let group: Arc<str> = Arc::from(group);
        let item = Item::Half {
            group: group.clone(),
            partition,
            message,
        };
        let appended = self.engine().append(vec![item], true)?;
        let seq = appended
            .half_seqs
            .first()
            .copied()
            .ok_or_else(|| crate::error::backend("the half store numbered nothing"))?;
        let receipt = durable(appended)
            .await?
            .pop()
            .ok_or_else(|| crate::error::backend("a half message got no receipt"))?;
        Ok((receipt, token::encode(seq, id, &group)))
    }

    /// Commits, rolls back or (unknown) reschedules the half message of
    /// `token`.
    pub(crate) async fn settle_half(
        &self,
        group: &str,
        token: HalfToken,
        outcome: HalfOutcome,
    ) -> Result<()> {
        self.check_open()?;
        let seq = token::decode(&token, group)?;
        let engine = self.engine().clone();
        let lookup = engine.half.lock().lookup(seq);
        let entry = match lookup {
            Lookup::Unknown => return Err(unknown_seq(seq)),
            Lookup::Unresolved(entry) if entry.id != token.id || *entry.group != *group => {
                return Err(Error::invalid(
                    "half token",
                    token.id.to_string(),
                    format!("half message {seq} is another message of another group"),
                ))
            }
            Lookup::Unresolved(entry) => Some(entry),
            Lookup::Resolving { .. } | Lookup::Resolved => None,
        };
        let resolution = match outcome {
            HalfOutcome::Commit => Resolution::Commit,
            HalfOutcome::Rollback => Resolution::Rollback,
            HalfOutcome::Unknown => {
                if entry.is_some() {
                    engine
                        .half
                        .lock()
                        .unknown(seq, epoch_micros(SystemTime::now()));
                }
                return Ok(());
            }
        };
        let done = Item::HalfDone {
            seq,
            outcome: resolution,
        };
        let items = match (entry, resolution) {
            (Some(entry), Resolution::Commit) => {
                let position = entry.position;
                let now = SystemTime::now();
                let message = self
                    .blocking(move |e| {
                        e.read_half(
                            seq,
                            position,
                            Form::CommittedAt(now),
                            &mut LogReader::default(),
                        )
                    })
                    .await?;
                let mut items = self.items(vec![message]).await?;
                items.push(done);
                items
            }
            // Rolled back, or resolved before (perhaps since the lookup):
            // the append finds out which under the writer lock, and writes
            // nothing for the latter.
            _ => vec![done],
        };
        durable(engine.append(items, true)?).await.map(drop)
    }

    /// A check stream for producer group `group`.
    pub(crate) fn open_half_checks(&self, group: &str) -> Result<Box<dyn DriverHalfChecks>> {
        self.check_open()?;
        validate_group(group)?;
        Ok(Box::new(NativeHalfChecks::open(self.clone(), group)))
    }
}

fn unknown_seq(seq: u64) -> Error {
    Error::invalid(
        "half token",
        seq.to_string(),
        "no half message has this number in this data directory",
    )
}
