//! Coalescing individual sends into driver batches, as Kafka's producer
//! does with its linger: many tasks each sending one message cost the
//! broker a few batched writes instead of one round trip (and, on a log,
//! one fsync) each.
//!
//! Sends are spread over lanes by key; each lane has at most one batch at
//! the broker at a time, so messages of one key keep the order in which
//! they were sent, also when one task starts many sends before awaiting
//! them. While a lane's batch is out, the sends arriving meanwhile queue
//! up and leave together as the next batch: under load batches grow by
//! themselves, and an idle lane sends at once (with no linger, the default).
//! Each send still resolves only when its own message is durable, with its
//! own receipt, or with the error of its batch.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use crate::driver::{partition_for_key, Driver};
use crate::error::{Error, Result};
use crate::message::{Message, Receipt};

/// How [`Producer::send`](crate::Producer::send) coalesces individual
/// sends; set with [`Client::with_coalescing`](crate::Client::with_coalescing).
///
/// The default: 16 lanes, no linger (a lane sends as soon as it is free),
/// batches of up to 1,000 messages or 4 MiB. [`Coalescing::off`] sends each
/// message in its own driver call.
///
/// ```
/// use std::time::Duration;
/// use mq_core::Coalescing;
/// let lingering = Coalescing::default().with_linger(Duration::from_millis(2));
/// assert_eq!(lingering.linger(), Duration::from_millis(2));
/// assert!(!Coalescing::off().is_on());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coalescing {
    lanes: usize,
    linger: Duration,
    max_messages: usize,
    max_bytes: usize,
}

impl Default for Coalescing {
    fn default() -> Self {
        Coalescing {
            lanes: 16,
            linger: Duration::ZERO,
            max_messages: 1_000,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Coalescing {
    /// No coalescing: every send is its own driver call.
    pub fn off() -> Self {
        Coalescing {
            lanes: 0,
            ..Coalescing::default()
        }
    }

    /// How long a lane waits for more sends before it sends a batch that
    /// is not full (default zero: trades nothing for latency; a few
    /// milliseconds give bigger batches under moderate load).
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Most messages in one batch (at least 1).
    pub fn with_max_messages(mut self, max_messages: usize) -> Self {
        self.max_messages = max_messages.max(1);
        self
    }

    /// Most bytes (payload, key and headers) in one batch; a single
    /// larger message still goes alone.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// Batches at the broker at once, one per lane (at least 1); a key
    /// always uses the same lane.
    pub fn with_lanes(mut self, lanes: usize) -> Self {
        self.lanes = lanes.max(1);
        self
    }

    /// Whether sends are coalesced at all.
    pub fn is_on(&self) -> bool {
        self.lanes > 0
    }

    /// The linger; see [`with_linger`](Self::with_linger).
    pub fn linger(&self) -> Duration {
        self.linger
    }
}

/// A send waiting for its lane's next batch.
struct Pending {
    message: Message,
    reply: oneshot::Sender<Result<Receipt>>,
}

struct Lane {
    queue: Mutex<Vec<Pending>>,
    wake: Notify,
    started: AtomicBool,
    closed: AtomicBool,
}

/// The lanes of one client.
pub(crate) struct Coalescer {
    driver: Arc<dyn Driver>,
    settings: Coalescing,
    lanes: Vec<Arc<Lane>>,
    next_keyless: AtomicUsize,
}

impl Coalescer {
    /// `None` when coalescing is off.
    pub(crate) fn new(driver: Arc<dyn Driver>, settings: Coalescing) -> Option<Self> {
        settings.is_on().then(|| Coalescer {
            lanes: (0..settings.lanes)
                .map(|_| {
                    Arc::new(Lane {
                        queue: Mutex::new(Vec::new()),
                        wake: Notify::new(),
                        started: AtomicBool::new(false),
                        closed: AtomicBool::new(false),
                    })
                })
                .collect(),
            driver,
            settings,
            next_keyless: AtomicUsize::new(0),
        })
    }

    /// Sends a checked message with the next batch of its lane.
    pub(crate) async fn send(&self, message: Message) -> Result<Receipt> {
        let lane = match message.key() {
            Some(key) => partition_for_key(key, self.lanes.len() as u32) as usize,
            None => self.next_keyless.fetch_add(1, Ordering::Relaxed) % self.lanes.len(),
        };
        let lane = &self.lanes[lane];
        let (reply, answer) = oneshot::channel();
        lane.queue.lock().push(Pending { message, reply });
        if !lane.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(run_lane(lane.clone(), self.driver.clone(), self.settings));
        }
        lane.wake.notify_one();
        answer
            .await
            .map_err(|_| Error::Closed("producer: the client was dropped mid-send"))?
    }
}

impl Drop for Coalescer {
    fn drop(&mut self) {
        for lane in &self.lanes {
            lane.closed.store(true, Ordering::Release);
            lane.wake.notify_one();
        }
    }
}

async fn run_lane(lane: Arc<Lane>, driver: Arc<dyn Driver>, settings: Coalescing) {
    loop {
        let notified = lane.wake.notified();
        let mut batch = take_batch(&lane, &settings, Vec::new());
        if batch.is_empty() {
            if lane.closed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
            continue;
        }
        if !settings.linger.is_zero() && batch.len() < settings.max_messages {
            tokio::time::sleep(settings.linger).await;
            batch = take_batch(&lane, &settings, batch);
        }
        publish(driver.as_ref(), batch).await;
    }
}

/// Adds queued sends to `batch` within the bounds, oldest first.
fn take_batch(lane: &Lane, settings: &Coalescing, mut batch: Vec<Pending>) -> Vec<Pending> {
    let mut queue = lane.queue.lock();
    let mut bytes: usize = batch.iter().map(|p| p.message.encoded_len()).sum();
    let mut taken = 0;
    for pending in queue.iter() {
        let size = pending.message.encoded_len();
        let full = batch.len() + taken >= settings.max_messages
            || (batch.len() + taken > 0 && bytes + size > settings.max_bytes);
        if full {
            break;
        }
        bytes += size;
        taken += 1;
    }
    batch.extend(queue.drain(..taken));
    batch
}

async fn publish(driver: &dyn Driver, batch: Vec<Pending>) {
    let (messages, replies): (Vec<Message>, Vec<_>) =
        batch.into_iter().map(|p| (p.message, p.reply)).unzip();
    let count = messages.len();
    match driver.publish(messages).await {
        Ok(receipts) if receipts.len() == count => {
            for (reply, receipt) in replies.into_iter().zip(receipts) {
                let _ = reply.send(Ok(receipt));
            }
        }
        Ok(receipts) => {
            let error = Error::Rejected(format!(
                "the backend returned {} receipts for {count} messages",
                receipts.len()
            ));
            answer_all(replies, &error);
        }
        Err(error) => answer_all(replies, &error),
    }
}

/// Every send of a failed batch gets the batch's error, of the same kind.
fn answer_all(replies: Vec<oneshot::Sender<Result<Receipt>>>, error: &Error) {
    for reply in replies {
        let _ = reply.send(Err(copy_of(error)));
    }
}

/// The same kind of error with the same text; the source is shared only
/// as text, as an error has one owner.
fn copy_of(error: &Error) -> Error {
    let text = |source: &Option<crate::error::BoxError>, message: &str| match source {
        Some(source) => format!("{message}: {source}"),
        None => message.to_owned(),
    };
    match error {
        Error::Config(m) => Error::Config(m.clone()),
        Error::Invalid {
            field,
            value,
            reason,
        } => Error::Invalid {
            field,
            value: value.clone(),
            reason: reason.clone(),
        },
        Error::TooLarge { size, limit } => Error::TooLarge {
            size: *size,
            limit: *limit,
        },
        Error::Unsupported { feature, backend } => Error::Unsupported { feature, backend },
        Error::Connection { message, source } => Error::Connection {
            message: text(source, message),
            source: None,
        },
        Error::Timeout(after) => Error::Timeout(*after),
        Error::Rejected(m) => Error::Rejected(m.clone()),
        Error::Closed(what) => Error::Closed(what),
        Error::Codec {
            message,
            line,
            column,
            source,
        } => Error::Codec {
            message: text(source, message),
            line: *line,
            column: *column,
            source: None,
        },
        Error::Backend {
            backend,
            message,
            source,
        } => Error::Backend {
            backend,
            message: text(source, message),
            source: None,
        },
    }
}
