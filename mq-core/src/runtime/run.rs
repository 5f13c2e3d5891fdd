//! The consumer loop: fetch within the prefetch bound, hand deliveries to
//! workers, and shut down gracefully.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::driver::{AckToken, Backoff, TopicPartition};
use crate::error::{Error, Result};
use crate::message::Delivery;
use crate::runtime::rebalance::serve_rebalance;
use crate::runtime::receive::delivery_from_raw;
use crate::runtime::settle::{Settled, Settler};

/// Most deliveries asked of the driver in one fetch.
const MAX_FETCH: usize = 512;

/// How long the fetch loop waits for prefetch slots before it sends the
/// acks still waiting for a full batch (they hold slots too).
const HELD_BACK_FLUSH: Duration = Duration::from_millis(10);

/// Pauses between failed fetches.
const FETCH_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_millis(3_200));

/// Settings of a running consumer.
#[derive(Clone, Debug)]
pub(crate) struct RunSettings {
    pub(crate) concurrency: usize,
    pub(crate) prefetch: usize,
    pub(crate) ordered: bool,
    /// Whether one partition's records are handled one at a time in
    /// offset order (for transactional transforms), not just one key's.
    pub(crate) by_partition: bool,
    /// Whether a handled delivery was acked by its handler (inside a
    /// transaction), so the runtime sends no ack of its own.
    pub(crate) acked_by_handler: bool,
    pub(crate) shutdown_timeout: Duration,
}

/// What the fetch loop and the workers share.
pub(crate) struct Shared {
    pub(crate) settler: Arc<Settler>,
    pub(crate) settings: RunSettings,
    pub(crate) stop: watch::Receiver<bool>,
    permits: Arc<Semaphore>,
    in_flight: AtomicUsize,
    /// Whether the fetch loop waits for prefetch slots: nothing more is
    /// fetched until deliveries settle.
    held_back: AtomicBool,
    /// Woken when the fetch loop starts waiting for prefetch slots.
    pub(crate) holding_back: Notify,
    #[cfg(feature = "otel")]
    pub(crate) telemetry: Option<crate::telemetry::ProcessTelemetry>,
}

impl Shared {
    pub(crate) fn new(
        settler: Arc<Settler>,
        settings: RunSettings,
        stop: watch::Receiver<bool>,
        #[cfg(feature = "otel")] telemetry: Option<crate::telemetry::ProcessTelemetry>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            permits: Arc::new(Semaphore::new(settings.prefetch)),
            settler,
            settings,
            stop,
            in_flight: AtomicUsize::new(0),
            held_back: AtomicBool::new(false),
            holding_back: Notify::new(),
            #[cfg(feature = "otel")]
            telemetry,
        })
    }

    /// Settles what a worker finished: `acks` (taken) are acked in
    /// batches, `others` (emptied) were settled otherwise. A delivery's
    /// prefetch slot is freed once its ack has reached the broker, so the
    /// bound holds at the broker too; buffered acks are flushed when the
    /// consumer goes idle.
    pub(crate) async fn settle(&self, acks: &mut Vec<AckToken>, others: &mut Vec<AckToken>) {
        if acks.is_empty() && others.is_empty() {
            return;
        }
        let Settled {
            count,
            mut free,
            send,
        } = self.settler.settle(acks, others);
        others.clear();
        if send {
            if let Err(error) = self.settler.flush().await {
                tracing::warn!(%error, "acknowledging failed; the messages will be redelivered");
            }
            free += self.settler.releasable([]).1;
        }
        self.permits.add_permits(free);
        if self.in_flight.fetch_sub(count, Ordering::AcqRel) == count {
            self.flush_acks().await;
        }
    }

    /// Sends the acks waiting for a full batch (nothing is in flight, or
    /// fetching waits for their slots) and frees their slots.
    async fn flush_acks(&self) {
        if let Err(error) = self.settler.flush().await {
            tracing::warn!(%error, "acknowledging failed; the messages will be redelivered");
        }
        self.permits.add_permits(self.settler.releasable([]).1);
    }

    /// Called for deliveries dropped unhandled (their partition was
    /// revoked): they free their slots, and the driver redelivers them.
    pub(crate) fn dropped(&self, deliveries: &[Delivery]) {
        let (count, free) = self.settler.releasable(deliveries.iter().map(|d| &d.token));
        self.in_flight.fetch_sub(count, Ordering::AcqRel);
        self.permits.add_permits(free);
    }

    /// Whether the fetch loop waits for prefetch slots.
    pub(crate) fn is_held_back(&self) -> bool {
        self.held_back.load(Ordering::Acquire)
    }

    fn hold_back(&self, waiting: bool) {
        self.held_back.store(waiting, Ordering::Release);
        if waiting {
            self.holding_back.notify_waiters();
        }
    }

    /// Waits for `stop`, or for a pause to pass; true when stopping.
    pub(crate) async fn pause_or_stop(&self, pause: Duration) -> bool {
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return true;
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => true,
            _ = tokio::time::sleep(pause) => false,
        }
    }
}

/// Fetches while there is room under the prefetch bound and passes each
/// fetched batch to `dispatch`. Returns when stopped, or on a fatal error.
pub(crate) async fn fetch_loop(
    shared: Arc<Shared>,
    mut dispatch: impl FnMut(Vec<Delivery>),
    mut drop_buffered: impl FnMut(&[TopicPartition]),
) -> Result<()> {
    let mut stop = shared.stop.clone();
    let group = shared.settler.group.clone();
    let subscription = shared.settler.subscription.clone();
    let deadline = shared.settings.shutdown_timeout;
    let mut failures = 0u32;
    // Rebalance events are taken here, between fetches, also while the
    // prefetch bound holds fetching back; see `runtime::rebalance`.
    let mut rebalances = true;
    loop {
        let held_back = shared.permits.available_permits() == 0;
        shared.hold_back(held_back);
        let first = tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            event = subscription.rebalance(), if rebalances => {
                match event {
                    Some(event) => serve_rebalance(&shared.settler, event, deadline, &mut drop_buffered),
                    None => rebalances = false,
                }
                continue;
            }
            permit = shared.permits.clone().acquire_owned() => Some(permit),
            _ = tokio::time::sleep(HELD_BACK_FLUSH), if held_back => None,
        };
        let Some(first) = first else {
            shared.flush_acks().await;
            continue;
        };
        if held_back {
            shared.hold_back(false);
        }
        let Ok(first) = first else { return Ok(()) };
        first.forget();
        // Only this loop takes permits, so what is available stays so.
        let more = shared.permits.available_permits().min(MAX_FETCH - 1);
        let granted = match shared.permits.try_acquire_many(more as u32) {
            Ok(permits) if more > 0 => {
                permits.forget();
                1 + more
            }
            _ => 1,
        };
        let fetched = tokio::select! {
            _ = stop.wait_for(|s| *s) => {
                shared.permits.add_permits(granted);
                return Ok(());
            }
            event = subscription.rebalance(), if rebalances => {
                shared.permits.add_permits(granted);
                match event {
                    Some(event) => serve_rebalance(&shared.settler, event, deadline, &mut drop_buffered),
                    None => rebalances = false,
                }
                continue;
            }
            fetched = subscription.fetch(granted) => fetched,
        };
        match fetched {
            Ok(batch) => {
                failures = 0;
                let mut deliveries: Vec<Delivery> = batch
                    .into_iter()
                    .map(|raw| delivery_from_raw(raw, &group, None))
                    .collect();
                shared.settler.hand_out(&mut deliveries, |d| &d.token);
                let unused = granted.saturating_sub(deliveries.len());
                shared.permits.add_permits(unused);
                shared
                    .in_flight
                    .fetch_add(deliveries.len(), Ordering::AcqRel);
                dispatch(deliveries);
            }
            Err(Error::Closed(what)) => {
                shared.permits.add_permits(granted);
                tracing::debug!(what, "subscription closed");
                return Ok(());
            }
            Err(error) => {
                shared.permits.add_permits(granted);
                if !error.is_retryable() {
                    return Err(error);
                }
                failures = failures.saturating_add(1);
                let pause = FETCH_BACKOFF.after(failures);
                tracing::warn!(%error, ?pause, "fetching failed; retrying");
                if shared.pause_or_stop(pause).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Runs the fetch loop until it ends, or until a worker dies: a worker
/// that panicked outside the handler (the handler's own panics are caught)
/// held a message it will never settle, so the consumer stops and reports
/// it instead of running on with one worker less and a key stuck.
pub(crate) async fn fetch_while_workers_live(
    fetching: impl std::future::Future<Output = Result<()>>,
    workers: &mut JoinSet<()>,
) -> Result<()> {
    let died = async {
        loop {
            match workers.join_next().await {
                Some(Err(error)) if error.is_panic() => return worker_died(error),
                Some(_) => {}
                None => std::future::pending::<()>().await,
            }
        }
    };
    tokio::select! {
        fetched = fetching => fetched,
        died = died => {
            tracing::error!(%died, "a consumer worker died; stopping the consumer");
            Err(died)
        }
    }
}

fn worker_died(error: tokio::task::JoinError) -> Error {
    let panic = error.into_panic();
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    Error::Backend {
        backend: "runtime",
        message: format!(
            "a consumer worker died ({message}); its message was left unacked for redelivery"
        ),
        source: None,
    }
}

/// Waits for the workers to finish their current messages, up to the
/// shutdown deadline, then flushes acks and leaves the group. Fails when a
/// worker died meanwhile.
pub(crate) async fn drain(shared: &Shared, mut workers: JoinSet<()>) -> Result<()> {
    let deadline = shared.settings.shutdown_timeout;
    let mut died = None;
    let finished = tokio::time::timeout(deadline, async {
        while let Some(joined) = workers.join_next().await {
            if let Err(error) = joined {
                if error.is_panic() {
                    died.get_or_insert(worker_died(error));
                }
            }
        }
    })
    .await;
    if finished.is_err() {
        tracing::warn!(?deadline, "handlers did not finish before the shutdown deadline; their messages will be redelivered");
        workers.abort_all();
        while workers.join_next().await.is_some() {}
    }
    if let Err(error) = shared.settler.flush().await {
        tracing::warn!(%error, "final acknowledgement failed; the messages will be redelivered");
    }
    if let Err(error) = shared.settler.subscription.close().await {
        tracing::warn!(%error, "leaving the consumer group failed");
    }
    died.map_or(Ok(()), Err)
}

/// A running consumer. Dropping it stops the consumer without waiting;
/// [`shutdown`](Self::shutdown) stops it gracefully and waits.
#[must_use = "dropping a ConsumerHandle stops the consumer at once; keep it, then call shutdown"]
pub struct ConsumerHandle {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl ConsumerHandle {
    pub(crate) fn new(
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<Result<()>>,
    ) -> Self {
        ConsumerHandle {
            stop,
            task: Some(task),
        }
    }

    /// Stops fetching, lets in-flight handlers finish (up to the shutdown
    /// timeout), commits what finished and leaves the group. Messages not
    /// finished are redelivered to the group later.
    pub async fn shutdown(mut self) -> Result<()> {
        self.stop.send_replace(true);
        self.join_inner().await
    }

    /// Waits until the consumer stops by itself (a fatal error) or is shut down elsewhere.
    pub async fn join(mut self) -> Result<()> {
        self.join_inner().await
    }

    /// Whether the consumer has stopped.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    async fn join_inner(&mut self) -> Result<()> {
        match self.task.take() {
            None => Ok(()),
            Some(task) => task.await.map_err(|e| Error::Backend {
                backend: "runtime",
                message: format!("consumer task failed: {e}"),
                source: None,
            })?,
        }
    }
}

impl Drop for ConsumerHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl std::fmt::Debug for ConsumerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}
