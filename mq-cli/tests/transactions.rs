//! `mq transactions list|abort` end to end, the built binary against a
//! real Kafka-protocol broker (`MQ_TEST_KAFKA_URL`, default
//! `kafka://127.0.0.1:9092?assignment=roundrobin`): a transaction left
//! open by a producer that went away is listed with its partition, aborted,
//! and then listed as no longer open. Without the broker the test skips,
//! printing why, unless `MQ_REQUIRE_BROKERS=1`. On the memory backend the
//! commands are a clear `Unsupported` naming it.

mod common;

use std::time::Duration;

use common::{run_mq, skip_without_broker, unique, Mq};
use mq::{Message, TopicSpec};
use serde_json::Value;

/// The rows of `mq transactions list` whose partitions include `topic`.
fn writing_to<'a>(rows: &'a [Value], topic: &str) -> Vec<&'a Value> {
    rows.iter()
        .filter(|r| {
            r["partitions"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["topic"] == topic))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_on_kafka() {
    let url = std::env::var("MQ_TEST_KAFKA_URL")
        .unwrap_or_else(|_| "kafka://127.0.0.1:9092?assignment=roundrobin".into());
    let client =
        match tokio::time::timeout(Duration::from_secs(20), mq::connect(url.as_str())).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return skip_without_broker(&url, &e.to_string()),
            Err(_) => return skip_without_broker(&url, "connecting timed out"),
        };
    let topic = unique("tx");
    client
        .admin()
        .ensure_topic(&topic, TopicSpec::new(1))
        .await
        .expect("create");
    // A producer that goes away mid-transaction: the transaction is
    // forgotten, so nothing commits or aborts it.
    let mut tx = client.producer().begin().await.expect("begin");
    tx.send(Message::new(topic.as_str(), "never"))
        .await
        .expect("send");
    std::mem::forget(tx);

    let mq = Mq { url: url.clone() };
    let rows = mq.json(&["transactions", "list", "--open"], "");
    let hung = writing_to(&rows, &topic);
    assert_eq!(hung.len(), 1, "{rows:?}");
    assert_eq!(hung[0]["state"], "Ongoing");
    assert_eq!(hung[0]["open"], true);
    assert!(hung[0]["started"].is_string(), "{}", hung[0]);
    let id = hung[0]["id"].as_str().expect("id").to_owned();

    let table = run_mq(&["--url", &url, "transactions", "list"]);
    assert!(table.success, "{}", table.stderr);
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not in\n{}", table.stdout));
    assert!(
        line.contains("Ongoing") && line.contains(&format!("{topic}:0")),
        "{line}"
    );

    let aborted = mq.run(&["transactions", "abort", &id]);
    assert!(aborted.success, "{}", aborted.stderr);
    assert!(aborted.stderr.contains("fenced"), "{}", aborted.stderr);
    let rows = mq.json(&["transactions", "list"], "");
    let after = rows
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} no longer listed: {rows:?}"));
    assert_eq!(after["open"], false, "{after}");
    assert!(writing_to(&mq.json(&["transactions", "list", "--open"], ""), &topic).is_empty());

    let again = mq.run(&["transactions", "abort", &id]);
    assert!(!again.success);
    assert!(
        again.stderr.contains("no transaction is open"),
        "{}",
        again.stderr
    );
    let empty = mq.run(&["transactions", "abort", ""]);
    assert!(!empty.success);
    assert!(
        empty.stderr.contains("invalid transactional id"),
        "{}",
        empty.stderr
    );

    let _ = client.admin().delete_topic(&topic).await;
    client.close().await.expect("close");
}

#[test]
fn transactions_are_unsupported_on_memory() {
    let mq = Mq {
        url: "memory://".into(),
    };
    for args in [
        &["transactions", "list"][..],
        &["transactions", "abort", "some-id"][..],
    ] {
        let run = mq.run(args);
        assert!(!run.success, "{args:?} succeeded");
        assert!(
            run.stderr.contains("not supported by the memory backend"),
            "{args:?}: {}",
            run.stderr
        );
    }
}
