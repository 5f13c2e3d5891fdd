//! The forwarder of one delay level topic.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{dead_letter_topic, forwarder_group, level_topic, park_at};
use crate::client::publish::{republishable, Outlet};
use crate::driver::{
    Driver, DriverSubscription, NameRules, RawDelivery, Rebalance, StartFrom, SubscribeSpec,
    TopicSpec,
};
use crate::error::{Error, Result};
use crate::message::{reserved, Message};
use crate::runtime::millis;

const FETCH: usize = 256;

fn header_ms(message: &Message, name: &str) -> Option<u64> {
    message.headers().get(name)?.parse().ok()
}

fn hop_due(raw: &RawDelivery) -> u64 {
    header_ms(&raw.message, reserved::DELAY_HOP_DUE).unwrap_or(0)
}

fn destination_of(message: &Message) -> Option<&str> {
    message.headers().get(reserved::DELAY_DESTINATION)
}

/// The destinations of `due` messages (those due at `now_ms` for their
/// destination, not just for a hop) that existed when the messages were
/// parked and exist no more: deleted while they waited.
async fn deleted_destinations(
    driver: &dyn Driver,
    due: &[RawDelivery],
    now_ms: u64,
) -> Result<HashSet<String>> {
    let mut checked = HashSet::new();
    let mut gone = HashSet::new();
    for raw in due {
        let message = &raw.message;
        let delivered_now = header_ms(message, reserved::DELIVER_AT).is_some_and(|at| at <= now_ms);
        let watched = message
            .headers()
            .get(reserved::DELAY_DESTINATION_EXISTED)
            .is_some();
        let Some(destination) = destination_of(message) else {
            continue;
        };
        if !delivered_now || !watched || !checked.insert(destination) {
            continue;
        }
        if driver.topic_exists(destination).await? == Some(false) {
            gone.insert(destination.to_owned());
        }
    }
    Ok(gone)
}

/// The next form of a parked message at `now`: parked again in a shorter
/// level, or delivered to its destination. `None` when it is not a parked
/// message (no destination header).
fn next_hop(names: &NameRules, message: Message, now: SystemTime) -> Option<Message> {
    let destination = message
        .headers()
        .get(reserved::DELAY_DESTINATION)?
        .to_owned();
    let due_ms = header_ms(&message, reserved::DELIVER_AT)?;
    let mut message = republishable(message);
    let headers = message.headers_mut();
    headers.remove(reserved::DELAY_DESTINATION);
    headers.remove(reserved::DELAY_HOP_DUE);
    headers.remove(reserved::DELIVER_AT);
    let now_ms = millis(now);
    if due_ms <= now_ms {
        headers.remove(reserved::DELAY_DESTINATION_EXISTED);
        Some(message.with_topic(destination))
    } else {
        let message = message.with_topic(destination);
        let due = crate::runtime::from_millis(due_ms);
        Some(park_at(names, message, due, now))
    }
}

/// Publishes `batch` one message at a time; a message the broker refuses
/// for good goes to the delay dead-letter topic with the reason. Fails
/// only on errors worth retrying. `source` names the forwarding step in
/// the log (a delay level, a half-message resolver).
pub(crate) async fn set_aside_refused(
    outlet: &Outlet,
    batch: Vec<Message>,
    source: &str,
) -> Result<()> {
    let driver = outlet.driver();
    for message in batch {
        let Err(error) = outlet.publish(vec![message.clone()]).await else {
            continue;
        };
        if error.is_retryable() {
            return Err(error);
        }
        tracing::error!(%error, source, topic = message.topic(), "a forwarded message was refused; dead-lettering it");
        // Created only when needed: keeps the dead letter until someone reads it.
        let names = driver.capabilities().names;
        let dead_letters = dead_letter_topic(&names);
        driver
            .ensure_group(
                &dead_letters,
                &crate::client::dead_letter_group(&names),
                StartFrom::Earliest,
            )
            .await?;
        let destination = message.topic().to_owned();
        let mut dead = message.with_topic(dead_letters);
        let headers = dead.headers_mut();
        headers.insert(reserved::DLQ_TOPIC, destination);
        headers.insert(reserved::DLQ_ERROR, error.to_string());
        headers.insert(
            reserved::DLQ_TIME,
            crate::runtime::rfc3339(SystemTime::now()),
        );
        outlet.publish(vec![dead]).await?;
    }
    Ok(())
}

async fn subscribe(
    driver: &dyn Driver,
    names: &NameRules,
    level_ms: u64,
) -> Result<Box<dyn DriverSubscription>> {
    let topic = level_topic(names, level_ms);
    driver.ensure_topic(&topic, &TopicSpec::new(1)).await?;
    driver
        .subscribe(
            SubscribeSpec::new(vec![topic], forwarder_group(names))
                .with_start(StartFrom::Earliest)
                .with_prefetch(FETCH * 4),
        )
        .await
}

/// True when stopped (or the emulator is gone) before `pause` passed.
async fn pause_or_stop(stop: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => true,
        _ = tokio::time::sleep(pause) => false,
    }
}

pub(super) async fn forward_level(
    outlet: Arc<Outlet>,
    level_ms: u64,
    mut stop: watch::Receiver<bool>,
) {
    let driver = outlet.driver().clone();
    let names = driver.capabilities().names;
    let subscription = loop {
        match subscribe(driver.as_ref(), &names, level_ms).await {
            Ok(s) => break s,
            Err(error) => {
                tracing::warn!(%error, level_ms, "delay forwarder cannot subscribe; retrying");
                if pause_or_stop(&mut stop, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    };
    let mut queue: VecDeque<RawDelivery> = VecDeque::new();
    loop {
        if queue.is_empty() {
            let fetched = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                Some(rebalance) = subscription.rebalance() => {
                    // Nothing is in flight between loop turns: a revoked
                    // level is let go of at once.
                    if let Rebalance::Revoked(revocation) = rebalance {
                        revocation.complete();
                    }
                    continue;
                }
                fetched = subscription.fetch(FETCH) => fetched,
            };
            match fetched {
                Ok(batch) => queue.extend(batch),
                Err(Error::Closed(_)) => break,
                Err(error) => {
                    tracing::warn!(%error, level_ms, "delay forwarder fetch failed");
                    if pause_or_stop(&mut stop, Duration::from_millis(200)).await {
                        break;
                    }
                }
            }
            continue;
        }
        let now = SystemTime::now();
        let now_ms = millis(now);
        let head = hop_due(&queue[0]);
        if head > now_ms {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(Duration::from_millis(head - now_ms)) => {}
                Some(rebalance) = subscription.rebalance() => {
                    // The held heads of a revoked level belong to its next owner.
                    if let Rebalance::Revoked(revocation) = rebalance {
                        let gone = revocation.partitions().to_vec();
                        queue.retain(|raw| !gone.iter().any(|tp| raw.token.is_in(tp)));
                        revocation.complete();
                    }
                }
            }
            continue;
        }
        let mut due = Vec::new();
        while due.len() < FETCH && queue.front().is_some_and(|raw| hop_due(raw) <= now_ms) {
            due.extend(queue.pop_front());
        }
        let gone = match deleted_destinations(driver.as_ref(), &due, now_ms).await {
            Ok(gone) => gone,
            Err(error) => {
                tracing::warn!(%error, level_ms, "delay forwarder cannot check destinations; retrying");
                for raw in due.into_iter().rev() {
                    queue.push_front(raw);
                }
                if pause_or_stop(&mut stop, Duration::from_millis(200)).await {
                    break;
                }
                continue;
            }
        };
        let mut outgoing = Vec::with_capacity(due.len());
        let mut tokens = Vec::with_capacity(due.len());
        let mut malformed = Vec::new();
        let mut dropped = Vec::new();
        for raw in &due {
            if destination_of(&raw.message).is_some_and(|d| gone.contains(d)) {
                dropped.push(raw.token.clone());
                continue;
            }
            match next_hop(&names, raw.message.clone(), now) {
                Some(next) => {
                    outgoing.push(next);
                    tokens.push(raw.token.clone());
                }
                None => malformed.push(raw.token.clone()),
            }
        }
        if !malformed.is_empty() {
            tracing::error!(
                level_ms,
                count = malformed.len(),
                "dropping messages without delay headers from a delay topic"
            );
        }
        if !dropped.is_empty() {
            tracing::info!(
                level_ms,
                count = dropped.len(),
                topics = ?gone,
                "dropping delayed messages whose topic was deleted while they waited"
            );
        }
        malformed.append(&mut dropped);
        if !malformed.is_empty() {
            if let Err(error) = subscription.ack(malformed).await {
                tracing::warn!(%error, "acking dropped delay messages failed");
            }
        }
        if outgoing.is_empty() {
            continue;
        }
        let published = match outlet.publish(outgoing.clone()).await {
            Err(error) if !error.is_retryable() => {
                // One message the broker refuses for good (its destination
                // was deleted, say) must not hold up the whole level: send
                // the refused ones to the delay dead-letter topic instead.
                set_aside_refused(&outlet, outgoing, &format!("delay level {level_ms} ms")).await
            }
            other => other.map(|_| ()),
        };
        match published {
            Ok(()) => {
                if let Err(error) = subscription.ack(tokens).await {
                    // The hop is published; the parked copy comes back and is
                    // forwarded again. Consumer-side dedup by id absorbs it.
                    tracing::warn!(%error, level_ms, "delay forwarder ack failed");
                }
            }
            Err(error) => {
                tracing::warn!(%error, level_ms, "delay forwarder publish failed; retrying");
                for raw in due.into_iter().rev() {
                    queue.push_front(raw);
                }
                if pause_or_stop(&mut stop, Duration::from_millis(200)).await {
                    break;
                }
            }
        }
    }
    if let Err(error) = subscription.close().await {
        tracing::debug!(%error, "delay forwarder close failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_message_goes_to_destination() {
        let now = SystemTime::now();
        let names = NameRules::default();
        let parked = park_at(
            &names,
            Message::new("orders", "x").with_idempotency_key("k"),
            now + Duration::from_millis(20),
            now,
        );
        let later = now + Duration::from_millis(25);
        let out = next_hop(&names, parked, later).unwrap();
        assert_eq!(out.topic(), "orders");
        assert!(out.headers().get(reserved::DELAY_DESTINATION).is_none());
        assert_eq!(out.idempotency_key(), None);
        assert_eq!(out.headers().get(reserved::IDEMPOTENCY_KEY), Some("k"));
    }

    #[test]
    fn early_message_is_parked_again() {
        let now = SystemTime::now();
        let names = NameRules::default();
        let parked = park_at(
            &names,
            Message::new("orders", "x"),
            now + Duration::from_secs(3),
            now,
        );
        assert_eq!(parked.topic(), "__mq.delay.1000");
        let out = next_hop(&names, parked, now + Duration::from_secs(1)).unwrap();
        assert_eq!(out.topic(), "__mq.delay.1000");
        assert_eq!(
            out.headers().get(reserved::DELAY_DESTINATION),
            Some("orders")
        );
        assert!(next_hop(&names, Message::new("__mq.delay.50", "junk"), now).is_none());
    }
}
