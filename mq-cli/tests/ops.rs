//! The operations commands end to end: the built `mq` binary against a
//! real Redis (`MQ_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/0`)
//! and against native in a temporary directory. Topic names are unique to
//! the run. Without Redis the test skips, printing why, unless
//! `MQ_REQUIRE_BROKERS=1`; native skips while it lists no topics or groups.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mq::driver::Support;
use mq::{handler_fn, Delivery, HandlerError, Message, StartFrom};
use serde_json::Value;

/// Longest any one command may run.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// The `mq` binary on one backend.
struct Mq {
    url: String,
}

/// What a finished command printed.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Mq {
    /// Starts `mq --url URL --format json ARGS`, with `stdin` piped in.
    fn spawn(&self, args: &[&str], stdin: &str) -> Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mq"))
            .args(["--url", &self.url, "--format", "json"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mq");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
        child
    }

    /// Runs a command to its end and returns its JSON lines, failing the
    /// test when it fails.
    fn json(&self, args: &[&str], stdin: &str) -> Vec<Value> {
        let run = finish(self.spawn(args, stdin), args, || false);
        assert!(run.success, "mq {args:?} failed: {}", run.stderr);
        json_lines(&run.stdout)
    }
}

/// Waits for `child` (up to [`COMMAND_LIMIT`]), calling `meanwhile` every
/// few milliseconds; kills it at the limit and fails the test.
fn finish(mut child: Child, args: &[&str], mut meanwhile: impl FnMut() -> bool) -> Run {
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    // Read while it runs, so a full pipe never blocks it.
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + COMMAND_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for mq") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mq {args:?} ran over {COMMAND_LIMIT:?}: {}",
                err.join().unwrap_or_default()
            );
        }
        if !meanwhile() {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    Run {
        success: status.success(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn strings<'a>(rows: &'a [Value], field: &str) -> Vec<&'a str> {
    let mut values: Vec<&str> = rows.iter().filter_map(|r| r[field].as_str()).collect();
    values.sort();
    values
}

fn total_lag(rows: &[Value]) -> u64 {
    rows.iter().filter_map(|r| r["lag"].as_u64()).sum()
}

/// A name unique to this run.
fn unique(what: &str) -> String {
    format!("cli-{what}-{}", uuid::Uuid::now_v7().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_on_redis() {
    let url =
        std::env::var("MQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let reachable = tokio::time::timeout(Duration::from_secs(10), mq::connect(url.as_str())).await;
    match reachable {
        Ok(Ok(client)) => client.close().await.expect("close"),
        Ok(Err(e)) => return skip_without_broker(&url, &e.to_string()),
        Err(_) => return skip_without_broker(&url, "connecting timed out"),
    }
    exercise(&url, true).await;
}

fn skip_without_broker(url: &str, why: &str) {
    if std::env::var("MQ_REQUIRE_BROKERS").is_ok_and(|v| v == "1") {
        panic!("MQ_REQUIRE_BROKERS=1 but {url} is unreachable: {why}");
    }
    eprintln!("SKIPPED: no broker at {url} ({why})");
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
    let topic = unique("t");
    let group = unique("g");
    mq.json(&["topics", "create", &topic, "--partitions", "2"], "");

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
    let topics = mq.json(&["topics"], "");
    assert!(
        topics
            .iter()
            .any(|t| t["topic"] == topic.as_str() && t["partitions"] == 2),
        "{topics:?}"
    );

    let consume = ["consume", &topic, "--group", &group, "--follow", "--max"];
    let first = mq.json(&[&consume[..], &["2"]].concat(), "");
    assert_eq!(first.len(), 2, "{first:?}");
    for line in &first {
        assert_eq!(line["topic"], topic.as_str());
        assert_eq!(line["attempt"], 1);
        assert_eq!(line["payload_utf8"], true);
    }
    let groups = mq.json(&["groups", &topic], "");
    assert!(
        groups
            .iter()
            .any(|g| g["group"] == group.as_str() && g["lag"] == 1),
        "{groups:?}"
    );
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

    let (dead, dlq) = dead_letters(&mq).await;
    if shared {
        tail(&mq, &topic).await;
    }
    for t in [&topic, &dead, &dlq] {
        mq.json(&["topics", "delete", t], "");
    }
    let topics = mq.json(&["topics"], "");
    assert!(
        !topics.iter().any(|t| t["topic"] == topic.as_str()),
        "{topics:?}"
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
