//! Following one message in a tracing UI: a checkout publishes an order,
//! a consumer processes it, and both appear in one trace.
//!
//! ```text
//! cargo run --example tracing --features otel                     # spans to stdout
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \
//!     cargo run --example tracing --features otel                 # spans to a collector
//! ```
//!
//! Install the tracer provider before connecting: a client takes the global
//! providers when it is created.

use std::time::Duration;

use mq::telemetry::Telemetry;
use mq::{handler_fn, Delivery, HandlerResult, Message};
use opentelemetry::global;
use opentelemetry::trace::{TraceContextExt, Tracer};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::sync::mpsc;

fn tracer_provider() -> Result<SdkTracerProvider, Box<dyn std::error::Error>> {
    let builder = SdkTracerProvider::builder();
    Ok(match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()?;
            builder.with_batch_exporter(exporter).build()
        }
        Err(_) => builder
            .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
            .build(),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let provider = tracer_provider()?;
    global::set_tracer_provider(provider.clone());

    let url = std::env::var("MQ_URL").unwrap_or_else(|_| "memory://".to_owned());
    // Consumer spans are linked to their producer span by default; as
    // children they also share its trace, so the whole flow is one trace.
    let client = mq::connect(url.as_str())
        .await?
        .with_telemetry(Telemetry::global().with_process_as_child(true));

    let (done_tx, mut done) = mpsc::unbounded_channel();
    let consumer = client
        .consumer("orders", "billing")
        .run(handler_fn(move |d: Delivery| {
            let done_tx = done_tx.clone();
            async move {
                // The handler runs inside "process orders": this span nests under it.
                global::tracer("billing").in_span("charge card", |_cx| {
                    println!("charging for {}", d.message().payload_str().unwrap_or("?"));
                });
                done_tx.send(())?;
                HandlerResult::Ok(())
            }
        }))
        .await?;

    // The publish span is a child of the current span, "checkout".
    let tracer = global::tracer("shop");
    let span = tracer.start("checkout");
    let cx = opentelemetry::Context::current_with_span(span);
    let trace_id = cx.span().span_context().trace_id();
    {
        let _guard = cx.clone().attach();
        client
            .producer()
            .send(Message::new("orders", "order 42").with_key("customer-7"))
            .await?;
    }
    cx.span().end();

    tokio::time::timeout(Duration::from_secs(10), done.recv()).await?;
    consumer.shutdown().await?;
    client.close().await?;
    provider.shutdown()?;
    eprintln!("trace {trace_id}: checkout -> publish orders -> process orders -> charge card");
    Ok(())
}
