//! Half messages with check-back: prepared messages are delivered only
//! once committed (by their producer or by the group's checker), never
//! after a rollback, exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mq_core::{HalfOutcome, HalfProducer, Message, MessageId, TransactionChecker};
use parking_lot::Mutex;

use super::SOON;
use crate::{wait_quiescent, Context, Recorder, Skip, QUIET};

/// The header a scenario's message carries to tell the [`ScriptedChecker`]
/// what to answer: outcomes separated by commas, the last one repeated.
pub const PLAN: &str = "checker-plan";

/// A checker that answers as each message's [`PLAN`] header says and
/// records every question.
#[derive(Clone, Default)]
pub struct ScriptedChecker {
    asked: Arc<Mutex<HashMap<MessageId, Vec<Instant>>>>,
}

impl ScriptedChecker {
    /// How many times it was asked about `id`.
    pub fn times_asked(&self, id: MessageId) -> usize {
        self.asked.lock().get(&id).map_or(0, Vec::len)
    }

    /// How many questions it was asked in all.
    pub fn questions(&self) -> usize {
        self.asked.lock().values().map(Vec::len).sum()
    }
}

#[mq_core::async_trait]
impl TransactionChecker for ScriptedChecker {
    async fn check(&self, message: &Message) -> HalfOutcome {
        let Some(id) = message.id() else {
            return HalfOutcome::Unknown;
        };
        let asked = {
            let mut asked = self.asked.lock();
            let times = asked.entry(id).or_default();
            times.push(Instant::now());
            times.len()
        };
        let plan: Vec<HalfOutcome> = message
            .headers()
            .get(PLAN)
            .unwrap_or("unknown")
            .split(',')
            .filter_map(HalfOutcome::parse)
            .collect();
        plan.get(asked - 1)
            .or(plan.last())
            .copied()
            .unwrap_or(HalfOutcome::Unknown)
    }
}

/// How long a scenario lets a prepared message wait for its producer
/// before the checker is asked (brokers that check by themselves use
/// their own setting, 2 s on the CI RocketMQ broker).
const CHECK_AFTER: Duration = Duration::from_secs(1);
const CHECK_INTERVAL: Duration = Duration::from_millis(300);

async fn start(ctx: &Context, group: &str, checker: ScriptedChecker) -> HalfProducer {
    ctx.client
        .half_producer(group, checker)
        .with_check_after(CHECK_AFTER)
        .with_check_interval(CHECK_INTERVAL)
        .start()
        .await
        .expect("start half producer")
}

fn skip_unless_available(ctx: &Context) -> Result<(), Skip> {
    if ctx.capabilities().half_messages.is_available() {
        Ok(())
    } else {
        Err(Skip("half messages are unsupported".into()))
    }
}

fn bodies(recorder: &Recorder) -> Vec<String> {
    let mut bodies: Vec<String> = recorder
        .seen()
        .iter()
        .map(|s| s.delivery.message().payload_str().unwrap().to_owned())
        .collect();
    bodies.sort();
    bodies
}

/// A committed half message is invisible until commit, then delivered
/// once with its id, key, headers and payload; a rolled-back one never;
/// the checker is not asked about either.
pub async fn half_message_commit_and_rollback(ctx: &Context) -> Result<(), Skip> {
    skip_unless_available(ctx)?;
    let topic = ctx.topic("half");
    let group = ctx.group("half");
    ctx.join(&topic, &group).await;
    let checker = ScriptedChecker::default();
    let producer = start(ctx, &ctx.group("half-producer"), checker.clone()).await;
    let recorder = Recorder::new();
    let consumer = ctx
        .client
        .consumer(&topic, &group)
        .run(recorder.handler())
        .await
        .expect("run");

    let committed = producer
        .send(
            Message::new(topic.as_str(), "paid")
                .with_key("order-1")
                .with_header("tenant", "acme"),
        )
        .await
        .expect("send half");
    assert_eq!(&*committed.receipt().topic, topic.as_str());
    let committed_id = committed.id();
    let rolled_back = producer
        .send(Message::new(topic.as_str(), "never"))
        .await
        .expect("send half");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(recorder.is_empty(), "a prepared message was delivered");
    committed.commit().await.expect("commit");
    rolled_back.rollback().await.expect("rollback");
    assert!(
        recorder.wait_for(1, SOON).await,
        "the committed message never came"
    );
    // Past the check timeout: a rolled-back message stays dropped, and
    // nobody asks the checker about messages that were decided.
    tokio::time::sleep(CHECK_AFTER * 3).await;
    assert!(
        wait_quiescent(&ctx.client, &topic, &group, QUIET, SOON, || recorder.len()).await,
        "never went quiet"
    );
    consumer.shutdown().await.expect("shutdown");
    producer.close().await;
    assert_eq!(bodies(&recorder), ["paid"]);
    let seen = recorder.seen();
    let message = seen[0].delivery.message();
    assert_eq!(message.id(), Some(committed_id));
    assert_eq!(message.key(), Some("order-1"));
    assert_eq!(message.headers().get("tenant"), Some("acme"));
    assert_eq!(
        checker.questions(),
        0,
        "the checker was asked about decided messages"
    );
    Ok(())
}

/// Half messages left undecided by their producer are put to the checker
/// after the timeout, and again while it answers unknown: the one it then
/// commits is delivered once, after the third question; the one it rolls
/// back never.
pub async fn half_message_checked_until_known(ctx: &Context) -> Result<(), Skip> {
    skip_unless_available(ctx)?;
    let topic = ctx.topic("half-check");
    let group = ctx.group("half-check");
    ctx.join(&topic, &group).await;
    let checker = ScriptedChecker::default();
    let producer = start(ctx, &ctx.group("half-check-producer"), checker.clone()).await;
    let recorder = Recorder::new();
    let consumer = ctx
        .client
        .consumer(&topic, &group)
        .run(recorder.handler())
        .await
        .expect("run");

    let sent = Instant::now();
    let commit_later = producer
        .send(Message::new(topic.as_str(), "checked").with_header(PLAN, "unknown,unknown,commit"))
        .await
        .expect("send half");
    let roll_back_later = producer
        .send(Message::new(topic.as_str(), "never").with_header(PLAN, "unknown,rollback"))
        .await
        .expect("send half");
    let (commit_id, rollback_id) = (commit_later.id(), roll_back_later.id());
    // The producer "dies" without deciding.
    drop((commit_later, roll_back_later));

    assert!(
        recorder.wait_for(1, SOON * 2).await,
        "the message the checker committed never came"
    );
    let asked_at_delivery = checker.times_asked(commit_id);
    assert!(
        asked_at_delivery >= 3,
        "delivered after {asked_at_delivery} questions; the checker said commit only at the third"
    );
    assert!(
        sent.elapsed() >= CHECK_AFTER.min(Duration::from_secs(1)),
        "checked before the timeout"
    );
    assert!(
        crate::wait_until(SOON, || async { checker.times_asked(rollback_id) >= 2 }).await,
        "the checker was not asked again about the message it did not know"
    );
    tokio::time::sleep(CHECK_AFTER * 2).await;
    assert!(
        wait_quiescent(&ctx.client, &topic, &group, QUIET, SOON, || recorder.len()).await,
        "never went quiet"
    );
    consumer.shutdown().await.expect("shutdown");
    producer.close().await;
    assert_eq!(bodies(&recorder), ["checked"]);
    assert_eq!(recorder.seen()[0].delivery.message().id(), Some(commit_id));
    let settled = (
        checker.times_asked(commit_id),
        checker.times_asked(rollback_id),
    );
    tokio::time::sleep(CHECK_AFTER * 2).await;
    assert_eq!(
        (
            checker.times_asked(commit_id),
            checker.times_asked(rollback_id)
        ),
        settled,
        "decided messages were checked again"
    );
    Ok(())
}
