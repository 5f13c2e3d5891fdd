//! The housekeeping thread: promotes due delays, writes checkpoints and
//! applies retention.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mq_core::driver::clock::epoch_micros;
use mq_core::Result;

use super::append::Item;
use super::{saturating_after, Engine};
use crate::error::{corrupt, io_error};
use crate::log::batch::{self, Record};
use crate::log::LogReader;

/// Delays promoted per batch (one atomic append each).
const PROMOTE_BATCH: usize = 512;
/// Delays are appended to their topic this long before they are due, as
/// records consumers skip until then: the append, and its fsync under
/// `fsync=always`, is done by the due time instead of delaying delivery.
const PROMOTE_AHEAD_US: u64 = 100_000;
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(5);

impl Engine {
    pub(super) fn run_housekeeper(self: Arc<Self>) {
        // Saturating: a huge interval from the URL means "only at close".
        let mut next_checkpoint =
            saturating_after(Instant::now(), self.options.checkpoint_interval);
        let mut next_retention = Instant::now() + RETENTION_EVERY;
        let mut reader = LogReader::default();
        loop {
            if self.writer.lock().shutdown {
                return;
            }
            if let Err(e) = self.promote_due(&mut reader) {
                tracing::warn!(error = %e, "native engine: promoting due delays failed; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            let now = Instant::now();
            if now >= next_checkpoint {
                if let Err(e) = self.checkpoint() {
                    tracing::warn!(error = %e, "native engine: checkpoint failed");
                }
                next_checkpoint =
                    saturating_after(Instant::now(), self.options.checkpoint_interval);
            }
            if now >= next_retention {
                if let Err(e) = self.enforce_retention() {
                    tracing::warn!(error = %e, "native engine: retention failed");
                }
                next_retention = Instant::now() + RETENTION_EVERY;
            }
            let mut wake_at = next_checkpoint.min(next_retention);
            {
                let delay = self.delay.lock();
                if let Some(due) = delay.wheel.next_due_us() {
                    let wait = Duration::from_micros(
                        due.saturating_sub(epoch_micros(SystemTime::now()) + PROMOTE_AHEAD_US),
                    );
                    wake_at = wake_at.min(saturating_after(Instant::now(), wait));
                }
            }
            let mut woken = self.house.lock();
            if !*woken {
                self.house_cv.wait_until(&mut woken, wake_at);
            }
            *woken = false;
        }
    }

    /// Promotes the delays due now, as the housekeeping thread does: for
    /// an engine opened without that thread (a simulation).
    #[doc(hidden)]
    pub fn promote_due_now(&self) -> Result<()> {
        self.promote_due(&mut LogReader::default())
    }

    /// Appends every delayed message due within [`PROMOTE_AHEAD_US`] to its
    /// topic, hidden until its due time, each in one batch with its
    /// delay-done record.
    fn promote_due(&self, reader: &mut LogReader) -> Result<()> {
        loop {
            let due = {
                let mut delay = self.delay.lock();
                if delay.wheel.needs_refill() {
                    let window = delay.wheel.begin_refill();
                    delay
                        .load_wheel(Some(window))
                        .map_err(|e| io_error("loading pending delays", e))?;
                }
                let mut due = delay
                    .wheel
                    .advance(epoch_micros(SystemTime::now()) + PROMOTE_AHEAD_US);
                due.retain(|seq| !delay.done.contains(*seq));
                due.sort_unstable();
                due
            };
            if due.is_empty() {
                return Ok(());
            }
            for chunk in due.chunks(PROMOTE_BATCH) {
                if let Err(e) = self.promote(chunk, reader) {
                    // Put them back: they are retried on the next round.
                    let mut delay = self.delay.lock();
                    let now = epoch_micros(SystemTime::now());
                    for seq in chunk {
                        delay.wheel.insert(now, *seq);
                    }
                    return Err(e);
                }
            }
        }
    }

    fn promote(&self, seqs: &[u64], reader: &mut LogReader) -> Result<()> {
        let mut items = Vec::with_capacity(seqs.len() * 2);
        for &seq in seqs {
            let entry = self
                .delay
                .lock()
                .index
                .get(seq)
                .map_err(|e| io_error("reading the delay index", e))?;
            let Some(entry) = entry else { continue };
            let bytes = reader.batch_at(&self.log, entry.position)?;
            let parsed = batch::parse_checked(&bytes)
                .map_err(|e| corrupt(Path::new("log"), entry.position, e))?;
            let mut found = None;
            for record in parsed.records() {
                if let Record::Message(m) =
                    record.map_err(|e| corrupt(Path::new("log"), entry.position, e))?
                {
                    if m.deliver_at_us.is_some() && m.offset == seq {
                        found = Some(m);
                        break;
                    }
                }
            }
            let Some(m) = found else {
                return Err(corrupt(
                    Path::new("log"),
                    entry.position,
                    format!("delayed message {seq} is not in its batch"),
                ));
            };
            let topic = self.topics.read().by_id(m.topic);
            if let Some(topic) = topic.filter(|t| (m.partition as usize) < t.partitions.len()) {
                let message = m
                    .to_message(topic.name.clone(), &bytes, &mut reader.keys)
                    .map_err(|e| corrupt(Path::new("log"), entry.position, e))?;
                items.push(Item::Message {
                    topic,
                    partition: m.partition,
                    message,
                    dedup: false,
                    visible_at_us: m.deliver_at_us,
                });
            }
            items.push(Item::DelayDone(seq));
        }
        let appended = self.append(items, true)?;
        if let Some(wait) = appended.wait {
            wait.blocking_recv()
                .map_err(|_| mq_core::Error::Closed("native engine"))??;
        }
        Ok(())
    }
}
