//! The delay promoter: moves due messages from the topics' schedules
//! (sorted sets scored by due time) into their streams.
//!
//! Every client that publishes delayed messages or subscribes runs one, so
//! delays survive any process: the schedule lives in Redis, and the move is
//! one atomic script that any number of promoters may run at once. It looks
//! at the earliest due time and sleeps until then, or for `delay_poll` at
//! most (another client may schedule something sooner).

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, SystemTime};

use mq_core::driver::clock::epoch_millis;
use mq_core::driver::Backoff;
use redis::Value;

use crate::codec::{array_of, int_of, text_of};
use crate::connection::Inner;

/// Most messages one script run moves, so one run never stalls Redis long.
const PROMOTE_BATCH: usize = 512;

/// Least pause after failed promotions in a row (at least `delay_poll`):
/// a server that is down or loading is not asked again at once.
const FAILURE_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(200), Duration::from_millis(1600));

impl Inner {
    /// Starts this driver's promoter once.
    pub(crate) fn start_promoter(&self) {
        let mut promoter = self.promoter.lock();
        if promoter.is_some() || self.closed.load(Ordering::Acquire) {
            return;
        }
        *promoter = Some(tokio::spawn(run(self.me.clone())));
    }

    /// Moves due messages; returns how many moved and the next due time.
    async fn promote(&self) -> redis::RedisResult<(usize, Option<u64>)> {
        let reply: Value = self
            .scripts
            .promote
            .script
            .key(self.keys.delay_index())
            .arg(epoch_millis(SystemTime::now()))
            .arg(PROMOTE_BATCH)
            .arg(self.keys.prefix())
            .invoke_async(&mut self.conn())
            .await?;
        let items = array_of(&reply).unwrap_or_default();
        let moved = items.first().and_then(int_of).unwrap_or(0).max(0) as usize;
        let next = items
            .get(1)
            .and_then(text_of)
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|t| *t >= 0.0)
            .map(|t| t as u64);
        Ok((moved, next))
    }
}

async fn run(inner: Weak<Inner>) {
    let mut failures = 0u32;
    loop {
        // Holds the driver only while working, so a dropped driver stops it.
        let pause = {
            let Some(inner) = inner.upgrade() else { return };
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            let poll = inner.options.delay_poll;
            match inner.promote().await {
                Ok((moved, _)) if moved >= PROMOTE_BATCH => Duration::ZERO,
                Ok((_, next)) => {
                    failures = 0;
                    let now = epoch_millis(SystemTime::now());
                    next.map_or(poll, |due| Duration::from_millis(due.saturating_sub(now)))
                        .min(poll)
                }
                Err(error) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(%error, "promoting delayed messages failed; retrying");
                    }
                    poll.max(FAILURE_BACKOFF.after(failures))
                }
            }
        };
        tokio::time::sleep(pause).await;
    }
}
