//! The [`Relay`]: publishes what applications enqueued, in order per key,
//! at least once, then deletes it (or marks it sent).
//!
//! One loop per relay: claim a batch (a claim keeps other relays off the
//! batch's keys), publish the rows whose turn it is, record the outcome and
//! let go. A full batch is followed by the next at once; otherwise the
//! relay sleeps until the database signals new rows (PostgreSQL `NOTIFY`)
//! or the poll interval passes. A crash between publishing and recording
//! republishes the batch on restart: at least once, duplicates only across
//! a crash, each with its original message id so consumers can dedup.

mod order;
mod publish;
pub(crate) mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mq_core::{Client, Error, Producer, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::record::now_ms;
use store::RelayStore;

/// What one step of the relay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Messages published.
    pub published: usize,
    /// Rows marked failed: the backend refused them for good.
    pub failed: usize,
    /// The batch was full: more rows may be waiting.
    pub full: bool,
    /// Some rows wait for an older transaction to end (PostgreSQL only).
    pub held: bool,
    /// Another relay holds every shard right now.
    pub busy: bool,
}

/// Publishes an outbox's rows to a [`Client`]. Made by
/// `SqliteOutbox::relay` or `PgOutbox::relay`; several may run against one
/// database, each key is handled by one of them at a time.
///
/// ```no_run
/// # async fn demo(relay: mq_outbox::Relay) -> mq_core::Result<()> {
/// let handle = relay.spawn();
/// // ... the application runs ...
/// handle.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct Relay {
    store: Arc<dyn RelayStore>,
    producer: Producer,
    batch_size: usize,
    poll_interval: Duration,
    keep_sent: Option<Duration>,
    cleanup_interval: Duration,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("batch_size", &self.batch_size)
            .field("poll_interval", &self.poll_interval)
            .field("keep_sent", &self.keep_sent)
            .finish_non_exhaustive()
    }
}

/// The first pause after a failure; it doubles while failures go on.
const FIRST_FAILURE_PAUSE: Duration = Duration::from_millis(50);

/// The longest pause after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The longest pause while rows wait for an older transaction: its end
/// sends no NOTIFY, so the relay looks again this often (a cheap query).
const MAX_HELD_PAUSE: Duration = Duration::from_millis(25);

/// Sent rows deleted per cleanup statement: small enough that relaying
/// goes on between chunks, however much there is to clean.
const CLEANUP_CHUNK: i64 = 10_000;

impl Relay {
    pub(crate) fn new(
        store: Arc<dyn RelayStore>,
        client: &Client,
        poll_interval: Duration,
    ) -> Self {
        Relay {
            store,
            producer: client.producer(),
            batch_size: 1000,
            poll_interval,
            keep_sent: None,
            cleanup_interval: Duration::from_secs(10),
        }
    }

    /// Rows claimed and published per step (default 1000, at least 1).
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// How often to look for rows when nothing signals them (default: 1 s
    /// on PostgreSQL, which wakes on `NOTIFY`; 20 ms on SQLite).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Keeps sent rows (marked with their send time) for `retention`, for
    /// auditing, instead of deleting them at once; a cleanup every
    /// `cleanup_interval` (default 10 s) deletes older ones.
    pub fn keep_sent(mut self, retention: Duration) -> Self {
        self.keep_sent = Some(retention);
        self
    }

    /// How often kept sent rows are cleaned up (see [`keep_sent`](Self::keep_sent)).
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Claims one batch, publishes what may go out, records it.
    pub async fn step(&self) -> Result<Step> {
        let Some(batch) = self.store.claim(self.batch_size).await? else {
            return Ok(Step {
                busy: true,
                ..Step::default()
            });
        };
        let full = batch.full;
        let (ready, held) = order::publishable(batch.rows);
        let (mut outcome, error) = publish::publish(&self.producer, &ready).await;
        outcome.keep_sent = self.keep_sent.is_some();
        // What went out is recorded even when a later run failed.
        batch.claim.finish(&outcome).await?;
        if let Some(error) = error {
            return Err(error);
        }
        Ok(Step {
            published: outcome.sent.len(),
            failed: outcome.failed.len(),
            full,
            held,
            busy: false,
        })
    }

    /// Steps until no settled row is pending; the number published. For
    /// tests and batch jobs; services [`spawn`](Self::spawn) the relay.
    pub async fn drain(&self) -> Result<usize> {
        let mut published = 0;
        let mut pause = Duration::from_millis(1);
        loop {
            let step = self.step().await?;
            published += step.published;
            if step.full {
                continue;
            }
            if !step.held && !step.busy {
                return Ok(published);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_HELD_PAUSE);
        }
    }

    /// Deletes kept sent rows older than the retention now; how many.
    /// Does nothing unless [`keep_sent`](Self::keep_sent) is set. A spawned
    /// relay cleans up by itself, a chunk at a time between its steps.
    pub async fn cleanup(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let deleted = self.cleanup_chunk().await?;
            total += deleted;
            if deleted < CLEANUP_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// One chunk of [`cleanup`](Self::cleanup).
    async fn cleanup_chunk(&self) -> Result<u64> {
        match self.keep_sent {
            Some(retention) => {
                let retention = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                let before = now_ms().saturating_sub(retention);
                self.store.cleanup(before, CLEANUP_CHUNK).await
            }
            None => Ok(0),
        }
    }

    /// Runs the relay in a background task until [`RelayHandle::shutdown`].
    pub fn spawn(self) -> RelayHandle {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(self.run(stopped));
        RelayHandle { stop, task }
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut failure_pause = FIRST_FAILURE_PAUSE;
        let mut held_pause = Duration::from_millis(1);
        let mut last_cleanup = Instant::now();
        let mut more_to_clean = false;
        while !*stop.borrow() {
            // A step is never cancelled halfway: a batch published but not
            // recorded would go out twice.
            let pause = match self.step().await {
                Ok(step) => {
                    failure_pause = FIRST_FAILURE_PAUSE;
                    if step.full {
                        held_pause = Duration::from_millis(1);
                        None
                    } else if step.held {
                        // The row's NOTIFY came already; what it waits for
                        // is an older transaction, which may send none.
                        let pause = held_pause;
                        held_pause = (held_pause * 2).min(MAX_HELD_PAUSE.min(self.poll_interval));
                        Some(pause)
                    } else {
                        held_pause = Duration::from_millis(1);
                        Some(self.poll_interval)
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, pause = ?failure_pause, "outbox relay step failed; retrying");
                    let pause = failure_pause;
                    failure_pause = (failure_pause * 2).min(MAX_BACKOFF);
                    Some(pause)
                }
            };
            if self.keep_sent.is_some()
                && (more_to_clean || last_cleanup.elapsed() >= self.cleanup_interval)
            {
                last_cleanup = Instant::now();
                more_to_clean = match self.cleanup_chunk().await {
                    Ok(deleted) => deleted == CLEANUP_CHUNK as u64,
                    Err(error) => {
                        tracing::warn!(%error, "outbox cleanup failed; retrying later");
                        false
                    }
                };
            }
            // With more to clean, the next chunk follows the next step
            // (unless the step failed: its pause stands).
            let pause = pause.filter(|_| !more_to_clean || failure_pause > FIRST_FAILURE_PAUSE);
            if let Some(pause) = pause {
                tokio::select! {
                    _ = self.store.wait(pause) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// A running relay; [`shutdown`](Self::shutdown) stops it after its current step.
#[derive(Debug)]
pub struct RelayHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RelayHandle {
    /// Stops the relay after the step it is in and waits for it.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| Error::backend(crate::error::BACKEND, "the relay task failed", e))
    }
}
