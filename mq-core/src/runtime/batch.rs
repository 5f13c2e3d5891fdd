//! Batch consumption: deliveries are spread over lanes by key (so a key stays
//! in one lane, in order) and each lane hands its handler up to N messages or
//! what arrived within T.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::driver::partition_for_key;
use crate::error::Result;
use crate::message::Delivery;
use crate::runtime::handler::catch_panic;
use crate::runtime::run::{drain, fetch_loop, fetch_while_workers_live, Shared};
use crate::runtime::{BatchHandler, HandlerError};

/// How [`run_batch`](crate::ConsumerBuilder::run_batch) cuts batches: at
/// most `max_messages`, or what arrived within `max_wait` of a batch's
/// first message, whichever comes first.
///
/// ```
/// use std::time::Duration;
/// use mq_core::BatchOptions;
/// let options = BatchOptions::new(500).with_max_wait(Duration::from_millis(20));
/// assert_eq!(options.max_messages(), 500);
/// assert_eq!(BatchOptions::default().max_wait(), Duration::from_millis(100));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOptions {
    max_messages: usize,
    max_wait: Duration,
}

impl Default for BatchOptions {
    /// 100 messages or 100 ms.
    fn default() -> Self {
        BatchOptions::new(100)
    }
}

impl BatchOptions {
    /// Batches of up to `max_messages` (at least 1 when run), cut after 100 ms.
    pub fn new(max_messages: usize) -> Self {
        BatchOptions {
            max_messages,
            max_wait: Duration::from_millis(100),
        }
    }

    /// How long a batch waits for more after its first message; any
    /// duration, `Duration::MAX` included (a batch is then cut by size only).
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// How long a batch waits for more after its first message.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The most messages in one batch.
    pub fn max_messages(&self) -> usize {
        self.max_messages
    }
}

pub(crate) async fn run_batches(
    shared: Arc<Shared>,
    handler: Arc<dyn BatchHandler>,
    batch: BatchOptions,
) -> Result<()> {
    let lanes = shared.settings.concurrency.max(1);
    let mut senders = Vec::with_capacity(lanes);
    let mut workers = JoinSet::new();
    for _ in 0..lanes {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        workers.spawn(lane(shared.clone(), handler.clone(), rx, batch));
    }
    let mut next_keyless = 0usize;
    // Lanes drop buffered deliveries of revoked partitions as they reach them.
    let fetching = fetch_loop(
        shared.clone(),
        |batch| {
            for d in batch {
                let lane = match d.message.key() {
                    Some(key) => partition_for_key(key, lanes as u32) as usize,
                    None => {
                        next_keyless = (next_keyless + 1) % lanes;
                        next_keyless
                    }
                };
                let _ = senders[lane].send(d);
            }
        },
        |_| {},
    );
    let fetched = fetch_while_workers_live(fetching, &mut workers).await;
    drop(senders);
    let drained = drain(&shared, workers).await;
    fetched.and(drained)
}

async fn lane(
    shared: Arc<Shared>,
    handler: Arc<dyn BatchHandler>,
    mut rx: mpsc::UnboundedReceiver<Delivery>,
    settings: BatchOptions,
) {
    let mut stop = shared.stop.clone();
    loop {
        let first = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            next = rx.recv() => match next { Some(d) => d, None => return },
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::from_std(crate::driver::clock::deadline_after(
            settings.max_wait(),
        ));
        while batch.len() < settings.max_messages() {
            match rx.try_recv() {
                Ok(d) => {
                    batch.push(d);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            tokio::select! {
                next = rx.recv() => match next { Some(d) => batch.push(d), None => break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let (revoked, batch): (Vec<Delivery>, Vec<Delivery>) = batch
            .into_iter()
            .partition(|d| shared.settler.revoked.contains(&d.token));
        shared.dropped(&revoked);
        if batch.is_empty() {
            continue;
        }
        if !handle_batch(&shared, handler.as_ref(), &batch).await {
            return;
        }
        shared.finished(batch.iter().map(|d| &d.token)).await;
    }
}

/// Handles one batch to completion; false when stopping before it was settled.
async fn handle_batch(shared: &Shared, handler: &dyn BatchHandler, batch: &[Delivery]) -> bool {
    let settler = &shared.settler;
    let mut attempt = batch.iter().map(Delivery::attempt).max().unwrap_or(1);
    let mut retried: Option<Vec<Delivery>> = None;
    loop {
        let current = retried.as_deref().unwrap_or(batch);
        let outcome = catch_panic(handler.handle_batch(current)).await;
        let mut settle_errors = Vec::new();
        match outcome {
            Ok(()) => {
                for d in current {
                    if let Err(e) = settler.ack_buffered(d).await {
                        settle_errors.push(e);
                    }
                }
            }
            Err(HandlerError::Reject { reason }) => {
                for d in current {
                    if let Err(e) = settler.dead_letter(d, reason.clone()).await {
                        settle_errors.push(e);
                    }
                }
            }
            Err(HandlerError::Retry { error, after }) => {
                let pause = settler.pause(after, attempt);
                if shared.settings.ordered && !settler.policy.exhausted(attempt) {
                    if shared.pause_or_stop(pause).await {
                        return false;
                    }
                    attempt += 1;
                    retried = Some(current.iter().map(|d| d.with_attempt(attempt)).collect());
                    continue;
                }
                for d in current {
                    let result = if settler.policy.exhausted(attempt) {
                        settler.dead_letter(d, error.to_string()).await
                    } else {
                        settler.retry(d, pause, error.to_string()).await
                    };
                    if let Err(e) = result {
                        settle_errors.push(e);
                    }
                }
            }
        }
        for error in settle_errors {
            tracing::warn!(%error, "settling a batch message failed; it will be redelivered");
        }
        return true;
    }
}
