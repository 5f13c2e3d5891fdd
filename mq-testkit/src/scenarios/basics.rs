use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use mq_core::driver::{
    Capabilities, Driver, DriverSubscription, DriverTransaction, PartitionLag, SubscribeSpec,
};
use mq_core::{async_trait, Client, Error, Message, Receipt, StartFrom, Support, TopicSpec};

use super::SOON;
use crate::{wait_quiescent, wait_until, Context, Recorder, Skip, QUIET};

/// Headers, keys, empty, large and unicode payloads arrive intact.
pub async fn round_trip(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("round-trip");
    let producer = ctx.client.producer();
    let big_len = (1024 * 1024).min(ctx.capabilities().max_message_bytes - 4096);
    let big: Vec<u8> = (0..big_len).map(|i| (i % 251) as u8).collect();
    let sent = vec![
        Message::new(topic.as_str(), "plain"),
        Message::new(topic.as_str(), "")
            .with_key("k-empty")
            .with_header("h1", "v1")
            .with_header("h2", ""),
        Message::new(topic.as_str(), "ünïcødé ✓ 漢字 🚀")
            .with_key("ключ-🔑")
            .with_header("名前", "値 ✓"),
        Message::new(topic.as_str(), big.clone()).with_key("big"),
        Message::new(topic.as_str(), vec![0u8, 255, 0, 1]).with_header("binary", "yes"),
    ];
    ctx.join(&topic, &ctx.group("rt")).await;
    let mut ids = Vec::new();
    for m in &sent {
        let r = producer.send(m.clone()).await.expect("send");
        assert!(!r.duplicate);
        assert_eq!(&*r.topic, topic.as_str());
        ids.push(r.id);
    }
    let recorder = Recorder::new();
    let consumer = ctx
        .client
        .consumer(&topic, ctx.group("rt"))
        .run(recorder.handler())
        .await
        .expect("run");
    assert!(
        recorder.wait_for(sent.len(), SOON).await,
        "only {} of {} arrived",
        recorder.len(),
        sent.len()
    );
    consumer.shutdown().await.expect("shutdown");
    let seen = recorder.seen();
    assert_eq!(seen.len(), sent.len(), "no message may arrive twice");
    for (m, id) in sent.iter().zip(&ids) {
        let got = seen
            .iter()
            .find(|s| s.delivery.message().id() == Some(*id))
            .unwrap_or_else(|| panic!("message {id} missing"));
        let d = &got.delivery;
        assert_eq!(d.topic(), topic);
        assert_eq!(d.group(), ctx.group("rt"));
        assert_eq!(d.key(), m.key());
        assert_eq!(d.payload(), m.payload());
        for (name, value) in m.headers().iter() {
            assert_eq!(
                d.message().headers().get(name),
                Some(value),
                "header {name}"
            );
        }
        assert!(
            d.message()
                .headers()
                .iter()
                .all(|(n, _)| !n.starts_with("mq-")),
            "internal headers leak: {:?}",
            d.message().headers()
        );
        assert_eq!(d.attempt(), 1);
    }
    Ok(())
}

/// Two members of one group share the messages; none is handled twice.
pub async fn group_load_sharing(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("share");
    let group = ctx.group("share");
    ctx.client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(4))
        .await
        .expect("ensure_topic");
    let (a, b) = (Recorder::new(), Recorder::new());
    let ca = ctx
        .client
        .consumer(&topic, &group)
        .run(a.handler())
        .await
        .expect("run a");
    let cb = ctx
        .client
        .consumer(&topic, &group)
        .run(b.handler())
        .await
        .expect("run b");
    // Let both members join before publishing so both get partitions.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = 400;
    let batch = (0..n)
        .map(|i| Message::new(topic.as_str(), format!("{i}")).with_key(format!("key-{i}")))
        .collect();
    ctx.client
        .producer()
        .send_batch(batch)
        .await
        .expect("send_batch");
    assert!(
        wait_until(SOON, || async { a.len() + b.len() >= n }).await,
        "only {} of {n} handled",
        a.len() + b.len()
    );
    assert!(
        wait_quiescent(&ctx.client, &topic, &group, QUIET, SOON, || a.len()
            + b.len())
        .await,
        "never went quiet"
    );
    ca.shutdown().await.expect("shutdown a");
    cb.shutdown().await.expect("shutdown b");
    let mut ids = HashSet::new();
    for s in a.seen().iter().chain(b.seen().iter()) {
        assert!(
            ids.insert(s.delivery.message().id()),
            "handled twice: {:?}",
            s.delivery
        );
    }
    assert_eq!(ids.len(), n);
    assert!(
        !a.is_empty() && !b.is_empty(),
        "work not shared: {} / {}",
        a.len(),
        b.len()
    );
    Ok(())
}

/// Every group gets every message.
pub async fn fan_out_to_groups(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("fanout");
    let (a, b) = (Recorder::new(), Recorder::new());
    let ca = ctx
        .client
        .consumer(&topic, ctx.group("a"))
        .run(a.handler())
        .await
        .expect("run a");
    let cb = ctx
        .client
        .consumer(&topic, ctx.group("b"))
        .run(b.handler())
        .await
        .expect("run b");
    let n = 50;
    for i in 0..n {
        ctx.client
            .producer()
            .send(Message::new(topic.as_str(), format!("{i}")))
            .await
            .expect("send");
    }
    assert!(
        a.wait_for(n, SOON).await && b.wait_for(n, SOON).await,
        "a {} b {}",
        a.len(),
        b.len()
    );
    for group in [ctx.group("a"), ctx.group("b")] {
        assert!(
            wait_quiescent(&ctx.client, &topic, &group, QUIET, SOON, || a.len()
                + b.len())
            .await,
            "never went quiet"
        );
    }
    ca.shutdown().await.expect("shutdown");
    cb.shutdown().await.expect("shutdown");
    assert_eq!(
        (a.len(), b.len()),
        (n, n),
        "each group gets each message once"
    );
    Ok(())
}

/// Lag counts unacked messages per partition and drops to zero once consumed.
pub async fn lag_drops_to_zero(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("lag");
    let group = ctx.group("lag");
    ctx.client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(2))
        .await
        .expect("ensure_topic");
    // Join first, so the group exists (and starts before the messages) everywhere.
    let sub = ctx
        .client
        .consumer(&topic, &group)
        .subscribe()
        .await
        .expect("subscribe");
    sub.close().await.expect("close");
    let n = 50u64;
    let batch = (0..n)
        .map(|i| Message::new(topic.as_str(), "x").with_key(format!("k{i}")))
        .collect();
    ctx.client
        .producer()
        .send_batch(batch)
        .await
        .expect("send_batch");
    let admin = ctx.client.admin();
    let total = |lags: Vec<PartitionLag>| lags.iter().map(|p| p.lag).sum::<u64>();
    assert!(
        wait_until(SOON, || async {
            total(admin.lag(&topic, &group).await.expect("lag")) == n
        })
        .await,
        "lag should reach {n}, is {}",
        total(admin.lag(&topic, &group).await.expect("lag"))
    );
    let recorder = Recorder::new();
    let consumer = ctx
        .client
        .consumer(&topic, &group)
        .run(recorder.handler())
        .await
        .expect("run");
    assert!(recorder.wait_for(n as usize, SOON).await);
    assert!(
        wait_until(SOON, || async {
            total(admin.lag(&topic, &group).await.expect("lag")) == 0
        })
        .await,
        "lag did not drop to zero: {:?}",
        admin.lag(&topic, &group).await
    );
    consumer.shutdown().await.expect("shutdown");
    Ok(())
}

/// Bad topic names, reserved headers, oversize messages and unsupported
/// features are refused with the right error kind.
pub async fn invalid_input_errors(ctx: &Context) -> Result<(), Skip> {
    let producer = ctx.client.producer();
    for bad in [
        "",
        "has space",
        "slash/topic",
        "__mq.internal",
        &"x".repeat(201),
    ] {
        let err = producer.send(Message::new(bad, "x")).await.expect_err(bad);
        assert!(
            matches!(err, Error::Invalid { field: "topic", .. }),
            "{bad:?}: {err:?}"
        );
    }
    let topic = ctx.topic("invalid");
    let err = producer
        .send(Message::new(topic.as_str(), "x").with_header("mq-attempt", "1"))
        .await
        .expect_err("reserved header");
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "header name",
                ..
            }
        ),
        "{err:?}"
    );
    let limit = ctx.capabilities().max_message_bytes;
    let err = producer
        .send(Message::new(topic.as_str(), vec![0u8; limit + 1]))
        .await
        .expect_err("oversize");
    assert!(
        matches!(err, Error::TooLarge { size, limit: l } if size > l && l == limit),
        "{err:?}"
    );
    let err = ctx
        .client
        .consumer(&topic, "bad group")
        .run(Recorder::new().handler())
        .await
        .expect_err("group");
    assert!(
        matches!(err, Error::Invalid { field: "group", .. }),
        "{err:?}"
    );
    let err = ctx
        .client
        .consumer(&topic, "g")
        .concurrency(0)
        .run(Recorder::new().handler())
        .await
        .expect_err("concurrency");
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "concurrency",
                ..
            }
        ),
        "{err:?}"
    );

    // The same broker seen through a driver that declares no transactions
    // and no idempotent publish: the core must refuse, not downgrade.
    let limited = Client::from_arc(Arc::new(Limited(ctx.client.driver().clone())));
    let err = limited.producer().begin().await.expect_err("transactions");
    assert!(
        matches!(
            err,
            Error::Unsupported {
                feature: "transactions",
                ..
            }
        ),
        "{err:?}"
    );
    let err = limited
        .producer()
        .send(Message::new(topic.as_str(), "x").with_idempotency_key("k"))
        .await
        .expect_err("idempotency");
    assert!(
        matches!(
            err,
            Error::Unsupported {
                feature: "idempotent publish",
                ..
            }
        ),
        "{err:?}"
    );
    let with_retention = || TopicSpec::new(1).with_retention(Duration::from_secs(3600));
    let err = limited
        .admin()
        .ensure_topic(&topic, with_retention())
        .await
        .expect_err("topic retention");
    assert!(
        matches!(
            err,
            Error::Unsupported {
                feature: "topic retention",
                ..
            }
        ),
        "{err:?}"
    );
    let kept = ctx
        .client
        .admin()
        .ensure_topic(&topic, with_retention())
        .await;
    match ctx.capabilities().topic_retention {
        Support::Unsupported => assert!(
            matches!(
                kept,
                Err(Error::Unsupported {
                    feature: "topic retention",
                    ..
                })
            ),
            "{kept:?}"
        ),
        _ => kept.expect("a backend with topic retention takes one"),
    }
    if let Some(max) = ctx
        .capabilities()
        .max_delay
        .checked_add(Duration::from_secs(86_400))
    {
        let err = producer
            .send(Message::new(topic.as_str(), "x").with_delay(max))
            .await
            .expect_err("delay");
        assert!(
            matches!(err, Error::Invalid { field: "delay", .. }),
            "{err:?}"
        );
    }
    Ok(())
}

/// A real driver that hides three capabilities, to check how the core refuses them.
struct Limited(Arc<dyn Driver>);

#[async_trait]
impl Driver for Limited {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    fn capabilities(&self) -> Capabilities {
        let mut caps = self.0.capabilities();
        caps.transactions = Support::Unsupported;
        caps.idempotent_publish = Support::Unsupported;
        caps.topic_retention = Support::Unsupported;
        caps
    }
    async fn publish(&self, batch: Vec<Message>) -> mq_core::Result<Vec<Receipt>> {
        self.0.publish(batch).await
    }
    async fn begin(&self) -> mq_core::Result<Box<dyn DriverTransaction>> {
        self.0.begin().await
    }
    async fn subscribe(&self, spec: SubscribeSpec) -> mq_core::Result<Box<dyn DriverSubscription>> {
        self.0.subscribe(spec).await
    }
    async fn ensure_group(
        &self,
        topic: &str,
        group: &str,
        start: StartFrom,
    ) -> mq_core::Result<()> {
        self.0.ensure_group(topic, group, start).await
    }
    async fn ensure_topic(&self, topic: &str, spec: &TopicSpec) -> mq_core::Result<()> {
        self.0.ensure_topic(topic, spec).await
    }
    async fn delete_topic(&self, topic: &str) -> mq_core::Result<()> {
        self.0.delete_topic(topic).await
    }
    async fn lag(&self, topic: &str, group: &str) -> mq_core::Result<Vec<PartitionLag>> {
        self.0.lag(topic, group).await
    }
    async fn close(&self) -> mq_core::Result<()> {
        Ok(())
    }
}

/// Counts deliveries per message id.
pub(crate) fn count_by_id(seen: &[crate::support::Seen]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for s in seen {
        *counts
            .entry(
                s.delivery
                    .message()
                    .id()
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
            )
            .or_insert(0) += 1;
    }
    counts
}
