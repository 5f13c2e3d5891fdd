//! Application-like writers: concurrent transactions that enqueue, some
//! held open long, some rolled back, each doing its own write first.

use std::collections::HashMap;
use std::time::Duration;

use mq_core::Message;
use mq_outbox::postgres::PgOutbox;
use sqlx::PgPool;

/// What the writers committed, per key, in order (payload `key:seq`).
pub type Committed = HashMap<String, Vec<String>>;

/// Runs `writers` concurrent writers of `txs` transactions each on `topic`.
/// Writer `w` owns keys `w{w}-k0..k2`, so each key's order is well defined.
/// Every 5th transaction rolls back; every 7th stays open for 150 ms
/// after enqueueing, while the others commit around it.
pub async fn run(
    pool: &PgPool,
    outbox: &PgOutbox,
    topic: &str,
    writers: usize,
    txs: usize,
) -> Committed {
    sqlx::query("CREATE TABLE IF NOT EXISTS app_rows (w INT, t INT)")
        .execute(pool)
        .await
        .expect("create app_rows");
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let pool = pool.clone();
            let outbox = outbox.clone();
            let topic = topic.to_owned();
            tokio::spawn(async move { writer(pool, outbox, topic, w, txs).await })
        })
        .collect();
    let mut committed = Committed::new();
    for task in tasks {
        committed.extend(task.await.expect("writer"));
    }
    committed
}

async fn writer(pool: PgPool, outbox: PgOutbox, topic: String, w: usize, txs: usize) -> Committed {
    let mut seq: HashMap<String, u64> = HashMap::new();
    let mut committed = Committed::new();
    for t in 0..txs {
        let mut tx = pool.begin().await.expect("begin");
        // The application's own write, before the outbox row: the
        // transaction takes its xid here.
        sqlx::query("INSERT INTO app_rows VALUES ($1, $2)")
            .bind(w as i32)
            .bind(t as i32)
            .execute(&mut *tx)
            .await
            .expect("app write");
        let mut staged = Vec::new();
        for m in 0..(1 + t % 3) {
            let key = format!("w{w}-k{}", (t + m) % 3);
            let n = seq.entry(key.clone()).or_default();
            *n += 1;
            let payload = format!("{key}:{n}");
            outbox
                .enqueue(
                    &mut tx,
                    Message::new(topic.as_str(), payload.clone()).with_key(key.as_str()),
                )
                .await
                .expect("enqueue");
            staged.push((key, payload));
        }
        if t % 7 == 3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
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
}
