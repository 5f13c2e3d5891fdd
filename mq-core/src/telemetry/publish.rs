//! The `publish {topic}` span and the producer metrics.

use std::time::Instant;

use opentelemetry::global::BoxedSpan;
use opentelemetry::trace::{Span, SpanBuilder, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_semantic_conventions::attribute as semconv;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    extract_context, inject_context, key_attribute, messaging_system, span_name, Telemetry,
};
use crate::error::{Error, Result};
use crate::message::{reserved, Message, Receipt};

/// The context a user's send belongs to: the current `tracing` span's when
/// tracing-opentelemetry is wired, else the current OpenTelemetry context.
fn current_context() -> Context {
    let from_tracing = tracing::Span::current().context();
    if from_tracing.has_active_span() {
        from_tracing
    } else {
        Context::current()
    }
}

/// Short names for error kinds, used as `error.type`.
pub(crate) fn error_type(error: &Error) -> &'static str {
    match error {
        Error::Config(_) => "config",
        Error::Invalid { .. } => "invalid",
        Error::TooLarge { .. } => "too_large",
        Error::Unsupported { .. } => "unsupported",
        Error::Connection { .. } => "connection",
        Error::Timeout(_) => "timeout",
        Error::Rejected(_) => "rejected",
        Error::Closed(_) => "closed",
        Error::Codec { .. } => "codec",
        Error::Backend { .. } => "backend",
    }
}

/// One publish operation being traced and measured.
pub(crate) struct PublishScope<'t> {
    telemetry: &'t Telemetry,
    span: Option<BoxedSpan>,
    metric_attributes: Vec<KeyValue>,
    count: u64,
    single: bool,
    started: Instant,
}

impl<'t> PublishScope<'t> {
    /// Starts the span and writes its context into every message that does
    /// not carry one yet. Copies the runtime republishes already carry their
    /// original producer's context, which they keep, and their span joins
    /// that trace.
    pub(crate) fn start(
        telemetry: &'t Telemetry,
        backend: &'static str,
        batch: &mut [Message],
    ) -> Self {
        let system = messaging_system(backend);
        // A delayed message parked in a delay topic is reported under its destination.
        let topic = batch
            .first()
            .map_or("", |m| {
                m.headers()
                    .get(reserved::DELAY_DESTINATION)
                    .unwrap_or(m.topic())
            })
            .to_owned();
        let carried = batch
            .first()
            .filter(|m| m.headers().get("traceparent").is_some());
        let parent = match carried {
            Some(m) => extract_context(m.headers()),
            None => current_context(),
        };
        let single = batch.len() == 1;
        let metric_attributes = vec![
            KeyValue::new(semconv::MESSAGING_SYSTEM, system),
            KeyValue::new(semconv::MESSAGING_OPERATION_NAME, "publish"),
            KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, topic.clone()),
        ];
        let span = (!telemetry.tracer_is_noop())
            .then(|| start_span(telemetry, system, topic, &parent, batch));
        PublishScope {
            telemetry,
            span,
            metric_attributes,
            count: batch.len() as u64,
            single,
            started: Instant::now(),
        }
    }

    /// Ends the span with the outcome and records the metrics.
    pub(crate) fn finish(self, result: &Result<Vec<Receipt>>) {
        match result {
            Ok(receipts) => self.end(receipts.first().ok_or(None)),
            Err(error) => self.end(Err(Some(error))),
        }
    }

    /// [`finish`](Self::finish) for a single send.
    pub(crate) fn finish_one(self, result: &Result<Receipt>) {
        self.end(result.as_ref().map_err(Some))
    }

    /// Ends with the first receipt, or the error (`None`: no receipt and
    /// no error, an empty batch).
    fn end(mut self, outcome: std::result::Result<&Receipt, Option<&Error>>) {
        if let Err(Some(error)) = outcome {
            self.metric_attributes
                .push(KeyValue::new("error.type", error_type(error)));
        }
        if let Some(span) = self.span.as_mut() {
            match outcome {
                Ok(receipt) if self.single && span.is_recording() => {
                    span.set_attribute(KeyValue::new(
                        semconv::MESSAGING_DESTINATION_PARTITION_ID,
                        receipt.partition.to_string(),
                    ));
                }
                Err(Some(error)) => {
                    span.set_status(Status::error(error.to_string()));
                    span.set_attribute(KeyValue::new("error.type", error_type(error)));
                }
                _ => {}
            }
            span.end();
        }
        let metrics = self.telemetry.metrics();
        metrics.sent.add(self.count, &self.metric_attributes);
        metrics.operation_duration.record(
            self.started.elapsed().as_secs_f64(),
            &self.metric_attributes,
        );
    }
}

/// Starts the publish span and writes its context into every message that
/// does not carry one yet.
fn start_span(
    telemetry: &Telemetry,
    system: &'static str,
    topic: String,
    parent: &Context,
    batch: &mut [Message],
) -> BoxedSpan {
    let builder =
        SpanBuilder::from_name(span_name("publish", &topic)).with_kind(SpanKind::Producer);
    let mut span = telemetry.tracer().build_with_context(builder, parent);
    if !parent.has_active_span() {
        telemetry.observe_root_span(span.span_context().is_valid());
    }
    if span.is_recording() {
        let mut attributes = vec![
            KeyValue::new(semconv::MESSAGING_SYSTEM, system),
            KeyValue::new(semconv::MESSAGING_OPERATION_TYPE, "send"),
            KeyValue::new(semconv::MESSAGING_OPERATION_NAME, "publish"),
            KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, topic),
        ];
        match batch {
            [single] => {
                if let Some(id) = single.id() {
                    attributes.push(KeyValue::new(semconv::MESSAGING_MESSAGE_ID, id.to_string()));
                }
                if let Some(key) = single.key() {
                    attributes.push(KeyValue::new(key_attribute(system), key.to_owned()));
                }
            }
            _ => attributes.push(KeyValue::new(
                semconv::MESSAGING_BATCH_MESSAGE_COUNT,
                batch.len() as i64,
            )),
        }
        span.set_attributes(attributes);
    }
    let span_context = span.span_context().clone();
    if span_context.is_valid() {
        let cx = Context::new().with_remote_span_context(span_context);
        for message in batch.iter_mut() {
            if message.headers().get("traceparent").is_none() {
                inject_context(&cx, message.headers_mut());
            }
        }
    }
    span
}
