//! A process killed with SIGKILL while its delayed messages wait and its
//! delay forwarder hops them between levels (where the core emulates
//! delay; on brokers with native delay the broker holds them): every
//! delayed message it sent is still delivered, and never early.
//!
//! The child (this test binary re-run, see [`delay_kill_suite!`](crate::delay_kill_suite))
//! sends [`MESSAGES`] messages due 0.3 s to 6 s later, prints each one's
//! due time once its send returned, and is killed [`KILL_AFTER`] after its
//! last send, in the middle of the hops. The parent then consumes with the
//! group it created beforehand.
//! Hops are at least once (a hop published and not yet acked when the
//! process dies is published again), so duplicates are reported, not
//! failed; they must carry their message's id, which is what a consumer
//! that needs once dedups by ([`DedupLayer`](mq_core::idempotency::DedupLayer)).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mq_core::{Client, Message, MessageId, Support, TopicSpec};

use crate::child::{instructions, reachable, short_run, ChildTest};
use crate::{wait_quiescent, wait_until, Context, Recorder, QUIET};

/// Where the parent tells the child what to do: `url` and `topic`,
/// separated by newlines.
pub const CHILD_ENV: &str = "MQ_TESTKIT_DELAY_CHILD";
/// Delayed messages the child sends.
pub const MESSAGES: u64 = 60;
/// How long the child lives after its last send.
pub const KILL_AFTER: Duration = Duration::from_millis(1_500);
const SENT: &str = "MQ_TESTKIT_DELAY_SENT ";
const ALL_SENT: &str = "MQ_TESTKIT_DELAY_ALL_SENT";
const SCENARIO: &str = "killed_delay_forwarder_loses_nothing";

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The child's part: sends delayed messages, then forwards until killed
/// (a delayed send starts the forwarder where delay is emulated).
pub async fn child<F, Fut>(connect: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = mq_core::Result<Client>>,
{
    let [url, topic] = instructions::<2>(CHILD_ENV, SCENARIO);
    let client = connect(url).await.expect("child connects");
    let producer = client.producer();
    for i in 0..MESSAGES {
        let due = SystemTime::now() + Duration::from_millis(300 + i * 95);
        let message = Message::new(&topic, i.to_string())
            .with_key(format!("k{}", i % 4))
            .with_deliver_at(due);
        producer.send(message).await.expect("child sends");
        println!("{SENT}{i} {}", millis(due));
    }
    println!("{ALL_SENT}");
    std::future::pending::<()>().await;
}

/// The parent's part: runs the child as `child_test`, kills it mid-hop,
/// and checks every delayed message arrives, none early.
pub async fn parent<F, Fut>(child_test: &str, url: String, connect: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = mq_core::Result<Client>>,
{
    let run = short_run();
    if !reachable(SCENARIO, &url, &connect).await {
        return;
    }
    let topic = {
        let client = connect(url.clone()).await.expect("connect to set up");
        if client.capabilities().delay == Support::Unsupported {
            eprintln!("SKIPPED {SCENARIO}: delay is unsupported");
            return;
        }
        let ctx = Context::new(client, run.clone());
        let (topic, group) = (ctx.topic("delay-kill"), ctx.group("delay-kill"));
        ctx.client
            .admin()
            .ensure_topic(&topic, TopicSpec::new(2))
            .await
            .expect("create the topic");
        ctx.join(&topic, &group).await;
        // The native engine's directory is the child's while it lives.
        ctx.client.close().await.expect("close the set-up client");
        topic
    };

    let mut child = ChildTest::start(child_test, CHILD_ENV, &[&url, &topic]);
    let mut due = BTreeMap::new();
    loop {
        match child.next_marked("MQ_TESTKIT_DELAY_") {
            Some(line) if line == "ALL_SENT" => break,
            Some(line) => {
                let sent = line.strip_prefix("SENT ").expect("a SENT line");
                let (i, at) = sent.split_once(' ').expect("number and due time");
                due.insert(i.to_owned(), at.parse::<u64>().expect("due millis"));
            }
            None => break,
        }
    }
    std::thread::sleep(KILL_AFTER);
    let status = child.kill();
    assert_eq!(
        due.len() as u64,
        MESSAGES,
        "the child ({status}) sent only {} of its delayed messages",
        due.len()
    );

    let client = connect(url).await.expect("reconnect after the kill");
    let ctx = Context::new(client, run);
    let (topic, group) = (ctx.topic("delay-kill"), ctx.group("delay-kill"));
    let recorder = Recorder::new();
    let consumer = ctx
        .client
        .consumer(&topic, &group)
        .run(recorder.handler())
        .await
        .expect("run");
    let payloads = || -> Vec<(String, u64, Option<MessageId>)> {
        recorder
            .seen()
            .iter()
            .map(|s| {
                let message = s.delivery.message();
                let payload = message.payload_str().unwrap_or("?");
                (payload.to_owned(), millis(s.at), message.id())
            })
            .collect()
    };
    // Generous: the killed member's share must first be given up by the
    // broker before this process forwards and receives it.
    wait_until(Duration::from_secs(120), || {
        let (got, due) = (payloads(), &due);
        async move { due.keys().all(|i| got.iter().any(|(p, ..)| p == i)) }
    })
    .await;
    let quiet = wait_quiescent(
        &ctx.client,
        &topic,
        &group,
        QUIET,
        Duration::from_secs(20),
        || recorder.len(),
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    let got = payloads();
    let lost: Vec<&String> = due
        .keys()
        .filter(|i| !got.iter().any(|(p, ..)| p == *i))
        .collect();
    assert!(
        lost.is_empty(),
        "delayed messages lost with the killed process: {lost:?}"
    );
    let mut ids = BTreeMap::new();
    for (payload, at, id) in &got {
        let due_at = due.get(payload).copied().expect("a message the child sent");
        assert!(
            *at >= due_at,
            "message {payload} delivered {} ms early",
            due_at - at
        );
        assert!(id.is_some(), "message {payload} arrived without its id");
        let first = *ids.entry(payload).or_insert(*id);
        assert_eq!(
            first, *id,
            "a duplicate of message {payload} has another id"
        );
    }
    assert!(quiet, "the group never went quiet after the kill");
    eprintln!(
        "{SCENARIO}: killed {KILL_AFTER:?} after the last of {MESSAGES} delayed sends; \
         {} deliveries, {} duplicates (hops in flight at the kill)",
        got.len(),
        got.len() - due.len()
    );
    ctx.clean_up().await;
    let _ = ctx.client.close().await;
}

/// Generates the killed-forwarder test (`killed_delay_forwarder_loses_nothing`)
/// and the ignored child test it runs in a second process. Arguments as
/// for [`consumer_kill_suite!`](crate::consumer_kill_suite).
#[macro_export]
macro_rules! delay_kill_suite {
    (url: $url:expr, connect: $connect:expr $(, ignore: $reason:literal)? $(,)?) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[ignore = $reason])?
        async fn killed_delay_forwarder_loses_nothing() {
            $crate::delay_kill::parent("killed_delay_forwarder_child", $url, $connect).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "the child process of killed_delay_forwarder_loses_nothing"]
        async fn killed_delay_forwarder_child() {
            $crate::delay_kill::child($connect).await;
        }
    };
}
