//! Half messages with check-back: "write my row and publish" without an
//! outbox, the way RocketMQ does it.
//!
//! A [`HalfProducer`] publishes a message *prepared*: stored durably, but
//! delivered to nobody. The application then runs its local transaction
//! and [`commit`](HalfMessage::commit)s or [`rollback`](HalfMessage::rollback)s
//! the message. If the producer dies in between, the message is not lost
//! and not delivered: after a timeout, the [`TransactionChecker`] of a
//! running producer of the same group is asked what became of it (it
//! looks in the database), and asked again while it answers
//! [`HalfOutcome::Unknown`].
//!
//! On RocketMQ and the native engine the broker keeps prepared messages
//! and asks for checks itself. Elsewhere the core emulates it with durable
//! parts only: prepared messages and their resolutions are records of an
//! internal topic of the producer group, and a resolver in every running
//! producer of the group (each for its share of that topic's partitions)
//! delivers committed messages and runs the checks.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mq_core::Result<()> {
//! use mq_core::{checker_fn, Client, HalfOutcome, Message};
//! let client = Client::new(mq_core::memory::MemoryDriver::new());
//! // Asked only about messages whose producer went away before deciding.
//! let checker = checker_fn(|message: Message| async move {
//!     let _order = message.key(); // look the order up in the database
//!     HalfOutcome::Commit
//! });
//! let producer = client.half_producer("order-service", checker).start().await?;
//! let half = producer.send(Message::new("orders", "order 42 paid").with_key("order-42")).await?;
//! // ... write the order row in the local database transaction, then:
//! half.commit().await?;
//! producer.close().await;
//! # client.close().await
//! # }
//! ```

mod checks;
mod records;
mod resolver;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::client::Client;
use crate::driver::{HalfOutcome, HalfToken, StartFrom, Support, TopicSpec};
use crate::error::{Error, Result};
use crate::message::{validate_group, IntoName, Message, MessageId, Receipt};

/// Partitions of an emulated half topic: the resolvers of a producer group
/// share them.
const HALF_PARTITIONS: u32 = 4;

/// A checker that hangs must not stall every other half message: past
/// this, its answer counts as unknown and it is asked again later.
const CHECK_LIMIT: Duration = Duration::from_secs(30);

/// Decides what became of a half message whose producer went away
/// between [`HalfProducer::send`] and commit or rollback.
///
/// It must answer [`HalfOutcome::Unknown`] while the local transaction may
/// still be running (its row not yet visible is not a rollback); it is
/// asked again later. An answer of commit or rollback is final.
#[async_trait]
pub trait TransactionChecker: Send + Sync + 'static {
    /// What became of `message` (its id, topic, key, headers and payload
    /// as it was sent).
    async fn check(&self, message: &Message) -> HalfOutcome;
}

/// A [`TransactionChecker`] from an async closure.
pub fn checker_fn<F, Fut>(f: F) -> impl TransactionChecker
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HalfOutcome> + Send + 'static,
{
    struct FnChecker<F>(F);

    #[async_trait]
    impl<F, Fut> TransactionChecker for FnChecker<F>
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HalfOutcome> + Send + 'static,
    {
        async fn check(&self, message: &Message) -> HalfOutcome {
            (self.0)(message.clone()).await
        }
    }

    FnChecker(f)
}

/// Tells a background task to stop: its producer was closed or dropped,
/// or its client closed.
#[derive(Clone)]
struct Stop {
    producer: watch::Receiver<bool>,
    client: watch::Receiver<bool>,
}

impl Stop {
    async fn stopped(&mut self) {
        tokio::select! {
            _ = self.producer.wait_for(|s| *s) => {}
            _ = self.client.wait_for(|s| *s) => {}
        }
    }

    /// True when stopped before `pause` passed.
    async fn pause_or_stop(&mut self, pause: Duration) -> bool {
        tokio::select! {
            _ = self.stopped() => true,
            _ = tokio::time::sleep(pause) => false,
        }
    }
}

/// Configures a [`HalfProducer`]; get one from [`Client::half_producer`].
#[must_use = "a builder does nothing until `start` is called"]
pub struct HalfProducerBuilder {
    client: Client,
    group: String,
    checker: Arc<dyn TransactionChecker>,
    timing: resolver::Timing,
}

impl HalfProducerBuilder {
    pub(crate) fn new(client: Client, group: String, checker: Arc<dyn TransactionChecker>) -> Self {
        HalfProducerBuilder {
            client,
            group,
            checker,
            timing: resolver::Timing {
                check_after: Duration::from_secs(6),
                check_interval: Duration::from_secs(6),
                prefetch: 4_096,
            },
        }
    }

    /// How long a prepared message waits for commit or rollback before the
    /// checker is asked (default 6 s, RocketMQ's `transactionTimeout`).
    /// Brokers that check by themselves use their own setting.
    pub fn with_check_after(mut self, after: Duration) -> Self {
        self.timing.check_after = after;
        self
    }

    /// How long after an [`HalfOutcome::Unknown`] the checker is asked
    /// again (default 6 s). Brokers that check by themselves use their own.
    pub fn with_check_interval(mut self, interval: Duration) -> Self {
        self.timing.check_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Starts checking for this group in this process (on emulating
    /// backends, with the group's internal topic created if missing).
    pub async fn start(self) -> Result<HalfProducer> {
        validate_group(&self.group)?;
        let client = self.client;
        let (stop_tx, producer_stop) = watch::channel(false);
        let stop = Stop {
            producer: producer_stop,
            client: client.inner.background.closing(),
        };
        let (done_tx, done) = watch::channel(());
        let mode = if client.capabilities().half_messages == Support::Native {
            let task = checks::check_back(client.clone(), self.group.clone(), self.checker, stop);
            tokio::spawn(async move {
                task.await;
                drop(done_tx);
            });
            Mode::Native
        } else {
            let names = &client.capabilities().names;
            let topic = records::half_topic(names, &self.group);
            let driver = client.driver();
            driver
                .ensure_topic(&topic, &TopicSpec::new(HALF_PARTITIONS))
                .await?;
            driver
                .ensure_group(
                    &topic,
                    &records::resolver_group(names, &self.group),
                    StartFrom::Earliest,
                )
                .await?;
            let resolver = resolver::Resolver::new(
                client.clone(),
                self.group.clone(),
                self.checker,
                self.timing,
                stop,
            );
            tokio::spawn(async move {
                resolver.run().await;
                drop(done_tx);
            });
            Mode::Emulated { topic }
        };
        client.inner.background.track(done.clone());
        Ok(HalfProducer {
            inner: Arc::new(Inner {
                client,
                group: self.group,
                mode,
                stop: stop_tx,
                done: Mutex::new(done),
            }),
        })
    }
}

enum Mode {
    /// The broker keeps prepared messages and asks for checks.
    Native,
    /// Prepared messages and resolutions are records of this topic.
    Emulated { topic: String },
}

struct Inner {
    client: Client,
    group: String,
    mode: Mode,
    stop: watch::Sender<bool>,
    done: Mutex<watch::Receiver<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Publishes half messages for one producer group and answers check-backs
/// for it in this process. Cheap to clone; the checks stop when the last
/// clone is dropped, at [`close`](Self::close) or when the client closes.
#[derive(Clone)]
pub struct HalfProducer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HalfProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HalfProducer")
            .field("group", &self.inner.group)
            .finish_non_exhaustive()
    }
}

impl HalfProducer {
    /// The producer group.
    pub fn group(&self) -> &str {
        &self.inner.group
    }

    /// Publishes `message` prepared: durable, delivered to nobody until
    /// [`HalfMessage::commit`]. Checked like any send (name, headers, size,
    /// delay bounds); a delay counts from the commit.
    pub async fn send(&self, message: Message) -> Result<HalfMessage> {
        let client = &self.inner.client;
        let message = client.publisher().check_user_message(message)?;
        let destination: Arc<str> = message.topic_arc().clone();
        let (mut receipt, token) = match &self.inner.mode {
            Mode::Native => {
                let (receipt, token) = client
                    .driver()
                    .publish_half(&self.inner.group, message)
                    .await?;
                (receipt, Some(token))
            }
            Mode::Emulated { topic } => {
                let record = records::prepared(topic, message, SystemTime::now());
                let receipt = client
                    .publisher()
                    .outlet()
                    .publish(vec![record])
                    .await?
                    .pop()
                    .ok_or_else(|| Error::Rejected("the backend returned no receipt".into()))?;
                (receipt, None)
            }
        };
        // The receipt is the prepared message's: it names where the
        // message goes, and has no offset there yet.
        receipt.topic = destination;
        receipt.offset = None;
        Ok(HalfMessage {
            producer: self.clone(),
            receipt,
            token,
        })
    }

    /// Stops this producer's checks and waits for them to finish. Prepared
    /// messages stay prepared, for the other producers of the group.
    pub async fn close(&self) {
        self.inner.stop.send_replace(true);
        let mut done = self.inner.done.lock().clone();
        while done.changed().await.is_ok() {}
    }

    async fn resolve(&self, half: HalfMessage, outcome: HalfOutcome) -> Result<()> {
        let inner = &self.inner;
        match (&inner.mode, half.token) {
            (Mode::Native, Some(token)) => {
                inner
                    .client
                    .driver()
                    .resolve_half(&inner.group, token, outcome)
                    .await
            }
            (Mode::Emulated { topic }, _) => {
                let record = records::resolution(
                    topic,
                    half.receipt.id,
                    outcome,
                    records::DecidedBy::Producer,
                );
                inner
                    .client
                    .publisher()
                    .outlet()
                    .publish(vec![record])
                    .await
                    .map(|_| ())
            }
            (Mode::Native, None) => Err(Error::Rejected(
                "a natively prepared message without its broker token".into(),
            )),
        }
    }
}

/// A prepared message: [`commit`](Self::commit) it once the local
/// transaction committed, [`rollback`](Self::rollback) it if it did not.
/// Dropped undecided (the process died, say), it stays prepared until the
/// group's checker decides.
#[must_use = "a half message is delivered only when committed (or when the checker says so)"]
#[derive(Debug)]
pub struct HalfMessage {
    producer: HalfProducer,
    receipt: Receipt,
    token: Option<HalfToken>,
}

impl HalfMessage {
    /// The message id, the same when it is delivered.
    pub fn id(&self) -> MessageId {
        self.receipt.id
    }

    /// The prepared message's receipt.
    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    /// Delivers the message. Returns once the decision is durable; the
    /// message reaches its topic shortly after. If a checker already
    /// decided (the producer took longer than the check timeout), that
    /// first decision stands.
    pub async fn commit(self) -> Result<()> {
        let producer = self.producer.clone();
        producer.resolve(self, HalfOutcome::Commit).await
    }

    /// Drops the message: it is never delivered (unless a checker
    /// already committed it).
    pub async fn rollback(self) -> Result<()> {
        let producer = self.producer.clone();
        producer.resolve(self, HalfOutcome::Rollback).await
    }
}

/// The client's background tasks that outlive a call (half-message
/// checks), stopped and awaited by [`Client::close`].
pub(crate) struct Background {
    closing: watch::Sender<bool>,
    done: Mutex<Vec<watch::Receiver<()>>>,
}

impl Background {
    pub(crate) fn new() -> Self {
        Background {
            closing: watch::channel(false).0,
            done: Mutex::default(),
        }
    }

    fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    fn track(&self, done: watch::Receiver<()>) {
        let mut tasks = self.done.lock();
        tasks.retain(|d| d.has_changed().is_ok());
        tasks.push(done);
    }

    /// Stops every task and waits for them.
    pub(crate) async fn shutdown(&self) {
        self.closing.send_replace(true);
        let tasks = std::mem::take(&mut *self.done.lock());
        for mut done in tasks {
            while done.changed().await.is_ok() {}
        }
    }
}

impl Client {
    /// Starts configuring a producer of half messages for producer group
    /// `group`, with the checker asked about its undecided messages. See
    /// the [module docs](crate::client::half).
    pub fn half_producer(
        &self,
        group: impl IntoName,
        checker: impl TransactionChecker,
    ) -> HalfProducerBuilder {
        HalfProducerBuilder::new(
            self.clone(),
            group.into_name().to_string(),
            Arc::new(checker),
        )
    }
}
