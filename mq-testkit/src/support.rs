//! Helpers scenarios share.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mq_core::{handler_fn, Client, Delivery, Handler, HandlerResult};
use parking_lot::Mutex;

/// Polls `check` until it returns true or `limit` passes; returns the last answer.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `group` on `topic` is quiescent: its lag is 0 and `progress`
/// (a count of what handlers did) has not moved for `quiet`. Used instead
/// of fixed sleeps wherever a scenario checks that nothing more arrives
/// (no duplicate, no late redelivery). False if `limit` passed first.
pub async fn wait_quiescent<F>(
    client: &Client,
    topic: &str,
    group: &str,
    quiet: Duration,
    limit: Duration,
    progress: F,
) -> bool
where
    F: Fn() -> usize,
{
    let deadline = Instant::now() + limit;
    let mut last = (progress(), Instant::now());
    loop {
        let lag = client.admin().total_lag(topic, group).await.ok();
        let now = progress();
        if now != last.0 {
            last = (now, Instant::now());
        } else if lag == Some(0) && last.1.elapsed() >= quiet {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The quiet window scenarios wait for: long enough for a redelivery or a
/// duplicate to show up on any backend.
pub const QUIET: Duration = Duration::from_millis(300);

/// One handled delivery as a scenario records it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The delivery (detached from settling).
    pub delivery: Arc<Delivery>,
    /// When the handler saw it.
    pub at: std::time::SystemTime,
}

/// A handler that records what it receives and then acks.
#[derive(Clone, Default)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records and acks every delivery.
    pub fn handler(&self) -> impl Handler {
        let seen = self.seen.clone();
        handler_fn(move |d: Delivery| {
            let seen = seen.clone();
            async move {
                seen.lock().push(Seen {
                    delivery: Arc::new(d),
                    at: std::time::SystemTime::now(),
                });
                HandlerResult::Ok(())
            }
        })
    }

    /// How many were recorded.
    pub fn len(&self) -> usize {
        self.seen.lock().len()
    }

    /// Whether none were recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of what was recorded.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    /// Waits until at least `n` were recorded.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> bool {
        wait_until(limit, || async { self.len() >= n }).await
    }
}
