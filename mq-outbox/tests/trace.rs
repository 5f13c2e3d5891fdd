//! The enqueuing request's trace reaches the consumer through the outbox
//! relay (feature `otel`).
#![cfg(all(feature = "otel", feature = "sqlite", feature = "postgres"))]

mod support;

use std::time::Duration;

use mq_core::memory::MemoryDriver;
use mq_core::telemetry::{extract_context, Telemetry};
use mq_core::{Client, Message};
use mq_outbox::sqlite::SqliteOutbox;
use opentelemetry::context::FutureExt;
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};
use opentelemetry::Context;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_trace_goes_through_the_relay() {
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let meter_provider = SdkMeterProvider::default();
    let client = Client::new(MemoryDriver::new())
        .with_telemetry(Telemetry::new(&tracer_provider, &meter_provider));

    let dir = support::fresh_dir("trace");
    let pool = support::sqlite(&dir).await;
    let outbox = SqliteOutbox::new(pool.clone());
    let request = Context::current_with_span(tracer_provider.tracer("app").start("POST /orders"));
    let trace_id = request.span().span_context().trace_id();
    async {
        let mut tx = pool.begin().await.unwrap();
        outbox
            .enqueue(&mut tx, Message::new("orders", "created").with_key("o-1"))
            .await
            .unwrap();
        outbox
            .enqueue(&mut tx, Message::new("orders", "paid").with_key("o-1"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    .with_context(request.clone())
    .await;
    let mut untraced = pool.begin().await.unwrap();
    outbox
        .enqueue(&mut untraced, Message::new("orders", "no trace"))
        .await
        .unwrap();
    untraced.commit().await.unwrap();

    assert_eq!(outbox.relay(&client).drain().await.unwrap(), 3);
    let mut stream = client
        .consumer("orders", "check")
        .subscribe()
        .await
        .unwrap();
    for _ in 0..3 {
        let delivery = tokio::time::timeout(Duration::from_secs(5), stream.next_delivery())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let carried = extract_context(delivery.message().headers())
            .span()
            .span_context()
            .trace_id();
        if delivery.message().payload_str().unwrap() == "no trace" {
            assert_ne!(carried, trace_id);
        } else {
            assert_eq!(carried, trace_id, "the consumer sees the request's trace");
        }
        delivery.ack().await.unwrap();
    }
    stream.close().await.unwrap();
    tracer_provider.force_flush().unwrap();
    let publish = spans
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.name.starts_with("publish") && s.span_context.trace_id() == trace_id)
        .count();
    assert_eq!(
        publish, 1,
        "one publish span for the request's run of rows, in its trace"
    );
}
