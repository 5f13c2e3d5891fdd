//! Durable delay for backends without it: messages wait in internal delay
//! topics of fixed durations and a forwarder hops them on.
//!
//! A message due in `d` is parked in the longest level topic not longer than
//! `d` (`__mq.delay.<ms>`), stamped with its next hop time. Every message in
//! one level topic waits the same duration, so each topic is FIFO by hop
//! time and the forwarder only ever waits for its head. When the head is
//! due, the forwarder republishes it to the next level or, once due, to its
//! destination, and acks it only after that publish is confirmed. Nothing
//! waits in process memory: a crash leaves the message unacked in the broker
//! and the next forwarder picks it up.
//!
//! A message parked while its destination existed is stamped so; if the
//! destination is gone when the message is due, it was deleted meanwhile
//! and the message goes with it (dropped, not forwarded into a topic the
//! publish would create again). Every forwarder asks the broker, so a
//! deletion by any process counts.

mod forwarder;

pub(crate) use forwarder::set_aside_refused;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::client::publish::Outlet;
use crate::driver::clock::due_millis;
use crate::driver::{Driver, NameRules};
use crate::message::{reserved, Message};

/// Durations of the delay level topics, in milliseconds.
pub(crate) const LEVELS_MS: [u64; 12] = [
    50, 200, 1_000, 5_000, 20_000, 60_000, 300_000, 1_200_000, 3_600_000, 14_400_000, 43_200_000,
    86_400_000,
];

/// Where the forwarder puts due messages their destination refuses for
/// good (retained by the dead-letter group, like every dead-letter topic).
pub(crate) fn dead_letter_topic(names: &NameRules) -> String {
    names.internal("delay", &["dlq"])
}

/// The consumer group the forwarders share.
pub(crate) fn forwarder_group(names: &NameRules) -> String {
    names.internal("delay", &[])
}

pub(crate) fn level_topic(names: &NameRules, level_ms: u64) -> String {
    names.internal("delay", &[&level_ms.to_string()])
}

/// The longest level not longer than `remaining`, or the shortest.
fn pick_level(remaining: Duration) -> u64 {
    let ms = remaining.as_millis() as u64;
    LEVELS_MS
        .iter()
        .rev()
        .copied()
        .find(|&level| level <= ms)
        .unwrap_or(LEVELS_MS[0])
}

/// Rewrites `message` (due at `due`) into a parked copy in its level topic.
fn park_at(names: &NameRules, mut message: Message, due: SystemTime, now: SystemTime) -> Message {
    let remaining = due.duration_since(now).unwrap_or_default();
    let level = pick_level(remaining);
    let hop_due = (now + Duration::from_millis(level)).min(due);
    let destination = message.topic().to_owned();
    message.clear_delay();
    let headers = message.headers_mut();
    headers.insert(reserved::DELAY_DESTINATION, destination);
    // Rounded up: a due time rounded down could let the forwarder deliver
    // up to a millisecond early.
    headers.insert(reserved::DELIVER_AT, due_millis(due).to_string());
    headers.insert(reserved::DELAY_HOP_DUE, due_millis(hop_due).to_string());
    message.with_topic(level_topic(names, level))
}

/// Creates every level topic with one partition, so each stays FIFO, and
/// the forwarders' group on it, so parked messages are kept even on brokers
/// that only route to existing groups.
async fn create_level_topics(driver: &dyn Driver) -> crate::Result<()> {
    let names = driver.capabilities().names;
    let group = forwarder_group(&names);
    for level in LEVELS_MS {
        let topic = level_topic(&names, level);
        driver
            .ensure_topic(&topic, &crate::driver::TopicSpec::new(1))
            .await?;
        driver
            .ensure_group(&topic, &group, crate::StartFrom::Earliest)
            .await?;
    }
    Ok(())
}

struct Running {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// Parks delayed messages and runs the forwarder.
pub(crate) struct DelayEmulator {
    /// Hops go through the same checks and telemetry as every publish.
    outlet: Arc<Outlet>,
    names: NameRules,
    running: Mutex<Option<Running>>,
    topics_created: tokio::sync::OnceCell<()>,
    /// Destinations seen to exist, and when: saves a broker round trip per
    /// delayed send.
    existing: Mutex<HashMap<String, Instant>>,
}

/// How long a destination seen to exist is taken to exist without asking
/// again. A topic deleted by another process within it may still get
/// messages parked as if it existed; those are dropped when due.
const EXISTING_FOR: Duration = Duration::from_secs(1);

impl DelayEmulator {
    /// The declared precision of emulated delay: the shortest level plus forwarding time.
    pub(crate) const PRECISION: Duration = Duration::from_millis(100);

    pub(crate) fn new(outlet: Arc<Outlet>) -> Self {
        DelayEmulator {
            names: outlet.driver().capabilities().names,
            outlet,
            running: Mutex::new(None),
            topics_created: tokio::sync::OnceCell::new(),
            existing: Mutex::new(HashMap::new()),
        }
    }

    /// Stamps parked `messages` whose destination exists now (see the
    /// module doc); `destinations` pairs each with its destination, or
    /// `None` for one not parked.
    pub(crate) async fn stamp_existing(
        &self,
        messages: &mut [Message],
        destinations: &[Option<Arc<str>>],
    ) -> crate::Result<()> {
        let mut answers: HashMap<&str, bool> = HashMap::new();
        for (message, destination) in messages.iter_mut().zip(destinations) {
            let Some(destination) = destination.as_deref() else {
                continue;
            };
            let exists = match answers.get(destination) {
                Some(&known) => known,
                None => {
                    let known = self.exists(destination).await?;
                    answers.insert(destination, known);
                    known
                }
            };
            if exists {
                message
                    .headers_mut()
                    .insert(reserved::DELAY_DESTINATION_EXISTED, "1".to_owned());
            }
        }
        Ok(())
    }

    async fn exists(&self, topic: &str) -> crate::Result<bool> {
        let fresh = |seen: &Instant| seen.elapsed() < EXISTING_FOR;
        if self.existing.lock().get(topic).is_some_and(fresh) {
            return Ok(true);
        }
        let exists = self.outlet.driver().topic_exists(topic).await? == Some(true);
        if exists {
            self.existing
                .lock()
                .insert(topic.to_owned(), Instant::now());
        }
        Ok(exists)
    }

    /// Forgets that `topic` existed: this client deleted it.
    pub(crate) fn forget(&self, topic: &str) {
        self.existing.lock().remove(topic);
    }

    /// Makes sure the level topics exist before the first message is parked.
    pub(crate) async fn create_topics(&self) -> crate::Result<()> {
        self.topics_created
            .get_or_try_init(|| create_level_topics(self.outlet.driver().as_ref()))
            .await
            .map(|_| ())
    }

    /// The parked form of `message`, due at `due`.
    pub(crate) fn park(&self, message: Message, due: SystemTime, now: SystemTime) -> Message {
        park_at(&self.names, message, due, now)
    }

    /// Starts the forwarder in this process if it is not running yet.
    pub(crate) fn ensure_running(&self) {
        let mut running = self.running.lock();
        if running.is_some() {
            return;
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for level in LEVELS_MS {
            tasks.spawn(forwarder::forward_level(
                self.outlet.clone(),
                level,
                stop_rx.clone(),
            ));
        }
        *running = Some(Running { stop, tasks });
    }

    /// Stops the forwarder and waits for it.
    pub(crate) async fn shutdown(&self) {
        let running = self.running.lock().take();
        if let Some(mut running) = running {
            running.stop.send_replace(true);
            while running.tasks.join_next().await.is_some() {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(pick_level(Duration::from_millis(10)), 50);
        assert_eq!(pick_level(Duration::from_millis(199)), 50);
        assert_eq!(pick_level(Duration::from_millis(200)), 200);
        assert_eq!(pick_level(Duration::from_secs(90)), 60_000);
        assert_eq!(pick_level(Duration::from_secs(30 * 86_400)), 86_400_000);
    }

    #[test]
    fn park_stamps_headers() {
        let now = SystemTime::now();
        let due = now + Duration::from_millis(1_500);
        let parked = park_at(&NameRules::default(), Message::new("orders", "x"), due, now);
        assert_eq!(parked.topic(), "__mq.delay.1000");
        assert_eq!(
            parked.headers().get(reserved::DELAY_DESTINATION),
            Some("orders")
        );
        assert_eq!(
            parked.headers().get(reserved::DELAY_HOP_DUE),
            Some(
                due_millis(now + Duration::from_secs(1))
                    .to_string()
                    .as_str()
            )
        );
        let short = park_at(
            &NameRules::default(),
            Message::new("orders", "x"),
            now + Duration::from_millis(20),
            now,
        );
        assert_eq!(
            short.headers().get(reserved::DELAY_HOP_DUE),
            Some(
                due_millis(now + Duration::from_millis(20))
                    .to_string()
                    .as_str()
            )
        );
    }
}
