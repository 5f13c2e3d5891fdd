//! The half-message scenario that needs a second process: a producer
//! killed with SIGKILL between sending a half message and committing it.
//! The broker (or the core's emulation) must keep the message prepared,
//! deliver it to nobody, and ask a checker of the same producer group in
//! another process, which commits it: delivered exactly once.
//!
//! The test re-runs its own test binary as the child (an ignored test the
//! macro [`half_kill_suite!`](crate::half_kill_suite) generates next to the
//! parent), passing the backend URL and names in [`CHILD_ENV`].

use std::future::Future;
use std::time::Duration;

use mq_core::{Client, HalfOutcome, Message, MessageId};

use crate::child::{instructions, reachable, short_run, ChildTest};
use crate::scenarios::{ScriptedChecker, PLAN};
use crate::{wait_quiescent, Context, Recorder, QUIET};

/// Where the parent tells the child what to do: `url`, `topic`, `group`
/// and `producer group`, separated by newlines.
pub const CHILD_ENV: &str = "MQ_TESTKIT_HALF_CHILD";
/// The line the child prints once its half message is durable.
const PREPARED: &str = "MQ_TESTKIT_HALF_PREPARED ";

/// The child's part: sends one half message and waits to be killed.
pub async fn child<F, Fut>(connect: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = mq_core::Result<Client>>,
{
    let [url, topic, group, producer_group] =
        instructions::<4>(CHILD_ENV, "half_message_survives_a_killed_producer");
    let client = connect(url).await.expect("child connects");
    client
        .admin()
        .ensure_group(&topic, &group, mq_core::StartFrom::Earliest)
        .await
        .expect("child creates the consumer group");
    // This process never decides: it is killed first.
    let producer = client
        .half_producer(&producer_group, ScriptedChecker::default())
        .with_check_after(Duration::from_secs(3600))
        .start()
        .await
        .expect("child starts its half producer");
    let half = producer
        .send(
            Message::new(&topic, "survived")
                .with_key("order-7")
                .with_header(PLAN, "commit"),
        )
        .await
        .expect("child sends the half message");
    println!("{PREPARED}{}", half.id());
    std::mem::forget(half);
    std::future::pending::<()>().await;
}

/// The parent's part: runs the child as `child_test`, kills it once its
/// half message is prepared, then checks that a checker in this process
/// commits it and it is delivered exactly once.
pub async fn parent<F, Fut>(child_test: &str, url: String, connect: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = mq_core::Result<Client>>,
{
    let run = short_run();
    if !reachable("half_message_survives_a_killed_producer", &url, &connect).await {
        return;
    }
    let names = Context::new(
        Client::new(mq_core::memory::MemoryDriver::new()),
        run.clone(),
    );
    let (topic, group, producer_group) = (
        names.topic("half-kill"),
        names.group("half-kill"),
        names.group("half-kill-producer"),
    );
    let id = run_child_until_prepared(child_test, &[&url, &topic, &group, &producer_group]);

    let client = connect(url).await.expect("reconnect after the kill");
    let ctx = Context::new(client, run);
    let (topic, group) = (ctx.topic("half-kill"), ctx.group("half-kill"));
    let capabilities = ctx.capabilities();
    if !capabilities.half_messages.is_available() {
        eprintln!("SKIPPED half_message_survives_a_killed_producer: half messages are unsupported");
        return;
    }
    let recorder = Recorder::new();
    let consumer = ctx
        .client
        .consumer(&topic, &group)
        .run(recorder.handler())
        .await
        .expect("run");
    let checker = ScriptedChecker::default();
    let producer = ctx
        .client
        .half_producer(ctx.group("half-kill-producer"), checker.clone())
        .with_check_after(Duration::from_secs(1))
        .with_check_interval(Duration::from_millis(300))
        .start()
        .await
        .expect("start half producer");
    // Generous: the killed member's share of the group must first be
    // given up by the broker (session timeouts, channel closes).
    assert!(
        recorder.wait_for(1, Duration::from_secs(90)).await,
        "the half message of the killed producer was never committed by the checker"
    );
    assert!(
        checker.times_asked(id) >= 1,
        "delivered without the checker being asked"
    );
    assert!(
        wait_quiescent(
            &ctx.client,
            &topic,
            &group,
            QUIET,
            Duration::from_secs(20),
            || recorder.len()
        )
        .await,
        "never went quiet"
    );
    consumer.shutdown().await.expect("shutdown");
    producer.close().await;
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1, "delivered {} times", seen.len());
    let message = seen[0].delivery.message();
    assert_eq!(message.id(), Some(id));
    assert_eq!(message.payload_str().ok(), Some("survived"));
    assert_eq!(message.key(), Some("order-7"));
    assert_eq!(
        message.headers().get(PLAN),
        Some(HalfOutcome::Commit.as_str())
    );
    ctx.clean_up().await;
    let _ = ctx.client.close().await;
}

/// Starts the child test and SIGKILLs it as soon as it reports its half
/// message prepared; returns that message's id.
fn run_child_until_prepared(child_test: &str, spec: &[&str]) -> MessageId {
    let mut child = ChildTest::start(child_test, CHILD_ENV, spec);
    let id = child
        .next_marked(PREPARED)
        .map(|printed| MessageId::parse(&printed).expect("the child printed an id"));
    let status = child.kill();
    id.unwrap_or_else(|| panic!("the child exited ({status}) before preparing its half message"))
}

/// Generates the killed-producer test (`half_message_survives_a_killed_producer`)
/// and the ignored child test it runs in a second process.
///
/// `url` is an expression giving the backend URL as a `String` (for the
/// native engine: a fresh directory); `connect` is a function from a URL
/// to `impl Future<Output = mq_core::Result<Client>>`; `ignore: "why"`
/// marks the test ignored on a broker that cannot run it.
#[macro_export]
macro_rules! half_kill_suite {
    (url: $url:expr, connect: $connect:expr $(, ignore: $reason:literal)? $(,)?) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[ignore = $reason])?
        async fn half_message_survives_a_killed_producer() {
            $crate::half_kill::parent("half_message_killed_producer_child", $url, $connect).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "the child process of half_message_survives_a_killed_producer"]
        async fn half_message_killed_producer_child() {
            $crate::half_kill::child($connect).await;
        }
    };
}
