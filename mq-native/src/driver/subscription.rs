//! A member of a consumer group.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::select_all;
use futures::FutureExt;
use mq_core::driver::local_group::Member;
use mq_core::driver::{AckToken, DriverSubscription, RawDelivery, Rebalance, SubscribeSpec};
use mq_core::{Error, Result};
use parking_lot::Mutex;

use super::NativeDriver;
use crate::engine::topics::Topic;
use crate::log::LogReader;

pub(super) struct NativeSubscription {
    driver: NativeDriver,
    group: Arc<str>,
    member: Arc<Member>,
    topics: Vec<Arc<Topic>>,
    reader: Mutex<LogReader>,
    left: AtomicBool,
}

impl NativeSubscription {
    pub(super) fn join(driver: NativeDriver, spec: SubscribeSpec) -> Result<Self> {
        let engine = driver.engine().clone();
        let group: Arc<str> = Arc::from(spec.group.as_str());
        let member = engine.new_member();
        let topics = engine.topics_for(&spec.topics)?;
        for topic in &topics {
            engine.join(topic, &group, &member, spec.start);
        }
        Ok(NativeSubscription {
            driver,
            group,
            member,
            topics,
            reader: Mutex::new(LogReader::default()),
            left: AtomicBool::new(false),
        })
    }

    fn leave(&self) {
        if self.left.swap(true, Ordering::AcqRel) {
            return;
        }
        for topic in &self.topics {
            self.driver.engine().leave(topic, &self.group, &self.member);
        }
    }

    fn check_open(&self) -> Result<()> {
        self.driver.check_open()?;
        if self.left.load(Ordering::Acquire) {
            return Err(Error::Closed("subscription"));
        }
        Ok(())
    }
}

#[async_trait]
impl DriverSubscription for NativeSubscription {
    async fn fetch(&self, max: usize) -> Result<Vec<RawDelivery>> {
        let max = max.max(1);
        let engine = self.driver.engine();
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
            // Room for a full fetch up front: deliveries are large to move.
            let mut out = Vec::with_capacity(max.min(16 * 1024));
            let mut next_due: Option<Instant> = None;
            {
                let mut reader = self.reader.lock();
                for topic in &self.topics {
                    if let Some(due) =
                        engine.take(topic, &self.group, &self.member, max, &mut reader, &mut out)?
                    {
                        next_due = Some(next_due.map_or(due, |d| d.min(due)));
                    }
                    if out.len() >= max {
                        break;
                    }
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            let pause = next_due
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(250))
                .min(Duration::from_millis(250));
            if waits.is_empty() {
                tokio::time::sleep(pause).await;
                continue;
            }
            let any_change = select_all(waits.into_iter().map(|w| w.boxed()));
            tokio::select! {
                _ = any_change => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn ack(&self, tokens: Vec<AckToken>) -> Result<()> {
        self.driver.check_open()?;
        self.driver.engine().ack(&self.group, tokens);
        Ok(())
    }

    async fn nack(&self, token: AckToken, after: Duration) -> Result<()> {
        self.driver.check_open()?;
        self.driver.engine().nack(&self.group, &token, after);
        Ok(())
    }

    async fn rebalance(&self) -> Option<Rebalance> {
        self.member.next_rebalance().await
    }

    async fn close(&self) -> Result<()> {
        self.leave();
        Ok(())
    }
}

impl Drop for NativeSubscription {
    fn drop(&mut self) {
        self.leave();
    }
}
