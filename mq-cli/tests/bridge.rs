//! `mq bridge` end to end: a topic copied from a real Redis
//! (`MQ_TEST_REDIS_URL`) to the native engine, verified, resumed, and
//! copied again without duplicates. Skips without Redis, printing why,
//! unless `MQ_REQUIRE_BROKERS=1`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{json_lines, run_mq, skip_without_broker, unique};
use futures::StreamExt;
use mq::{Message, MessageId, StartFrom};
use serde_json::Value;

/// Runs `mq --format json bridge ARGS` and returns its one report line.
fn bridge(args: &[&str]) -> Value {
    let args = [&["--format", "json", "bridge", "--idle", "1s"][..], args].concat();
    let run = run_mq(&args);
    assert!(run.success, "mq {args:?} failed: {}", run.stderr);
    let mut lines = json_lines(&run.stdout);
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.remove(0)
}

/// Every message of `topic` on `url`, read from the start by a new group.
async fn read_all(url: &str, topic: &str) -> Vec<Message> {
    let client = mq::connect(url).await.expect("connect");
    let mut stream = client
        .consumer(topic, unique("reader"))
        .start_from(StartFrom::Earliest)
        .subscribe()
        .await
        .expect("subscribe");
    let mut messages = Vec::new();
    while let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_secs(1), stream.next()).await
    {
        let delivery = delivery.expect("delivery");
        messages.push(delivery.message().clone());
        delivery.ack().await.expect("ack");
    }
    stream.close().await.expect("close");
    client.close().await.expect("close");
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_copies_resumes_and_dedups() {
    let redis =
        std::env::var("MQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let source =
        match tokio::time::timeout(Duration::from_secs(10), mq::connect(redis.as_str())).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return skip_without_broker(&redis, &e.to_string()),
            Err(_) => return skip_without_broker(&redis, "connecting timed out"),
        };
    let dir = std::env::temp_dir().join(unique("bridge-native"));
    let native = format!("native://{}", dir.display());
    let topic = unique("bridged");
    let group = unique("bridge");
    let producer = source.producer();
    let mut sent = HashMap::new();
    for i in 0..40 {
        let receipt = producer
            .send(
                Message::new(topic.as_str(), format!("m{i}"))
                    .with_key(format!("k{}", i % 4))
                    .with_header("n", i.to_string()),
            )
            .await
            .expect("send");
        sent.insert(receipt.id, i);
    }

    let common = [
        "--from", &redis, "--to", &native, "--topic", &topic, "--group", &group,
    ];
    let report = bridge(&[&common[..], &["--verify"]].concat());
    assert_eq!(report["copied"], 40, "{report}");
    assert_eq!(report["verified"], 40, "{report}");
    assert_eq!(report["missing"], 0, "{report}");

    let copies = read_all(&native, &topic).await;
    assert_eq!(copies.len(), 40);
    let mut last_per_key: HashMap<String, i32> = HashMap::new();
    for copy in &copies {
        let id: MessageId = copy.id().expect("id");
        let i = sent[&id];
        assert_eq!(copy.payload_str().ok(), Some(format!("m{i}").as_str()));
        assert_eq!(copy.key(), Some(format!("k{}", i % 4).as_str()));
        assert_eq!(copy.headers().get("n"), Some(i.to_string().as_str()));
        let key = copy.key().unwrap_or_default().to_owned();
        let previous = last_per_key.insert(key, i).unwrap_or(-1);
        assert!(previous < i, "per-key order broken: {previous} then {i}");
    }

    // A later run resumes: only what is new is copied.
    for i in 40..45 {
        let receipt = producer
            .send(Message::new(topic.as_str(), format!("m{i}")).with_key("k0"))
            .await
            .expect("send");
        sent.insert(receipt.id, i);
    }
    let report = bridge(&common);
    assert_eq!(
        (report["copied"].as_u64(), report["duplicates"].as_u64()),
        (Some(5), Some(0)),
        "{report}"
    );

    // Copying everything again stores nothing twice: the target dedups by id.
    source
        .admin()
        .reset_group(&topic, &group, mq::driver::ResetTo::Earliest)
        .await
        .expect("reset the bridge's group");
    let report = bridge(&common);
    assert_eq!(
        (report["copied"].as_u64(), report["duplicates"].as_u64()),
        (Some(45), Some(45)),
        "{report}"
    );
    assert_eq!(read_all(&native, &topic).await.len(), 45);

    let bad = run_mq(&[
        "bridge", "--from", "nope://x", "--to", &native, "--topic", &topic,
    ]);
    assert!(!bad.success);
    assert!(bad.stderr.contains("nope"), "{}", bad.stderr);

    let _ = source.admin().delete_topic(&topic).await;
    source.close().await.expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}
