use std::time::{Duration, SystemTime};

use mq_core::{Message, Support};

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
