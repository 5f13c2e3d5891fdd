//! The whole conformance suite on the memory driver with its native delay
//! switched off, so delays and retry-after go through the core's durable
//! emulation (delay topics and the forwarder).

use mq_core::{memory::MemoryDriver, Client, Config, Support};

mq_testkit::conformance_suite!(|| async {
    let config = Config::from_url("memory://?delay=emulated").expect("url");
    let client = Client::new(MemoryDriver::from_config(&config).expect("driver"));
    assert_eq!(client.capabilities().delay, Support::Emulated);
    assert_eq!(client.capabilities().redelivery_delay, Support::Emulated);
    Some(client)
});

/// No in-process timer holds a delayed message: the client that parked it
/// closes before it is due, and another client on the same broker (a
/// restarted process) delivers it on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_delay_survives_the_publishing_process() {
    use std::time::{Duration, SystemTime};

    use mq_core::Message;
    use mq_testkit::Recorder;

    let name = format!("restart-{}", uuid::Uuid::now_v7().simple());
    let url = format!("memory://{name}?delay=emulated");
    let open = || {
        Client::new(
            MemoryDriver::from_config(&Config::from_url(&url).expect("url")).expect("driver"),
        )
    };

    // The broker outlives the "processes" below, as a real broker would.
    let broker = open();
    let first = open();
    let due = SystemTime::now() + Duration::from_millis(1_500);
    first
        .producer()
        .send(Message::new("reminders", "cancel order 42").with_deliver_at(due))
        .await
        .expect("send");
    first.close().await.expect("close");
    drop(first);

    let second = open();
    let recorder = Recorder::new();
    let consumer = second
        .consumer("reminders", "orders")
        .run(recorder.handler())
        .await
        .expect("run");
    assert!(
        recorder.wait_for(1, Duration::from_secs(10)).await,
        "the delayed message was lost with its publisher"
    );
    consumer.shutdown().await.expect("shutdown");
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].at >= due, "delivered early");
    assert!(seen[0].at.duration_since(due).unwrap_or_default() < Duration::from_millis(500));
    broker.close().await.expect("close");
}
