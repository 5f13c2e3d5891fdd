//! The `process {topic}` span and the consumer metrics, wrapped by the
//! runtime around each handler call (outside the user's layers).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use opentelemetry::context::FutureExt;
use opentelemetry::trace::{Link, Span, SpanBuilder, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_semantic_conventions::attribute as semconv;

use super::{extract_context, key_attribute, messaging_system, span_name, Telemetry};
use crate::message::Delivery;
use crate::runtime::{BatchHandler, HandlerError, HandlerResult};

/// Traces and measures every handler call of one consumer.
#[derive(Clone)]
pub(crate) struct ProcessTelemetry {
    telemetry: Arc<Telemetry>,
    system: &'static str,
    group: Arc<str>,
    metric_attributes: MetricAttributes,
}

impl ProcessTelemetry {
    /// For a consumer of `topic` in `group`. Retry copies are delivered
    /// under their original topic, so every delivery has this topic and the
    /// metric attributes are built once here, not per message.
    pub(crate) fn new(
        telemetry: Arc<Telemetry>,
        backend: &'static str,
        topic: &str,
        group: &str,
    ) -> Self {
        let system = messaging_system(backend);
        ProcessTelemetry {
            telemetry,
            system,
            group: Arc::from(group),
            metric_attributes: MetricAttributes::new(system, topic, group),
        }
    }
}

impl ProcessTelemetry {
    /// Traces a batch handler: one span per call, linked to every message's
    /// producer span (the first 128).
    pub(crate) fn wrap_batch(&self, inner: Arc<dyn BatchHandler>) -> Arc<dyn BatchHandler> {
        Arc::new(TracedBatch {
            inner,
            telemetry: self.telemetry.clone(),
            system: self.system,
            group: self.group.clone(),
            metric_attributes: self.metric_attributes.clone(),
        })
    }
}

/// The metric attributes of one consumer, per outcome.
#[derive(Clone)]
struct MetricAttributes {
    ok: Arc<[KeyValue]>,
    retry: Arc<[KeyValue]>,
    reject: Arc<[KeyValue]>,
}

/// How a handler call ended, for the metric attributes.
#[derive(Clone, Copy)]
enum Outcome {
    Ok,
    Retry,
    Reject,
}

impl Outcome {
    fn of(result: &HandlerResult) -> Self {
        match result {
            Ok(()) => Outcome::Ok,
            Err(HandlerError::Retry { .. }) => Outcome::Retry,
            Err(HandlerError::Reject { .. }) => Outcome::Reject,
        }
    }
}

impl MetricAttributes {
    fn for_outcome(&self, outcome: Outcome) -> &[KeyValue] {
        match outcome {
            Outcome::Ok => &self.ok,
            Outcome::Retry => &self.retry,
            Outcome::Reject => &self.reject,
        }
    }

    fn new(system: &'static str, topic: &str, group: &str) -> Self {
        let base = vec![
            KeyValue::new(semconv::MESSAGING_SYSTEM, system),
            KeyValue::new(semconv::MESSAGING_OPERATION_NAME, "process"),
            KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, topic.to_owned()),
            KeyValue::new(semconv::MESSAGING_CONSUMER_GROUP_NAME, group.to_owned()),
        ];
        let with_error = |kind: &'static str| {
            let mut attributes = base.clone();
            attributes.push(KeyValue::new("error.type", kind));
            Arc::from(attributes)
        };
        MetricAttributes {
            retry: with_error("retry"),
            reject: with_error("reject"),
            ok: Arc::from(base),
        }
    }
}

fn error_type(error: &HandlerError) -> &'static str {
    match error {
        HandlerError::Retry { .. } => "retry",
        HandlerError::Reject { .. } => "reject",
    }
}

impl ProcessTelemetry {
    fn start_span(&self, delivery: &Delivery) -> Context {
        let producer = match delivery.message().headers().get("traceparent") {
            Some(_) => extract_context(delivery.message().headers()),
            None => Context::new(),
        };
        let producer_span = producer.span().span_context().clone();
        let parent = if self.telemetry.process_as_child && producer_span.is_valid() {
            producer
        } else {
            Context::new()
        };
        let mut builder = SpanBuilder::from_name(span_name("process", delivery.topic()))
            .with_kind(SpanKind::Consumer);
        if producer_span.is_valid() {
            builder = builder.with_links(vec![Link::with_context(producer_span)]);
        }
        let mut span = self.telemetry.tracer().build_with_context(builder, &parent);
        if !parent.has_active_span() {
            self.telemetry
                .observe_root_span(span.span_context().is_valid());
        }
        if span.is_recording() {
            let mut attributes = vec![
                KeyValue::new(semconv::MESSAGING_SYSTEM, self.system),
                KeyValue::new(semconv::MESSAGING_OPERATION_TYPE, "process"),
                KeyValue::new(semconv::MESSAGING_OPERATION_NAME, "process"),
                KeyValue::new(
                    semconv::MESSAGING_DESTINATION_NAME,
                    delivery.topic().to_owned(),
                ),
                KeyValue::new(
                    semconv::MESSAGING_CONSUMER_GROUP_NAME,
                    self.group.to_string(),
                ),
                KeyValue::new(
                    semconv::MESSAGING_DESTINATION_PARTITION_ID,
                    delivery.partition().to_string(),
                ),
                KeyValue::new("mq.delivery.attempt", i64::from(delivery.attempt())),
            ];
            if let Some(id) = delivery.message().id() {
                attributes.push(KeyValue::new(semconv::MESSAGING_MESSAGE_ID, id.to_string()));
            }
            if let Some(key) = delivery.key() {
                attributes.push(KeyValue::new(key_attribute(self.system), key.to_owned()));
            }
            span.set_attributes(attributes);
        }
        parent.with_span(span)
    }
}

impl ProcessTelemetry {
    /// The telemetry of one worker of this consumer.
    pub(crate) fn for_worker(&self) -> WorkerTelemetry {
        WorkerTelemetry {
            clock: self.telemetry.clock().clone(),
            process: self.clone(),
            previous_end: None,
            started: 0,
            outcome: Outcome::Ok,
        }
    }
}

/// One worker's `process` spans and consumer metrics.
///
/// `messaging.process.duration` covers a message's processing: the handler
/// call and settling the message (ack, retry or dead letter). While the
/// worker is busy one message starts where the previous one ended, so each
/// takes one clock read, a raw TSC read (quanta) converted only for the
/// difference: two `Instant` reads per message alone cost more than the 5%
/// of throughput telemetry may take. The time between (taking the next
/// message from the queue) is well under a microsecond. After a wait the
/// clock is read afresh.
pub(crate) struct WorkerTelemetry {
    process: ProcessTelemetry,
    clock: quanta::Clock,
    /// When the previous message's processing ended, unless the worker
    /// waited since.
    previous_end: Option<u64>,
    /// The message being processed: when it started, how its call ended.
    started: u64,
    outcome: Outcome,
}

impl WorkerTelemetry {
    /// The worker waited (for work, or before an in-place retry).
    pub(crate) fn waited(&mut self) {
        self.previous_end = None;
    }

    /// Runs `work`, the handler call for `delivery`, inside its `process`
    /// span when spans go anywhere (without one when they do not). Generic
    /// rather than a boxed layer: it sits on every message's path.
    pub(crate) async fn call(
        &mut self,
        delivery: &Delivery,
        work: impl Future<Output = HandlerResult>,
    ) -> HandlerResult {
        self.started = self.previous_end.take().unwrap_or_else(|| self.clock.raw());
        let result = if self.process.telemetry.tracer_is_noop() {
            work.await
        } else {
            in_span(self.process.start_span(delivery), work).await
        };
        self.outcome = Outcome::of(&result);
        result
    }

    /// The message of the last call is settled, or about to be retried in
    /// place: its processing ends now.
    pub(crate) fn settled(&mut self) {
        let now = self.clock.raw();
        self.previous_end = Some(now);
        let took = Duration::from_nanos(self.clock.delta_as_nanos(self.started, now));
        let process = &self.process;
        record(
            &process.telemetry,
            &process.metric_attributes,
            1,
            self.outcome,
            took,
        );
    }
}

/// Runs `work` with `cx` (holding a `process` span) as the current context,
/// marks a failure on the span and ends it.
async fn in_span(cx: Context, work: impl Future<Output = HandlerResult>) -> HandlerResult {
    let result = work.with_context(cx.clone()).await;
    let span = cx.span();
    if let Err(error) = &result {
        span.set_status(Status::error(error.to_string()));
        span.set_attribute(KeyValue::new("error.type", error_type(error)));
    }
    span.end();
    result
}

/// Records the consumer metrics for a handler call over `count` messages.
fn record(
    telemetry: &Telemetry,
    metric_attributes: &MetricAttributes,
    count: u64,
    outcome: Outcome,
    took: Duration,
) {
    let attributes = metric_attributes.for_outcome(outcome);
    let metrics = telemetry.metrics();
    metrics.consumed.add(count, attributes);
    metrics
        .process_duration
        .record(took.as_secs_f64(), attributes);
}

struct TracedBatch {
    inner: Arc<dyn BatchHandler>,
    telemetry: Arc<Telemetry>,
    system: &'static str,
    group: Arc<str>,
    metric_attributes: MetricAttributes,
}

/// Most producer links one batch span carries.
const MAX_BATCH_LINKS: usize = 128;

impl TracedBatch {
    fn start_span(&self, batch: &[Delivery]) -> Context {
        let links: Vec<Link> = batch
            .iter()
            .filter(|d| d.message().headers().get("traceparent").is_some())
            .map(|d| {
                extract_context(d.message().headers())
                    .span()
                    .span_context()
                    .clone()
            })
            .filter(|sc| sc.is_valid())
            .take(MAX_BATCH_LINKS)
            .map(Link::with_context)
            .collect();
        let topic = batch.first().map_or("", |d| d.topic());
        let builder = SpanBuilder::from_name(span_name("process", topic))
            .with_kind(SpanKind::Consumer)
            .with_links(links);
        let root = Context::new();
        let mut span = self.telemetry.tracer().build_with_context(builder, &root);
        self.telemetry
            .observe_root_span(span.span_context().is_valid());
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new(semconv::MESSAGING_SYSTEM, self.system),
                KeyValue::new(semconv::MESSAGING_OPERATION_TYPE, "process"),
                KeyValue::new(semconv::MESSAGING_OPERATION_NAME, "process"),
                KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, topic.to_owned()),
                KeyValue::new(
                    semconv::MESSAGING_CONSUMER_GROUP_NAME,
                    self.group.to_string(),
                ),
                KeyValue::new(semconv::MESSAGING_BATCH_MESSAGE_COUNT, batch.len() as i64),
            ]);
        }
        root.with_span(span)
    }
}

#[async_trait]
impl BatchHandler for TracedBatch {
    async fn handle_batch(&self, batch: &[Delivery]) -> HandlerResult {
        let started = Instant::now();
        let work = self.inner.handle_batch(batch);
        let result = if self.telemetry.tracer_is_noop() {
            work.await
        } else {
            in_span(self.start_span(batch), work).await
        };
        record(
            &self.telemetry,
            &self.metric_attributes,
            batch.len() as u64,
            Outcome::of(&result),
            started.elapsed(),
        );
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::metrics::{
        data::{AggregatedMetrics, MetricData},
        InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
    };

    /// Sum and count of the `messaging.process.duration` histogram.
    fn process_durations(exporter: &InMemoryMetricExporter) -> (f64, u64) {
        let mut out = (0.0, 0);
        for resource in exporter.get_finished_metrics().expect("metrics") {
            for scope in resource.scope_metrics() {
                for metric in scope.metrics() {
                    if metric.name() != "messaging.process.duration" {
                        continue;
                    }
                    if let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() {
                        for point in h.data_points() {
                            out = (out.0 + point.sum(), out.1 + point.count());
                        }
                    }
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn a_busy_worker_times_each_message_from_the_previous_end() {
        let exporter = InMemoryMetricExporter::default();
        let meters = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let tracers = opentelemetry::trace::noop::NoopTracerProvider::new();
        let telemetry = Arc::new(Telemetry::new(&tracers, &meters));
        let process = ProcessTelemetry::new(telemetry, "memory", "t", "g");
        let mut worker = process.for_worker();
        let delivery = Delivery {
            message: Arc::new(crate::Message::new("t", "x")),
            group: Arc::from("g"),
            partition: 0,
            offset: Some(0),
            attempt: 1,
            first_seen: std::time::SystemTime::now(),
            token: crate::driver::AckToken::new("t", 0, 0),
            settler: None,
        };
        let sleep = || async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(())
        };

        worker.call(&delivery, sleep()).await.unwrap();
        worker.settled();
        let first_end = worker.previous_end.expect("end kept");
        // Taken without waiting: starts where the previous one ended.
        worker.call(&delivery, sleep()).await.unwrap();
        assert_eq!(worker.started, first_end);
        worker.settled();
        // After a wait the clock is read afresh.
        worker.waited();
        tokio::time::sleep(Duration::from_millis(20)).await;
        worker.call(&delivery, sleep()).await.unwrap();
        worker.settled();

        meters.force_flush().unwrap();
        let (sum, count) = process_durations(&exporter);
        assert_eq!(count, 3);
        // Three calls of at least 5 ms; the 20 ms wait is not counted.
        assert!((0.015..0.035).contains(&sum), "{sum}");
    }
}
