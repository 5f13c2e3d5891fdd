use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mq_core::driver::{
    AckToken, Capabilities, Driver, DriverSubscription, DriverTransaction, PartitionLag,
    RawDelivery, Rebalance, SubscribeSpec,
};
use mq_core::{
    async_trait, batch_handler_fn, handler_fn, Client, Delivery, HandlerResult, Message, Receipt,
    StartFrom, TopicSpec,
};
use parking_lot::Mutex;

use super::SOON;
use crate::{wait_quiescent, wait_until, Context, Skip, QUIET};

/// Batches hold at most N messages, everything arrives once, keys stay in order.
pub async fn batch_handler(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("batch");
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let order: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let handler = {
        let (sizes, order) = (sizes.clone(), order.clone());
        batch_handler_fn(move |batch: Vec<Delivery>| {
            let (sizes, order) = (sizes.clone(), order.clone());
            async move {
                sizes.lock().push(batch.len());
                let mut order = order.lock();
                for d in &batch {
                    let seq: u32 = d.message().payload_str()?.parse()?;
                    order
                        .entry(d.key().unwrap_or_default().to_owned())
                        .or_default()
                        .push(seq);
                }
                HandlerResult::Ok(())
            }
        })
    };
    ctx.join(&topic, &ctx.group("batch")).await;
    let n = 95u32;
    let batch = (0..n)
        .map(|i| Message::new(topic.as_str(), (i / 5).to_string()).with_key(format!("k{}", i % 5)))
        .collect();
    ctx.client
        .producer()
        .send_batch(batch)
        .await
        .expect("send_batch");
    let consumer = ctx
        .client
        .consumer(&topic, ctx.group("batch"))
        .concurrency(2)
        .run_batch(
            handler,
            mq_core::BatchOptions::new(10).with_max_wait(Duration::from_millis(50)),
        )
        .await
        .expect("run_batch");
    let total = || sizes.lock().iter().sum::<usize>();
    assert!(
        wait_until(SOON, || async { total() >= n as usize }).await,
        "{} of {n}",
        total()
    );
    assert!(
        wait_quiescent(
            &ctx.client,
            &topic,
            &ctx.group("batch"),
            QUIET,
            SOON,
            &total
        )
        .await,
        "never went quiet"
    );
    consumer.shutdown().await.expect("shutdown");
    assert_eq!(total(), n as usize);
    let sizes = sizes.lock();
    assert!(sizes.iter().all(|s| (1..=10).contains(s)), "{sizes:?}");
    assert!(sizes.iter().any(|s| *s > 1), "never batched: {sizes:?}");
    let expected: Vec<u32> = (0..19).collect();
    for (key, seqs) in order.lock().iter() {
        assert_eq!(seqs, &expected, "key {key}");
    }
    Ok(())
}

/// A consumer never holds more than `prefetch` unsettled messages: a stream
/// stops yielding at the bound, and a slow handler slows fetching.
pub async fn prefetch_bound(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("prefetch");
    let producer = ctx.client.producer();
    ctx.join(&topic, &ctx.group("stream")).await;
    ctx.join(&topic, &ctx.group("runtime")).await;
    let batch = (0..60)
        .map(|i| Message::new(topic.as_str(), format!("{i}")))
        .collect();
    producer.send_batch(batch).await.expect("send_batch");

    // Stream mode: exactly `prefetch` deliveries while none is settled.
    let mut stream = ctx
        .client
        .consumer(&topic, ctx.group("stream"))
        .prefetch(5)
        .subscribe()
        .await
        .expect("subscribe");
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(
            tokio::time::timeout(SOON, stream.next())
                .await
                .expect("delivery")
                .expect("open")
                .expect("ok"),
        );
    }
    let extra = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(
        extra.is_err(),
        "a sixth delivery arrived with prefetch 5 and nothing settled"
    );
    held.pop().expect("held").ack().await.expect("ack");
    let next = tokio::time::timeout(SOON, stream.next())
        .await
        .expect("room after ack");
    next.expect("open").expect("ok").ack().await.expect("ack");
    for d in held {
        d.ack().await.expect("ack");
    }
    stream.close().await.expect("close");

    // Runtime mode, measured at the driver: fetched minus settled never
    // exceeds prefetch.
    let metered = Arc::new(Metered::new(ctx.client.driver().clone()));
    let client = Client::from_arc(metered.clone());
    let handled = Arc::new(AtomicUsize::new(0));
    let handler = {
        let handled = handled.clone();
        handler_fn(move |_d: Delivery| {
            let handled = handled.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                handled.fetch_add(1, Ordering::SeqCst);
                HandlerResult::Ok(())
            }
        })
    };
    let consumer = client
        .consumer(&topic, ctx.group("runtime"))
        .concurrency(2)
        .prefetch(8)
        .run(handler)
        .await
        .expect("run");
    assert!(wait_until(SOON, || async { handled.load(Ordering::SeqCst) >= 60 }).await);
    consumer.shutdown().await.expect("shutdown");
    let peak = metered.peak.load(Ordering::SeqCst);
    assert!(peak <= 8, "{peak} unsettled deliveries with prefetch 8");
    assert!(peak >= 2, "prefetch never used: peak {peak}");
    Ok(())
}

/// Shutdown stops fetching, lets running handlers finish and commits them:
/// a finished message is never handled again, an unstarted one is handled
/// by the next consumer.
pub async fn graceful_shutdown(ctx: &Context) -> Result<(), Skip> {
    let topic = ctx.topic("shutdown");
    let group = ctx.group("shutdown");
    ctx.client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(2))
        .await
        .expect("ensure_topic");
    ctx.join(&topic, &group).await;
    let n = 20;
    let batch = (0..n)
        .map(|i| Message::new(topic.as_str(), format!("{i}")).with_key(format!("k{i}")))
        .collect();
    ctx.client
        .producer()
        .send_batch(batch)
        .await
        .expect("send_batch");

    let started = Arc::new(Mutex::new(HashSet::new()));
    let finished = Arc::new(Mutex::new(HashSet::new()));
    let handler = {
        let (started, finished) = (started.clone(), finished.clone());
        handler_fn(move |d: Delivery| {
            let (started, finished) = (started.clone(), finished.clone());
            async move {
                let body = d.message().payload_str()?.to_owned();
                started.lock().insert(body.clone());
                tokio::time::sleep(Duration::from_millis(300)).await;
                finished.lock().insert(body);
                HandlerResult::Ok(())
            }
        })
    };
    let consumer = ctx
        .client
        .consumer(&topic, &group)
        .concurrency(4)
        .shutdown_timeout(Duration::from_secs(10))
        .run(handler)
        .await
        .expect("run");
    assert!(wait_until(SOON, || async { !started.lock().is_empty() }).await);
    consumer.shutdown().await.expect("shutdown");
    let started_then = started.lock().clone();
    let finished_then = finished.lock().clone();
    assert_eq!(
        started_then, finished_then,
        "shutdown returned before in-flight handlers finished"
    );
    assert!(
        finished_then.len() < n,
        "everything finished before shutdown; the scenario proves nothing"
    );

    let rest = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let rest = rest.clone();
        handler_fn(move |d: Delivery| {
            let rest = rest.clone();
            async move {
                rest.lock().push(d.message().payload_str()?.to_owned());
                HandlerResult::Ok(())
            }
        })
    };
    let consumer = ctx
        .client
        .consumer(&topic, &group)
        .run(handler)
        .await
        .expect("run");
    let expect_rest = n - finished_then.len();
    assert!(
        wait_until(SOON, || async { rest.lock().len() >= expect_rest }).await,
        "{} of {expect_rest}",
        rest.lock().len()
    );
    assert!(
        wait_quiescent(&ctx.client, &topic, &group, QUIET, SOON, || rest
            .lock()
            .len())
        .await,
        "never went quiet"
    );
    consumer.shutdown().await.expect("shutdown");
    let rest: HashSet<String> = rest.lock().iter().cloned().collect();
    assert!(
        rest.is_disjoint(&finished_then),
        "finished messages were redelivered: {:?}",
        rest.intersection(&finished_then)
    );
    assert_eq!(rest.len() + finished_then.len(), n, "messages lost");
    Ok(())
}

/// A real driver wrapped to count deliveries fetched and not yet settled.
struct Metered {
    inner: Arc<dyn Driver>,
    outstanding: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Metered {
    fn new(inner: Arc<dyn Driver>) -> Self {
        Metered {
            inner,
            outstanding: Arc::default(),
            peak: Arc::default(),
        }
    }
}

struct MeteredSubscription {
    inner: Box<dyn DriverSubscription>,
    outstanding: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

#[async_trait]
impl DriverSubscription for MeteredSubscription {
    async fn fetch(&self, max: usize) -> mq_core::Result<Vec<RawDelivery>> {
        let batch = self.inner.fetch(max).await?;
        let now = self.outstanding.fetch_add(batch.len(), Ordering::SeqCst) + batch.len();
        self.peak.fetch_max(now, Ordering::SeqCst);
        Ok(batch)
    }
    async fn ack(&self, tokens: Vec<AckToken>) -> mq_core::Result<()> {
        let n = tokens.len();
        self.inner.ack(tokens).await?;
        self.outstanding.fetch_sub(n, Ordering::SeqCst);
        Ok(())
    }
    async fn nack(&self, token: AckToken, after: Duration) -> mq_core::Result<()> {
        self.inner.nack(token, after).await?;
        self.outstanding.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
    async fn rebalance(&self) -> Option<Rebalance> {
        self.inner.rebalance().await
    }
    async fn close(&self) -> mq_core::Result<()> {
        self.inner.close().await
    }
}

#[async_trait]
impl Driver for Metered {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn publish(&self, batch: Vec<Message>) -> mq_core::Result<Vec<Receipt>> {
        self.inner.publish(batch).await
    }
    async fn begin(&self) -> mq_core::Result<Box<dyn DriverTransaction>> {
        self.inner.begin().await
    }
    async fn subscribe(&self, spec: SubscribeSpec) -> mq_core::Result<Box<dyn DriverSubscription>> {
        Ok(Box::new(MeteredSubscription {
            inner: self.inner.subscribe(spec).await?,
            outstanding: self.outstanding.clone(),
            peak: self.peak.clone(),
        }))
    }
    async fn ensure_group(
        &self,
        topic: &str,
        group: &str,
        start: StartFrom,
    ) -> mq_core::Result<()> {
        self.inner.ensure_group(topic, group, start).await
    }
    async fn ensure_topic(&self, topic: &str, spec: &TopicSpec) -> mq_core::Result<()> {
        self.inner.ensure_topic(topic, spec).await
    }
    async fn delete_topic(&self, topic: &str) -> mq_core::Result<()> {
        self.inner.delete_topic(topic).await
    }
    async fn lag(&self, topic: &str, group: &str) -> mq_core::Result<Vec<PartitionLag>> {
        self.inner.lag(topic, group).await
    }
    async fn close(&self) -> mq_core::Result<()> {
        Ok(())
    }
}
