//! The operations commands end to end: the built `mq` binary against a
//! real Redis (`MQ_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/0`), a
//! real RabbitMQ (`MQ_TEST_AMQP_URL`), a real Kafka-protocol broker
//! (`MQ_TEST_KAFKA_URL`), a real RocketMQ (`MQ_TEST_ROCKETMQ_URL`, default
//! `rocketmq://127.0.0.1:9876`) and against native in a temporary
//! directory. Topic names are unique to the run. Without a broker its test
//! skips, printing why, unless `MQ_REQUIRE_BROKERS=1`; native skips while
//! it lists no topics or groups. Where a backend lacks an admin operation
//! (RabbitMQ lists no topics or groups over AMQP), its command must fail
//! saying so and naming the backend.

mod common;

use std::time::{Duration, Instant};

use common::{finish, json_lines, skip_without_broker, unique, Mq, COMMAND_LIMIT};
use mq::driver::Support;
use mq::{handler_fn, Delivery, HandlerError, Message, StartFrom};
use serde_json::Value;

fn strings<'a>(rows: &'a [Value], field: &str) -> Vec<&'a str> {
    let mut values: Vec<&str> = rows.iter().filter_map(|r| r[field].as_str()).collect();
    values.sort();
    values
}

fn total_lag(rows: &[Value]) -> u64 {
    rows.iter().filter_map(|r| r["lag"].as_u64()).sum()
}

/// Every command on the broker named by `env` (or `default`); skips
/// without it, printing why, unless `MQ_REQUIRE_BROKERS=1`.
async fn on_broker(env: &str, default: &str) {
    let url = std::env::var(env).unwrap_or_else(|_| default.into());
    let reachable = tokio::time::timeout(Duration::from_secs(20), mq::connect(url.as_str())).await;
    match reachable {
        Ok(Ok(client)) => client.close().await.expect("close"),
        Ok(Err(e)) => return skip_without_broker(&url, &e.to_string()),
        Err(_) => return skip_without_broker(&url, "connecting timed out"),
    }
    exercise(&url, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_on_redis() {
    on_broker("MQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_on_rabbitmq() {
    on_broker("MQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_on_kafka() {
    on_broker(
        "MQ_TEST_KAFKA_URL",
        "kafka://127.0.0.1:9092?assignment=roundrobin",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_on_rocketmq() {
    on_broker("MQ_TEST_ROCKETMQ_URL", "rocketmq://127.0.0.1:9876").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_on_native() {
    let dir = std::env::temp_dir().join(unique("native"));
    let url = format!("native://{}", dir.display());
    let client = mq::connect(url.as_str()).await.expect("open native");
    let admin = client.capabilities().admin;
    client.close().await.expect("close");
    if admin.list_topics != Support::Native || admin.list_groups != Support::Native {
        eprintln!("SKIPPED operations_on_native: native lists no topics or groups yet ({admin:?})");
    } else {
        // The directory is one process's at a time: nothing can publish
        // while `mq tail` holds it, so tail is not exercised here.
        exercise(&url, false).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every command on `url`; `tail` only where another process can publish
/// while it runs (`shared`). Library clients are closed before each
/// command, as a native directory admits one process at a time.
async fn exercise(url: &str, shared: bool) {
    let mq = Mq {
        url: url.to_owned(),
    };
    let client = mq::connect(url).await.expect("connect");
    let capabilities = client.capabilities();
    let backend = client.backend();
    let lists_topics = capabilities.admin.list_topics != Support::Unsupported;
    let lists_groups = capabilities.admin.list_groups != Support::Unsupported;
    client.close().await.expect("close");
    let topic = unique("t");
    let group = unique("g");
    mq.json(&["topics", "create", &topic, "--partitions", "2"], "");
    // A broker that keeps nothing for a group before it exists (RabbitMQ)
    // gets the group first, as its users declare queues before producing.
    if !capabilities.retains_before_group {
        let client = mq::connect(url).await.expect("connect");
        client
            .admin()
            .ensure_group(&topic, &group, StartFrom::Earliest)
            .await
            .expect("ensure_group");
        client.close().await.expect("close");
    }

    let sent = mq.json(&["produce", &topic], "m0\nm1\n\nm2\n");
    assert_eq!(sent.len(), 3, "{sent:?}");
    for receipt in &sent {
        assert_eq!(receipt["topic"], topic.as_str());
        assert!(
            receipt["partition"].as_u64().is_some_and(|p| p < 2),
            "{receipt}"
        );
        assert!(receipt["id"].as_str().is_some_and(|id| !id.is_empty()));
    }
    if lists_topics {
        let topics = mq.json(&["topics"], "");
        assert!(
            topics
                .iter()
                .any(|t| t["topic"] == topic.as_str() && t["partitions"] == 2),
            "{topics:?}"
        );
    } else {
        refused(&mq, &["topics"], backend);
    }

    let consume = ["consume", &topic, "--group", &group, "--follow", "--max"];
    let first = mq.json(&[&consume[..], &["2"]].concat(), "");
    assert_eq!(first.len(), 2, "{first:?}");
    for line in &first {
        assert_eq!(line["topic"], topic.as_str());
        assert_eq!(line["attempt"], 1);
        assert_eq!(line["payload_utf8"], true);
    }
    if lists_groups {
        let groups = mq.json(&["groups", &topic], "");
        assert!(
            groups
                .iter()
                .any(|g| g["group"] == group.as_str() && g["lag"] == 1),
            "{groups:?}"
        );
    } else {
        refused(&mq, &["groups", &topic], backend);
    }
    let lag = mq.json(&["lag", &topic, &group], "");
    assert_eq!(total_lag(&lag), 1, "{lag:?}");
    assert!(lag.iter().all(|r| r["group"] == group.as_str()), "{lag:?}");
    let rest = mq.json(&[&consume[..], &["1"]].concat(), "");
    let mut payloads = strings(&first, "payload");
    payloads.extend(strings(&rest, "payload"));
    payloads.sort();
    assert_eq!(payloads, ["m0", "m1", "m2"]);
    let none = mq.json(&["consume", &topic, "--group", &group, "--max", "5"], "");
    assert!(none.is_empty(), "consumed twice: {none:?}");
    assert_eq!(total_lag(&mq.json(&["lag", &topic, &group], "")), 0);

    let grows = capabilities.partition_growth == Support::Native;
    let grown = mq.run(&["topics", "partitions", &topic, "4"]);
    if grows {
        assert!(grown.success, "{}", grown.stderr);
        assert!(grown.stderr.contains("per-key order"), "{}", grown.stderr);
        let topics = mq.json(&["topics"], "");
        assert!(
            topics
                .iter()
                .any(|t| t["topic"] == topic.as_str() && t["partitions"] == 4),
            "{topics:?}"
        );
    } else {
        assert!(!grown.success);
        assert!(
            grown.stderr.contains("adding partitions"),
            "{}",
            grown.stderr
        );
    }

    let (dead, dlq) = dead_letters(&mq).await;
    if shared {
        tail(&mq, &topic).await;
    }
    for t in [&topic, &dead, &dlq] {
        mq.json(&["topics", "delete", t], "");
    }
    if lists_topics {
        let topics = mq.json(&["topics"], "");
        assert!(
            !topics.iter().any(|t| t["topic"] == topic.as_str()),
            "{topics:?}"
        );
    }
}

/// `args` fails on a backend without the operation, saying it is not
/// supported and naming `backend`.
fn refused(mq: &Mq, args: &[&str], backend: &str) {
    let run = mq.run(args);
    assert!(!run.success, "mq {args:?} succeeded on {backend}");
    assert!(
        run.stderr.contains("not supported") && run.stderr.contains(backend),
        "mq {args:?} on {backend}: {}",
        run.stderr
    );
}

/// Three letters made by a rejecting handler: inspected, one redriven by
/// key, two purged. Returns their topic and its dead-letter topic.
async fn dead_letters(mq: &Mq) -> (String, String) {
    let topic = unique("d");
    let group = unique("dg");
    let client = mq::connect(mq.url.as_str()).await.expect("connect");
    let dlq = client.capabilities().names.dead_letter_topic(&topic);
    let admin = client.admin();
    admin
        .ensure_group(&topic, &group, StartFrom::Earliest)
        .await
        .expect("ensure_group");
    for key in ["k1", "k2", "k3"] {
        client
            .producer()
            .send(Message::new(topic.as_str(), format!("for {key}")).with_key(key))
            .await
            .expect("send");
    }
    let consumer = client
        .consumer(&topic, &group)
        .run(handler_fn(|_d: Delivery| async {
            Err::<(), _>(HandlerError::reject("refused by the test"))
        }))
        .await
        .expect("run");
    let deadline = Instant::now() + COMMAND_LIMIT;
    while admin.total_lag(&topic, &group).await.expect("lag") > 0 {
        assert!(Instant::now() < deadline, "the rejects never left {topic}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consumer.shutdown().await.expect("shutdown");
    client.close().await.expect("close");

    let letters = mq.json(&["dlq", "inspect", &topic], "");
    assert_eq!(strings(&letters, "key"), ["k1", "k2", "k3"], "{letters:?}");
    for letter in &letters {
        assert_eq!(letter["from_topic"], topic.as_str());
        assert_eq!(letter["group"], group.as_str());
        assert!(
            letter["error"]
                .as_str()
                .is_some_and(|e| e.contains("refused by the test")),
            "{letter}"
        );
    }
    let report = mq.json(&["dlq", "redrive", &topic, "--key", "k1"], "");
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(
        (
            &report[0]["redriven"],
            &report[0]["refused"],
            &report[0]["skipped"]
        ),
        (&Value::from(1), &Value::from(0), &Value::from(2))
    );
    assert_eq!(total_lag(&mq.json(&["lag", &topic, &group], "")), 1);
    assert_eq!(mq.json(&["dlq", "purge", &topic], ""), [Value::from(2)]);
    assert!(mq.json(&["dlq", "inspect", &topic], "").is_empty());
    (topic, dlq)
}

/// `mq tail` shows what is published after it starts: the test publishes
/// until it has printed two messages.
async fn tail(mq: &Mq, topic: &str) {
    let client = mq::connect(mq.url.as_str()).await.expect("connect");
    let args = ["tail", topic, "--max", "2"];
    let child = mq.spawn(&args, "");
    let runtime = tokio::runtime::Handle::current();
    let mut last_send: Option<Instant> = None;
    let mut sent = 0u32;
    let run = tokio::task::block_in_place(|| {
        finish(child, &args, || {
            if last_send.is_some_and(|at| at.elapsed() < Duration::from_millis(200)) {
                return false;
            }
            last_send = Some(Instant::now());
            sent += 1;
            let message = Message::new(topic, format!("tail {sent}"));
            runtime
                .block_on(client.producer().send(message))
                .expect("send");
            true
        })
    });
    client.close().await.expect("close");
    assert!(run.success, "mq tail failed: {}", run.stderr);
    let lines = json_lines(&run.stdout);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert_eq!(line["topic"], topic);
        assert!(
            line["payload"]
                .as_str()
                .is_some_and(|p| p.starts_with("tail ")),
            "{line}"
        );
    }
}
