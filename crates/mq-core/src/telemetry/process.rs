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

impl MetricAttributes {
    fn for_result(&self, result: &HandlerResult) -> &[KeyValue] {
        match result {
            Ok(()) => &self.ok,
            Err(HandlerError::Retry { .. }) => &self.retry,
            Err(HandlerError::Reject { .. }) => &self.reject,
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
    /// Whether `process` spans go anywhere; when they do not, the handler
    /// is called without a span around it.
    pub(crate) fn traces(&self) -> bool {
        !self.telemetry.tracer_is_noop()
    }

    /// Runs `work`, the handling of `delivery`, inside its `process` span
    /// and marks a failure on it. Generic rather than a boxed layer: it sits
    /// on every message's path.
    pub(crate) async fn trace(
        &self,
        delivery: &Delivery,
        work: impl Future<Output = HandlerResult>,
    ) -> HandlerResult {
        in_span(self.start_span(delivery), work).await
    }

    /// A clock for one worker's handler calls.
    pub(crate) fn handler_clock(&self) -> HandlerClock {
        HandlerClock::new(self.telemetry.clock().clone())
    }

    /// Records the consumer metrics for one handler call that began at
    /// `started` (read from `clock`) and ends now.
    pub(crate) fn record(&self, result: &HandlerResult, started: u64, clock: &mut HandlerClock) {
        let took = clock.end_since(started);
        record(&self.telemetry, &self.metric_attributes, 1, result, took);
    }
}

/// Times handler calls for `messaging.process.duration` at one clock read
/// per message while a worker is busy: a message the worker took without
/// waiting starts when the previous call ended, so its time also covers
/// settling the previous message and taking this one from the queue (well
/// under a microsecond). After a wait the clock is read afresh. Reads are
/// raw TSC ticks (quanta), converted only for the difference: with
/// `Instant` pairs the clock alone cost more than the 5% of throughput
/// telemetry may take.
pub(crate) struct HandlerClock {
    clock: quanta::Clock,
    previous_end: Option<u64>,
}

impl HandlerClock {
    fn new(clock: quanta::Clock) -> Self {
        HandlerClock {
            clock,
            previous_end: None,
        }
    }

    /// The worker waited (for work, or before an in-place retry): the next
    /// call starts when it is made.
    pub(crate) fn restart(&mut self) {
        self.previous_end = None;
    }

    /// When the call about to be made starts.
    pub(crate) fn start(&mut self) -> u64 {
        self.previous_end.take().unwrap_or_else(|| self.clock.raw())
    }

    /// Ends a call that started at `started`; returns how long it took.
    fn end_since(&mut self, started: u64) -> Duration {
        let now = self.clock.raw();
        self.previous_end = Some(now);
        Duration::from_nanos(self.clock.delta_as_nanos(started, now))
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
    result: &HandlerResult,
    took: Duration,
) {
    let attributes = metric_attributes.for_result(result);
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
            &result,
            started.elapsed(),
        );
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_worker_reads_the_clock_once_per_call() {
        let mut clock = HandlerClock::new(quanta::Clock::new());
        let first = clock.start();
        std::thread::sleep(Duration::from_millis(2));
        let took = clock.end_since(first);
        assert!(took >= Duration::from_millis(2), "{took:?}");
        let ended = clock.previous_end.expect("end kept");
        // Taken without waiting: starts where the previous call ended.
        assert_eq!(clock.start(), ended);
        assert!(clock.previous_end.is_none());
        // After a wait the clock is read afresh.
        clock.end_since(ended);
        clock.restart();
        std::thread::sleep(Duration::from_millis(1));
        assert!(clock.start() > ended);
    }
}
