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
use crate::engine::Engine;
use crate::log::LogReader;

pub(super) struct NativeSubscription {
    driver: NativeDriver,
    reading: Arc<Reading>,
    left: AtomicBool,
}

/// What a member reads with, shared with the thread a fetch reads the
/// log on (see `off_runtime`).
struct Reading {
    group: Arc<str>,
    member: Arc<Member>,
    topics: Vec<Arc<Topic>>,
    reader: Mutex<LogReader>,
}

/// Records taken for a fetch, marked in flight. If a later read of the
/// same fetch fails, or the fetch is dropped while its read runs on a
/// blocking thread (on a current-thread runtime), dropping this gives them
/// back, uncounted, instead of leaving them in flight for good.
struct Taken {
    engine: Arc<Engine>,
    group: Arc<str>,
    deliveries: Vec<RawDelivery>,
    /// When the earliest record held back falls due.
    next_due: Option<Instant>,
}

impl Drop for Taken {
    fn drop(&mut self) {
        if !self.deliveries.is_empty() {
            self.engine.untake(&self.group, &self.deliveries);
        }
    }
}

impl Reading {
    /// Takes up to `max` records across the member's topics. Blocks on
    /// reads of the log.
    fn take(&self, engine: Arc<Engine>, max: usize) -> Result<Taken> {
        let mut taken = Taken {
            engine: engine.clone(),
            group: self.group.clone(),
            // Room for a full fetch up front: deliveries are large to move.
            deliveries: Vec::with_capacity(max.min(16 * 1024)),
            next_due: None,
        };
        let mut reader = self.reader.lock();
        for topic in &self.topics {
            let due = engine.take(
                topic,
                &self.group,
                &self.member,
                max,
                &mut reader,
                &mut taken.deliveries,
            )?;
            if let Some(due) = due {
                taken.next_due = Some(taken.next_due.map_or(due, |d| d.min(due)));
            }
            if taken.deliveries.len() >= max {
                break;
            }
        }
        Ok(taken)
    }
}

impl NativeSubscription {
    pub(super) async fn join(driver: NativeDriver, spec: SubscribeSpec) -> Result<Self> {
        let group: Arc<str> = Arc::from(spec.group.as_str());
        let member = driver.engine().new_member();
        let reading = {
            let (group, member) = (group.clone(), member.clone());
            driver
                .blocking(move |engine| {
                    // Missing topics are created, durably: blocking I/O.
                    let topics = engine.topics_for(&spec.topics)?;
                    for topic in &topics {
                        engine.join(topic, &group, &member, spec.start);
                    }
                    Ok(Reading {
                        group,
                        member,
                        topics,
                        reader: Mutex::new(LogReader::default()),
                    })
                })
                .await?
        };
        Ok(NativeSubscription {
            driver,
            reading: Arc::new(reading),
            left: AtomicBool::new(false),
        })
    }

    fn leave(&self) {
        if self.left.swap(true, Ordering::AcqRel) {
            return;
        }
        let r = &self.reading;
        for topic in &r.topics {
            self.driver.engine().leave(topic, &r.group, &r.member);
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
        loop {
            self.check_open()?;
            let mut waits: Vec<_> = self
                .reading
                .topics
                .iter()
                .map(|t| Box::pin(t.changed.notified()))
                .collect();
            for w in &mut waits {
                w.as_mut().enable();
            }
            let reading = self.reading.clone();
            let mut taken = self
                .driver
                .blocking(move |engine| reading.take(Arc::clone(engine), max))
                .await?;
            if !taken.deliveries.is_empty() {
                return Ok(std::mem::take(&mut taken.deliveries));
            }
            let pause = taken
                .next_due
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
        self.driver.engine().ack(&self.reading.group, tokens);
        Ok(())
    }

    async fn nack(&self, token: AckToken, after: Duration) -> Result<()> {
        self.driver.check_open()?;
        self.driver
            .engine()
            .nack(&self.reading.group, &token, after);
        Ok(())
    }

    async fn rebalance(&self) -> Option<Rebalance> {
        self.reading.member.next_rebalance().await
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
