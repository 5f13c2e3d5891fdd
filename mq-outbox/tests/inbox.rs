//! The inbox and the durable dedup stores on SQLite files and a real
//! PostgreSQL: records survive restarts, windows end and are cleaned up,
//! and a handler has exactly one effect under redeliveries, handler
//! failures and acks lost after its commit.

// The shared support module needs both databases.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

mod support;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use mq_core::idempotency::{Claim, DedupStore};
use mq_core::memory::MemoryDriver;
use mq_core::{
    async_trait, Client, Delivery, Handler, HandlerError, HandlerResult, Message, MessageId,
    RetryPolicy,
};
use mq_outbox::{Inbox, InboxDatabase, SqlDedupStore, TxHandler};
use sqlx::{Postgres, Sqlite, Transaction};

const LEASE: Duration = Duration::from_secs(60);

async fn dedup_across_restart<DB: InboxDatabase>(
    before: SqlDedupStore<DB>,
    after: impl FnOnce() -> BoxFuture<'static, SqlDedupStore<DB>>,
) {
    assert_eq!(
        before.claim("g", "done", LEASE).await.unwrap(),
        Claim::Claimed
    );
    before
        .complete("g", "done", Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        before
            .claim("g", "held", Duration::from_millis(1500))
            .await
            .unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        before.claim("g", "short", LEASE).await.unwrap(),
        Claim::Claimed
    );
    before
        .complete("g", "short", Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        before.claim("g", "failed", LEASE).await.unwrap(),
        Claim::Claimed
    );
    before.release("g", "failed").await.unwrap();
    drop(before);

    let store = after().await;
    assert_eq!(
        store.claim("g", "done", LEASE).await.unwrap(),
        Claim::Done,
        "remembered across the restart"
    );
    assert_eq!(
        store.claim("other-group", "done", LEASE).await.unwrap(),
        Claim::Claimed,
        "scoped by group"
    );
    assert_eq!(
        store.claim("g", "held", LEASE).await.unwrap(),
        Claim::InProgress,
        "the dead worker's lease still runs"
    );
    assert_eq!(
        store.claim("g", "failed", LEASE).await.unwrap(),
        Claim::Claimed,
        "a released claim is free"
    );
    assert_eq!(store.claim("g", "short", LEASE).await.unwrap(), Claim::Done);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        store.claim("g", "held", LEASE).await.unwrap(),
        Claim::Claimed,
        "the lease ran out"
    );
    assert!(
        store.cleanup().await.unwrap() >= 1,
        "the ended window of `short` is cleaned up"
    );
    assert_eq!(
        store.claim("g", "short", LEASE).await.unwrap(),
        Claim::Claimed,
        "outside the window it runs again"
    );
    assert_eq!(store.claim("g", "done", LEASE).await.unwrap(), Claim::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_dedup_store_survives_a_restart() {
    let dir = support::fresh_dir("sqlite-dedup");
    let before = SqlDedupStore::new(support::sqlite(&dir).await);
    dedup_across_restart(before, move || {
        Box::pin(async move {
            SqlDedupStore::new(mq_outbox::sqlite::open(dir.join("app.db")).await.unwrap())
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dedup_store_survives_a_restart() {
    let Some(db) = support::postgres("dedup").await else {
        return;
    };
    let url = db.url.clone();
    dedup_across_restart(SqlDedupStore::new(db.pool.clone()), move || {
        Box::pin(async move { SqlDedupStore::new(sqlx::PgPool::connect(&url).await.unwrap()) })
    })
    .await;
    db.drop().await;
}

/// Credits the account by the payload; fails once, after its write, for
/// every fourth message (the write must roll back).
#[derive(Default)]
struct Credit {
    failed_once: Mutex<HashSet<MessageId>>,
}

impl Credit {
    fn fail_now(&self, delivery: &Delivery) -> bool {
        let id = delivery.message().id().unwrap();
        let n: i64 = delivery.message().payload_str().unwrap().parse().unwrap();
        n % 4 == 0 && self.failed_once.lock().unwrap().insert(id)
    }
}

macro_rules! credit_on {
    ($db:ty) => {
        #[async_trait]
        impl TxHandler<$db> for Credit {
            async fn handle(
                &self,
                delivery: &Delivery,
                tx: &mut Transaction<'static, $db>,
            ) -> HandlerResult {
                let cents: i64 = delivery.message().payload_str()?.parse()?;
                sqlx::query("UPDATE account SET cents = cents + $1 WHERE id = 1")
                    .bind(cents)
                    .execute(&mut **tx)
                    .await?;
                if self.fail_now(delivery) {
                    return Err(HandlerError::from("injected failure after the write"));
                }
                Ok(())
            }
        }
    };
}
credit_on!(Sqlite);
credit_on!(Postgres);

/// Runs `inner`, then reports failure the first time each message comes:
/// as if the process died after the inbox committed and before the ack.
struct AckLost<H> {
    inner: H,
    lost: Mutex<HashSet<MessageId>>,
}

#[async_trait]
impl<H: Handler> Handler for AckLost<H> {
    async fn handle(&self, delivery: &Delivery) -> HandlerResult {
        self.inner.handle(delivery).await?;
        let id = delivery.message().id().unwrap();
        if self.lost.lock().unwrap().insert(id) {
            return Err(HandlerError::from("ack lost after the commit"));
        }
        Ok(())
    }
}

const CREDITS: i64 = 40;
const COPIES: usize = 3;

async fn exactly_once<DB: InboxDatabase>(
    inbox: Inbox<DB>,
    credit: impl TxHandler<DB>,
    balance: impl Fn() -> BoxFuture<'static, i64>,
) {
    inbox.migrate().await.unwrap();
    let client = Client::new(MemoryDriver::new());
    let producer = client.producer();
    for n in 1..=CREDITS {
        // Copies with one id: the redeliveries a broker or a bridge may make.
        let id = MessageId::new();
        for _ in 0..COPIES {
            producer
                .send(
                    Message::new("credits", n.to_string())
                        .with_id(id)
                        .with_key(format!("acct-{}", n % 5)),
                )
                .await
                .unwrap();
        }
    }
    let handler = AckLost {
        inner: inbox.handler(credit),
        lost: Mutex::new(HashSet::new()),
    };
    let consumer = client
        .consumer("credits", "ledger")
        .concurrency(4)
        .retry(
            RetryPolicy::new(10).with_backoff(Duration::from_millis(1), Duration::from_millis(20)),
        )
        .run(handler)
        .await
        .unwrap();
    let expected = CREDITS * (CREDITS + 1) / 2;
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.admin().total_lag("credits", "ledger").await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "the consumer did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.shutdown().await.unwrap();
    assert_eq!(
        balance().await,
        expected,
        "each credit applied exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_handler_has_exactly_one_effect_under_redeliveries() {
    let dir = support::fresh_dir("sqlite-once");
    let pool = support::sqlite(&dir).await;
    sqlx::query("CREATE TABLE account (id INTEGER PRIMARY KEY, cents INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO account VALUES (1, 0)")
        .execute(&pool)
        .await
        .unwrap();
    let read = pool.clone();
    exactly_once(Inbox::new(pool), Credit::default(), move || {
        let pool = read.clone();
        Box::pin(async move {
            sqlx::query_scalar("SELECT cents FROM account")
                .fetch_one(&pool)
                .await
                .unwrap()
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_handler_has_exactly_one_effect_under_redeliveries() {
    let Some(db) = support::postgres("once").await else {
        return;
    };
    sqlx::query("CREATE TABLE account (id INTEGER PRIMARY KEY, cents BIGINT NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO account VALUES (1, 0)")
        .execute(&db.pool)
        .await
        .unwrap();
    let read = db.pool.clone();
    exactly_once(Inbox::new(db.pool.clone()), Credit::default(), move || {
        let pool = read.clone();
        Box::pin(async move {
            sqlx::query_scalar("SELECT cents FROM account")
                .fetch_one(&pool)
                .await
                .unwrap()
        })
    })
    .await;
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM mq_inbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(records, CREDITS);
    db.drop().await;
}
