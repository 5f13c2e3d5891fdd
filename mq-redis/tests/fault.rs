//! Resilience: a private `redis-server` with `appendonly yes` is killed
//! (SIGKILL) and restarted while a producer sends and a consumer group
//! reads. Every acknowledged send must be delivered, none handled twice
//! after dedup, and no retried send may leave a second copy in a stream.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mq_core::idempotency::{DedupLayer, MemoryDedupStore};
use mq_core::{handler_fn, Client, Config, Delivery, HandlerResult, Message, MessageId, TopicSpec};
use parking_lot::Mutex;
use support::RedisServer;

const TOPIC: &str = "fault-orders";
const PARTITIONS: u32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_mid_stream() {
    let Some(mut server) =
        RedisServer::start(&["--appendonly", "yes", "--appendfsync", "everysec"])
    else {
        return;
    };
    let url = server.url("?request_timeout=20s&claim_idle=5s&block=500ms");
    let config = Config::from_url(&url).expect("url");
    let client = Client::new(
        mq_redis::RedisDriver::connect(&config)
            .await
            .expect("connect"),
    );
    client
        .admin()
        .ensure_topic(TOPIC, TopicSpec::new(PARTITIONS))
        .await
        .expect("ensure_topic");

    // Handler effects after dedup, and when each was handled, per message id.
    let effects: Arc<Mutex<HashMap<MessageId, u32>>> = Arc::default();
    let handled_at: Arc<Mutex<HashMap<MessageId, SystemTime>>> = Arc::default();
    let handler = {
        let (effects, handled_at) = (effects.clone(), handled_at.clone());
        handler_fn(move |d: Delivery| {
            let (effects, handled_at) = (effects.clone(), handled_at.clone());
            async move {
                if let Some(id) = d.message().id() {
                    *effects.lock().entry(id).or_default() += 1;
                    handled_at.lock().insert(id, SystemTime::now());
                }
                HandlerResult::Ok(())
            }
        })
    };
    let consumer = client
        .consumer(TOPIC, "fault-group")
        .concurrency(4)
        .layer(DedupLayer::new(Arc::new(MemoryDedupStore::new())))
        .run(handler)
        .await
        .expect("run");

    let acked: Arc<Mutex<HashSet<MessageId>>> = Arc::default();
    let failed = Arc::new(Mutex::new(0usize));
    let send = |round: u32, size: u32| {
        let (client, acked, failed) = (client.clone(), acked.clone(), failed.clone());
        async move {
            let batch: Vec<Message> = (0..size)
                .map(|i| {
                    Message::new(TOPIC, format!("{round}-{i}")).with_key(format!("k{}", i % 7))
                })
                .collect();
            match client.producer().send_batch(batch).await {
                Ok(receipts) => acked.lock().extend(receipts.iter().map(|r| r.id)),
                Err(error) => {
                    eprintln!("send of round {round} failed: {error}");
                    *failed.lock() += 1;
                }
            }
        }
    };

    // Steady traffic, then a large send that the kill interrupts half-way:
    // its reply is lost, so the driver must find out what was written.
    for round in 0..15 {
        send(round, 20).await;
    }
    // A delayed message due while the server is down: its schedule is in
    // Redis (and the AOF), so it survives, and it is never early.
    let due = SystemTime::now() + Duration::from_millis(1200);
    let delayed = client
        .producer()
        .send(Message::new(TOPIC, "delayed").with_deliver_at(due))
        .await
        .expect("send delayed")
        .id;
    acked.lock().insert(delayed);
    let raw = redis::Client::open(url.split('?').next().unwrap_or_default()).expect("client");
    let mut watch = raw
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let before = stream_len(&mut watch).await;
    let big = tokio::spawn(send(1000, 5000));
    // Kill as soon as the large send is partly written.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stream_len(&mut watch).await == before && Instant::now() < deadline {}
    server.kill();
    eprintln!("killed redis after {} acked sends", acked.lock().len());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .expect("restart");
    eprintln!("redis restarted");
    big.await.expect("big send");
    for round in 15..30 {
        send(round, 20).await;
    }

    let acked = acked.lock().clone();
    let all_in = mq_testkit::wait_until(Duration::from_secs(30), || async {
        let effects = effects.lock();
        acked.iter().all(|id| effects.contains_key(id))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    consumer.shutdown().await.expect("shutdown");
    let effects = effects.lock().clone();
    let missing = acked.iter().filter(|id| !effects.contains_key(id)).count();
    eprintln!(
        "acked {} sends ({} batches failed), handled {} ids, missing {missing}",
        acked.len(),
        failed.lock(),
        effects.len()
    );
    assert!(
        all_in && missing == 0,
        "{missing} acked messages were never delivered"
    );
    let at = handled_at
        .lock()
        .get(&delayed)
        .copied()
        .expect("delayed message handled");
    assert!(
        at >= due,
        "the delayed message came {:?} early",
        due.duration_since(at)
    );
    let twice: Vec<_> = effects.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "handled twice after dedup: {twice:?}");

    // No retried send left a second copy of a message in a stream.
    let mut conn = raw
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let mut copies: HashMap<String, u32> = HashMap::new();
    for p in 0..PARTITIONS {
        let entries: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(format!("mq:{{{TOPIC}}}:s:{p}"))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .expect("xrange");
        for (_, fields) in entries {
            if let Some(id) = fields.get("i") {
                *copies
                    .entry(String::from_utf8_lossy(id).into_owned())
                    .or_default() += 1;
            }
        }
    }
    let duplicated: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!("{} entries in the streams", copies.len());
    assert!(
        duplicated.is_empty(),
        "retried sends wrote duplicates: {duplicated:?}"
    );
    assert!(
        copies.len() >= acked.len(),
        "acked messages missing from the streams"
    );
}

/// Entries in the topic's streams.
async fn stream_len(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let mut total = 0;
    for p in 0..PARTITIONS {
        let len: u64 = redis::cmd("XLEN")
            .arg(format!("mq:{{{TOPIC}}}:s:{p}"))
            .query_async(conn)
            .await
            .unwrap_or(0);
        total += len;
    }
    total
}
