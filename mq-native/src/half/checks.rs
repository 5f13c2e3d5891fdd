//! The check stream of one producer group: the unresolved prepared
//! messages whose producer went quiet, each leased to one stream at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use mq_core::driver::clock::epoch_micros;
use mq_core::driver::{DriverHalfChecks, HalfCheck};
use mq_core::Result;
use tokio::sync::Notify;

use super::engine::Form;
use super::store::{Claim, Offer};
use super::token;
use crate::driver::NativeDriver;
use crate::log::LogReader;

/// The longest a waiting stream sleeps before looking again: bounds how
/// late it notices its driver closed.
const POLL: Duration = Duration::from_millis(250);

fn now_us() -> u64 {
    epoch_micros(SystemTime::now())
}

/// One check stream; its leases go back to the group when it closes or
/// is dropped.
pub(crate) struct NativeHalfChecks {
    driver: NativeDriver,
    group: Arc<str>,
    stream: u64,
    closed: AtomicBool,
    woken: Notify,
}

impl NativeHalfChecks {
    pub(crate) fn open(driver: NativeDriver, group: &str) -> Self {
        let stream = driver.engine().half.lock().new_stream();
        NativeHalfChecks {
            driver,
            group: Arc::from(group),
            stream,
            closed: AtomicBool::new(false),
            woken: Notify::new(),
        }
    }

    /// The check for `offer`, read from the log; `None` (logged) when the
    /// read failed: the message stays leased and comes again after the
    /// interval, not in a tight loop.
    async fn check(&self, offer: Offer) -> Option<HalfCheck> {
        let Offer {
            seq,
            position,
            prior_checks,
        } = offer;
        let read = self
            .driver
            .blocking(move |e| {
                e.read_half(seq, position, Form::Prepared, &mut LogReader::default())
            })
            .await;
        match read {
            Ok(message) => Some(HalfCheck {
                token: token::encode(seq, message.id().unwrap_or_default(), &self.group),
                message,
                prior_checks,
            }),
            Err(error) => {
                tracing::warn!(%error, group = %self.group, seq, "native engine: reading a half message to check failed");
                None
            }
        }
    }

    fn release(&self) {
        self.driver
            .engine()
            .half
            .lock()
            .release(self.stream, now_us());
    }
}

impl Drop for NativeHalfChecks {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.release();
        }
    }
}

#[async_trait]
impl DriverHalfChecks for NativeHalfChecks {
    async fn next(&self) -> Option<HalfCheck> {
        loop {
            if self.closed.load(Ordering::Acquire) || self.driver.check_open().is_err() {
                return None;
            }
            let engine = self.driver.engine().clone();
            let notify = engine.half.lock().notify.clone();
            // Registered before looking, so a check scheduled in between
            // still wakes this stream.
            let scheduled = notify.notified();
            tokio::pin!(scheduled);
            scheduled.as_mut().enable();
            let claim = engine.half.lock().claim(&self.group, self.stream, now_us());
            let wait = match claim {
                Claim::Ready(offer) => match self.check(offer).await {
                    Some(check) => return Some(check),
                    None => continue,
                },
                Claim::Wait(at_us) => Duration::from_micros(at_us.saturating_sub(now_us())),
                Claim::Idle => POLL,
            };
            tokio::select! {
                _ = scheduled => {}
                _ = self.woken.notified() => {}
                _ = tokio::time::sleep(wait.min(POLL)) => {}
            }
        }
    }

    async fn close(&self) -> Result<()> {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.release();
        }
        self.woken.notify_waiters();
        Ok(())
    }
}
