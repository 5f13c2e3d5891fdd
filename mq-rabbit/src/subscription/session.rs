//! The supervisor of a subscription: sessions on a control channel, the
//! shards each consumes and hands over, reconnecting after failures.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lapin::Channel;
use mq_core::driver::assignment::{share, Assignment};
use mq_core::driver::{Backoff, TopicPartition, REVOKE_LIMIT};
use mq_core::{Error, Result};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{open, Event, Shared};
use crate::membership::{Members, Membership};

/// Resolves once the subscription is told to stop (or its handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs sessions until stopped; after a failure reconnects with backoff.
pub(super) async fn supervise(
    shared: Arc<Shared>,
    first: Channel,
    mut stop: watch::Receiver<bool>,
) {
    let backoff = Backoff::new(Duration::from_millis(50), shared.options.max_backoff);
    let mut failures = 0;
    let mut control = Some(first);
    loop {
        let ready = match control.take() {
            Some(channel) => Ok(channel),
            None => open(&shared).await,
        };
        let started = Instant::now();
        let error = match ready {
            Ok(channel) => {
                let mut session = Session::new(&shared, channel);
                match session.run(&mut stop).await {
                    Ok(()) => return session.leave().await,
                    Err(error) if error.is_retryable() && !shared.connector.is_closed() => {
                        session.let_go(&mut stop).await;
                        error
                    }
                    Err(error) => {
                        session.fail(error).await;
                        return;
                    }
                }
            }
            Err(error) if error.is_retryable() && !shared.connector.is_closed() => error,
            Err(error) => return shared.fail(error),
        };
        // A session that lasted is not part of a run of failures.
        if started.elapsed() > backoff.max() {
            failures = 0;
        }
        failures += 1;
        let pause = backoff.after(failures);
        tracing::warn!(%error, group = %shared.group, ?pause, "subscription lost its channel; resubscribing");
        let stopped = tokio::select! {
            _ = stopped(&mut stop) => true,
            _ = tokio::time::sleep(pause) => false,
        };
        if stopped {
            return;
        }
    }
}

/// One control channel's life: the shards this member consumes, and those
/// it is giving back.
struct Session<'a> {
    shared: &'a Arc<Shared>,
    control: Channel,
    events: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    membership: Option<Membership>,
    /// The member's share of the shards as last computed.
    share: Assignment,
    /// Revoked shards not given back yet; regained ones are consumed again
    /// only once given back.
    handing: HashSet<TopicPartition>,
    /// Each resolves, with its shards, once they are given back.
    giving_back: FuturesUnordered<BoxFuture<'static, Vec<TopicPartition>>>,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Arc<Shared>, control: Channel) -> Self {
        let (events, events_rx) = mpsc::unbounded_channel();
        Session {
            shared,
            control,
            events,
            events_rx,
            membership: None,
            share: Assignment::new(),
            handing: HashSet::new(),
            giving_back: FuturesUnordered::new(),
        }
    }

    /// Consumes this member's share and follows the membership until
    /// stopped (`Ok`) or a channel fails.
    async fn run(&mut self, stop: &mut watch::Receiver<bool>) -> Result<()> {
        let shared = self.shared;
        let mut members = Members::new(shared.member.clone(), shared.options.member_heartbeat);
        if shared.plans.iter().any(|p| p.shards > 1) {
            let membership = Membership::start(
                &self.control,
                &shared.plans[0].topic,
                &shared.group,
                &shared.member,
                self.events.clone(),
            )
            .await?;
            self.membership = Some(membership);
        }
        self.follow(&members).await?;
        let mut tick = tokio::time::interval(shared.options.member_heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped(stop) => return Ok(()),
                Some(given) = self.giving_back.next() => self.given_back(given).await?,
                event = self.events_rx.recv() => match event {
                    Some(Event::Member { kind, id }) if members.observe(&kind, &id) => {
                        // A newcomer learns of this member without waiting a heartbeat.
                        if kind == "join" {
                            self.announce("hb").await?;
                        }
                        self.follow(&members).await?;
                    }
                    // A channel error while consuming is worth a new session,
                    // whatever its cause: report it as retryable.
                    Some(Event::Failed(error)) => return Err(Error::connection("consuming", error)),
                    Some(Event::Member { .. }) | None => {}
                },
                _ = tick.tick() => {
                    if !self.control.status().connected() {
                        return Err(Error::Connection {
                            message: "the subscription channel closed".into(),
                            source: None,
                        });
                    }
                    if self.membership.is_some() {
                        self.announce("hb").await?;
                        if members.expire() {
                            self.follow(&members).await?;
                        }
                    }
                }
            }
        }
    }

    /// Publishes `kind` when the member takes part in a split. Borrows
    /// only what it needs: the session itself is not `Sync`.
    fn announce(&self, kind: &'static str) -> impl std::future::Future<Output = Result<()>> + '_ {
        let (membership, control) = (self.membership.as_ref(), &self.control);
        async move {
            match membership {
                Some(membership) => membership.announce(control, kind).await,
                None => Ok(()),
            }
        }
    }

    /// Moves to the share `members` give this member: gives back the
    /// shards it lost, consumes those it gained. A queue of a one-shard
    /// topic is consumed by every member; single active consumer lets one
    /// have it at a time.
    async fn follow(&mut self, members: &Members) -> Result<()> {
        let (index, count) = members.position();
        let target: Vec<TopicPartition> = self
            .shared
            .plans
            .iter()
            .flat_map(|plan| {
                let shards: Vec<u32> = if plan.shards == 1 {
                    vec![0]
                } else {
                    share(plan.shards, count, index).collect()
                };
                shards
                    .into_iter()
                    .map(|shard| TopicPartition::new(plan.topic.clone(), shard))
            })
            .collect();
        let change = self.share.update(target);
        self.give_back(&change.lost);
        self.consume(change.gained).await
    }

    /// Revokes `lost` and gives the shards back once the runtime let go.
    fn give_back(&mut self, lost: &[TopicPartition]) {
        let revoked = self.shared.revoke(lost);
        if revoked.is_empty() {
            return;
        }
        self.handing.extend(revoked.iter().cloned());
        let wait = self.shared.rebalances.revoke(revoked.clone());
        let shared = self.shared.clone();
        self.giving_back.push(Box::pin(async move {
            if !wait.at_most(REVOKE_LIMIT).await {
                tracing::warn!(partitions = ?revoked, group = %shared.group, "the runtime did not let go of revoked shards within {REVOKE_LIMIT:?}; handing them on");
            }
            shared.release(&revoked).await;
            revoked
        }));
    }

    /// Shards are given back: consumes those the share has regained meanwhile.
    async fn given_back(&mut self, given: Vec<TopicPartition>) -> Result<()> {
        for tp in &given {
            self.handing.remove(tp);
        }
        let regained = given
            .into_iter()
            .filter(|tp| self.share.contains(tp))
            .collect();
        self.consume(regained).await
    }

    /// Starts consuming `partitions` (but not those still being given back)
    /// and reports those it started as assigned.
    async fn consume(&mut self, partitions: Vec<TopicPartition>) -> Result<()> {
        let mut started = Vec::new();
        let mut result = Ok(());
        for tp in partitions {
            if self.handing.contains(&tp) {
                continue;
            }
            result = self.shared.start(&tp, &self.events).await;
            if result.is_err() {
                break;
            }
            started.push(tp);
        }
        self.shared.rebalances.assigned(started);
        result
    }

    /// Leaves the group: the others take the shards over.
    async fn leave(self) {
        let _ = self.announce("bye").await;
        self.shared.release_all().await;
        if self.control.status().connected() {
            let _ = self.control.close(200, "leaving".into()).await;
        }
    }

    /// Lets go of everything before a new session: the runtime first, so
    /// the next deliveries of a shard follow what it handled, then the
    /// channels. Stops waiting when the subscription is stopped.
    async fn let_go(mut self, stop: &mut watch::Receiver<bool>) {
        let all: Vec<TopicPartition> = self.shared.state.lock().shards.keys().cloned().collect();
        let revoked = self.shared.revoke(&all);
        let wait = (!revoked.is_empty()).then(|| self.shared.rebalances.revoke(revoked));
        let pending = std::mem::take(&mut self.giving_back);
        let released = async {
            let handed = async {
                if let Some(wait) = wait {
                    if !wait.at_most(REVOKE_LIMIT).await {
                        tracing::warn!(group = %self.shared.group, "the runtime did not let go of its shards within {REVOKE_LIMIT:?}");
                    }
                }
            };
            futures::join!(handed, pending.collect::<Vec<_>>());
        };
        tokio::select! {
            _ = stopped(stop) => {}
            _ = released => {}
        }
        self.shared.release_all().await;
        if self.control.status().connected() {
            let _ = self.control.close(200, "resubscribing".into()).await;
        }
    }

    /// Ends the subscription for good: `fetch` returns `error`.
    async fn fail(self, error: Error) {
        self.shared.fail(error);
        self.shared.release_all().await;
        if self.control.status().connected() {
            let _ = self.control.close(200, "failed".into()).await;
        }
    }
}
