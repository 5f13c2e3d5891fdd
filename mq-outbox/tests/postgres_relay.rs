//! The relay on a real PostgreSQL: concurrent, long and rolled-back
//! transactions, two relays at once, a row committing late with a lower
//! id, delays, idempotency keys, kept rows and cleanup, refused rows.

// The shared support module needs both databases.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

mod support;

use std::time::{Duration, Instant};

use mq_core::memory::MemoryDriver;
use mq_core::{Client, Config, Message};
use mq_outbox::postgres::PgOutbox;
use support::{by_key, read_all, writers, Got};

/// Waits until the outbox has no pending row.
async fn drained(outbox: &PgOutbox) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while outbox.pending().await.expect("pending") > 0 {
        assert!(
            Instant::now() < deadline,
            "the relay did not drain the outbox"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_exactly(committed: &writers::Committed, got: &[Got]) {
    let expected: usize = committed.values().map(Vec::len).sum();
    let mut ids: Vec<&str> = got.iter().map(|g| g.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "a message was published twice");
    assert_eq!(
        got.len(),
        expected,
        "published {} of {expected} committed messages",
        got.len()
    );
    assert_eq!(&by_key(got), committed, "per-key order or content differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_message_once_in_key_order_no_rolled_back_one() {
    let Some(db) = support::postgres("writers").await else {
        return;
    };
    let outbox = PgOutbox::new(db.pool.clone());
    let client = Client::new(MemoryDriver::new());
    let relay = outbox.relay(&client).batch_size(50).spawn();
    let committed = writers::run(&db.pool, &outbox, "orders", 8, 40).await;
    drained(&outbox).await;
    relay.shutdown().await.expect("shutdown");
    let expected = committed.values().map(Vec::len).sum();
    let got = read_all(&client, "orders", expected, Duration::from_millis(300)).await;
    assert_exactly(&committed, &got);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_keep_key_order_without_duplicates() {
    let Some(db) = support::postgres("two_relays").await else {
        return;
    };
    let outbox = PgOutbox::new(db.pool.clone());
    let other = PgOutbox::new(db.other_pool().await);
    let client = Client::new(MemoryDriver::new());
    let first = outbox.relay(&client).batch_size(20).spawn();
    let second = other.relay(&client).batch_size(20).spawn();
    let committed = writers::run(&db.pool, &outbox, "orders", 6, 40).await;
    drained(&outbox).await;
    first.shutdown().await.expect("shutdown");
    second.shutdown().await.expect("shutdown");
    let expected = committed.values().map(Vec::len).sum();
    let got = read_all(&client, "orders", expected, Duration::from_millis(300)).await;
    assert_exactly(&committed, &got);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_committing_after_a_later_id_is_neither_skipped_nor_reordered() {
    let Some(db) = support::postgres("late_commit").await else {
        return;
    };
    let outbox = PgOutbox::new(db.pool.clone());
    let client = Client::new(MemoryDriver::new());
    let relay = outbox.relay(&client);

    // `early` takes the lower id and commits last.
    let mut early = db.pool.begin().await.unwrap();
    outbox
        .enqueue(&mut early, Message::new("t", "first").with_key("k"))
        .await
        .unwrap();
    outbox
        .enqueue(&mut early, Message::new("t", "other key").with_key("j"))
        .await
        .unwrap();
    let mut late = db.pool.begin().await.unwrap();
    outbox
        .enqueue(&mut late, Message::new("t", "second").with_key("k"))
        .await
        .unwrap();
    late.commit().await.unwrap();

    let step = relay.step().await.unwrap();
    assert_eq!(
        step.published, 0,
        "the later row must wait for the older transaction"
    );
    assert!(step.held);

    early.commit().await.unwrap();
    assert_eq!(relay.drain().await.unwrap(), 3);
    let got = read_all(&client, "t", 3, Duration::from_millis(200)).await;
    let keys = by_key(&got);
    assert_eq!(keys["k"], vec!["first", "second"]);
    assert_eq!(keys["j"], vec!["other key"]);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_row_never_goes_out_and_an_open_one_waits() {
    let Some(db) = support::postgres("rollback").await else {
        return;
    };
    let outbox = PgOutbox::new(db.pool.clone());
    let client = Client::new(MemoryDriver::new());
    let relay = outbox.relay(&client);
    let mut open = db.pool.begin().await.unwrap();
    outbox
        .enqueue(&mut open, Message::new("t", "never"))
        .await
        .unwrap();
    assert_eq!(
        relay.drain().await.unwrap(),
        0,
        "an uncommitted row is invisible"
    );
    open.rollback().await.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    outbox
        .enqueue(&mut tx, Message::new("t", "yes"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(relay.drain().await.unwrap(), 1);
    let got = read_all(&client, "t", 1, Duration::from_millis(200)).await;
    assert_eq!(
        got.iter().map(|g| g.payload.as_str()).collect::<Vec<_>>(),
        vec!["yes"]
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_the_relay_well_before_its_poll_interval() {
    let Some(db) = support::postgres("notify").await else {
        return;
    };
    let outbox = PgOutbox::new(db.pool.clone());
    let client = Client::new(MemoryDriver::new());
    let relay = outbox
        .relay(&client)
        .poll_interval(Duration::from_secs(30))
        .spawn();
    // Let the relay reach its wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut tx = db.pool.begin().await.unwrap();
    outbox
        .enqueue(&mut tx, Message::new("t", "wake up"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let got = read_all(&client, "t", 1, Duration::from_millis(10)).await;
    assert_eq!(got.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    relay.shutdown().await.unwrap();
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_and_idempotency_keys_are_honoured() {
    let Some(db) = support::postgres("delay_idem").await else {
        return;
    };
    let outbox = PgOutbox::new(db.pool.clone());
    let client = Client::new(MemoryDriver::new());
    let relay = outbox.relay(&client);
    let enqueued = Instant::now();
    let mut tx = db.pool.begin().await.unwrap();
    outbox
        .enqueue(
            &mut tx,
            Message::new("later", "cancel order 42").with_delay(Duration::from_millis(600)),
        )
        .await
        .unwrap();
    outbox
        .enqueue(
            &mut tx,
            Message::new("once", "charge").with_idempotency_key("charge-42"),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut again = db.pool.begin().await.unwrap();
    outbox
        .enqueue(
            &mut again,
            Message::new("once", "charge").with_idempotency_key("charge-42"),
        )
        .await
        .unwrap();
    again.commit().await.unwrap();
    assert_eq!(relay.drain().await.unwrap(), 3);

    let got = read_all(&client, "later", 1, Duration::from_millis(10)).await;
    assert_eq!(got.len(), 1);
    assert!(
        enqueued.elapsed() >= Duration::from_millis(600),
        "delivered early: {:?}",
        enqueued.elapsed()
    );
    let once = read_all(&client, "once", 1, Duration::from_millis(300)).await;
    assert_eq!(
        once.len(),
        1,
        "the broker deduplicated the second copy by its idempotency key"
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_rows_are_cleaned_up_and_refused_rows_are_kept_aside() {
    let Some(db) = support::postgres("cleanup").await else {
        return;
    };
    let outbox = PgOutbox::new(db.pool.clone());
    let driver =
        MemoryDriver::from_config(&Config::from_url("memory://?max_message_bytes=100").unwrap())
            .unwrap();
    let client = Client::new(driver);
    let relay = outbox.relay(&client).keep_sent(Duration::ZERO);
    let mut tx = db.pool.begin().await.unwrap();
    outbox
        .enqueue_all(
            &mut tx,
            vec![
                Message::new("t", "a").with_key("k"),
                Message::new("t", "x".repeat(500)).with_key("k"),
                Message::new("t", "b").with_key("k"),
            ],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(relay.drain().await.unwrap(), 2);
    let got = read_all(&client, "t", 2, Duration::from_millis(200)).await;
    assert_eq!(
        by_key(&got)["k"],
        vec!["a", "b"],
        "the refused row does not stall its key"
    );
    let rows = |sql: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(rows("SELECT count(*) FROM mq_outbox").await, 3);
    assert_eq!(relay.cleanup().await.unwrap(), 2);
    assert_eq!(
        rows("SELECT count(*) FROM mq_outbox WHERE error IS NOT NULL").await,
        1
    );
    assert_eq!(rows("SELECT count(*) FROM mq_outbox").await, 1);
    db.drop().await;
}

async fn left_now(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM mq_outbox WHERE topic = 'old'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_cleanup_does_not_hold_up_relaying() {
    let Some(db) = support::postgres("big_cleanup").await else {
        return;
    };
    sqlx::query(
        "INSERT INTO mq_outbox (shard, topic, payload, message_id, enqueued_at_ms, sent_at_ms) \
         SELECT g % 64, 'old', '\\x00'::bytea, gen_random_uuid()::text, 0, 1 FROM generate_series(1, 100000) g",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let outbox = PgOutbox::new(db.pool.clone());
    let client = Client::new(MemoryDriver::new());
    let relay = outbox
        .relay(&client)
        .keep_sent(Duration::from_secs(3600))
        .cleanup_interval(Duration::from_millis(1))
        .spawn();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let mut tx = db.pool.begin().await.unwrap();
    outbox
        .enqueue(&mut tx, Message::new("t", "now"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        read_all(&client, "t", 1, Duration::from_millis(10))
            .await
            .len(),
        1
    );
    let latency = started.elapsed();
    let left_when_published = left_now(&db.pool).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while left_now(&db.pool).await > 0 {
        assert!(Instant::now() < deadline, "the cleanup did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.shutdown().await.unwrap();
    assert!(
        left_when_published > 0,
        "relaying waited for the whole cleanup ({latency:?})"
    );
    db.drop().await;
}
