//! Network faults between the SDK and a real broker, through a
//! [`FaultProxy`]: the broker unreachable for a while, the network
//! stalled, connections dropped mid-frame. A backend's test file calls
//! [`check_network_faults`] with one client through the proxy and one
//! direct; the checks are the same on every broker.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mq_core::{handler_fn, Client, Delivery, Error, HandlerResult, Message, MessageId};
use parking_lot::Mutex;

use crate::{wait_until, FaultProxy};

/// Longest a client may take to recover once the network is back.
const RECOVERY: Duration = Duration::from_secs(60);

/// Longest a single send may take, outage included: a send either
/// returns a receipt or an error in bounded time, never hangs.
const SEND_LIMIT: Duration = Duration::from_secs(60);

/// What the checks measured.
#[derive(Debug)]
pub struct NetworkReport {
    /// From the network coming back to the consumer having handled
    /// everything published during the outage.
    pub consumer_recovery_after_outage: Duration,
    /// The same after a stall of the network.
    pub consumer_recovery_after_stall: Duration,
    /// The same after connections were dropped mid-frame.
    pub consumer_recovery_after_torn_frame: Duration,
    /// Sends through the proxy that returned a receipt, and that failed
    /// with a typed error, while it went down and came back.
    pub sends_ok: usize,
    /// See `sends_ok`.
    pub sends_failed: usize,
    /// Messages handled more than once (at-least-once allows some).
    pub redelivered: usize,
}

/// Runs every check; panics when a guarantee does not hold. `topic` and
/// `group` must be fresh names; `proxied` connects through `proxy`,
/// `direct` to the same broker without it.
pub async fn check_network_faults(
    direct: &Client,
    proxied: &Client,
    proxy: &FaultProxy,
    topic: &str,
    group: &str,
) -> NetworkReport {
    direct
        .admin()
        .ensure_group(topic, group, mq_core::StartFrom::Earliest)
        .await
        .expect("ensure_group");
    let handled: Arc<Mutex<Vec<MessageId>>> = Arc::default();
    let consumer = {
        let handled = handled.clone();
        proxied
            .consumer(topic, group)
            .concurrency(4)
            .run(handler_fn(move |d: Delivery| {
                let handled = handled.clone();
                async move {
                    if let Some(id) = d.message().id() {
                        handled.lock().push(id);
                    }
                    HandlerResult::Ok(())
                }
            }))
            .await
            .expect("run through the proxy")
    };
    let mut expected = HashSet::new();
    let distinct =
        |handled: &Mutex<Vec<MessageId>>| handled.lock().iter().copied().collect::<HashSet<_>>();
    let all_handled = |expected: &HashSet<MessageId>| {
        let handled = handled.clone();
        let expected = expected.clone();
        move || {
            let handled = handled.clone();
            let expected = expected.clone();
            async move { expected.is_subset(&distinct(&handled)) }
        }
    };

    publish(direct, topic, 50, &mut expected).await;
    assert!(
        wait_until(RECOVERY, all_handled(&expected)).await,
        "the consumer never got the first messages"
    );

    // The broker becomes unreachable; messages keep arriving meanwhile.
    proxy.set_down(true);
    publish(direct, topic, 100, &mut expected).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.set_down(false);
    let back = Instant::now();
    assert!(
        wait_until(RECOVERY, all_handled(&expected)).await,
        "the consumer did not resume after the network came back: {} of {}",
        distinct(&handled).intersection(&expected).count(),
        expected.len()
    );
    let consumer_recovery_after_outage = back.elapsed();

    // The network stalls: connections stay open, nothing moves.
    proxy.set_stalled(true);
    publish(direct, topic, 100, &mut expected).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.set_stalled(false);
    let back = Instant::now();
    assert!(
        wait_until(RECOVERY, all_handled(&expected)).await,
        "the consumer did not resume after a stall"
    );
    let consumer_recovery_after_stall = back.elapsed();

    // Connections dropped in the middle of a frame, a few times over.
    for cut in [300u64, 1_000, 5_000] {
        proxy.cut_after(cut);
        publish(direct, topic, 50, &mut expected).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let back = Instant::now();
    assert!(
        wait_until(RECOVERY, all_handled(&expected)).await,
        "the consumer did not resume after torn frames"
    );
    let consumer_recovery_after_torn_frame = back.elapsed();

    // Sends through the proxy while it goes down and comes back: each one
    // gets a receipt or a typed error, and every receipt is a delivery.
    let (sends_ok, sends_failed) = {
        let producer = proxied.producer();
        let outage = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            proxy.set_down(true);
            tokio::time::sleep(Duration::from_secs(2)).await;
            proxy.set_down(false);
        };
        let sending = async {
            let (mut ok, mut failed) = (0, 0);
            for i in 0..300 {
                let message = Message::new(topic, format!("via-proxy-{i}"));
                match tokio::time::timeout(SEND_LIMIT, producer.send(message)).await {
                    Err(_) => panic!("a send through the proxy hung for {SEND_LIMIT:?}"),
                    Ok(Ok(receipt)) => {
                        expected.insert(receipt.id);
                        ok += 1;
                    }
                    Ok(Err(error)) => {
                        assert!(is_network_error(&error), "untyped failure: {error:?}");
                        failed += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failed)
        };
        let ((), counts) = tokio::join!(outage, sending);
        counts
    };
    assert!(
        wait_until(RECOVERY, all_handled(&expected)).await,
        "a send that got a receipt was never delivered"
    );
    consumer.shutdown().await.expect("shutdown");
    let handled = handled.lock();
    let redelivered = handled.len() - handled.iter().collect::<HashSet<_>>().len();
    NetworkReport {
        consumer_recovery_after_outage,
        consumer_recovery_after_stall,
        consumer_recovery_after_torn_frame,
        sends_ok,
        sends_failed,
        redelivered,
    }
}

/// Errors a send may give when the network fails: typed, retryable kinds.
fn is_network_error(error: &Error) -> bool {
    matches!(
        error,
        Error::Connection { .. } | Error::Timeout(_) | Error::Closed(_) | Error::Backend { .. }
    )
}

async fn publish(client: &Client, topic: &str, n: usize, expected: &mut HashSet<MessageId>) {
    let batch = (0..n)
        .map(|i| Message::new(topic, format!("m{i}")).with_key(format!("k{}", i % 10)))
        .collect();
    let receipts = client
        .producer()
        .send_batch(batch)
        .await
        .expect("direct send_batch");
    expected.extend(receipts.iter().map(|r| r.id));
}
