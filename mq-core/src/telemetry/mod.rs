//! OpenTelemetry traces and metrics (feature `otel`).
//!
//! With the feature on, every [`Client`](crate::Client) reports through the
//! global OpenTelemetry providers (install yours before creating clients),
//! or through providers you pass with
//! [`Client::with_telemetry`](crate::Client::with_telemetry):
//!
//! - **publish**: a `publish {topic}` PRODUCER span per send or batch, whose
//!   context is written to the message headers as W3C `traceparent` /
//!   `tracestate`. Copies the runtime makes (retries, delay hops, dead
//!   letters) keep the original producer's context, so every hop stays in
//!   one trace.
//! - **process**: a `process {topic}` CONSUMER span per handler call, linked
//!   to the producer span (and its child, with
//!   [`Telemetry::with_process_as_child`]); the handler runs with it as the
//!   current context, so your spans, OpenTelemetry or `tracing` through
//!   tracing-opentelemetry, nest under it.
//! - **metrics**: `messaging.client.sent.messages`,
//!   `messaging.client.consumed.messages`,
//!   `messaging.client.operation.duration`, `messaging.process.duration`
//!   (the handler call and settling its message: ack, retry or dead
//!   letter), and the gauge `mq.consumer.lag` per topic, group and
//!   partition.
//!
//! Attribute names follow the OpenTelemetry messaging semantic conventions.
//! Without the feature none of this is compiled.

mod lag;
mod process;
mod propagation;
mod publish;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider};
use opentelemetry::trace::{Span, Tracer, TracerProvider};

pub(crate) use lag::spawn_lag_reporter;
pub(crate) use process::{ProcessTelemetry, WorkerTelemetry};
pub use propagation::{extract_context, inject_context};
pub(crate) use publish::PublishScope;

const SCOPE: &str = "mq";

const TRACER_UNKNOWN: u8 = 0;
const TRACER_LIVE: u8 = 1;
const TRACER_NOOP: u8 = 2;

/// Where mq sends its spans and metrics, and how.
///
/// ```
/// use mq_core::telemetry::Telemetry;
/// let telemetry = Telemetry::global().with_process_as_child(true);
/// # let _ = telemetry;
/// ```
pub struct Telemetry {
    tracer: BoxedTracer,
    /// Whether the tracer is a no-op, learnt from the first root span: a
    /// no-op tracer gives root spans an invalid context, a real one never
    /// does (even when its sampler drops them). Once known to be a no-op,
    /// spans are not built at all, which keeps telemetry without an
    /// exporter nearly free.
    tracer_kind: AtomicU8,
    metrics: Metrics,
    /// Times handler calls; built once, as its first calibration takes
    /// about a millisecond.
    clock: quanta::Clock,
    process_as_child: bool,
    lag_interval: Option<Duration>,
}

pub(crate) struct Metrics {
    pub(crate) sent: Counter<u64>,
    pub(crate) consumed: Counter<u64>,
    pub(crate) operation_duration: Histogram<f64>,
    pub(crate) process_duration: Histogram<f64>,
    pub(crate) lag: Gauge<u64>,
}

impl Metrics {
    fn new(meter: &Meter) -> Self {
        Metrics {
            sent: meter
                .u64_counter("messaging.client.sent.messages")
                .with_unit("{message}")
                .with_description("Messages a producer attempted to send")
                .build(),
            consumed: meter
                .u64_counter("messaging.client.consumed.messages")
                .with_unit("{message}")
                .with_description("Messages delivered to handlers")
                .build(),
            operation_duration: meter
                .f64_histogram("messaging.client.operation.duration")
                .with_unit("s")
                .with_description("Duration of publish operations")
                .build(),
            process_duration: meter
                .f64_histogram("messaging.process.duration")
                .with_unit("s")
                .with_description("Duration of handler calls")
                .build(),
            lag: meter
                .u64_gauge("mq.consumer.lag")
                .with_unit("{message}")
                .with_description("Messages not yet acknowledged by the consumer group")
                .build(),
        }
    }
}

impl Telemetry {
    /// Reports through the global providers (`opentelemetry::global`).
    pub fn global() -> Self {
        let metrics = Metrics::new(&global::meter(SCOPE));
        Self::from_parts(global::tracer(SCOPE), metrics)
    }

    /// Reports through the given providers.
    pub fn new<T, S>(tracer_provider: &T, meter_provider: &impl MeterProvider) -> Self
    where
        T: TracerProvider,
        T::Tracer: Tracer<Span = S> + Send + Sync + 'static,
        S: Span + Send + Sync + 'static,
    {
        let tracer = BoxedTracer::new(Box::new(tracer_provider.tracer(SCOPE)));
        Self::from_parts(tracer, Metrics::new(&meter_provider.meter(SCOPE)))
    }

    fn from_parts(tracer: BoxedTracer, metrics: Metrics) -> Self {
        Telemetry {
            tracer,
            tracer_kind: AtomicU8::new(TRACER_UNKNOWN),
            metrics,
            clock: quanta::Clock::new(),
            process_as_child: false,
            lag_interval: Some(Duration::from_secs(10)),
        }
    }

    /// Makes `process` spans children of the producer span (they are always linked to it).
    pub fn with_process_as_child(mut self, child: bool) -> Self {
        self.process_as_child = child;
        self
    }

    /// How often running consumers report their lag (default 10 s; `None` turns it off).
    pub fn with_lag_interval(mut self, interval: Option<Duration>) -> Self {
        self.lag_interval = interval.filter(|i| !i.is_zero());
        self
    }

    pub(crate) fn tracer(&self) -> &BoxedTracer {
        &self.tracer
    }

    /// Whether spans are known to go nowhere.
    pub(crate) fn tracer_is_noop(&self) -> bool {
        self.tracer_kind.load(Ordering::Relaxed) == TRACER_NOOP
    }

    /// Learns what the tracer is from a span started without a parent.
    pub(crate) fn observe_root_span(&self, span_context_is_valid: bool) {
        let kind = if span_context_is_valid {
            TRACER_LIVE
        } else {
            TRACER_NOOP
        };
        let _ = self.tracer_kind.compare_exchange(
            TRACER_UNKNOWN,
            kind,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    pub(crate) fn clock(&self) -> &quanta::Clock {
        &self.clock
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn lag_interval(&self) -> Option<Duration> {
        self.lag_interval
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("process_as_child", &self.process_as_child)
            .field("lag_interval", &self.lag_interval)
            .finish_non_exhaustive()
    }
}

/// The `messaging.system` value for a backend.
pub(crate) fn messaging_system(backend: &'static str) -> &'static str {
    match backend {
        "kafka" => "kafka",
        "rabbit" | "rabbitmq" => "rabbitmq",
        "rocket" | "rocketmq" => "rocketmq",
        "redis" => "redis",
        "native" => "mq.native",
        "memory" => "mq.memory",
        other => other,
    }
}

/// The attribute naming the ordering key on this system.
pub(crate) fn key_attribute(system: &str) -> &'static str {
    match system {
        "kafka" => "messaging.kafka.message.key",
        "rocketmq" => "messaging.rocketmq.message.keys",
        _ => "mq.message.key",
    }
}

pub(crate) fn span_name(operation: &str, topic: &str) -> Cow<'static, str> {
    Cow::Owned(format!("{operation} {topic}"))
}
