//! The half store through the driver SPI: prepared messages invisible
//! until committed, resolutions final, unresolved ones back to the checker
//! after a restart, check streams sharing a group, bad tokens refused.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use mq_core::driver::{Driver, DriverHalfChecks, HalfCheck, HalfOutcome, HalfToken, StartFrom};
use mq_core::{Error, Message, MessageId, TopicSpec};
use mq_native::NativeDriver;
use support::{fresh_dir, open, sub};

const TOPIC: &str = "orders";
/// Checks offered at once, never again during a test.
const AT_ONCE: &str = "half_check_after=0s&half_check_interval=1h";
/// Long enough for any offer a test waits for.
const PATIENCE: Duration = Duration::from_secs(10);
/// Long enough for an offer that is not due to show up if it were.
const GLANCE: Duration = Duration::from_millis(300);

async fn open_with_topic(dir: &Path, options: &str) -> NativeDriver {
    let driver = open(dir, options).await.expect("open");
    driver
        .ensure_topic(TOPIC, &TopicSpec::new(1))
        .await
        .expect("topic");
    driver
        .ensure_group(TOPIC, "readers", StartFrom::Earliest)
        .await
        .expect("group");
    driver
}

fn order(n: u32) -> Message {
    Message::new(TOPIC, format!("order {n}"))
        .with_id(MessageId::new())
        .with_key(format!("customer-{n}"))
        .with_header("tenant", "acme")
}

async fn prepare(driver: &NativeDriver, group: &str, message: Message) -> HalfToken {
    let (receipt, token) = driver
        .publish_half(group, message.clone())
        .await
        .expect("publish half");
    assert_eq!(Some(receipt.id), message.id());
    assert_eq!(token.id, receipt.id);
    token
}

/// What `readers` has not acked yet, acked now, as (id, payload).
async fn delivered(driver: &NativeDriver) -> Vec<(MessageId, String)> {
    let lag: u64 = driver
        .lag(TOPIC, "readers")
        .await
        .expect("lag")
        .iter()
        .map(|p| p.lag)
        .sum();
    let mut got = Vec::new();
    if lag == 0 {
        return got;
    }
    let sub = sub(driver, TOPIC, "readers").await;
    while (got.len() as u64) < lag {
        let batch = tokio::time::timeout(PATIENCE, sub.fetch(100))
            .await
            .expect("fetch in time")
            .expect("fetch");
        let tokens = batch.iter().map(|d| d.token.clone()).collect();
        for d in batch {
            let payload = d.message.payload_str().expect("utf-8").to_owned();
            got.push((d.message.id().expect("an id"), payload));
        }
        sub.ack(tokens).await.expect("ack");
    }
    sub.close().await.expect("close subscription");
    got
}

async fn next_check(checks: &dyn DriverHalfChecks, within: Duration) -> Option<HalfCheck> {
    tokio::time::timeout(within, checks.next())
        .await
        .ok()
        .flatten()
}

fn is_bad_token(result: mq_core::Result<()>) -> bool {
    matches!(
        result,
        Err(Error::Invalid {
            field: "half token",
            ..
        })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_until_committed_and_resolved_once() {
    let dir = fresh_dir("half-commit");
    let driver = open_with_topic(&dir, "").await;
    let paid = order(1);
    let never = order(2);
    let paid_token = prepare(&driver, "shop", paid.clone()).await;
    let never_token = prepare(&driver, "shop", never).await;
    assert!(
        delivered(&driver).await.is_empty(),
        "a prepared message was delivered"
    );
    assert_eq!(driver.engine().half_pending(), 2);

    driver
        .resolve_half("shop", paid_token.clone(), HalfOutcome::Commit)
        .await
        .expect("commit");
    driver
        .resolve_half("shop", never_token.clone(), HalfOutcome::Rollback)
        .await
        .expect("rollback");
    let sub = sub(&driver, TOPIC, "inspect").await;
    let got = tokio::time::timeout(PATIENCE, sub.fetch(10))
        .await
        .expect("fetch in time")
        .expect("fetch");
    sub.close().await.expect("close");
    assert_eq!(got.len(), 1);
    let message = &got[0].message;
    assert_eq!(message.id(), paid.id());
    assert_eq!(message.key(), Some("customer-1"));
    assert_eq!(message.headers().get("tenant"), Some("acme"));
    assert_eq!(message.payload_str().ok(), Some("order 1"));

    // Later resolutions change nothing, whichever they say.
    for (token, outcome) in [
        (&paid_token, HalfOutcome::Commit),
        (&paid_token, HalfOutcome::Rollback),
        (&never_token, HalfOutcome::Commit),
        (&never_token, HalfOutcome::Unknown),
    ] {
        driver
            .resolve_half("shop", token.clone(), outcome)
            .await
            .expect("a second resolution is no error");
    }
    let seen = delivered(&driver).await;
    assert_eq!(seen, vec![(paid.id().unwrap(), "order 1".to_owned())]);
    assert_eq!(driver.engine().half_pending(), 0);
    // Nothing left to check, and no half topic was made for it.
    let checks = driver.half_checks("shop").await.expect("checks");
    assert!(next_check(checks.as_ref(), GLANCE).await.is_none());
    checks.close().await.expect("close checks");
    let topics = driver.list_topics().await.expect("topics");
    assert_eq!(topics.len(), 1, "{topics:?}");
    driver.close().await.expect("close");
}

/// Prepares three messages of `shop` and one of `billing`, resolves one of
/// `shop`'s, closes; returns the ids left unresolved per group.
async fn leave_unresolved(dir: &Path) -> (HashSet<MessageId>, MessageId) {
    let driver = open_with_topic(dir, "").await;
    let mut shop = HashSet::new();
    for n in 0..3 {
        let message = order(n);
        let token = prepare(&driver, "shop", message.clone()).await;
        if n == 1 {
            driver
                .resolve_half("shop", token, HalfOutcome::Rollback)
                .await
                .expect("rollback");
        } else {
            shop.insert(message.id().unwrap());
        }
    }
    let billing = order(9);
    prepare(&driver, "billing", billing.clone()).await;
    driver.close().await.expect("close");
    (shop, billing.id().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolved_messages_come_back_to_the_checker_after_a_restart() {
    // From the checkpoint, and (without one) from the log alone.
    for replay in [false, true] {
        let dir = fresh_dir("half-restart");
        let (shop, billing) = leave_unresolved(&dir).await;
        if replay {
            std::fs::remove_file(dir.join("checkpoint.json")).expect("drop the checkpoint");
        }
        let driver = open(&dir, AT_ONCE).await.expect("reopen");
        assert_eq!(driver.engine().half_pending(), 3, "replay: {replay}");
        let checks = driver.half_checks("shop").await.expect("checks");
        let mut offered = HashSet::new();
        for _ in 0..shop.len() {
            let check = next_check(checks.as_ref(), PATIENCE)
                .await
                .expect("an unresolved message is offered");
            assert_eq!(check.prior_checks, 0);
            assert_eq!(check.message.topic(), TOPIC);
            assert_eq!(check.message.headers().get("tenant"), Some("acme"));
            let n: u32 = check.message.payload_str().unwrap()[6..].parse().unwrap();
            assert_eq!(check.message.key(), Some(format!("customer-{n}").as_str()));
            assert_eq!(check.message.id(), Some(check.token.id));
            offered.insert(check.token.id);
        }
        assert_eq!(offered, shop, "replay: {replay}");
        assert!(
            next_check(checks.as_ref(), GLANCE).await.is_none(),
            "offered twice, or the rolled-back one"
        );
        let other = driver.half_checks("billing").await.expect("checks");
        let check = next_check(other.as_ref(), PATIENCE)
            .await
            .expect("the other group's message");
        assert_eq!(check.token.id, billing);
        checks.close().await.expect("close");
        other.close().await.expect("close");
        assert!(delivered(&driver).await.is_empty());
        driver.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_after_a_restart_delivers_once() {
    let dir = fresh_dir("half-commit-restart");
    let driver = open_with_topic(&dir, "").await;
    let message = order(5);
    let token = prepare(&driver, "shop", message.clone()).await;
    driver.close().await.expect("close");

    let driver = open(&dir, AT_ONCE).await.expect("reopen");
    driver
        .resolve_half("shop", token.clone(), HalfOutcome::Commit)
        .await
        .expect("commit with the token from before the restart");
    driver
        .resolve_half("shop", token.clone(), HalfOutcome::Commit)
        .await
        .expect("again");
    let first = delivered(&driver).await;
    assert_eq!(first, vec![(message.id().unwrap(), "order 5".to_owned())]);
    driver.close().await.expect("close");

    // Without a checkpoint too: the commit is replayed from the log.
    std::fs::remove_file(dir.join("checkpoint.json")).expect("drop the checkpoint");
    let driver = open(&dir, AT_ONCE).await.expect("reopen");
    assert_eq!(driver.engine().half_pending(), 0);
    let checks = driver.half_checks("shop").await.expect("checks");
    assert!(next_check(checks.as_ref(), GLANCE).await.is_none());
    checks.close().await.expect("close");
    driver
        .resolve_half("shop", token, HalfOutcome::Commit)
        .await
        .expect("a third commit is no error");
    assert!(delivered(&driver).await.is_empty(), "committed twice");
    driver.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_names_are_refused_by_name() {
    let dir = fresh_dir("half-bad");
    let driver = open_with_topic(&dir, "").await;
    let token = prepare(&driver, "shop", order(1)).await;
    let id = token.id;
    for handle in [&b""[..], b"garbage", &[0xff; 14], &token.handle[..13]] {
        for outcome in [
            HalfOutcome::Commit,
            HalfOutcome::Rollback,
            HalfOutcome::Unknown,
        ] {
            let bad = HalfToken::new(id, handle.to_vec());
            assert!(
                is_bad_token(driver.resolve_half("shop", bad, outcome).await),
                "{handle:?} {outcome:?}"
            );
        }
    }
    // A real token, of another group or with another id.
    let wrong_group = driver
        .resolve_half("billing", token.clone(), HalfOutcome::Commit)
        .await;
    assert!(is_bad_token(wrong_group));
    let wrong_id = HalfToken::new(MessageId::new(), token.handle.clone());
    assert!(is_bad_token(
        driver
            .resolve_half("shop", wrong_id, HalfOutcome::Commit)
            .await
    ));
    // A real token of another data directory, naming nothing here.
    let elsewhere = fresh_dir("half-bad-elsewhere");
    let other = open(&elsewhere, "").await.expect("open");
    let err = other
        .resolve_half("shop", token.clone(), HalfOutcome::Commit)
        .await;
    assert!(is_bad_token(err));
    other.close().await.expect("close");

    let bad_group = driver.publish_half("", order(2)).await;
    assert!(matches!(
        bad_group,
        Err(Error::Invalid { field: "group", .. })
    ));
    assert!(matches!(
        driver.half_checks("").await.err(),
        Some(Error::Invalid { field: "group", .. })
    ));
    // None of it touched the real one.
    assert_eq!(driver.engine().half_pending(), 1);
    driver
        .resolve_half("shop", token, HalfOutcome::Commit)
        .await
        .expect("commit");
    assert_eq!(delivered(&driver).await.len(), 1);
    driver.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_a_group_share_the_checks() {
    let dir = fresh_dir("half-streams");
    let driver = open_with_topic(&dir, AT_ONCE).await;
    let mut prepared = HashSet::new();
    for n in 0..6 {
        let message = order(n);
        prepare(&driver, "shop", message.clone()).await;
        prepared.insert(message.id().unwrap());
    }
    let one = driver.half_checks("shop").await.expect("checks");
    let two = driver.half_checks("shop").await.expect("checks");
    let mut held_by_one = HashSet::new();
    let mut seen = HashSet::new();
    for i in 0..6 {
        let stream = if i % 2 == 0 { &one } else { &two };
        let check = next_check(stream.as_ref(), PATIENCE)
            .await
            .expect("a check");
        assert!(seen.insert(check.token.id), "offered to both streams");
        if i % 2 == 0 {
            held_by_one.insert(check.token.id);
        }
    }
    assert_eq!(seen, prepared);
    assert!(next_check(two.as_ref(), GLANCE).await.is_none());
    // What the closed stream held goes to the other.
    one.close().await.expect("close");
    let mut again = HashSet::new();
    for _ in 0..held_by_one.len() {
        let check = next_check(two.as_ref(), PATIENCE)
            .await
            .expect("offered again after its stream closed");
        assert_eq!(check.prior_checks, 1);
        again.insert(check.token.id);
    }
    assert_eq!(again, held_by_one);
    assert!(one.next().await.is_none(), "a closed stream ends");
    two.close().await.expect("close");
    driver.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_answers_are_checked_again_until_known() {
    let dir = fresh_dir("half-unknown");
    let driver = open_with_topic(&dir, "half_check_after=0s&half_check_interval=50ms").await;
    let message = order(3);
    prepare(&driver, "shop", message.clone()).await;
    let checks = driver.half_checks("shop").await.expect("checks");
    for asked in 0..3 {
        let check = next_check(checks.as_ref(), PATIENCE)
            .await
            .expect("checked again");
        assert_eq!(check.prior_checks, asked);
        assert_eq!(check.message.id(), message.id());
        let outcome = if asked < 2 {
            HalfOutcome::Unknown
        } else {
            HalfOutcome::Commit
        };
        driver
            .resolve_half("shop", check.token, outcome)
            .await
            .expect("answer");
        if asked < 2 {
            assert!(delivered(&driver).await.is_empty());
        }
    }
    assert_eq!(delivered(&driver).await.len(), 1);
    assert!(next_check(checks.as_ref(), GLANCE).await.is_none());
    checks.close().await.expect("close");
    driver.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_counts_from_the_commit() {
    let dir = fresh_dir("half-delay");
    let driver = open_with_topic(&dir, "").await;
    let delay = Duration::from_millis(600);
    let token = prepare(&driver, "shop", order(4).with_delay(delay)).await;
    // Longer than the delay: counted from the send, it would be due.
    tokio::time::sleep(delay * 2).await;
    let committed_at = SystemTime::now();
    driver
        .resolve_half("shop", token, HalfOutcome::Commit)
        .await
        .expect("commit");
    let sub = sub(&driver, TOPIC, "readers").await;
    let got = tokio::time::timeout(PATIENCE, sub.fetch(10))
        .await
        .expect("fetch in time")
        .expect("fetch");
    let arrived = SystemTime::now();
    assert_eq!(got.len(), 1);
    // The engine's delay precision is 10 ms; never early beyond it.
    assert!(
        arrived + Duration::from_millis(10) >= committed_at + delay,
        "delivered {:?} after the commit, before its delay of {delay:?}",
        arrived.duration_since(committed_at).unwrap_or_default()
    );
    sub.close().await.expect("close");
    driver.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_unresolved_records_and_drops_resolved_ones() {
    let dir = fresh_dir("half-retention");
    let options = "segment_bytes=4096&retention_bytes=1&checkpoint_interval=1h";
    let driver = open_with_topic(&dir, options).await;
    let kept = order(1);
    let kept_token = prepare(&driver, "shop", kept.clone()).await;
    let dropped = prepare(&driver, "shop", order(2)).await;
    driver
        .resolve_half("shop", dropped, HalfOutcome::Rollback)
        .await
        .expect("rollback");
    let fill = |n: u32| {
        (0..10)
            .map(|i| {
                Message::new(TOPIC, vec![b'x'; 300])
                    .with_id(MessageId::new())
                    .with_key(format!("{n}-{i}"))
            })
            .collect::<Vec<_>>()
    };
    for n in 0..10 {
        driver.publish(fill(n)).await.expect("publish");
    }
    let engine = driver.engine().clone();
    engine.checkpoint().expect("checkpoint");
    engine.enforce_retention().expect("retention");
    assert_eq!(
        engine.log.first().map(|s| s.base),
        Some(0),
        "the segment of an unresolved half message was deleted"
    );
    driver
        .resolve_half("shop", kept_token, HalfOutcome::Commit)
        .await
        .expect("commit");
    let got = delivered(&driver).await;
    let committed = got.iter().filter(|(id, _)| Some(*id) == kept.id()).count();
    assert_eq!(committed, 1, "{} deliveries", got.len());
    for n in 10..20 {
        driver.publish(fill(n)).await.expect("publish");
    }
    engine.checkpoint().expect("checkpoint");
    engine.enforce_retention().expect("retention");
    let first = engine.log.first().map_or(0, |s| s.base);
    assert!(first > 0, "resolved half records are never collected");
    driver.close().await.expect("close");

    // Reopened, nothing is left to check, nor delivered again.
    let driver = open(&dir, AT_ONCE).await.expect("reopen");
    assert_eq!(driver.engine().half_pending(), 0);
    let checks = driver.half_checks("shop").await.expect("checks");
    assert!(next_check(checks.as_ref(), GLANCE).await.is_none());
    checks.close().await.expect("close");
    let again = delivered(&driver).await;
    assert!(again.iter().all(|(id, _)| Some(*id) != kept.id()));
    driver.close().await.expect("close");
}
