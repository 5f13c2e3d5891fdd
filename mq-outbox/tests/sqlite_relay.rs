//! The relay on SQLite files: concurrent writers with rolled-back and slow
//! transactions, two relays sharing a file, kept rows and cleanup.

// The shared support module needs both databases.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mq_core::memory::MemoryDriver;
use mq_core::{Client, Message};
use mq_outbox::sqlite::SqliteOutbox;
use sqlx::SqlitePool;
use support::{by_key, read_all};

type Committed = HashMap<String, Vec<String>>;

/// `writers` concurrent writers; writer `w` owns keys `w{w}-k0..k2`; every
/// 5th transaction rolls back, every 7th sleeps before committing.
async fn write(pool: &SqlitePool, outbox: &SqliteOutbox, writers: usize, txs: usize) -> Committed {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (pool, outbox) = (pool.clone(), outbox.clone());
            tokio::spawn(async move {
                let mut seq: HashMap<String, u64> = HashMap::new();
                let mut committed = Committed::new();
                for t in 0..txs {
                    let mut tx = pool.begin().await.expect("begin");
                    let mut staged = Vec::new();
                    for m in 0..(1 + t % 3) {
                        let key = format!("w{w}-k{}", (t + m) % 3);
                        let n = seq.entry(key.clone()).or_default();
                        *n += 1;
                        let payload = format!("{key}:{n}");
                        outbox
                            .enqueue(
                                &mut tx,
                                Message::new("orders", payload.clone()).with_key(key.as_str()),
                            )
                            .await
                            .expect("enqueue");
                        staged.push((key, payload));
                    }
                    if t % 7 == 3 {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                    if t % 5 == 4 {
                        tx.rollback().await.expect("rollback");
                    } else {
                        tx.commit().await.expect("commit");
                        for (key, payload) in staged {
                            committed.entry(key).or_default().push(payload);
                        }
                    }
                }
                committed
            })
        })
        .collect();
    let mut committed = Committed::new();
    for task in tasks {
        committed.extend(task.await.expect("writer"));
    }
    committed
}

async fn drained(outbox: &SqliteOutbox) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while outbox.pending().await.expect("pending") > 0 {
        assert!(
            Instant::now() < deadline,
            "the relay did not drain the outbox"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_exactly(committed: &Committed, got: &[support::Got]) {
    let expected: usize = committed.values().map(Vec::len).sum();
    let mut ids: Vec<&str> = got.iter().map(|g| g.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "a message was published twice");
    assert_eq!(got.len(), expected);
    assert_eq!(&by_key(got), committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_message_once_in_key_order() {
    let dir = support::fresh_dir("sqlite-writers");
    let pool = support::sqlite(&dir).await;
    let outbox = SqliteOutbox::new(pool.clone());
    let client = Client::new(MemoryDriver::new());
    let relay = outbox.relay(&client).batch_size(30).spawn();
    let committed = write(&pool, &outbox, 4, 40).await;
    drained(&outbox).await;
    relay.shutdown().await.unwrap();
    let expected = committed.values().map(Vec::len).sum();
    let got = read_all(&client, "orders", expected, Duration::from_millis(300)).await;
    assert_exactly(&committed, &got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_file_take_turns() {
    let dir = support::fresh_dir("sqlite-two");
    let pool = support::sqlite(&dir).await;
    let other = mq_outbox::sqlite::open(dir.join("app.db")).await.unwrap();
    let outbox = SqliteOutbox::new(pool.clone());
    let client = Client::new(MemoryDriver::new());
    let first = outbox.relay(&client).batch_size(10).spawn();
    let second = SqliteOutbox::new(other)
        .relay(&client)
        .batch_size(10)
        .spawn();
    let committed = write(&pool, &outbox, 3, 30).await;
    drained(&outbox).await;
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
    let expected = committed.values().map(Vec::len).sum();
    let got = read_all(&client, "orders", expected, Duration::from_millis(300)).await;
    assert_exactly(&committed, &got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_rows_are_cleaned_up() {
    let dir = support::fresh_dir("sqlite-cleanup");
    let pool = support::sqlite(&dir).await;
    let outbox = SqliteOutbox::new(pool.clone());
    let client = Client::new(MemoryDriver::new());
    let relay = outbox.relay(&client).keep_sent(Duration::ZERO);
    let mut tx = pool.begin().await.unwrap();
    for n in 0..5 {
        outbox
            .enqueue(&mut tx, Message::new("t", format!("{n}")))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(relay.drain().await.unwrap(), 5);
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM mq_outbox")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(count().await, 5, "sent rows are kept for the retention");
    assert_eq!(relay.cleanup().await.unwrap(), 5);
    assert_eq!(count().await, 0);
    assert_eq!(
        read_all(&client, "t", 5, Duration::from_millis(200))
            .await
            .len(),
        5
    );
}
