//! The Redis dedup store against the Redis at `MQ_TEST_REDIS_URL`:
//! records survive a reconnect (a consumer restart), leases and windows end.
#![cfg(all(feature = "redis", feature = "sqlite", feature = "postgres"))]

mod support;

use std::time::Duration;

use mq_core::idempotency::{Claim, DedupStore};
use mq_outbox::RedisDedupStore;

async fn store(prefix: &str) -> Option<RedisDedupStore> {
    let url =
        std::env::var("MQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    match RedisDedupStore::connect(&url).await {
        Ok(store) => Some(store.with_prefix(prefix)),
        Err(error) if !support::required() => {
            eprintln!("skipping: no Redis at {url} ({error})");
            None
        }
        Err(error) => panic!("MQ_REQUIRE_BROKERS=1 but Redis at {url} is unreachable: {error}"),
    }
}

#[tokio::test]
async fn redis_dedup_store_survives_a_reconnect() {
    let prefix = format!("mq-outbox-test:{}", uuid::Uuid::now_v7().simple());
    let Some(before) = store(&prefix).await else {
        return;
    };
    let lease = Duration::from_secs(60);
    assert_eq!(
        before.claim("g", "done", lease).await.unwrap(),
        Claim::Claimed
    );
    before
        .complete("g", "done", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        before
            .claim("g", "held", Duration::from_millis(500))
            .await
            .unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        before.claim("g", "short", lease).await.unwrap(),
        Claim::Claimed
    );
    before
        .complete("g", "short", Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        before.claim("g", "failed", lease).await.unwrap(),
        Claim::Claimed
    );
    before.release("g", "failed").await.unwrap();
    drop(before);

    let store = store(&prefix).await.unwrap();
    assert_eq!(store.claim("g", "done", lease).await.unwrap(), Claim::Done);
    assert_eq!(
        store.claim("g2", "done", lease).await.unwrap(),
        Claim::Claimed,
        "scoped by group"
    );
    assert_eq!(
        store.claim("g", "held", lease).await.unwrap(),
        Claim::InProgress
    );
    assert_eq!(
        store.claim("g", "failed", lease).await.unwrap(),
        Claim::Claimed
    );
    store.release("g", "done").await.unwrap();
    assert_eq!(
        store.claim("g", "done", lease).await.unwrap(),
        Claim::Done,
        "release never drops a done key"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        store.claim("g", "held", lease).await.unwrap(),
        Claim::Claimed,
        "the lease ran out"
    );
    assert_eq!(
        store.claim("g", "short", lease).await.unwrap(),
        Claim::Claimed,
        "the window ended"
    );
}
