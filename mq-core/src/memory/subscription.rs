//! A member of a consumer group on the memory broker.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::select_all;
use futures::FutureExt;

use std::sync::atomic::{AtomicBool, Ordering};

use super::broker::{Broker, Topic};
use super::check_open;
use super::transaction::MemoryTransaction;
use crate::driver::local_group::Member;
use crate::driver::{
    AckToken, DriverSubscription, DriverTransaction, RawDelivery, Rebalance, SubscribeSpec,
};
use crate::error::{Error, Result};

pub(super) struct MemorySubscription {
    broker: Arc<Broker>,
    group: Arc<str>,
    member: Arc<Member>,
    topics: Vec<Arc<Topic>>,
    left: AtomicBool,
    driver_closed: Arc<AtomicBool>,
}

impl MemorySubscription {
    pub(super) fn join(
        broker: Arc<Broker>,
        driver_closed: Arc<AtomicBool>,
        spec: SubscribeSpec,
    ) -> Self {
        let group: Arc<str> = Arc::from(spec.group.as_str());
        let member = Member::new(broker.next_id());
        let topics: Vec<Arc<Topic>> = spec
            .topics
            .iter()
            .map(|t| broker.topic_or_create(t, None))
            .collect();
        for topic in &topics {
            broker.join(topic, &group, &member, spec.start);
        }
        MemorySubscription {
            broker,
            group,
            member,
            topics,
            left: AtomicBool::new(false),
            driver_closed,
        }
    }

    fn leave(&self) {
        if self.left.swap(true, Ordering::AcqRel) {
            return;
        }
        for topic in &self.topics {
            self.broker.leave(topic, &self.group, &self.member);
        }
    }

    fn check_open(&self) -> Result<()> {
        check_open(&self.driver_closed)?;
        if self.left.load(Ordering::Acquire) {
            return Err(Error::Closed("subscription"));
        }
        Ok(())
    }
}

#[async_trait]
impl DriverSubscription for MemorySubscription {
    async fn fetch(&self, max: usize) -> Result<Vec<RawDelivery>> {
        let max = max.max(1);
        loop {
            self.check_open()?;
            let mut waits: Vec<_> = self
                .topics
                .iter()
                .map(|t| Box::pin(t.changed.notified()))
                .collect();
            for w in &mut waits {
                w.as_mut().enable();
            }
            let mut out = Vec::new();
            let mut next_due = None;
            {
                let _gate = self.broker.commit_gate.read();
                for topic in &self.topics {
                    if let Some(due) =
                        self.broker
                            .take(topic, &self.group, &self.member, max, &mut out)
                    {
                        next_due = Some(next_due.map_or(due, |d: std::time::Instant| d.min(due)));
                    }
                    if out.len() >= max {
                        break;
                    }
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            // Wake on new records, on a returned record falling due, and now
            // and then to notice the broker closing.
            let pause = next_due
                .map(|d| d.saturating_duration_since(std::time::Instant::now()))
                .unwrap_or(Duration::from_millis(250))
                .min(Duration::from_millis(250));
            let any_change = select_all(waits.into_iter().map(|w| w.boxed()));
            tokio::select! {
                _ = any_change => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn ack(&self, tokens: Vec<AckToken>) -> Result<()> {
        check_open(&self.driver_closed)?;
        self.broker.ack(&self.group, tokens);
        Ok(())
    }

    async fn nack(&self, token: AckToken, after: Duration) -> Result<()> {
        check_open(&self.driver_closed)?;
        self.broker.nack(&self.group, &token, after);
        Ok(())
    }

    async fn rebalance(&self) -> Option<Rebalance> {
        self.member.next_rebalance().await
    }

    async fn begin(&self) -> Result<Box<dyn DriverTransaction>> {
        self.check_open()?;
        Ok(Box::new(MemoryTransaction::acking(
            self.broker.clone(),
            self.driver_closed.clone(),
            self.group.clone(),
        )))
    }

    async fn close(&self) -> Result<()> {
        self.leave();
        Ok(())
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        self.leave();
    }
}
