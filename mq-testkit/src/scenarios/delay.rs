use std::time::{Duration, SystemTime};

use mq_core::{Message, StartFrom, Support, TopicSpec};

use super::SOON;
use crate::{Context, Recorder, Skip};

/// Delayed messages are never delivered early and arrive within the declared
/// precision (plus dispatch time) after they are due.
pub async fn delay_is_never_early(ctx: &Context) -> Result<(), Skip> {
    let caps = ctx.capabilities().clone();
    if caps.delay == Support::Unsupported {
        return Err(Skip("delay is unsupported".into()));
    }
    let topic = ctx.topic("delay");
    let recorder = Recorder::new();
    let consumer = ctx
        .client
        .consumer(&topic, ctx.group("delay"))
        .run(recorder.handler())
        .await
        .expect("run");
    let producer = ctx.client.producer();
    let delays = [0u64, 150, 400, 1_000, 2_300];
    let mut due = Vec::new();
    for ms in delays {
        let before = SystemTime::now();
        let message = Message::new(topic.as_str(), ms.to_string());
        let message = if ms == 1_000 {
            message.with_deliver_at(before + Duration::from_millis(ms))
        } else {
            message.with_delay(Duration::from_millis(ms))
        };
        producer.send(message).await.expect("send");
        due.push((ms, before + Duration::from_millis(ms)));
    }
    assert!(
        recorder.wait_for(delays.len(), SOON).await,
        "{} of {} arrived",
        recorder.len(),
        delays.len()
    );
    consumer.shutdown().await.expect("shutdown");
    // Dispatch from broker to handler is not part of the broker's precision.
    let slack = Duration::from_millis(250);
    for s in recorder.seen() {
        let ms: u64 = s
            .delivery
            .message()
            .payload_str()
            .expect("utf8")
            .parse()
            .expect("number");
        let (_, due_at) = due.iter().find(|(d, _)| *d == ms).expect("known delay");
        let early = due_at.duration_since(s.at).unwrap_or_default();
        assert!(s.at >= *due_at, "{ms} ms message delivered {early:?} early");
        let late = s.at.duration_since(*due_at).unwrap_or_default();
        eprintln!(
            "delay {ms} ms: delivered {late:?} after due (precision {:?})",
            caps.delay_precision
        );
        assert!(
            late <= caps.delay_precision + slack,
            "{ms} ms message {late:?} late; declared precision {:?}",
            caps.delay_precision
        );
    }
    Ok(())
}

/// A topic deleted while delayed messages wait for it takes them along:
/// when they are due they neither create the topic again nor reach a
/// topic of the same name created afterwards.
pub async fn delayed_messages_go_with_their_deleted_topic(ctx: &Context) -> Result<(), Skip> {
    let caps = ctx.capabilities().clone();
    if caps.delay == Support::Unsupported {
        return Err(Skip("delay is unsupported".into()));
    }
    let admin = ctx.client.admin();
    let topic = ctx.topic("delay-deleted");
    let group = ctx.group("delay-deleted");
    admin
        .ensure_topic(&topic, TopicSpec::new(1))
        .await
        .expect("ensure_topic");
    ctx.join(&topic, &group).await;
    let producer = ctx.client.producer();
    let delay = Duration::from_millis(1_500);
    producer
        .send(Message::new(&topic, "doomed").with_delay(delay))
        .await
        .expect("send delayed");
    admin.delete_topic(&topic).await.expect("delete_topic");
    // Past due, with time for the broker or a forwarder to act on it.
    tokio::time::sleep(delay + caps.delay_precision + Duration::from_secs(2)).await;
    if caps.admin.list_topics == Support::Native {
        let topics = admin.topics().await.expect("topics");
        assert!(
            !topics.iter().any(|t| t.name == topic),
            "the deleted topic {topic} was created again by its delayed message"
        );
    }
    admin
        .ensure_topic(&topic, TopicSpec::new(1))
        .await
        .expect("ensure_topic again");
    let recorder = Recorder::new();
    let consumer = ctx
        .client
        .consumer(&topic, &group)
        .start_from(StartFrom::Earliest)
        .run(recorder.handler())
        .await
        .expect("run");
    producer
        .send(Message::new(&topic, "fresh"))
        .await
        .expect("send");
    assert!(
        recorder.wait_for(1, SOON).await,
        "the fresh message never arrived"
    );
    // A stray delayed message would arrive around now too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    consumer.shutdown().await.expect("shutdown");
    let payloads: Vec<String> = recorder
        .seen()
        .iter()
        .map(|s| s.delivery.message().payload_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(
        payloads,
        ["fresh"],
        "the deleted topic's delayed message came back"
    );
    Ok(())
}
