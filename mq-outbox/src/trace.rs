//! The enqueuing request's trace context, kept in the outbox row and
//! restored around the relay's publish.
//!
//! The `publish {topic}` span of the relay then belongs to the request's
//! trace, and the consumer's `process {topic}` span links to it, so a
//! trace goes request → outbox → broker → consumer. Without the `otel`
//! feature nothing is captured and the columns stay empty.

/// The W3C `traceparent` and `tracestate` of the current context, if a span is active.
#[cfg(feature = "otel")]
pub(crate) fn capture() -> (Option<String>, Option<String>) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    // The same choice of context the core's publish path makes: the
    // current `tracing` span's when tracing-opentelemetry is wired, else
    // the current OpenTelemetry context.
    let from_tracing = tracing::Span::current().context();
    let cx = if from_tracing.has_active_span() {
        from_tracing
    } else {
        opentelemetry::Context::current()
    };
    if !cx.has_active_span() {
        return (None, None);
    }
    let mut headers = mq_core::Headers::new();
    mq_core::telemetry::inject_context(&cx, &mut headers);
    (
        headers.get("traceparent").map(str::to_owned),
        headers.get("tracestate").map(str::to_owned),
    )
}

/// Without the `otel` feature there is no context to capture.
#[cfg(not(feature = "otel"))]
pub(crate) fn capture() -> (Option<String>, Option<String>) {
    (None, None)
}

/// Runs `publish` inside the context a row captured, if any.
#[cfg(feature = "otel")]
pub(crate) async fn within<F: std::future::Future>(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
    publish: F,
) -> F::Output {
    use opentelemetry::context::FutureExt;

    let Some(traceparent) = traceparent else {
        return publish.await;
    };
    let mut headers = mq_core::Headers::new();
    headers.insert("traceparent", traceparent);
    if let Some(state) = tracestate {
        headers.insert("tracestate", state);
    }
    publish
        .with_context(mq_core::telemetry::extract_context(&headers))
        .await
}

/// Without the `otel` feature rows carry no context.
#[cfg(not(feature = "otel"))]
pub(crate) async fn within<F: std::future::Future>(
    _traceparent: Option<&str>,
    _tracestate: Option<&str>,
    publish: F,
) -> F::Output {
    publish.await
}
