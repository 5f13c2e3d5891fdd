//! Traces and metrics on every compiled backend, read back through the
//! OpenTelemetry SDK's in-memory exporters.
//!
//! ```text
//! cargo test -p mq --features otel,native,redis,rabbit,kafka,rocket --test telemetry
//! ```
#![cfg(feature = "otel")]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mq::telemetry::Telemetry;
use mq::{handler_fn, Client, Delivery, HandlerError, HandlerResult, Message, RetryPolicy};
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio::sync::Mutex;

/// The backends compiled into this test, by URL. Broker URLs come from the
/// same variables as the conformance suites.
fn backend_urls() -> Vec<String> {
    let env_or =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let mut urls = vec![
        "memory://".to_owned(),
        "memory://?delay=emulated".to_owned(),
    ];
    if cfg!(feature = "native") {
        let dir = std::env::temp_dir().join(unique("mq-telemetry-native"));
        urls.push(format!("native://{}", dir.display()));
    }
    if cfg!(feature = "redis") {
        urls.push(env_or("MQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"));
    }
    if cfg!(feature = "rabbit") {
        let url = env_or("MQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        urls.push(format!("{url}?delete_on_close=true"));
    }
    if cfg!(feature = "kafka") {
        urls.push(env_or(
            "MQ_TEST_KAFKA_URL",
            "kafka://127.0.0.1:9092?assignment=roundrobin",
        ));
    }
    if cfg!(feature = "rocket") {
        urls.push(env_or("MQ_TEST_ROCKETMQ_URL", "rocketmq://127.0.0.1:9876"));
    }
    urls
}

struct Exporters {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
}

impl Exporters {
    fn new() -> Self {
        let spans = InMemorySpanExporter::default();
        let metrics = InMemoryMetricExporter::default();
        Exporters {
            tracer_provider: SdkTracerProvider::builder()
                .with_simple_exporter(spans.clone())
                .build(),
            meter_provider: SdkMeterProvider::builder()
                .with_reader(PeriodicReader::builder(metrics.clone()).build())
                .build(),
            spans,
            metrics,
        }
    }

    fn finished_spans(&self) -> Vec<SpanData> {
        self.tracer_provider.force_flush().expect("flush spans");
        self.spans.get_finished_spans().expect("spans")
    }

    /// The sum of counter `name` over data points whose attributes include `filter`.
    fn counter(&self, name: &str, filter: &KeyValue) -> u64 {
        self.meter_provider.force_flush().expect("flush metrics");
        let mut total = 0;
        for resource in self.metrics.get_finished_metrics().expect("metrics") {
            for scope in resource.scope_metrics() {
                for metric in scope.metrics().filter(|m| m.name() == name) {
                    if let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() {
                        total = sum
                            .data_points()
                            .filter(|p| p.attributes().any(|kv| kv == filter))
                            .map(|p| p.value())
                            .sum::<u64>()
                            .max(total);
                    }
                }
            }
        }
        total
    }

    /// How many calls histogram `name` counted.
    fn histogram_count(&self, name: &str) -> u64 {
        self.meter_provider.force_flush().expect("flush metrics");
        let mut total = 0;
        for resource in self.metrics.get_finished_metrics().expect("metrics") {
            for scope in resource.scope_metrics() {
                for metric in scope.metrics().filter(|m| m.name() == name) {
                    if let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() {
                        total = h.data_points().map(|p| p.count()).sum::<u64>().max(total);
                    }
                }
            }
        }
        total
    }
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn attr_str(span: &SpanData, key: &str) -> Option<String> {
    attr(span, key).map(|v| v.as_str().into_owned())
}

fn unique(name: &str) -> String {
    let run = uuid::Uuid::now_v7().simple().to_string();
    format!("{name}-{}", &run[run.len() - 10..])
}

async fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// One message handled at once and one retried, then dead-lettered: every
/// span of each stays in its producer's trace, names and attributes follow
/// the messaging conventions, and the metrics count what happened.
async fn check_backend(url: &str) {
    let exporters = Exporters::new();
    let telemetry = Telemetry::new(&exporters.tracer_provider, &exporters.meter_provider)
        .with_process_as_child(true)
        .with_lag_interval(Some(Duration::from_millis(100)));
    let client: Client = match mq::connect(url).await {
        Ok(client) => client.with_telemetry(telemetry),
        Err(error)
            if !url.starts_with("memory:")
                && std::env::var("MQ_REQUIRE_BROKERS").as_deref() != Ok("1") =>
        {
            eprintln!("SKIPPED telemetry on {url}: no broker ({error})");
            return;
        }
        Err(error) => panic!("connecting to {url}: {error}"),
    };
    let system = match client.backend() {
        "memory" => "mq.memory",
        "native" => "mq.native",
        "rabbit" => "rabbitmq",
        other => other,
    };
    let topic = unique("orders");
    let group = unique("billing");
    let dlq_group = unique("ops");

    let handled = Arc::new(Mutex::new(Vec::new()));
    let consumer = {
        let handled = handled.clone();
        client
            .consumer(&topic, &group)
            .ordered(false)
            .retry(
                RetryPolicy::new(2)
                    .with_backoff(Duration::from_millis(20), Duration::from_millis(50)),
            )
            .run(handler_fn(move |d: Delivery| {
                let handled = handled.clone();
                async move {
                    handled
                        .lock()
                        .await
                        .push(d.message().payload_str()?.to_owned());
                    if d.message().payload_str()? == "poison" {
                        return HandlerResult::Err(HandlerError::retry("cannot bill"));
                    }
                    Ok(())
                }
            }))
            .await
            .expect("run")
    };
    let dead = Arc::new(Mutex::new(0usize));
    let dlq_reader = {
        let dead = dead.clone();
        client
            .consumer(format!("{topic}.dlq"), &dlq_group)
            .run(handler_fn(move |_d: Delivery| {
                let dead = dead.clone();
                async move {
                    *dead.lock().await += 1;
                    HandlerResult::Ok(())
                }
            }))
            .await
            .expect("run dlq")
    };
    let producer = client.producer();
    let ok = producer
        .send(Message::new(topic.as_str(), "ok").with_key("customer-1"))
        .await
        .expect("send ok");
    let poison = producer
        .send(Message::new(topic.as_str(), "poison"))
        .await
        .expect("send poison");
    assert!(
        wait_for(Duration::from_secs(20), || dead
            .try_lock()
            .is_ok_and(|d| *d == 1))
        .await,
        "{url}: the poison message was not dead-lettered"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    consumer.shutdown().await.expect("shutdown");
    dlq_reader.shutdown().await.expect("shutdown");
    assert_eq!(
        handled.lock().await.len(),
        3,
        "{url}: ok once, poison twice"
    );

    let spans = exporters.finished_spans();
    let with_id = |id: &mq::MessageId, kind: SpanKind| -> Vec<&SpanData> {
        let id = id.to_string();
        spans
            .iter()
            .filter(|s| {
                s.span_kind == kind
                    && attr_str(s, "messaging.message.id").as_deref() == Some(id.as_str())
            })
            .collect()
    };

    // The message handled at once.
    let published = with_id(&ok.id, SpanKind::Producer);
    assert_eq!(published.len(), 1, "{url}: one publish span for ok");
    let publish = published[0];
    assert_eq!(publish.name, format!("publish {topic}"));
    assert_eq!(
        attr_str(publish, "messaging.system").as_deref(),
        Some(system),
        "{url}"
    );
    assert_eq!(
        attr_str(publish, "messaging.operation.type").as_deref(),
        Some("send")
    );
    assert_eq!(
        attr_str(publish, "messaging.destination.name").as_deref(),
        Some(topic.as_str())
    );
    assert!(
        attr(publish, "messaging.destination.partition.id").is_some(),
        "{url}: partition id"
    );
    assert!(
        publish
            .attributes
            .iter()
            .any(|kv| kv.value.as_str() == "customer-1"),
        "{url}: the key"
    );
    let processed = with_id(&ok.id, SpanKind::Consumer);
    assert_eq!(processed.len(), 1, "{url}: one process span for ok");
    let process = processed[0];
    assert_eq!(process.name, format!("process {topic}"));
    assert_eq!(
        process.span_context.trace_id(),
        publish.span_context.trace_id(),
        "{url}: same trace"
    );
    assert_eq!(
        process.parent_span_id,
        publish.span_context.span_id(),
        "{url}: child of publish"
    );
    assert!(
        process
            .links
            .iter()
            .any(|l| l.span_context.span_id() == publish.span_context.span_id()),
        "{url}: linked to publish"
    );
    assert_eq!(
        attr_str(process, "messaging.operation.type").as_deref(),
        Some("process")
    );
    assert_eq!(
        attr_str(process, "messaging.consumer.group.name").as_deref(),
        Some(group.as_str())
    );
    assert_eq!(attr(process, "mq.delivery.attempt"), Some(&Value::I64(1)));
    assert_eq!(process.status, Status::Unset);

    // The message retried, then dead-lettered: one trace end to end.
    let trace: TraceId = with_id(&poison.id, SpanKind::Producer)
        .iter()
        .find(|s| s.name == format!("publish {topic}"))
        .map(|s| s.span_context.trace_id())
        .expect("publish span of poison");
    let in_trace: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect();
    let attempts: HashSet<i64> = in_trace
        .iter()
        .filter(|s| s.name == format!("process {topic}"))
        .filter_map(|s| match attr(s, "mq.delivery.attempt") {
            Some(Value::I64(a)) => Some(*a),
            _ => None,
        })
        .collect();
    assert_eq!(
        attempts,
        HashSet::from([1, 2]),
        "{url}: both attempts in the producer's trace"
    );
    assert!(
        in_trace
            .iter()
            .filter(|s| s.name == format!("process {topic}"))
            .all(|s| matches!(s.status, Status::Error { .. })),
        "{url}: failed attempts are marked as errors"
    );
    assert!(
        in_trace
            .iter()
            .any(|s| s.name == format!("publish {topic}.dlq") && s.span_kind == SpanKind::Producer),
        "{url}: the dead-letter publish is in the trace"
    );
    let dlq_process = in_trace
        .iter()
        .find(|s| s.name == format!("process {topic}.dlq"))
        .unwrap_or_else(|| panic!("{url}: the dead letter's process span is not in the trace"));
    assert_eq!(
        attr_str(dlq_process, "messaging.consumer.group.name").as_deref(),
        Some(dlq_group.as_str())
    );
    assert_ne!(dlq_process.parent_span_id, SpanId::INVALID);

    // Metrics: two user sends to the topic; three handler calls in the group.
    let sent = exporters.counter(
        "messaging.client.sent.messages",
        &KeyValue::new("messaging.destination.name", topic.clone()),
    );
    assert_eq!(sent, 2, "{url}: sent messages");
    let consumed = exporters.counter(
        "messaging.client.consumed.messages",
        &KeyValue::new("messaging.consumer.group.name", group.clone()),
    );
    assert_eq!(consumed, 3, "{url}: consumed messages");
    assert!(
        exporters.histogram_count("messaging.process.duration") >= 4,
        "{url}: process durations"
    );
    assert!(
        exporters.histogram_count("messaging.client.operation.duration") >= 2,
        "{url}: publish durations"
    );
    client.close().await.expect("close");
    eprintln!("telemetry checked on {}", client.backend());
    if let Some(dir) = url.strip_prefix("native://") {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_on_every_backend() {
    for url in backend_urls() {
        check_backend(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_gauge_is_reported() {
    let exporters = Exporters::new();
    let telemetry = Telemetry::new(&exporters.tracer_provider, &exporters.meter_provider)
        .with_lag_interval(Some(Duration::from_millis(50)));
    let client = mq::connect("memory://")
        .await
        .expect("connect")
        .with_telemetry(telemetry);
    let topic = unique("lagging");
    for i in 0..5 {
        client
            .producer()
            .send(Message::new(topic.as_str(), format!("{i}")))
            .await
            .expect("send");
    }
    let consumer = client
        .consumer(&topic, "slow")
        .run(handler_fn(|_d: Delivery| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            HandlerResult::Ok(())
        }))
        .await
        .expect("run");
    tokio::time::sleep(Duration::from_millis(300)).await;
    exporters.meter_provider.force_flush().expect("flush");
    let mut lag_points = 0u64;
    let mut total_lag = 0u64;
    for resource in exporters.metrics.get_finished_metrics().expect("metrics") {
        for scope in resource.scope_metrics() {
            for metric in scope.metrics().filter(|m| m.name() == "mq.consumer.lag") {
                if let AggregatedMetrics::U64(MetricData::Gauge(g)) = metric.data() {
                    lag_points = g.data_points().count() as u64;
                    total_lag = g.data_points().map(|p| p.value()).sum();
                }
            }
        }
    }
    drop(consumer);
    assert!(lag_points >= 1, "no lag gauge points");
    assert_eq!(total_lag, 5, "lag per partition sums to the backlog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_handler_calls_are_traced() {
    let exporters = Exporters::new();
    let telemetry = Telemetry::new(&exporters.tracer_provider, &exporters.meter_provider);
    let client = mq::connect("memory://")
        .await
        .expect("connect")
        .with_telemetry(telemetry);
    let topic = unique("batched");
    let group = unique("loader");
    client
        .consumer(&topic, &group)
        .subscribe()
        .await
        .expect("join")
        .close()
        .await
        .expect("leave");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            client
                .producer()
                .send(Message::new(topic.as_str(), format!("{i}")))
                .await
                .expect("send")
                .id,
        );
    }
    let seen = Arc::new(Mutex::new(0usize));
    let consumer = {
        let seen = seen.clone();
        client
            .consumer(&topic, &group)
            .concurrency(1)
            .run_batch(
                mq::batch_handler_fn(move |batch: Vec<Delivery>| {
                    let seen = seen.clone();
                    async move {
                        *seen.lock().await += batch.len();
                        HandlerResult::Ok(())
                    }
                }),
                mq::BatchOptions::new(10).with_max_wait(Duration::from_millis(100)),
            )
            .await
            .expect("run_batch")
    };
    assert!(
        wait_for(Duration::from_secs(10), || seen
            .try_lock()
            .is_ok_and(|s| *s == 5))
        .await
    );
    consumer.shutdown().await.expect("shutdown");
    let spans = exporters.finished_spans();
    let publish_ids: HashSet<SpanId> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Producer)
        .map(|s| s.span_context.span_id())
        .collect();
    let batches: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Consumer && s.name == format!("process {topic}"))
        .collect();
    assert!(!batches.is_empty(), "no batch span");
    let counted: i64 = batches
        .iter()
        .map(|s| match attr(s, "messaging.batch.message_count") {
            Some(Value::I64(n)) => *n,
            _ => 0,
        })
        .sum();
    assert_eq!(counted, 5);
    let linked: HashSet<SpanId> = batches
        .iter()
        .flat_map(|s| s.links.iter().map(|l| l.span_context.span_id()))
        .collect();
    assert_eq!(
        linked, publish_ids,
        "each batch span links its messages' publish spans"
    );
    assert_eq!(
        exporters.counter(
            "messaging.client.consumed.messages",
            &KeyValue::new("messaging.consumer.group.name", group.clone())
        ),
        5
    );
}

/// With tracing-opentelemetry wired (here for this thread only, no global
/// subscriber), a send inside a `tracing` span is that span's child.
#[tokio::test(flavor = "current_thread")]
async fn publish_joins_the_current_tracing_span() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    let exporters = Exporters::new();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(exporters.tracer_provider.tracer("app")));
    let _guard = tracing::subscriber::set_default(subscriber);
    let telemetry = Telemetry::new(&exporters.tracer_provider, &exporters.meter_provider);
    let client = mq::connect("memory://")
        .await
        .expect("connect")
        .with_telemetry(telemetry);
    let topic = unique("checkout");
    {
        let checkout = tracing::info_span!("checkout");
        let _entered = checkout.enter();
        client
            .producer()
            .send(Message::new(topic.as_str(), "order"))
            .await
            .expect("send");
    }
    let spans = exporters.finished_spans();
    let checkout = spans
        .iter()
        .find(|s| s.name == "checkout")
        .expect("the tracing span is exported");
    let publish = spans
        .iter()
        .find(|s| s.name == format!("publish {topic}"))
        .expect("publish span");
    assert_eq!(
        publish.span_context.trace_id(),
        checkout.span_context.trace_id()
    );
    assert_eq!(publish.parent_span_id, checkout.span_context.span_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_hops_go_through_the_traced_publish_path() {
    let exporters = Exporters::new();
    let telemetry = Telemetry::new(&exporters.tracer_provider, &exporters.meter_provider);
    let client = mq::connect("memory://?delay=emulated")
        .await
        .expect("connect")
        .with_telemetry(telemetry);
    let topic = unique("reminders");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let consumer = client
        .consumer(&topic, unique("mailer"))
        .run(handler_fn(move |d: Delivery| {
            let tx = tx.clone();
            async move {
                tx.send(d.message().payload_str()?.to_owned())?;
                HandlerResult::Ok(())
            }
        }))
        .await
        .expect("run");
    client
        .producer()
        .send(Message::new(topic.as_str(), "later").with_delay(Duration::from_millis(300)))
        .await
        .expect("send");
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    assert_eq!(got.expect("delivered").as_deref(), Some("later"));
    consumer.shutdown().await.expect("shutdown");
    let spans = exporters.finished_spans();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    // The send parks the message in a level topic; each hop of the
    // forwarder (to a shorter level, then to the destination) is a publish
    // of its own, traced like any other and named for the destination.
    let publishes = names
        .iter()
        .filter(|n| **n == format!("publish {topic}"))
        .count();
    assert!(publishes >= 2, "no hop was traced: {names:?}");
}
