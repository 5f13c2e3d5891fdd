//! A consumer process killed with SIGKILL in the middle of its handlers:
//! nothing it had not acked may be lost, and what it held unsettled (the
//! handlers it was inside, the deliveries prefetched behind them) comes to
//! the next member of its group.
//!
//! The parent publishes [`MESSAGES`] keyed messages and closes its client;
//! the child (this test binary re-run, see [`consumer_kill_suite!`](crate::consumer_kill_suite))
//! consumes them with concurrency 4, prints every message its handler
//! finished, and once [`FINISH`] have finished enters handlers that never
//! return, printing those too. The parent SIGKILLs it then, reconnects (on
//! the native engine: reopens the directory the dead process had open) and
//! consumes with the same group until every message the child did not
//! finish has arrived.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mq_core::{handler_fn, Client, Delivery, HandlerResult, Message, TopicSpec};

use crate::child::{instructions, reachable, short_run, ChildTest};
use crate::{wait_quiescent, wait_until, Context, Recorder, QUIET};

/// Where the parent tells the child what to do: `url`, `topic` and
/// `group`, separated by newlines.
pub const CHILD_ENV: &str = "MQ_TESTKIT_CONSUMER_CHILD";
/// Messages published for the child.
pub const MESSAGES: usize = 200;
/// Handlers the child finishes before it starts hanging.
pub const FINISH: usize = 40;
/// The line the child prints when a handler returned `Ok` (its ack is
/// then buffered or on its way: either may be lost with the process).
const FINISHED: &str = "MQ_TESTKIT_CONSUMER_FINISHED ";
/// The line the child prints when a handler starts that never returns.
const HANGING: &str = "MQ_TESTKIT_CONSUMER_HANGING ";
const SCENARIO: &str = "killed_consumer_loses_nothing";

/// The child's part: consumes until killed.
pub async fn child<F, Fut>(connect: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = mq_core::Result<Client>>,
{
    let [url, topic, group] = instructions::<3>(CHILD_ENV, SCENARIO);
    let client = connect(url).await.expect("child connects");
    let started = Arc::new(AtomicUsize::new(0));
    let handler = handler_fn(move |d: Delivery| {
        let started = started.clone();
        async move {
            let payload = d.message().payload_str().unwrap_or("?").to_owned();
            if started.fetch_add(1, Ordering::SeqCst) < FINISH {
                println!("{FINISHED}{payload}");
                return HandlerResult::Ok(());
            }
            println!("{HANGING}{payload}");
            std::future::pending::<HandlerResult>().await
        }
    });
    let _consumer = client
        .consumer(&topic, &group)
        .concurrency(4)
        .prefetch(16)
        .run(handler)
        .await
        .expect("child starts consuming");
    std::future::pending::<()>().await;
}

/// The parent's part: publishes, runs the child as `child_test` until it
/// hangs, kills it, and checks that the group gets every message the child
/// did not finish, the ones it hung in among them.
pub async fn parent<F, Fut>(child_test: &str, url: String, connect: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = mq_core::Result<Client>>,
{
    let run = short_run();
    if !reachable(SCENARIO, &url, &connect).await {
        return;
    }
    let (topic, group) = {
        let client = connect(url.clone()).await.expect("connect to publish");
        let ctx = Context::new(client, run.clone());
        let (topic, group) = (ctx.topic("consumer-kill"), ctx.group("consumer-kill"));
        ctx.client
            .admin()
            .ensure_topic(&topic, TopicSpec::new(4))
            .await
            .expect("create the topic");
        ctx.join(&topic, &group).await;
        let messages = (0..MESSAGES)
            .map(|i| Message::new(&topic, i.to_string()).with_key(format!("k{}", i % 8)))
            .collect();
        ctx.client
            .producer()
            .send_batch(messages)
            .await
            .expect("publish");
        // The native engine's directory is the child's while it lives.
        ctx.client
            .close()
            .await
            .expect("close the publishing client");
        (topic, group)
    };

    let mut child = ChildTest::start(child_test, CHILD_ENV, &[&url, &topic, &group]);
    let mut finished = BTreeSet::new();
    let mut hanging = None;
    while hanging.is_none() {
        let Some(line) = child.next_marked("MQ_TESTKIT_CONSUMER_") else {
            break;
        };
        if let Some(payload) = line.strip_prefix("FINISHED ") {
            finished.insert(payload.to_owned());
        } else if let Some(payload) = line.strip_prefix("HANGING ") {
            hanging = Some(payload.to_owned());
        }
    }
    let status = child.kill();
    let hanging = hanging.unwrap_or_else(|| {
        panic!("the child exited ({status}) before its handlers started hanging")
    });

    let client = connect(url).await.expect("reconnect after the kill");
    let ctx = Context::new(client, run);
    let (topic, group) = (ctx.topic("consumer-kill"), ctx.group("consumer-kill"));
    let recorder = Recorder::new();
    let consumer = ctx
        .client
        .consumer(&topic, &group)
        .run(recorder.handler())
        .await
        .expect("run");
    let all: BTreeSet<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
    let owed: BTreeSet<String> = all.difference(&finished).cloned().collect();
    let received = || -> BTreeSet<String> {
        recorder
            .seen()
            .iter()
            .map(|s| s.delivery.message().payload_str().unwrap_or("?").to_owned())
            .collect()
    };
    // Generous: the killed member's share of the group must first be
    // given up by the broker (session timeouts, channel closes, claims of
    // idle pending entries).
    let complete = wait_until(Duration::from_secs(120), || {
        let (got, owed) = (received(), &owed);
        async move { owed.is_subset(&got) }
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
    let got = received();
    let lost: Vec<&String> = owed.difference(&got).collect();
    assert!(
        complete && lost.is_empty(),
        "{} messages the killed consumer never finished were not redelivered: {lost:?}",
        lost.len()
    );
    assert!(
        got.contains(&hanging),
        "the message the killed consumer hung in ({hanging}) was not redelivered"
    );
    assert!(quiet, "the group never went quiet after the kill");
    let again = finished.intersection(&got).count();
    eprintln!(
        "{SCENARIO}: killed after {} finished handlers; {} messages redelivered, \
         {again} of them finished before the kill (their acks died with the process)",
        finished.len(),
        got.len(),
    );
    ctx.clean_up().await;
    let _ = ctx.client.close().await;
}

/// Generates the killed-consumer test (`killed_consumer_loses_nothing`) and
/// the ignored child test it runs in a second process.
///
/// `url` is an expression giving the backend URL as a `String` (for the
/// native engine: a fresh directory); `connect` is a function from a URL
/// to `impl Future<Output = mq_core::Result<Client>>`; `ignore: "why"`
/// marks the test ignored on a broker that cannot run it.
#[macro_export]
macro_rules! consumer_kill_suite {
    (url: $url:expr, connect: $connect:expr $(, ignore: $reason:literal)? $(,)?) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[ignore = $reason])?
        async fn killed_consumer_loses_nothing() {
            $crate::consumer_kill::parent("killed_consumer_child", $url, $connect).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "the child process of killed_consumer_loses_nothing"]
        async fn killed_consumer_child() {
            $crate::consumer_kill::child($connect).await;
        }
    };
}
