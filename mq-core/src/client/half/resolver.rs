//! The resolver of emulated half messages: a member of the producer
//! group's resolver group that reads the half topic in order, holds each
//! prepared message until its resolution record arrives, delivers the
//! committed ones, and asks the application's checker about those left
//! unresolved past the check timeout.
//!
//! Nothing is decided in memory only: a prepared record stays unacked
//! until its outcome is applied (a crash brings it back to the next
//! resolver), and a checker's answer is written as a resolution record
//! before it is applied, so a resolver that replays the topic after a
//! crash reaches the same outcome without asking again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::records::{self, DecidedBy, Record};
use super::{Stop, TransactionChecker, CHECK_LIMIT};
use crate::client::publish::{republishable, Origin};
use crate::client::Client;
use crate::driver::{
    AckToken, DriverSubscription, HalfOutcome, RawDelivery, Rebalance, StartFrom, SubscribeSpec,
};
use crate::error::{Error, Result};
use crate::message::{Message, MessageId};

const FETCH: usize = 256;
/// Pause before retrying a publish or a subscribe that failed.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How many applied outcomes a resolver remembers, to drop redelivered
/// copies of prepared messages it already resolved.
const REMEMBERED: usize = 65_536;

/// How the resolver times its checks.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timing {
    /// How long a prepared message waits for its producer before the
    /// checker is asked.
    pub(super) check_after: Duration,
    /// How long after an `Unknown` the checker is asked again.
    pub(super) check_interval: Duration,
    /// Prepared messages held at once by one resolver.
    pub(super) prefetch: usize,
}

struct Pending {
    prepared: AckToken,
    message: Message,
    next_check: Instant,
}

/// Ids whose outcome this resolver applied, the oldest forgotten first.
#[derive(Default)]
struct Remembered {
    order: VecDeque<MessageId>,
    ids: HashSet<MessageId>,
}

impl Remembered {
    fn insert(&mut self, id: MessageId) {
        if self.ids.insert(id) {
            self.order.push_back(id);
            if self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }
}

pub(super) struct Resolver {
    client: Client,
    topic: String,
    group: String,
    checker: Arc<dyn TransactionChecker>,
    timing: Timing,
    pending: HashMap<MessageId, Pending>,
    applied: Remembered,
    stop: Stop,
}

/// An instant `at` on the wall clock, on the monotonic clock.
fn instant_of(at: SystemTime) -> Instant {
    Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()
}

impl Resolver {
    pub(super) fn new(
        client: Client,
        group: String,
        checker: Arc<dyn TransactionChecker>,
        timing: Timing,
        stop: Stop,
    ) -> Self {
        let names = &client.capabilities().names;
        Resolver {
            topic: records::half_topic(names, &group),
            client,
            group,
            checker,
            timing,
            pending: HashMap::new(),
            applied: Remembered::default(),
            stop,
        }
    }

    async fn subscribe(&mut self) -> Option<Box<dyn DriverSubscription>> {
        let names = &self.client.capabilities().names;
        let spec = SubscribeSpec::new(
            vec![self.topic.clone()],
            records::resolver_group(names, &self.group),
        )
        .with_start(StartFrom::Earliest)
        .with_prefetch(self.timing.prefetch.max(FETCH));
        loop {
            match self.client.inner.driver.subscribe(spec.clone()).await {
                Ok(subscription) => return Some(subscription),
                Err(error) => {
                    tracing::warn!(%error, group = %self.group, "half-message resolver cannot subscribe; retrying");
                    if self.stop.pause_or_stop(Duration::from_secs(1)).await {
                        return None;
                    }
                }
            }
        }
    }

    pub(super) async fn run(mut self) {
        let Some(subscription) = self.subscribe().await else {
            return;
        };
        loop {
            let next_check = self.pending.values().map(|p| p.next_check).min();
            let room = self.pending.len() < self.timing.prefetch;
            tokio::select! {
                _ = self.stop.stopped() => break,
                Some(rebalance) = subscription.rebalance() => {
                    // A revoked partition's held messages belong to its next owner.
                    if let Rebalance::Revoked(revocation) = rebalance {
                        let gone = revocation.partitions().to_vec();
                        self.pending.retain(|_, p| !gone.iter().any(|tp| p.prepared.is_in(tp)));
                        revocation.complete();
                    }
                }
                fetched = subscription.fetch(FETCH), if room => match fetched {
                    Ok(batch) => {
                        if !self.take(subscription.as_ref(), batch).await {
                            break;
                        }
                    }
                    Err(Error::Closed(_)) => break,
                    Err(error) => {
                        tracing::warn!(%error, group = %self.group, "half-message resolver fetch failed");
                        if self.stop.pause_or_stop(RETRY_PAUSE).await {
                            break;
                        }
                    }
                },
                _ = tokio::time::sleep_until(next_check.unwrap_or_else(Instant::now)), if next_check.is_some() => {
                    if !self.check_due(subscription.as_ref()).await {
                        break;
                    }
                }
            }
        }
        if let Err(error) = subscription.close().await {
            tracing::debug!(%error, "half-message resolver close failed");
        }
    }

    /// Handles fetched records in order; false when stopped.
    async fn take(
        &mut self,
        subscription: &dyn DriverSubscription,
        batch: Vec<RawDelivery>,
    ) -> bool {
        let mut done = Vec::new();
        for raw in batch {
            match records::read(&raw.message) {
                Record::Prepared {
                    message,
                    prepared_at,
                } => {
                    let Some(id) = message.id() else { continue };
                    if self.applied.ids.contains(&id) || self.pending.contains_key(&id) {
                        done.push(raw.token);
                        continue;
                    }
                    let next_check = instant_of(prepared_at + self.timing.check_after);
                    self.pending.insert(
                        id,
                        Pending {
                            prepared: raw.token,
                            message,
                            next_check,
                        },
                    );
                }
                Record::Resolution { of, outcome } => {
                    if let Some(pending) = self.pending.remove(&of) {
                        if !self.apply(of, outcome, &pending.message).await {
                            return false;
                        }
                        done.push(pending.prepared);
                    }
                    // Otherwise a later resolution of something already
                    // resolved: the first outcome stands.
                    done.push(raw.token);
                }
                Record::Foreign => {
                    tracing::error!(topic = %self.topic, "dropping a record that is not a half message");
                    done.push(raw.token);
                }
            }
        }
        self.ack(subscription, done).await;
        true
    }

    async fn ack(&self, subscription: &dyn DriverSubscription, tokens: Vec<AckToken>) {
        if tokens.is_empty() {
            return;
        }
        if let Err(error) = subscription.ack(tokens).await {
            // Outcomes are applied already; the records come back and the
            // replay reaches the same outcomes (a commit is delivered again,
            // with the same id, for consumer-side dedup to absorb).
            tracing::warn!(%error, group = %self.group, "half-message resolver ack failed");
        }
    }

    /// Delivers a committed message (a rollback needs nothing); false when
    /// stopped before it could.
    async fn apply(&mut self, id: MessageId, outcome: HalfOutcome, message: &Message) -> bool {
        if outcome == HalfOutcome::Commit {
            loop {
                let published = self
                    .client
                    .publisher()
                    .publish(vec![message.clone()], Origin::Internal)
                    .await;
                match published {
                    Ok(_) => break,
                    Err(error) if !error.is_retryable() => {
                        // Its destination refuses it for good (deleted, say):
                        // it must not hold up every other half message.
                        let outlet = self.client.publisher().outlet().clone();
                        let aside = vec![republishable(message.clone())];
                        let source = format!("half-message resolver of {}", self.group);
                        if crate::delay::set_aside_refused(&outlet, aside, &source)
                            .await
                            .is_ok()
                        {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, group = %self.group, "delivering a committed half message failed; retrying");
                    }
                }
                if self.stop.pause_or_stop(RETRY_PAUSE).await {
                    return false;
                }
            }
        }
        self.applied.insert(id);
        true
    }

    /// Asks the checker about every prepared message past its check time;
    /// false when stopped.
    async fn check_due(&mut self, subscription: &dyn DriverSubscription) -> bool {
        let now = Instant::now();
        let due: Vec<MessageId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_check <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut done = Vec::new();
        for id in due {
            let Some(pending) = self.pending.get(&id) else {
                continue;
            };
            let outcome = match tokio::time::timeout(
                CHECK_LIMIT,
                self.checker.check(&pending.message),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::warn!(group = %self.group, %id, "the transaction checker took over {CHECK_LIMIT:?}; asking again later");
                    HalfOutcome::Unknown
                }
            };
            if outcome == HalfOutcome::Unknown || self.record(id, outcome).await.is_err() {
                if let Some(pending) = self.pending.get_mut(&id) {
                    pending.next_check = Instant::now() + self.timing.check_interval;
                }
                continue;
            }
            let Some(pending) = self.pending.remove(&id) else {
                continue;
            };
            if !self.apply(id, outcome, &pending.message).await {
                return false;
            }
            done.push(pending.prepared);
        }
        self.ack(subscription, done).await;
        true
    }

    /// Writes the checker's answer before applying it, so a replay after a
    /// crash finds it.
    async fn record(&self, id: MessageId, outcome: HalfOutcome) -> Result<()> {
        let record = records::resolution(&self.topic, id, outcome, DecidedBy::Checker);
        let written = self.client.publisher().outlet().publish(vec![record]).await;
        if let Err(error) = &written {
            tracing::warn!(%error, group = %self.group, %id, "recording a checker's answer failed; checking again later");
        }
        written.map(|_| ())
    }
}
