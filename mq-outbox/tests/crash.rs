//! A relay killed with SIGKILL mid-batch loses nothing and keeps per-key
//! order after a restart.
//!
//! The parent fills an outbox, then runs the relay as a child process (this
//! test binary again, `child_relay`, which does nothing unless
//! `MQ_OUTBOX_CRASH_DIR` is set) publishing to a native log, SIGKILLs it
//! at a random moment while it works, and repeats. Finally it relays the
//! rest itself and reads the log: every message is there, and each key's
//! messages, with the copies a crash caused removed, come in enqueue order.

// The shared support module needs both databases.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mq_core::Message;
use support::{first_copies, read_all};

const TOPIC: &str = "crash";
const KEYS: usize = 20;
const PER_KEY: usize = 150;

fn messages() -> Vec<Message> {
    (1..=PER_KEY)
        .flat_map(|seq| {
            (0..KEYS)
                .map(move |k| Message::new(TOPIC, format!("k{k}:{seq}")).with_key(format!("k{k}")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_relay() {
    let Ok(dir) = std::env::var("MQ_OUTBOX_CRASH_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let client = support::native(&dir.join("log")).await;
    let relay = match std::env::var("MQ_OUTBOX_CRASH_DB") {
        Ok(url) => {
            let pool = sqlx::PgPool::connect(&url).await.expect("connect");
            mq_outbox::postgres::PgOutbox::new(pool).relay(&client)
        }
        Err(_) => {
            let pool = mq_outbox::sqlite::open(dir.join("app.db"))
                .await
                .expect("open");
            mq_outbox::sqlite::SqliteOutbox::new(pool)
                .lease(Duration::from_secs(1))
                .relay(&client)
        }
    };
    let _running = relay.batch_size(25).spawn();
    // Relays until the parent kills this process.
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// Kills a child relay `rounds` times, each after it published some rows.
fn kill_loop(
    dir: &std::path::Path,
    db_url: Option<&str>,
    pending: impl Fn() -> i64,
    rounds: usize,
) {
    let total = (KEYS * PER_KEY) as i64;
    for round in 0..rounds {
        let before = pending();
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args(["child_relay", "--exact", "--nocapture", "--test-threads=1"])
            .env("MQ_OUTBOX_CRASH_DIR", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(url) = db_url {
            command.env("MQ_OUTBOX_CRASH_DB", url);
        }
        let mut child = command.spawn().expect("spawn the child relay");
        // Kill once it is well into the backlog: a random share of a round's work.
        let target = before
            - (total / (rounds as i64 + 2)) * (1 + (round as i64 % 2)) / 2
            - (uuid::Uuid::now_v7().as_u128() % 40) as i64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while pending() > target.max(1) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        // Then a random moment inside the next batches, not right after a commit.
        std::thread::sleep(Duration::from_micros(
            (uuid::Uuid::now_v7().as_u128() % 20_000) as u64,
        ));
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        let after = pending();
        eprintln!("round {round}: killed with {after} of {total} rows pending ({before} before)");
        assert!(
            after < before,
            "the child relay published nothing in round {round}"
        );
    }
}

async fn check_log(dir: &std::path::Path) {
    let client = support::native(&dir.join("log")).await;
    let got = read_all(&client, TOPIC, KEYS * PER_KEY, Duration::from_millis(300)).await;
    let unique = first_copies(&got);
    eprintln!(
        "{} published, {} copies from crashes",
        unique.len(),
        got.len() - unique.len()
    );
    assert_eq!(unique.len(), KEYS * PER_KEY, "messages were lost");
    let mut per_key: HashMap<String, Vec<String>> = HashMap::new();
    for g in &unique {
        per_key
            .entry(g.key.clone().unwrap())
            .or_default()
            .push(g.payload.clone());
    }
    for (key, payloads) in per_key {
        let expected: Vec<String> = (1..=PER_KEY).map(|seq| format!("{key}:{seq}")).collect();
        assert_eq!(payloads, expected, "key {key} out of order");
    }
    client.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_relay_killed_mid_batch_loses_nothing_and_keeps_key_order() {
    if std::env::var("MQ_OUTBOX_CRASH_DIR").is_ok() {
        return;
    }
    let Some(db) = support::postgres("crash").await else {
        return;
    };
    let outbox = mq_outbox::postgres::PgOutbox::new(db.pool.clone());
    let mut tx = db.pool.begin().await.unwrap();
    outbox.enqueue_all(&mut tx, messages()).await.unwrap();
    tx.commit().await.unwrap();
    let dir = support::fresh_dir("pg-crash");

    let runtime = tokio::runtime::Handle::current();
    let pending = || {
        let outbox = outbox.clone();
        tokio::task::block_in_place(|| {
            runtime.block_on(async move { outbox.pending().await.unwrap() })
        })
    };
    tokio::task::block_in_place(|| kill_loop(&dir, Some(&db.url), pending, 6));

    let client = support::native(&dir.join("log")).await;
    outbox.relay(&client).drain().await.unwrap();
    client.close().await.unwrap();
    assert_eq!(outbox.pending().await.unwrap(), 0);
    check_log(&dir).await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_relay_killed_mid_batch_loses_nothing_and_keeps_key_order() {
    if std::env::var("MQ_OUTBOX_CRASH_DIR").is_ok() {
        return;
    }
    let dir = support::fresh_dir("sqlite-crash");
    let pool = support::sqlite(&dir).await;
    let outbox = mq_outbox::sqlite::SqliteOutbox::new(pool.clone()).lease(Duration::from_secs(1));
    let mut tx = pool.begin().await.unwrap();
    for message in messages() {
        outbox.enqueue(&mut tx, message).await.unwrap();
    }
    tx.commit().await.unwrap();

    let runtime = tokio::runtime::Handle::current();
    let pending = || {
        let outbox = outbox.clone();
        tokio::task::block_in_place(|| {
            runtime.block_on(async move { outbox.pending().await.unwrap() })
        })
    };
    tokio::task::block_in_place(|| kill_loop(&dir, None, pending, 6));

    let client = support::native(&dir.join("log")).await;
    // The dead child's lease runs out first (1 s).
    outbox.relay(&client).drain().await.unwrap();
    client.close().await.unwrap();
    assert_eq!(outbox.pending().await.unwrap(), 0);
    check_log(&dir).await;
}
